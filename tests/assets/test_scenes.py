"""Every MJCF scene compiles, and rests still for 1 s from its home keyframe with no MuJoCo warning."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from robot_rl.envs.base import ASSETS_DIR, MujocoGoalEnv
from robot_rl.envs.registry import ENV_SPECS, make

ALL_SCENES = sorted(ASSETS_DIR.rglob("*scene*.xml"))
SCENES = sorted((ASSETS_DIR / "franka").rglob("*scene*.xml"))
"""The Franka scenes (a table, objects, a `home` keyframe); the quadrotor has its own tests."""
SIM_SECONDS = 1.0


def scene_id(path: Path) -> str:
    return str(path.relative_to(ASSETS_DIR))


def load_home(path: Path) -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    return model, data


def free_joints(model: mujoco.MjModel) -> list[tuple[int, int]]:
    """(qpos address, body id) of every free joint: the loose objects."""
    return [
        (int(model.jnt_qposadr[j]), int(model.jnt_bodyid[j]))
        for j in range(model.njnt)
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE
    ]


def robot_joint_qposadr(model: mujoco.MjModel) -> list[int]:
    return [
        int(model.jnt_qposadr[j])
        for j in range(model.njnt)
        if model.jnt_type[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
    ]


class TestSceneFiles:
    def test_every_env_scene_is_among_the_scenes_checked_here(self):
        used = set()
        for env_id in ENV_SPECS:
            env = make(env_id)
            used.add(ASSETS_DIR / env.unwrapped.scene_file)
            env.close()
        assert used <= set(ALL_SCENES)
        assert len(SCENES) >= 3


@pytest.mark.parametrize("path", SCENES, ids=scene_id)
class TestScene:
    def test_compiles_with_the_env_timestep_and_a_home_keyframe(self, path):
        model = mujoco.MjModel.from_xml_path(str(path))
        assert model.opt.timestep == MujocoGoalEnv.sim_dt
        assert model.key("home").id >= 0

    def test_home_keyframe_commands_the_servos_to_hold_the_home_posture(self, path):
        model, data = load_home(path)
        for a in range(model.nu):
            joint = model.actuator_trnid[a, 0]
            q = data.qpos[model.jnt_qposadr[joint]]
            name = model.actuator(a).name
            if model.actuator_dyntype[a] == mujoco.mjtDyn.mjDYN_INTEGRATOR:
                # Interpolating servo: the set point (activation) is the posture, its velocity zero.
                assert data.act[model.actuator_actadr[a]] == pytest.approx(q), name
                assert data.ctrl[a] == 0.0, name
            else:
                assert data.ctrl[a] == pytest.approx(q), name

    def test_at_home_nothing_touches_but_objects_resting_on_the_table(self, path):
        model, data = load_home(path)
        table = model.geom("table").id
        for contact in data.contact[: data.ncon]:
            pair = {contact.geom1, contact.geom2}
            assert table in pair, [model.geom(g).name for g in pair]
            other = (pair - {table}).pop()
            assert model.body(model.geom_bodyid[other]).name == "object"
            assert contact.dist > -1e-3  # resting, not sunk in

    def test_one_second_from_home_has_no_warning_no_nan_and_nothing_moves(self, path):
        model, data = load_home(path)
        robot = robot_joint_qposadr(model)
        objects = free_joints(model)
        start = data.qpos.copy()
        steps = round(SIM_SECONDS / model.opt.timestep)
        assert steps == 500
        mujoco.mj_step(model, data, nstep=steps)

        warnings = {mujoco.mjtWarning(i).name: data.warning[i].number for i in range(len(data.warning))}
        assert all(n == 0 for n in warnings.values()), warnings
        assert np.all(np.isfinite(data.qpos)) and np.all(np.isfinite(data.qvel))
        assert data.time == pytest.approx(SIM_SECONDS)
        # The servos and gravity compensation hold the arm and fingers at home.
        assert np.abs(data.qpos[robot] - start[robot]).max() < 0.01
        # Objects stay where they were put, resting on the table top (z = 0).
        for adr, body in objects:
            np.testing.assert_allclose(data.qpos[adr : adr + 3], start[adr : adr + 3], atol=1e-3)
            assert data.xpos[body][2] > 0.0
        assert np.abs(data.qvel).max() < 1e-2


@pytest.mark.parametrize("path", ALL_SCENES, ids=scene_id)
def test_every_scene_steps_one_second_from_its_first_keyframe_without_warnings(path):
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    assert model.nkey >= 1
    mujoco.mj_resetDataKeyframe(model, data, 0)
    mujoco.mj_step(model, data, nstep=round(SIM_SECONDS / model.opt.timestep))
    assert all(data.warning[w].number == 0 for w in range(len(data.warning)))
    assert np.all(np.isfinite(data.qpos)) and np.all(np.isfinite(data.qvel))
