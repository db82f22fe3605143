"""probe.store: append-only records survive torn writes, shards are deterministic, configs guarded;
a run's probe points and ppl output are written and read back through one module."""

from __future__ import annotations

import json

import pytest

from probe.store import (
    ProbeDirError,
    ProbeStore,
    is_run_dir,
    load_ppl,
    load_run,
    probe_dir,
    read_json_lines,
    read_samples,
    run_ppl_dirs,
    run_probe_dirs,
    write_ppl,
)


def _record(i: int) -> dict:
    return {"problem_id": f"p{i}", "n": 2, "c": 1}


def test_a_torn_last_record_is_ignored_and_cut_before_appending(tmp_path):
    store = ProbeStore(tmp_path)
    store.open_records()
    store.append_record(_record(0))
    store.append_record(_record(1))
    with open(store.records_path, "ab") as handle:
        handle.write(b'{"problem_id": "p2", "n"')  # a kill -9 mid-write
    assert sorted(store.finished()) == ["p0", "p1"]
    store.open_records()
    store.append_record(_record(2))
    records, good = read_json_lines(store.records_path)
    assert [r["problem_id"] for r in records] == ["p0", "p1", "p2"]
    assert good == store.records_path.stat().st_size


def test_records_of_every_process_count_as_finished(tmp_path):
    (tmp_path / "records").mkdir()
    ProbeStore(tmp_path, rank=0).append_record(_record(0))
    ProbeStore(tmp_path, rank=1).append_record(_record(1))
    assert sorted(ProbeStore(tmp_path, rank=0).finished()) == ["p0", "p1"]


def test_sample_shards_are_byte_identical_for_identical_rows(tmp_path):
    rows = [{"completion": "1+2", "length": 4, "answer": "1+2", "correct": True}] * 3
    paths = []
    for name in ("a", "b"):
        store = ProbeStore(tmp_path / name)
        (tmp_path / name / "samples").mkdir(parents=True)
        shard = store.shard(7)
        shard.write(rows[:2])
        shard.write(rows[2:])
        assert not shard.path.exists(), "the shard appears only when committed"
        shard.commit()
        paths.append(shard.path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert [r["sample"] for r in read_samples(paths[0])] == [0, 1, 2]
    assert read_samples(paths[0])[1]["completion"] == "1+2"


def test_a_discarded_shard_leaves_no_file(tmp_path):
    store = ProbeStore(tmp_path)
    (tmp_path / "samples").mkdir()
    shard = store.shard(0)
    shard.write([{"completion": "x"}])
    shard.discard()
    assert list((tmp_path / "samples").iterdir()) == []


def test_another_config_is_refused_and_nothing_changes(tmp_path):
    store = ProbeStore(tmp_path)
    store.start({"probe": {"n": 4}}, overwrite=False)
    store.append_record(_record(0))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ProbeDirError, match=r"probe\.n"):
        store.check_config({"probe": {"n": 8}}, overwrite=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    store.check_config({"probe": {"n": 4}}, overwrite=False)  # the same run: resumable


def test_overwrite_replaces_another_run_but_keeps_the_same_one(tmp_path):
    store = ProbeStore(tmp_path)
    store.start({"probe": {"n": 4}}, overwrite=False)
    store.append_record(_record(0))
    store.start({"probe": {"n": 4}}, overwrite=True)
    assert list(store.finished()) == ["p0"]
    store.check_config({"probe": {"n": 8}}, overwrite=True)
    store.start({"probe": {"n": 8}}, overwrite=True)
    assert store.finished() == {}
    assert json.loads((tmp_path / "config.json").read_text()) == {"probe": {"n": 8}}


def test_probe_files_without_a_config_are_not_taken_over(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ProbeDirError, match="no config.json"):
        ProbeStore(tmp_path).check_config({"probe": {"n": 4}}, overwrite=False)


# --- a training run's probe points


def test_probe_dirs_of_a_run_are_written_and_read_in_step_order(tmp_path):
    from fake_probe import write_probe_dir

    run = tmp_path / "run"
    for step in (100, 0, 20):
        write_probe_dir(probe_dir(run, step), {"p0": [("1+2", 2, True)]})
    assert probe_dir(run, 20) == run / "probes" / "step-000020"
    (run / "probes" / "step-notes").mkdir()  # not a probe point
    assert run_probe_dirs(run) == [
        (0, probe_dir(run, 0)),
        (20, probe_dir(run, 20)),
        (100, probe_dir(run, 100)),
    ]
    assert is_run_dir(run) and not is_run_dir(probe_dir(run, 0))
    probes = load_run(run)
    assert [(p.step, p.label) for p in probes] == [
        (0, "run/step-0"),
        (20, "run/step-20"),
        (100, "run/step-100"),
    ]
    assert probes[0].n == 2 and probes[0].zeta == 0.05


def test_an_unfinished_probe_point_is_refused_or_skipped_with_a_warning(tmp_path):
    from fake_probe import write_probe_dir

    run = tmp_path / "run"
    write_probe_dir(probe_dir(run, 0), {"p0": [("1+2", 2, True)]})
    write_probe_dir(probe_dir(run, 5), {"p0": [("1+2", 2, True)]}, summary=False)
    with pytest.raises(ProbeDirError, match="step-000005: no summary.json"):
        load_run(run)
    with pytest.warns(UserWarning, match="step-000005: no summary.json"):
        assert [p.step for p in load_run(run, skip_unfinished=True)] == [0]
    with pytest.raises(ProbeDirError, match="not a training run dir"):
        load_run(probe_dir(run, 0))


def test_ppl_output_round_trips_as_mean_per_problem(tmp_path):
    rows = [
        {"problem_id": "a", "trace_index": 0, "ppl": 2.0, "num_tokens": 3},
        {"problem_id": "a", "trace_index": 1, "ppl": 4.0, "num_tokens": 5},
        {"problem_id": "b", "trace_index": 0, "ppl": 7.0, "num_tokens": 1},
    ]
    write_ppl(tmp_path / "run" / "ppl" / "base", rows, {"mean_ppl": 5.0})
    assert run_ppl_dirs(tmp_path / "run") == [tmp_path / "run" / "ppl" / "base"]
    assert load_ppl(tmp_path / "run" / "ppl" / "base") == {"a": 3.0, "b": 7.0}
    assert json.loads((tmp_path / "run" / "ppl" / "base" / "ppl_summary.json").read_text()) == {
        "mean_ppl": 5.0
    }
