"""The Foxglove scene of a MuJoCo model and the MCAP writer under it: hand-encoded bytes, primitives, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate

from robot_rl.data.mcap_file import McapFile
from robot_rl.data.mcap_log import RolloutLog
from robot_rl.data.mcap_scene import MujocoScene
from robot_rl.envs.registry import make
from tests.evaluation.test_mcap_log import read_mcap


@pytest.mark.parametrize("env_id", ["robot_rl/PandaPush-v1", "robot_rl/QuadrotorTrack-v1"])
def test_hand_encoded_transforms_decode_to_the_bodies_poses(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=1)
    for _ in range(3):
        env.step(env.action_space.sample())
    data = env.unwrapped.data
    scene = MujocoScene(env.unwrapped.model)
    for stamp in (0, 1, 999_999_999, 10**9, 1_765_000_000_123_456_789):
        decoded = FrameTransforms.FromString(scene.transforms(data, stamp))
        assert [t.child_frame_id for t in decoded.transforms] == [scene.frames[b] for b in scene.moving]
        for transform, body in zip(decoded.transforms, scene.moving, strict=True):
            assert transform.parent_frame_id == "world"
            assert transform.timestamp.seconds * 10**9 + transform.timestamp.nanos == stamp
            t, r = transform.translation, transform.rotation
            assert [t.x, t.y, t.z] == data.xpos[body].tolist()
            assert [r.w, r.x, r.y, r.z] == data.xquat[body].tolist()
    env.close()


def test_franka_meshes_are_drawn_with_their_collision_primitives() -> None:
    env = make("robot_rl/PandaPush-v1")
    env.reset(seed=0)
    scene = MujocoScene(env.unwrapped.model, goal_radius=0.05)
    scene.place_static(env.unwrapped.data)
    update = SceneUpdate.FromString(scene.scene_update(5, np.array([0.5, 0.1, 0.025])))
    link2 = next(e for e in update.entities if e.id == "body/link2")
    # Two collision capsules: a cylinder and two end spheres each, in the (opaque) colour of the visual mesh.
    assert (len(link2.cylinders), len(link2.spheres), len(link2.cubes)) == (2, 4, 0)
    assert link2.frame_locked and link2.frame_id == "link2" and link2.cylinders[0].color.a == 1.0
    assert scene.notes == []  # no mesh fell back to its bounding box
    goal = next(e for e in update.entities if e.id == "goal")
    assert goal.spheres[0].size.x == pytest.approx(0.1)
    assert [goal.spheres[0].pose.position.x, goal.spheres[0].pose.position.y] == [0.5, 0.1]
    assert all(e.timestamp.nanos == 5 for e in update.entities)
    env.close()


class _BrokenStream:
    """A file whose writes fail the way a full disk does."""

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


def test_a_failing_write_turns_the_log_off_with_one_warning(tmp_path: Path) -> None:
    lines: list[str] = []
    log = McapFile(tmp_path / "x.mcap", label="--log x.mcap", warn=lines.append)
    log._stream = _BrokenStream()  # noqa: SLF001 - simulate the disk filling up under an open writer
    log._writer._Writer__stream = log._stream  # noqa: SLF001
    for i in range(20_000):  # past the first chunk: the writer flushes to the (full) stream
        log.write("/robot_rl/info", i, b"{}" * 64)
    log.close()
    assert not log.enabled and len(lines) == 1
    assert "write failed, the file is incomplete (No space left on device)" in lines[0]


def test_background_and_batched_logs_write_what_the_direct_one_writes(tmp_path: Path) -> None:
    env = make("robot_rl/PandaReach-v1")
    obs, _ = env.reset(seed=0)
    data = env.unwrapped.data
    contents = {}
    for mode in ("direct", "background", "batched"):
        log = RolloutLog(
            tmp_path / f"{mode}.mcap",
            env.unwrapped.model,
            0.05,
            background=mode == "background",
            batched=mode == "batched",
        )
        log.start_episode(0, 0, 0, data, obs["desired_goal"])
        for t in range(5):
            log.action(t, 0, t, np.full(4, 0.1 * t), np.full(4, 0.05 * t))
            log.goal(t, 0, t, obs["desired_goal"], obs["achieved_goal"], -1.0, -1.0 - t)
            log.poses(t, data)
        log.end_episode(9, 0, {"seed": 0, "success": False, "return": -5.0, "length": 5})
        assert log.close() == str(tmp_path / f"{mode}.mcap")
        messages = read_mcap(tmp_path / f"{mode}.mcap")
        contents[mode] = {
            topic: [(stamp, m if isinstance(m, dict) else m.SerializeToString()) for stamp, m in items]
            for topic, items in messages.items()
        }
    assert contents["background"] == contents["direct"] == contents["batched"]
    env.close()
