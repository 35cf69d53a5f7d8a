"""Scripted experts: success over seeds (fast tier: a handful; slow tier: the 100-seed target)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.franka.experts import make_expert
from robot_rl.envs.registry import make

TASKS = ["PandaReach", "PandaPush", "PandaSlide", "PandaPickAndPlace"]


def expert_success(task: str, seeds: range) -> float:
    env = make(f"robot_rl/{task}-v0")
    expert = make_expert(task)
    successes = 0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            done = terminated or truncated
        successes += int(info["is_success"])
    env.close()
    return successes / len(seeds)


class TestExpertSuccess:
    @pytest.mark.parametrize("task", ["PandaReach", "PandaPush", "PandaPickAndPlace"])
    def test_expert_solves_most_of_a_few_seeds(self, task):
        assert expert_success(task, range(5000, 5010)) >= 0.8

    @pytest.mark.slow
    @pytest.mark.parametrize("task", TASKS)
    def test_expert_reaches_95_percent_over_100_seeds(self, task):
        assert expert_success(task, range(100)) >= 0.95


class TestExpertFactory:
    def test_dense_ids_get_the_same_expert(self):
        assert type(make_expert("robot_rl/PandaPushDense-v0")) is type(make_expert("PandaPush-v0"))

    def test_unknown_task_names_the_valid_ones(self):
        with pytest.raises(ValueError, match="PandaPush"):
            make_expert("robot_rl/QuadrotorHover-v1")

    def test_expert_actions_stay_in_the_action_space(self):
        env = make("robot_rl/PandaPickAndPlace-v0")
        expert = make_expert("PandaPickAndPlace")
        obs, _ = env.reset(seed=3)
        for _ in range(50):
            action = expert(obs)
            assert action.shape == (4,)
            assert np.all(np.abs(action) <= 1.0 + 1e-9)
            obs, *_ = env.step(action)
