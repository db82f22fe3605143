"""W&B after a resume (issue 11, point 8), read back from the offline files.

wandb 0.31's `wandb sync` uploads the files of one run id one after another (by start time) and sends
each file's history rows as they are stored; each restart of an offline run writes a new
`offline-run-*` dir whose `_step` starts at 0 again, and a SIGKILLed process loses the rows wandb-core
had not flushed yet. leash keeps one offline dir per run: a resumed run first logs the history up to its
checkpoint again (from the checkpoint's trainer_state.json, which a kill cannot tear), then moves the
earlier dirs of the run aside to RUN/wandb-superseded/. What `wandb sync RUN/wandb/offline-run-*`
uploads is then one file holding every step once, in order.
"""

from __future__ import annotations

import json
import signal

from train_runs import train
from wandb_offline import history_rows

PROBES = ("--report_to", "wandb", "--probe_steps", "2", "--probe_n", "2")


def test_a_run_crashed_then_killed_then_resumed_logs_every_step_once_in_order(
    tiny_base, tiny_probe_recipe, tmp_path
):
    run = tmp_path / "run"
    extra = (*PROBES, "--probe_recipe", str(tiny_probe_recipe))
    # an exception after the row of step 3 (checkpoint-2 is the last one): wandb flushes step 3 at exit
    crashed = train(tiny_base, run, *extra, kill="crash_after_log", step=3)
    assert crashed.returncode == 1, crashed.stderr[-3000:]
    assert "crash injected" in crashed.stderr
    # resumed from checkpoint-2, SIGKILLed after the row of step 4 (before checkpoint-4): wandb-core
    # never flushes that session's rows
    killed = train(tiny_base, run, *extra, kill="after_log", step=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done = train(tiny_base, run, *extra)
    assert done.returncode == 0, done.stderr[-3000:]

    assert len(list(run.glob("wandb/offline-run-*"))) == 1
    assert len(list(run.glob("wandb-superseded/offline-run-*"))) == 2  # moved, not deleted
    rows = history_rows(run)
    steps = [row["train/global_step"] for row in rows]
    assert steps == sorted(steps)  # in order
    trained = [row for row in rows if "train/loss" in row]
    assert [row["train/global_step"] for row in trained] == [1, 2, 3, 4]  # every step, once
    assert [row["train/global_step"] for row in rows if "probe/pass@1" in row] == [0, 2, 4]
    # the values are the run's own: those of the final trainer_state.json (steps 3-4 from the resumed
    # run, not from the sessions that died)
    state = json.loads((run / "trainer_state.json").read_text())
    losses = {row["step"]: row["loss"] for row in state["log_history"] if "loss" in row}
    assert {row["train/global_step"]: row["train/loss"] for row in trained} == losses
    run_ids = {p.name.rsplit("-", 1)[1] for p in run.glob("wandb*/offline-run-*")}
    assert run_ids == {(run / "wandb_run_id").read_text().strip()}
