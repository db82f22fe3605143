"""`python -m probe run|compare|plot|ppl ...`: parse the command line and call that command's main."""

from __future__ import annotations

import sys

USAGE = "usage: python -m probe {run,compare,plot,ppl} [options]  (python -m probe <command> --help)"


def _run(argv: list[str]) -> None:
    from probe.cli import parse
    from probe.config import ProbeConfig
    from probe.run import RunArguments, main
    from probe.tasks import TaskConfig

    task_config, probe_config, run_args = parse((TaskConfig, ProbeConfig, RunArguments), argv)
    main(task_config, probe_config, run_args)


def _ppl(argv: list[str]) -> None:
    import dataclasses

    from probe.cli import parse
    from probe.config import ProbeConfig
    from probe.ppl import PplArguments, main
    from probe.tasks import TaskConfig

    # A probe recipe works here too: its sampling section (ProbeConfig) does not apply to ppl.
    sampling_keys = {field.name for field in dataclasses.fields(ProbeConfig)}
    task_config, ppl_args = parse((TaskConfig, PplArguments), argv, recipe_ignores=sampling_keys)
    main(task_config, ppl_args)


def _compare(argv: list[str]) -> None:
    from probe.compare import main

    main(argv)


def _plot(argv: list[str]) -> None:
    from probe.plots import main

    main(argv)


COMMANDS = {"run": _run, "compare": _compare, "plot": _plot, "ppl": _ppl}


def cli(argv: list[str] | None = None) -> int:
    from probe.cli import ConfigError
    from probe.models import ModelError
    from probe.run import ProbeError
    from probe.store import ProbeDirError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[0]](argv[1:])
    except (ConfigError, ModelError, ProbeError, ProbeDirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
