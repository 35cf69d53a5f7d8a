"""Replay refuses demos that cannot be re-simulated, and reproduces randomized ones exactly."""

import pytest


def test_a_demo_without_simulator_states_is_refused_with_a_clear_message(tmp_path):
    import dataclasses

    import gymnasium as gym
    import numpy as np
    import pytest

    from robot_rl.data import collect
    from robot_rl.data.dataset import DemoDataset
    from robot_rl.data.replay import replay_demo

    path = tmp_path / "one.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 1, path, seed=0, progress=False, fsync=False)
    with DemoDataset(path) as ds:
        demo = ds[ds.demo_names[0]]
    stateless = dataclasses.replace(demo, states=np.zeros((len(demo.actions) + 1, 0)))
    env = gym.make("robot_rl/PandaReach-v0")
    with pytest.raises(ValueError, match="no simulator states"):
        replay_demo(env, stateless)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "randomize"),
    [
        ("robot_rl/PandaPush-v0", "wide"),
        ("robot_rl/QuadrotorWaypoint-v1", "wide"),
        (
            "robot_rl/QuadrotorHover-v1",
            {"wind_steady": [0.01, 0.03], "obs_noise_std": 0.004, "obs_latency_steps": [2, 2]},
        ),
    ],
)
def test_demos_collected_under_randomization_replay_exactly(tmp_path, env_id, randomize):
    """Noise, latency, actuation noise, gusts and steady wind are drawn from the episode's seed: the replay of
    a demo collected under them reproduces every state and observation."""
    from robot_rl.data import collect
    from robot_rl.data.replay import replay

    path = tmp_path / "demos.hdf5"
    collect(env_id, "expert", 2, path, seed=5, progress=False, fsync=False, env_kwargs={"randomize": randomize})
    report = replay(path)
    for episode in report["per_episode"]:
        assert episode["max_state_deviation"] == 0.0 and episode["max_obs_deviation"] == 0.0, episode
