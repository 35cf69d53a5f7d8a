"""A MuJoCo model as a Foxglove 3-D scene: primitives per body (``foxglove.SceneUpdate``) and their poses per step.

Foxglove draws a scene from two typed messages, no URDF needed:

- one ``foxglove.SceneUpdate`` per episode: an entity per body, locked to the body's frame (``frame_locked``),
  holding the body's geoms as primitives in the body frame; static bodies (welded to the world) are drawn in
  ``world``; plus a ``goal`` entity (a translucent sphere of the success radius at the desired goal);
- one ``foxglove.FrameTransforms`` per step: ``world -> body`` for every moving body.

Geoms become primitives as MuJoCo shapes them: box -> cube, sphere and ellipsoid -> sphere (with three
diameters), cylinder -> cylinder, capsule -> a cylinder with a sphere on each end, plane -> a thin square
(``2 * size`` across, 10 m when infinite). Mesh geoms have no primitive: a body whose visible geoms are meshes
is drawn with its collision primitives (group 3: the Franka's capsules and boxes) in the mesh's colour, and a
body without any with each mesh's bounding box. Geoms in groups 0-2 are the visible ones (the MuJoCo viewer's
default); fully transparent ones are skipped. Colour: the geom's material when it has one, else its ``rgba``.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

WORLD_FRAME = "world"
"""The fixed frame every transform hangs from."""
_VISIBLE_GROUPS = (0, 1, 2)
_COLLISION_GROUP = 3
_INFINITE_PLANE_SIZE = 10.0
"""Side of the square drawn for an infinite plane [m]."""


def _pb() -> Any:
    """The Foxglove protobuf classes (imported on first use)."""
    from foxglove_schemas_protobuf import FrameTransforms_pb2, SceneUpdate_pb2

    return SceneUpdate_pb2.SceneUpdate, FrameTransforms_pb2.FrameTransforms


def set_stamp(message: Any, stamp_ns: int) -> None:
    """Set a ``google.protobuf.Timestamp`` field from nanoseconds."""
    message.seconds, message.nanos = divmod(int(stamp_ns), 1_000_000_000)


def _set_pose(pose: Any, pos: np.ndarray, quat_wxyz: np.ndarray) -> None:
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in pos)
    w, x, y, z = (float(v) for v in quat_wxyz)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w


def _set_color(color: Any, rgba: np.ndarray) -> None:
    color.r, color.g, color.b, color.a = (float(v) for v in rgba)


def _body_name(model: mujoco.MjModel, body: int) -> str:
    return model.body(body).name or f"body{body}"


class MujocoScene:
    """Builds the scene messages of one MuJoCo model (see the module docstring).

    Args:
        model: The compiled model (``env.unwrapped.model``).
        goal_radius: Radius of the goal sphere [m] (the env's success distance); None: a 2 cm marker.
    """

    def __init__(self, model: mujoco.MjModel, goal_radius: float | None = None) -> None:
        self.model = model
        self.goal_radius = 0.02 if goal_radius is None else float(goal_radius)
        self.moving = [b for b in range(1, model.nbody) if model.body_weldid[b] != 0 or model.body_mocapid[b] >= 0]
        """Bodies with a frame of their own (they move); the others are drawn in ``world``."""
        self.frames = {b: _body_name(model, b) for b in self.moving}
        self.geoms = self._choose_geoms()
        """Per body: ``(geom, rgba)`` pairs drawn as primitives, and mesh geoms drawn as their bounding box."""
        self.notes: list[str] = []
        boxes = sum(1 for items in self.geoms.values() for _, _, as_box in items if as_box)
        if boxes:
            self.notes.append(f"{boxes} mesh geoms drawn as their bounding boxes")
        self._scene_cls = _pb()[0]
        self._check_wire_format()
        self._poses = np.zeros(len(self.moving), dtype=_POSE_RECORD)
        for name, value in _POSE_TAGS.items():
            self._poses[name] = value
        self._names = [_field(2, WORLD_FRAME.encode()) + _field(3, self.frames[b].encode()) for b in self.moving]
        self._index = np.array(self.moving, dtype=np.intp)
        self._heads: dict[int, list[bytes]] = {}
        self._bodies: Any = None
        self._seconds: tuple[int, bytes] = (-1, b"")
        """The seconds of the last stamp encoded and their field (it changes once a second)."""

    def _color(self, geom: int) -> np.ndarray:
        material = self.model.geom_matid[geom]
        return self.model.mat_rgba[material] if material >= 0 else self.model.geom_rgba[geom]

    def _choose_geoms(self) -> dict[int, list[tuple[int, np.ndarray, bool]]]:
        model = self.model
        by_body: dict[int, list[int]] = {}
        for geom in range(model.ngeom):
            by_body.setdefault(int(model.geom_bodyid[geom]), []).append(geom)
        chosen: dict[int, list[tuple[int, np.ndarray, bool]]] = {}
        mesh = mujoco.mjtGeom.mjGEOM_MESH
        for body, geoms in by_body.items():
            visible = [g for g in geoms if model.geom_group[g] in _VISIBLE_GROUPS and self._color(g)[3] > 0.0]
            primitives = [(g, self._color(g), False) for g in visible if model.geom_type[g] != mesh]
            meshes = [g for g in visible if model.geom_type[g] == mesh]
            if meshes:
                stand_ins = [g for g in geoms if model.geom_group[g] == _COLLISION_GROUP and model.geom_type[g] != mesh]
                if stand_ins:
                    colour = self._color(meshes[0]).copy()
                    colour[3] = 1.0
                    primitives += [(g, colour, False) for g in stand_ins]
                else:
                    primitives += [(g, self._color(g), True) for g in meshes]
            if primitives:
                chosen[body] = primitives
        return chosen

    def _add_geom(
        self, entity: Any, geom: int, rgba: np.ndarray, as_box: bool, pos: np.ndarray, quat: np.ndarray
    ) -> None:
        model = self.model
        kind = mujoco.mjtGeom(model.geom_type[geom])
        size = model.geom_size[geom]
        if as_box:
            aabb = model.geom_aabb[geom]  # centre (3) and half sizes (3) in the geom frame
            centre = np.empty(3)
            mujoco.mju_rotVecQuat(centre, aabb[:3], quat)
            cube = entity.cubes.add()
            _set_pose(cube.pose, pos + centre, quat)
            cube.size.x, cube.size.y, cube.size.z = (2.0 * float(v) for v in aabb[3:])
            _set_color(cube.color, rgba)
        elif kind in (mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_PLANE):
            cube = entity.cubes.add()
            _set_pose(cube.pose, pos, quat)
            if kind == mujoco.mjtGeom.mjGEOM_PLANE:
                sx, sy = (2.0 * float(v) if v > 0 else _INFINITE_PLANE_SIZE for v in size[:2])
                cube.size.x, cube.size.y, cube.size.z = sx, sy, 0.001
            else:
                cube.size.x, cube.size.y, cube.size.z = (2.0 * float(v) for v in size)
            _set_color(cube.color, rgba)
        elif kind in (mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_ELLIPSOID):
            sphere = entity.spheres.add()
            _set_pose(sphere.pose, pos, quat)
            radii = size if kind == mujoco.mjtGeom.mjGEOM_ELLIPSOID else np.full(3, size[0])
            sphere.size.x, sphere.size.y, sphere.size.z = (2.0 * float(v) for v in radii)
            _set_color(sphere.color, rgba)
        elif kind in (mujoco.mjtGeom.mjGEOM_CYLINDER, mujoco.mjtGeom.mjGEOM_CAPSULE):
            radius, half = float(size[0]), float(size[1])
            cylinder = entity.cylinders.add()
            _set_pose(cylinder.pose, pos, quat)
            cylinder.size.x = cylinder.size.y = 2.0 * radius
            cylinder.size.z = 2.0 * half
            cylinder.bottom_scale = cylinder.top_scale = 1.0
            _set_color(cylinder.color, rgba)
            if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
                axis = np.empty(3)
                mujoco.mju_rotVecQuat(axis, np.array([0.0, 0.0, half]), quat)
                for end in (pos + axis, pos - axis):
                    sphere = entity.spheres.add()
                    _set_pose(sphere.pose, end, quat)
                    sphere.size.x = sphere.size.y = sphere.size.z = 2.0 * radius
                    _set_color(sphere.color, rgba)
        # Other types (height fields, SDFs) have no primitive: left out.

    @property
    def scene_ready(self) -> bool:
        """:meth:`place_static` has run (the scene can be written)."""
        return self._bodies is not None

    def place_static(self, data: mujoco.MjData) -> None:
        """Build the bodies' entities; the static ones are placed from ``data`` (after a forward pass) for good."""
        self._bodies = self._build_bodies(data)

    def scene_update(self, stamp_ns: int, goal: np.ndarray | None = None) -> bytes:
        """The episode's ``foxglove.SceneUpdate``: every body's primitives and the goal.

        Args:
            stamp_ns: The entities' timestamp [ns].
            goal: The desired goal position [m; world frame], or None for none.

        Raises:
            ValueError: :meth:`place_static` has not run.
        """
        if self._bodies is None:
            raise ValueError("call `place_static(data)` first: the static bodies are placed from the data.")
        for entity in self._bodies.entities:
            set_stamp(entity.timestamp, stamp_ns)
        out = self._bodies.SerializeToString()
        # Two serialized SceneUpdates concatenated are one with both entity lists (protobuf merges repeated fields).
        return out + self.goal_update(goal, stamp_ns) if goal is not None else out

    def _build_bodies(self, data: mujoco.MjData) -> Any:
        model = self.model
        update = self._scene_cls()
        world = update.entities.add()
        world.id, world.frame_id, world.frame_locked = "static", WORLD_FRAME, True
        quat = np.empty(4)
        for body, items in self.geoms.items():
            if body in self.frames:
                entity = update.entities.add()
                entity.id = f"body/{self.frames[body]}"
                entity.frame_id, entity.frame_locked = self.frames[body], True
                for geom, rgba, as_box in items:
                    self._add_geom(entity, geom, rgba, as_box, model.geom_pos[geom], model.geom_quat[geom])
            else:
                for geom, rgba, as_box in items:
                    mujoco.mju_mat2Quat(quat, data.geom_xmat[geom])
                    self._add_geom(world, geom, rgba, as_box, data.geom_xpos[geom].copy(), quat.copy())
        return update

    def goal_entity(self, goal: np.ndarray, stamp_ns: int) -> Any:
        """The ``goal`` entity: a translucent green sphere of radius ``goal_radius`` at ``goal`` [m; world]."""
        from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity

        entity = SceneEntity(id="goal", frame_id=WORLD_FRAME)
        set_stamp(entity.timestamp, stamp_ns)
        sphere = entity.spheres.add()
        _set_pose(sphere.pose, np.asarray(goal, dtype=np.float64)[:3], np.array([1.0, 0.0, 0.0, 0.0]))
        sphere.size.x = sphere.size.y = sphere.size.z = 2.0 * self.goal_radius
        _set_color(sphere.color, np.array([0.1, 0.8, 0.2, 0.35]))
        return entity

    def goal_update(self, goal: np.ndarray, stamp_ns: int) -> bytes:
        """A ``foxglove.SceneUpdate`` that moves only the goal (a moving reference)."""
        update = self._scene_cls()
        update.entities.append(self.goal_entity(goal, stamp_ns))
        return update.SerializeToString()

    def poses(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """A copy of every body's pose: positions (nbody, 3) [m] and quaternions (nbody, 4) (w, x, y, z).

        All bodies, copied whole (cheaper than picking the moving ones now; :meth:`encode_transforms` does).
        """
        return data.xpos.copy(), data.xquat.copy()

    def transforms(self, data: mujoco.MjData, stamp_ns: int) -> bytes:
        """The step's ``foxglove.FrameTransforms``: ``world -> body`` of each moving body (``data.xpos``, ``xquat``)."""
        return self.encode_transforms(*self.poses(data), stamp_ns)

    def encode_transforms(self, xpos: np.ndarray, xquat: np.ndarray, stamp_ns: int) -> bytes:
        """``foxglove.FrameTransforms`` of the moving bodies' poses in :meth:`poses`'s arrays at ``stamp_ns`` [ns]."""
        return self.encode_transforms_many(xpos[None], xquat[None], [stamp_ns])[0]

    def encode_transforms_many(self, xpos: np.ndarray, xquat: np.ndarray, stamps_ns: list[int]) -> list[bytes]:
        """``foxglove.FrameTransforms`` of T steps at once, one message per step.

        Encoded here, not through the protobuf classes (a few microseconds per step instead of some 60 on the
        Franka): every pose is one fixed-size record of tags and doubles (:data:`_POSE_RECORD`), all T x B of
        them filled from the arrays in one go, each followed by its timestamp and frame names (protobuf fields
        may come in any order).

        Args:
            xpos: Every body's position per step [m]. Shape: (T, nbody, 3).
            xquat: Every body's orientation per step (w, x, y, z). Shape: (T, nbody, 4).
            stamps_ns: The steps' times [ns]. Length T.
        """
        steps, bodies = len(stamps_ns), len(self.moving)
        records = np.tile(self._poses, steps)
        size = _POSE_RECORD.itemsize
        xyz = np.ndarray((steps * bodies, 3), "<f8", records.data, _POSE_RECORD.fields["x"][1], (size, 9))
        q = np.ndarray((steps * bodies, 4), "<f8", records.data, _POSE_RECORD.fields["qx"][1], (size, 9))
        index = self._index
        xyz[:] = xpos[:, index].reshape(-1, 3)
        quat = xquat[:, index].reshape(-1, 4)
        q[:, :3] = quat[:, 1:]
        q[:, 3] = quat[:, 0]
        raw = records.tobytes()
        out = []
        names = self._names
        for k, stamp_ns in enumerate(stamps_ns):
            seconds, nanos = divmod(int(stamp_ns), 1_000_000_000)
            if seconds != self._seconds[0]:
                self._seconds = (seconds, _varint_field(1, seconds))
            stamp = _field(1, self._seconds[1] + _varint_field(2, nanos))
            heads = self._heads.get(len(stamp))
            if heads is None:  # the field header of each transform, by the length of the stamp (rarely changes)
                total = size + len(stamp)
                heads = self._heads[len(stamp)] = [_varint(1 << 3 | 2) + _varint(total + len(n)) for n in names]
            parts = []
            offset = k * bodies * size
            for i in range(bodies):
                start = offset + i * size
                parts += (heads[i], raw[start : start + size], stamp, names[i])
            out.append(b"".join(parts))
        return out

    def _check_wire_format(self) -> None:
        """The field numbers :meth:`transforms` encodes are those of the installed Foxglove schemas."""
        from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform

        fields = {f.name: f.number for f in FrameTransform.DESCRIPTOR.fields}
        expected = {"timestamp": 1, "parent_frame_id": 2, "child_frame_id": 3, "translation": 4, "rotation": 5}
        if fields != expected:
            raise RuntimeError(f"foxglove.FrameTransform has fields {fields}; robot_rl encodes {expected}.")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    """A varint field (proto3: a zero is left out)."""
    return _varint(number << 3) + _varint(value) if value else b""


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message or a string)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


# One pose as protobuf bytes: FrameTransform.translation (field 4, a Vector3 of three doubles: 27 bytes) and
# FrameTransform.rotation (field 5, a Quaternion of four: 36 bytes), every double with its tag (fixed64 fields).
_POSE_RECORD = np.dtype(
    [("t4", "u1"), ("l4", "u1"), ("tx", "u1"), ("x", "<f8"), ("ty", "u1"), ("y", "<f8"), ("tz", "u1"), ("z", "<f8"),
     ("t5", "u1"), ("l5", "u1"), ("rx", "u1"), ("qx", "<f8"), ("ry", "u1"), ("qy", "<f8"), ("rz", "u1"), ("qz", "<f8"),
     ("rw", "u1"), ("qw", "<f8")]
)  # fmt: skip
_POSE_TAGS = {
    "t4": (4 << 3) | 2, "l4": 27, "tx": (1 << 3) | 1, "ty": (2 << 3) | 1, "tz": (3 << 3) | 1,
    "t5": (5 << 3) | 2, "l5": 36, "rx": (1 << 3) | 1, "ry": (2 << 3) | 1, "rz": (3 << 3) | 1, "rw": (4 << 3) | 1,
}  # fmt: skip
