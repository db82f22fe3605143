"""`python -m train.study`: refusals before any work, and a tiny end-to-end study (2 entries x 2 seeds)
that trains, probes, compares at matched pass@1, logs to W&B offline as one group, and resumes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_grpo import TRAIN_TASK
from wandb_offline import wandb_records

from probe import store
from probe.cli import ConfigError, RunFailed
from probe.files import write_manifest
from train import study
from train.study import StudyConfig, check_study, plan_runs

ROOT = Path(__file__).resolve().parents[2]


def write_recipes(tmp_path: Path, tiny_base: Path, tiny_probe_recipe: Path, **train_overrides) -> Path:
    """A tiny train recipe (the toy recipe, 4 steps, probes every 2 on 12 problems at n = 4) and a probe
    recipe whose own budget (n = 16 on all 24 problems) is the study's final one."""
    probe_recipe = tmp_path / "probe.yaml"
    probe_recipe.write_text(tiny_probe_recipe.read_text() + "n: 16\nbatch_size: 16\nmax_new_tokens: 16\n")
    recipe = yaml.safe_load((ROOT / "configs" / "train" / "countdown_tiny.yaml").read_text())
    recipe.update(
        model_name_or_path=str(tiny_base), probe_recipe=str(probe_recipe), probe_n=4, probe_num_problems=12,
        probe_steps=2, max_steps=4, save_steps=2, logging_steps=1, max_completion_length=16,
        per_device_train_batch_size=16, train_task=TRAIN_TASK, learning_rate=1e-3, epsilon_high=0.2,
    )  # fmt: skip
    recipe.update(train_overrides)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def study_config(tmp_path: Path, train_recipe: Path, **overrides) -> StudyConfig:
    settings = dict(
        output_dir=str(tmp_path / "study"),
        train_recipe=str(train_recipe),
        entries={"grpo": {}, "pass_at_k": {"advantage": "pass_at_k", "pass_k": 2}},
        seeds=[0, 1],
        num_levels=2,
    )
    settings.update(overrides)
    return StudyConfig(**settings)


# --- refusals (before anything is written)


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"entries": {"grpo": {"max_steps": 8}}}, r"entries.grpo overrides \['max_steps'\]"),
        ({"entries": {"grpo": {}, "bad one": {}}}, "'bad one' is not a usable name"),
        ({"entries": {"kl": {"beta": 0.04}}}, "reference_entry: 'grpo' is not an entry"),
        ({"seeds": [1, 1]}, "distinct seeds"),
        ({"num_threads": -1}, "num_threads must be >= 0"),
        ({"levels": [0.0]}, "levels must be > 0"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"workers": 2, "worker": True}, r"workers must be >= 1 \(1 in a worker\)"),
    ],
)
def test_a_bad_study_is_refused_naming_the_problem(overrides, named, tmp_path):
    with pytest.raises(ConfigError, match=named):
        check_study(study_config(tmp_path, tmp_path / "unused.yaml", **overrides))


def test_a_study_launched_on_several_processes_is_refused(monkeypatch, tmp_path):
    # every rank would drive the whole study (and start its own workers): refused before anything is written
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = study_config(tmp_path, tmp_path / "train.yaml")
    with pytest.raises(ConfigError, match=r"one process.*python -m train.study.*workers"):
        check_study(config)
    assert not (tmp_path / "study").exists()


def test_an_entry_with_a_bad_recipe_is_refused_before_any_run(tiny_base, tiny_probe_recipe, tmp_path):
    recipe = write_recipes(tmp_path, tiny_base, tiny_probe_recipe)
    entries = {"grpo": {}, "typo": {"learning_rat": 1e-4}}
    with pytest.raises(ConfigError, match=r"entries.typo \(seed 0\).*learning_rat"):
        plan_runs(study_config(tmp_path, recipe, entries=entries))
    entries = {"grpo": {}, "more": {"per_device_train_batch_size": 32}}
    with pytest.raises(ConfigError, match="the same budget means the same samples per step"):
        plan_runs(study_config(tmp_path, recipe, entries=entries))
    assert not (tmp_path / "study").exists()


# --- resumable run by run (the trainer replaced: no model is trained here)


def fake_trainer(calls: list[str], dies: str | None = None):
    """A stand-in for train.grpo.main: records the run, writes its final model and the manifest that
    marks it whole (a finished run), or, for the run named `dies`, fails before that as a killed one."""

    def train(config, model_args):
        name = config.run_name.split("/", 1)[1]
        calls.append(name)
        if name == dies:
            raise RunFailed(f"{name} stopped")
        run_dir = Path(config.output_dir)
        (run_dir / "model.safetensors").write_bytes(b"weights")
        write_manifest(run_dir, store.FINAL_MANIFEST, ["model.safetensors"], global_step=config.max_steps)

    return train


def test_a_study_resumes_run_by_run(tiny_base, tiny_probe_recipe, tmp_path, monkeypatch):
    recipe = write_recipes(tmp_path, tiny_base, tiny_probe_recipe)
    config = study_config(tmp_path, recipe, train_only=True, report_to="none")
    base_point = tmp_path / "base_point"
    base_point.mkdir()
    (base_point / "summary.json").write_text("{}")
    monkeypatch.setattr(study, "probe_base", lambda run, study_dir: (base_point, base_point))

    # a run dies: the others still train, the study fails naming it, and nothing finished is lost
    calls = []
    monkeypatch.setattr(study, "train_main", fake_trainer(calls, dies="pass_at_k/seed-0"))
    with pytest.raises(RunFailed, match=r"1 run\(s\) failed.*pass_at_k/seed-0: pass_at_k/seed-0 stopped"):
        study.main(config)
    assert calls == ["grpo/seed-0", "grpo/seed-1", "pass_at_k/seed-0", "pass_at_k/seed-1"]
    # run again: the finished runs are reused, only the dead one trains (train.grpo.main resumes it from
    # its last checkpoint; tested in test_grpo and by the end-to-end study below)
    calls.clear()
    monkeypatch.setattr(study, "train_main", fake_trainer(calls))
    study.main(config)
    assert calls == ["pass_at_k/seed-0"]
    for run_dir in run_dirs(Path(config.output_dir)):
        assert store.is_finished(store.probe_dir(run_dir, 0)), "every run gets the base's probe as step 0"
    invocations = (Path(config.output_dir) / "invocations.jsonl").read_text().splitlines()
    assert len(invocations) == 1 and json.loads(invocations[0])["train_only"] is True
    # a run dir made under another recipe is refused, not reused or overwritten
    entries = {"grpo": {"learning_rate": 1e-4}, "pass_at_k": config.entries["pass_at_k"]}
    changed = study_config(tmp_path, recipe, train_only=True, report_to="none", entries=entries)
    with pytest.raises(ConfigError, match=r"grpo/seed-0 holds a run of another recipe \(changed: learning"):
        study.main(changed)


def test_final_probes_skip_one_another_process_is_making_then_wait_for_it(tmp_path, monkeypatch):
    # two runs; another process holds run a's final-probe lock: run b is probed first, then a (the lock
    # released without a finished probe, as by a process that died: this one makes it)
    config = SimpleNamespace(probe_recipe="unused")
    runs = [study.Run(e, 0, tmp_path / e / "seed-0", {}, config, None) for e in ("a", "b")]
    trajectories = {r.name: [{"step": 0, "gain": 0.0}, {"step": 10, "gain": 0.02}] for r in runs}
    locked = store.final_probe_dir(runs[0].directory, 10)
    locked.parent.mkdir(parents=True)
    holder = open(locked.with_name(f".{locked.name}.lock"), "a")
    fcntl.flock(holder, fcntl.LOCK_EX)
    calls = []

    def probe(task_config, suite_config, final_config, arguments):
        calls.append(Path(arguments.model).relative_to(tmp_path).as_posix())
        fcntl.flock(holder, fcntl.LOCK_UN)
        Path(arguments.output_dir).mkdir(parents=True)
        (Path(arguments.output_dir) / store.SUMMARY).write_text("{}")

    monkeypatch.setattr(study, "load_one_task_probe_recipe", lambda path, user: (None, None))
    monkeypatch.setattr(study, "probe_main", probe)
    dirs = study.final_probes(runs, trajectories, level=None)
    assert calls == ["b/seed-0/checkpoint-10", "a/seed-0/checkpoint-10"]
    assert dirs == {"a/seed-0": locked, "b/seed-0": store.final_probe_dir(runs[1].directory, 10)}
    study.final_probes(runs, trajectories, level=None)  # finished probes are read, not redone
    assert len(calls) == 2
    holder.close()


# --- end to end


def run_dirs(study_dir: Path) -> list[Path]:
    return sorted(study_dir.glob("runs/*/seed-*"))


@pytest.mark.slow
def test_a_tiny_study_trains_compares_logs_and_resumes(tiny_base, tiny_probe_recipe, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: W&B falls back to offline by itself
    config = study_config(tmp_path, write_recipes(tmp_path, tiny_base, tiny_probe_recipe))
    study_dir = Path(config.output_dir)
    result = study.main(config)

    # every run trained from the shared base probe, probed every 2 steps, and once more at the end
    base_point = store.probe_dir(store.study_base_dir(study_dir), 0)
    assert [p.relative_to(study_dir).as_posix() for p in run_dirs(study_dir)] == [
        "runs/grpo/seed-0", "runs/grpo/seed-1", "runs/pass_at_k/seed-0", "runs/pass_at_k/seed-1",
    ]  # fmt: skip
    for run_dir in run_dirs(study_dir):
        assert [step for step, _ in store.run_probe_dirs(run_dir)] == [0, 2, 4]
        copied = store.probe_dir(run_dir, 0) / store.PROBLEMS
        assert copied.read_bytes() == (base_point / store.PROBLEMS).read_bytes()
        assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["seed"] == int(run_dir.name[-1])
        (final,) = [p for p in (run_dir / store.RUN_FINAL_PROBES).iterdir() if p.is_dir()]  # not its lock
        probe = store.load_probe(final)
        assert (probe.n, len(probe.records)) == (16, 24)
    assert len(store.load_probe(base_point).records) == 12
    # the comparison: both entries at the final budget with both seeds, at matched levels
    assert result["final"]["n"] == 16 and result["trajectory"]["n"] == 4
    for entry in ("grpo", "pass_at_k"):
        assert result["final"]["entries"][entry]["gain"]["seeds"] == 2
        assert "NSCR@16" in result["final"]["entries"][entry]
    text = (study_dir / "study.md").read_text()
    assert "| pass_at_k |" in text and "## At n = 16" in text
    # the noise floor: the base probed again at the final budget with the next sampling seed
    noise_dir = store.study_noise_dir(study_dir, 1)
    assert (store.load_probe(noise_dir).summary["seed"], store.load_probe(noise_dir).n) == (1, 16)
    assert result["final"]["noise_floor"]["sampling_seed"] == 1 and "E@16" in result["final"]["noise_floor"]
    assert "| *base vs base (sampling seed 1)* |" in text
    assert (study_dir / "trajectories.png").stat().st_size > 10_000
    # W&B: every run and the summary in the study's group, offline
    groups = []
    for path in study_dir.rglob("wandb/offline-run-*/run-*.wandb"):
        groups += [r.run.run_group for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
    assert groups and set(groups) == {"study"} and len(set(study_dir.rglob("offline-run-*"))) == 5

    # rerun: every finished run is reused, nothing trains again
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "train_main", no_training)
    again = study.main(config)
    assert again["final"] == result["final"]
    # a run killed after its step-2 checkpoint resumes from it
    monkeypatch.undo()
    killed = study_dir / "runs" / "grpo" / "seed-1"
    for path in (killed / "checkpoint-4", store.probe_dir(killed, 4)):
        shutil.rmtree(path)
    (killed / store.FINAL_MANIFEST).unlink()  # killed before its final save
    kept = (killed / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns
    study.main(config)
    assert (killed / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == kept
    state = json.loads((killed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and store.is_finished(store.probe_dir(killed, 4))


@pytest.mark.slow
def test_two_workers_share_a_study_each_run_trained_once(tiny_base, tiny_probe_recipe, tmp_path, caplog):
    # the parent and one child (a real `python -m train.study` process) split the runs and the final
    # probes through the study's locks: every run is trained by exactly one of them, every final probe made
    # once, and the parent alone writes the comparison
    config = study_config(
        tmp_path, write_recipes(tmp_path, tiny_base, tiny_probe_recipe), workers=2, report_to="none"
    )
    study_dir = Path(config.output_dir)
    with caplog.at_level("INFO", logger="train.study"):
        result = study.main(config)
    names = [f"{e}/seed-{s}" for e in config.entries for s in config.seeds]

    def trained(text: str) -> set[str]:
        return {name for name in names if f"{name} trained" in text}

    by_parent, by_child = trained(caplog.text), trained((study_dir / "workers" / "worker-1.log").read_text())
    assert by_parent | by_child == set(names) and not by_parent & by_child
    assert by_child, "the child trained no run: the study was not shared"
    invocations = [json.loads(line) for line in (study_dir / "invocations.jsonl").read_text().splitlines()]
    assert len(invocations) == 2 and {i["train_only"] for i in invocations} == {False}
    for run_dir in run_dirs(study_dir):
        (final,) = [p for p in (run_dir / store.RUN_FINAL_PROBES).iterdir() if p.is_dir()]
        assert store.is_finished(final)
    assert result["final"]["entries"]["pass_at_k"]["gain"]["seeds"] == 2
    assert yaml.safe_load((study_dir / "workers" / "config.yaml").read_text())["worker"] is True
