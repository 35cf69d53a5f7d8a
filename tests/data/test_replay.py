"""Replay refuses demos that cannot be re-simulated."""


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
