"""Domains: how problems are grouped for the paper's per-domain and overall view (its Table 1).

Every problem of a probe belongs to one domain (a record's `domain`): a probe recipe with one task
section has one domain, named after its task (`default_domain`); a suite recipe names its domains
(probe.tasks.suite). Metrics are reported per domain and pooled over all problems (`overall`); the
pooled figures keep their historical unprefixed keys too (`probe/pass@1`, `probe/vs_base/SRR`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from probe.cli import ConfigError

OVERALL = "overall"
DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Names that are already key segments under probe/ (W&B keys probe/<domain>/<metric> must not collide)
RESERVED = frozenset({OVERALL, "vs_base", "seconds", "domains"})


def default_domain(task_name: str) -> str:
    """The domain of a one-task recipe: the task's name (`reasoning_gym:<name>`: the data set name)."""
    name = task_name.split(":", 1)[1] if task_name.startswith("reasoning_gym:") else task_name
    return name.lower()


def check_domain_name(name: str, where: str) -> None:
    """ConfigError unless `name` can be a W&B key segment of its own."""
    if not DOMAIN_NAME.match(name) or name in RESERVED:
        raise ConfigError(
            f"{where}: domain name {name!r} must match {DOMAIN_NAME.pattern} and not be one of "
            f"{sorted(RESERVED)}"
        )


def record_domain(record: Mapping, default: str) -> str:
    """A record's domain; records written before domains existed belong to `default`."""
    return str(record.get("domain") or default)


def split_by_domain(records: Iterable[Mapping], default: str) -> dict[str, list]:
    """domain -> its records, domains in order of first appearance, records in their order."""
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(record_domain(record, default), []).append(record)
    return groups


def domain_keys(namespace: str, group: str, overall: Mapping, domains: Mapping[str, Mapping]) -> dict:
    """Flat metric keys of one breakdown: the pooled values under `namespace/group/key` (the historical
    keys) and `namespace/overall/group/key`, each domain's under `namespace/<domain>/group/key`
    (`group` "" leaves its segment out): probe/pass@1, probe/overall/pass@1, probe/math/pass@1;
    probe/vs_base/SRR, probe/overall/vs_base/SRR, probe/countdown/vs_base/SRR."""
    middle = f"{group}/" if group else ""
    keys = {f"{namespace}/{middle}{key}": value for key, value in overall.items()}
    for domain, values in {OVERALL: overall, **domains}.items():
        keys.update({f"{namespace}/{domain}/{middle}{key}": value for key, value in values.items()})
    return keys
