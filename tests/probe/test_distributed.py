"""Cross-rank waits: every rank passes a barrier together, a missing rank is named within the timeout,
and a file wait names the rank that stopped writing."""

from __future__ import annotations

import threading
import time

import pytest
import torch.distributed as dist

from probe.distributed import RankTimeout, store_barrier, wait_for


def _run_ranks(store, world_size: int, what: str, timeout: float, ranks=None) -> dict[int, object]:
    """store_barrier on threads playing ranks `ranks` (default: all); rank -> None or the exception."""
    outcome: dict[int, object] = {}

    def one(rank):
        try:
            store_barrier(store, rank, world_size, what, timeout)
            outcome[rank] = None
        except RankTimeout as error:
            outcome[rank] = error

    threads = [
        threading.Thread(target=one, args=(r,)) for r in (ranks if ranks is not None else range(world_size))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


def test_barrier_passes_when_every_rank_arrives_and_its_name_can_be_reused():
    store = dist.HashStore()
    for _ in range(3):  # the same name, three rounds
        assert _run_ranks(store, 3, "probe start", timeout=10) == {0: None, 1: None, 2: None}


def test_barrier_names_the_rank_that_never_arrives():
    store = dist.HashStore()
    start = time.monotonic()
    outcome = _run_ranks(store, 3, "probe start", timeout=0.5, ranks=[0, 2])
    assert time.monotonic() - start < 10
    for rank in (0, 2):
        assert isinstance(outcome[rank], RankTimeout)
        assert f"rank {rank}: waited 0.5 s at 'probe start'; rank(s) [1] never arrived" in str(outcome[rank])


def test_wait_for_returns_the_value_once_it_appears():
    values = iter([None, None, {"done": True}])
    assert wait_for(lambda: next(values), "x", 0, lambda: {1: time.time()}, timeout=5, poll_seconds=0.01) == {
        "done": True
    }


def test_wait_for_names_the_rank_that_stopped_writing():
    now = time.time()
    activity = {1: now + 3600, 2: now - 3600}  # rank 1 keeps writing; rank 2 went silent long ago
    with pytest.raises(
        RankTimeout, match=r"rank 0: gave up waiting for every record: rank\(s\) \[2\] wrote nothing"
    ):
        wait_for(lambda: None, "every record", 0, lambda: activity, timeout=0.2, poll_seconds=0.01)


# --- the probe's own waits (probe.run.probe_model as one rank of two whose partner never writes)


@pytest.fixture
def lone_rank(monkeypatch, tmp_path):
    """probe_model playing rank `rank` of 2 with no partner process; returns a function running it."""
    from types import SimpleNamespace

    from tiny_lm import save_random
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import probe.run
    from probe.store import ProbeStore
    from probe.tasks import TaskConfig, make_task

    model_dir = save_random(tmp_path / "model")
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(model_dir),
        AutoTokenizer.from_pretrained(model_dir),
    )
    task = make_task(TaskConfig(num_problems=4))

    def run(rank: int):
        state = SimpleNamespace(process_index=rank, num_processes=2, is_main_process=rank == 0)
        monkeypatch.setattr(probe.run, "process_state", lambda: state)
        config = probe.run.ProbeConfig(n=2, max_new_tokens=4, rank_timeout=0.5)
        if rank != 0:  # the probe dir rank 0 would have started before the barrier
            ProbeStore(tmp_path / "p").start(probe.run.run_identity(task, config, ""), overwrite=False)
        return probe.run.probe_model(
            model, tokenizer, task, task.problems(), config, tmp_path / "p", progress=False
        )

    return run


def test_rank_0_names_the_rank_whose_records_never_come(lone_rank):
    start = time.monotonic()
    with pytest.raises(
        RankTimeout, match=r"rank 0: gave up waiting for every rank's records: rank\(s\) \[1\]"
    ):
        lone_rank(0)
    assert time.monotonic() - start < 60


def test_a_waiting_rank_names_rank_0_when_no_summary_comes(lone_rank):
    with pytest.raises(
        RankTimeout, match=r"rank 1: gave up waiting for rank 0's summary.json: rank\(s\) \[0\]"
    ):
        lone_rank(1)
