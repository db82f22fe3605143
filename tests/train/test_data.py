"""train.data: the probe set's first N problems for in-training probes."""

from __future__ import annotations

import pytest

from probe.cli import ConfigError
from probe.tasks import TaskConfig, make_task
from train.data import first_problems

CONFIG = TaskConfig(task="countdown", seed=5, num_problems=12, min_numbers=3, max_numbers=4, max_target=60)


def test_first_problems_are_the_sets_prefix_under_a_config_that_says_so():
    every = make_task(CONFIG).problems()
    task, problems = first_problems(CONFIG, 5, every)
    assert [p.problem_id for p in problems] == [p.problem_id for p in every[:5]]
    assert task.config.num_problems == 5 and task.config.seed == CONFIG.seed


def test_a_subset_that_is_not_the_sets_prefix_is_refused():
    every = make_task(CONFIG).problems()
    with pytest.raises(ConfigError, match="probe_num_problems=5"):
        first_problems(CONFIG, 5, every[::-1])
