"""Cross-rank waits that cannot hang silently: each has a timeout, and its error names the rank(s) it
was still waiting for.

- `barrier`: every rank arrives, or the ones that did fail naming the ones that did not. It runs on
  torch.distributed's key-value store (the launcher's rendezvous), not on a collective, so it works
  the same under gloo and NCCL and can tell who is missing.
- `wait_for`: poll the shared file system until a value appears (ranks may finish far apart, so no
  collective); fail when a rank it waits on has written nothing for `timeout` seconds.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

PREFIX = "leash/barrier"


class RankTimeout(RuntimeError):
    """A rank waited longer than its timeout for other ranks; the message names them."""


def barrier(what: str, timeout: float) -> None:
    """Wait until every rank of the default process group reaches a barrier named `what`.

    No-op without a process group (one process). Ranks must pass the same barriers in the same order.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    # why: the default store is the one every rank of this launch already shares; torch has no public getter
    store = dist.distributed_c10d._get_default_store()
    store_barrier(store, dist.get_rank(), dist.get_world_size(), what, timeout)


def store_barrier(store, rank: int, world_size: int, what: str, timeout: float) -> None:
    """`barrier` on a given torch.distributed Store.

    The n-th arrival at `what` (counted by the store) belongs to round (n - 1) // world_size: no rank
    can reach round r + 1 before every rank reached round r, so reusing a name is safe.
    """
    arrivals = store.add(f"{PREFIX}/{what}/arrivals", 1)
    round_ = (arrivals - 1) // world_size
    keys = [f"{PREFIX}/{what}/{round_}/rank-{r}" for r in range(world_size)]
    store.set(keys[rank], "1")
    try:
        store.wait(keys, datetime.timedelta(seconds=timeout))
    except RuntimeError:  # DistStoreError (a RuntimeError): timed out
        missing = [r for r, key in enumerate(keys) if not store.check([key])]
        raise RankTimeout(
            f"rank {rank}: waited {timeout:g} s at {what!r}; rank(s) {missing} never arrived "
            "(stuck in other work, or dead: see their logs)"
        ) from None


def wait_for(
    read: Callable[[], object | None],
    what: str,
    rank: int,
    last_activity: Callable[[], dict[int, float]],
    timeout: float,
    poll_seconds: float = 0.5,
):
    """Poll `read()` until it gives a value other than None, and return it.

    `last_activity()` -> {rank: time.time() of its last write} for the ranks `what` still waits on.
    A rank silent for `timeout` seconds (counted from the start of this wait at the earliest) makes
    this raise RankTimeout naming it.
    """
    start = last_log = time.time()
    while (value := read()) is None:
        now = time.time()
        silent = sorted(r for r, last in last_activity().items() if now - max(last, start) > timeout)
        if silent:
            raise RankTimeout(
                f"rank {rank}: gave up waiting for {what}: rank(s) {silent} wrote nothing for "
                f"{timeout:g} s (stuck, or dead: see their logs)"
            )
        if now - last_log >= 60:
            logger.info("rank %d: waiting for %s (%.0f s)", rank, what, now - start)
            last_log = now
        time.sleep(poll_seconds)
    return value
