"""Every ROS message <-> array conversion of the package, in one module (the only one importing both sides).

Inputs are checked here and refused with :class:`MessageError` (a ``ValueError``) when they are not
what the robot side needs: wrong or duplicated joint names, lengths that disagree, NaN or inf,
a zero quaternion. A refused message never reaches a policy; the nodes count refusals in their
diagnostics.

Units and frames are the ROS ones (REP 103): metres, radians, seconds; ``fr3_link0`` for the arm
(:mod:`robot_rl_ros.fr3`), ``world`` for the quadrotor (:mod:`robot_rl_ros.crazyflie`).
"""

from __future__ import annotations

import array
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_rl.data.bag import STEP_FIELDS
from robot_rl_ros.crazyflie import QuadrotorMeasurement, quat_to_rotation
from robot_rl_ros.fr3 import FR3_ARM_JOINTS, FR3_FINGER_JOINTS, Fr3Measurement


class MessageError(ValueError):
    """A message that cannot be used (the text says what was expected and what arrived)."""


# --------------------------------------------------------------------------- time
def stamp_to_seconds(stamp: Time) -> float:
    """A ``builtin_interfaces/Time`` in seconds."""
    return stamp.sec + 1e-9 * stamp.nanosec


def seconds_to_stamp(t: float) -> Time:
    """Seconds as a ``builtin_interfaces/Time``."""
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        raise MessageError(f"{what} must be finite; entries {bad} are NaN or inf.")
    return array


# ------------------------------------------------------------------ joint states
def joint_state_to_fr3(
    msg: JointState,
    fingers: tuple[np.ndarray, np.ndarray] | None = None,
    arm_joints: Sequence[str] = FR3_ARM_JOINTS,
    finger_joints: Sequence[str] = FR3_FINGER_JOINTS,
) -> Fr3Measurement:
    """Arm joint positions and velocities from ``/joint_states``, looked up by name.

    The message must name each of ``arm_joints`` (``fr3_joint1`` .. ``fr3_joint7``) exactly once, with
    as many positions and velocities as names. The finger joints are optional (franka_gripper
    publishes them on its own topic, merged into ``/joint_states`` by the joint state publisher):
    when absent, ``fingers`` (the last known positions and velocities) or zeros are used.

    Raises:
        MessageError: names missing, duplicated or unmatched in count; NaN or inf values.
    """
    names = list(msg.name)
    n = len(names)
    if len(msg.position) != n or len(msg.velocity) != n:
        raise MessageError(
            f"JointState must have one position and one velocity per name: {n} names, {len(msg.position)} "
            f"positions, {len(msg.velocity)} velocities."
        )
    if len(set(names)) != n:
        duplicated = sorted({name for name in names if names.count(name) > 1})
        raise MessageError(f"JointState names must be unique; {duplicated} appear more than once.")
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in arm_joints if name not in index]
    if missing:
        raise MessageError(
            f"JointState lacks the arm joints {missing}; expected {list(arm_joints)} (parameter joint_names). "
            f"Got {names}."
        )
    position = _finite(msg.position, "JointState.position")
    velocity = _finite(msg.velocity, "JointState.velocity")
    arm = [index[name] for name in arm_joints]
    has_fingers = [name in index for name in finger_joints]
    if any(has_fingers) and not all(has_fingers):
        raise MessageError(f"JointState must name both finger joints {list(finger_joints)} or neither.")
    if all(has_fingers):
        idx = [index[name] for name in finger_joints]
        finger_pos, finger_vel = position[idx], velocity[idx]
    elif fingers is not None:
        finger_pos, finger_vel = fingers[0].copy(), fingers[1].copy()
    else:
        finger_pos, finger_vel = np.zeros(2), np.zeros(2)
    return Fr3Measurement(position[arm], velocity[arm], finger_pos, finger_vel)


def fr3_joint_state(meas: Fr3Measurement, stamp: Time) -> JointState:
    """``/joint_states`` for the FR3 arm and fingers (as franka_ros2 publishes it)."""
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = [*FR3_ARM_JOINTS, *FR3_FINGER_JOINTS]
    msg.position = [*meas.joint_pos.tolist(), *meas.finger_pos.tolist()]
    msg.velocity = [*meas.joint_vel.tolist(), *meas.finger_vel.tolist()]
    msg.effort = [0.0] * 9
    return msg


# ----------------------------------------------------------------- poses, points
def pose_to_arrays(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    """Position [m] and unit quaternion (w, x, y, z) of a PoseStamped.

    Raises:
        MessageError: NaN or inf, or a quaternion far from unit length (norm outside [0.9, 1.1]).
    """
    p, o = msg.pose.position, msg.pose.orientation
    position = _finite((p.x, p.y, p.z), "pose.position")
    quat = _finite((o.w, o.x, o.y, o.z), "pose.orientation")
    norm = float(np.linalg.norm(quat))
    if not 0.9 <= norm <= 1.1:
        raise MessageError(f"pose.orientation must be a unit quaternion; its norm is {norm:.3g}.")
    return position, quat / norm


def pose_stamped(position: np.ndarray, quat_wxyz: np.ndarray, frame: str, stamp: Time) -> PoseStamped:
    """A PoseStamped from a position [m] and a quaternion (w, x, y, z)."""
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    w, x, y, z = (float(v) for v in quat_wxyz)
    msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z = w, x, y, z
    return msg


def point_to_array(msg: PointStamped) -> np.ndarray:
    """The point [m] of a PointStamped. Shape: (3,)."""
    return _finite((msg.point.x, msg.point.y, msg.point.z), "point")


def point_stamped(point: np.ndarray, frame: str, stamp: Time) -> PointStamped:
    """A PointStamped [m]."""
    msg = PointStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in point)
    return msg


def twist_to_arrays(msg: TwistStamped) -> tuple[np.ndarray, np.ndarray]:
    """Linear [m/s] and angular [rad/s] velocity of a TwistStamped (in its header's frame)."""
    t = msg.twist
    return (
        _finite((t.linear.x, t.linear.y, t.linear.z), "twist.linear"),
        _finite((t.angular.x, t.angular.y, t.angular.z), "twist.angular"),
    )


def twist_stamped(linear: np.ndarray, angular: np.ndarray, frame: str, stamp: Time) -> TwistStamped:
    """A TwistStamped from linear [m/s] and angular [rad/s] velocity."""
    msg = TwistStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
    return msg


# ------------------------------------------------------------------- quadrotor
def odometry_to_quadrotor(msg: Odometry, twist_frame: str = "body") -> QuadrotorMeasurement:
    """Vehicle state from nav_msgs/Odometry (crazyswarm2's ``/cfN/odom``).

    Args:
        msg: Pose in ``header.frame_id`` (world); twist in ``child_frame_id`` (the body, REP 105).
        twist_frame: ``body`` (REP 105, crazyswarm2) or ``world``: the frame of ``twist.linear``.
            ``twist.angular`` is always the body rates.
    """
    pose = PoseStamped(header=msg.header, pose=msg.pose.pose)
    position, quat = pose_to_arrays(pose)
    rotation = quat_to_rotation(*quat.tolist())
    t = msg.twist.twist
    linear = _finite((t.linear.x, t.linear.y, t.linear.z), "odometry twist.linear")
    rates = _finite((t.angular.x, t.angular.y, t.angular.z), "odometry twist.angular")
    if twist_frame == "body":
        velocity = rotation.reshape(3, 3) @ linear
    elif twist_frame == "world":
        velocity = linear
    else:
        raise ValueError(f"`twist_frame` must be 'body' or 'world'. Got {twist_frame!r}.")
    return QuadrotorMeasurement(position, velocity, rotation, rates)


def odometry_fields(msg: Odometry) -> tuple[float, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fields of an Odometry as published: ``(stamp [s], frame_id, position, quat_wxyz, linear, angular)``.

    Checked finite, with a unit quaternion; frames and units are the publisher's (crazyswarm2's backends
    differ: :mod:`robot_rl_ros.crazyflie_vendor`).
    """
    position, quat = pose_to_arrays(PoseStamped(header=msg.header, pose=msg.pose.pose))
    t = msg.twist.twist
    linear = _finite((t.linear.x, t.linear.y, t.linear.z), "odometry twist.linear")
    angular = _finite((t.angular.x, t.angular.y, t.angular.z), "odometry twist.angular")
    return stamp_to_seconds(msg.header.stamp), msg.header.frame_id, position, quat, linear, angular


def raw_odometry(
    position: np.ndarray, quat_wxyz: np.ndarray, linear: np.ndarray, angular: np.ndarray, frame: str, child: str,
    stamp: Time,
) -> Odometry:  # fmt: skip
    """nav_msgs/Odometry with the given fields as they are (the sim bridge's crazyswarm2 backends)."""
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, frame, child
    msg.pose.pose = pose_stamped(position, quat_wxyz, frame, stamp).pose
    t = msg.twist.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in linear)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in angular)
    return msg


def quadrotor_odometry(
    meas: QuadrotorMeasurement, quat_wxyz: np.ndarray, frame: str, child: str, stamp: Time
) -> Odometry:
    """nav_msgs/Odometry as crazyswarm2 publishes it: pose in ``frame``, twist in the body (``child``)."""
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp, frame, child
    msg.pose.pose = pose_stamped(meas.position, quat_wxyz, frame, stamp).pose
    body_velocity = meas.rotation.reshape(3, 3).T @ meas.velocity
    t = msg.twist.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in body_velocity)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in meas.body_rates)
    return msg


def legacy_twist(values: tuple[float, float, float, float]) -> Twist:
    """``cmd_vel_legacy`` from ``(linear.x, linear.y, linear.z, angular.z)`` (see :mod:`robot_rl_ros.crazyflie`)."""
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z = (float(v) for v in values)
    return msg


def twist_to_legacy(msg: Twist) -> tuple[float, float, float, float]:
    """``(linear.x, linear.y, linear.z, angular.z)`` of a ``cmd_vel_legacy`` message.

    Raises:
        MessageError: NaN or inf.
    """
    return tuple(_finite((msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z), "cmd_vel_legacy").tolist())


# ------------------------------------------------------------- arm commands
def joint_command(q: np.ndarray) -> Float64MultiArray:
    """A forward_command_controller command: joint positions [rad], fr3_joint1..7 in order."""
    values = _float64_array(q)
    msg = Float64MultiArray()
    msg.layout.dim = [_dimension("fr3_joint1..7", len(values))]
    msg.data = values
    return msg


def _float64_array(values: np.ndarray | Sequence[float]) -> array.array:
    """``values`` as the ``array.array('d')`` a float64[] field holds (the message's setter takes it as is)."""
    return array.array("d", np.ascontiguousarray(values, dtype=np.float64).ravel().tobytes())


@functools.lru_cache(maxsize=64)
def _dimension(label: str, size: int) -> MultiArrayDimension:
    """A layout dimension (shared between messages: never modify one)."""
    return MultiArrayDimension(label=label, size=size, stride=size)


def joint_command_to_array(msg: Float64MultiArray, size: int = 7) -> np.ndarray:
    """Joint positions [rad] of a forward command.

    Raises:
        MessageError: not ``size`` values, or NaN or inf.
    """
    if len(msg.data) != size:
        raise MessageError(f"the joint command must hold {size} positions (fr3_joint1..7). Got {len(msg.data)}.")
    return _finite(msg.data, "joint command")


def joint_trajectory(
    q: np.ndarray, time_from_start: float, stamp: Time, arm_joints: Sequence[str] = FR3_ARM_JOINTS
) -> JointTrajectory:
    """A one-point JointTrajectory to joint positions [rad], reached ``time_from_start`` [s] after ``stamp``."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(arm_joints)
    sec = math.floor(time_from_start)
    point = JointTrajectoryPoint()
    point.positions = [float(v) for v in q]
    point.time_from_start = Duration(sec=int(sec), nanosec=int(round((time_from_start - sec) * 1e9)))
    msg.points = [point]
    return msg


def trajectory_to_joint_targets(msg: JointTrajectory) -> np.ndarray:
    """The last point's positions [rad] in fr3_joint1..7 order.

    Raises:
        MessageError: no points, joint names that are not the FR3 arm's, lengths that disagree.
    """
    names = list(msg.joint_names)
    if sorted(names) != sorted(FR3_ARM_JOINTS) or len(names) != len(FR3_ARM_JOINTS):
        raise MessageError(f"the trajectory must name {list(FR3_ARM_JOINTS)} once each. Got {names}.")
    if not msg.points or len(msg.points[-1].positions) != len(names):
        raise MessageError("the trajectory needs a last point with one position per joint.")
    positions = _finite(msg.points[-1].positions, "trajectory positions")
    return positions[[names.index(name) for name in FR3_ARM_JOINTS]]


# ------------------------------------------------------------- step records
def step_record(fields: Mapping[str, np.ndarray | float]) -> Float64MultiArray:
    """A ``/robot_rl/steps`` message: the segments of :data:`robot_rl.data.bag.STEP_FIELDS`, in order.

    ``layout.dim[i]`` names segment i (``label``) and its length (``size``), so a reader needs no
    other schema; ``robot-rl data from-bag`` converts these into demonstrations.
    """
    segments = [np.asarray(fields[name], dtype=np.float64).ravel() for name in STEP_FIELDS]
    msg = Float64MultiArray()
    msg.layout.dim = [_dimension(name, segment.size) for name, segment in zip(STEP_FIELDS, segments, strict=True)]
    msg.data = _float64_array(np.concatenate(segments))
    return msg


# ---------------------------------------------------------------- diagnostics
def diagnostic_array(
    name: str, hardware_id: str, level: bytes, message: str, values: Mapping[str, object], stamp: Time
) -> DiagnosticArray:
    """A DiagnosticArray with one status; ``level`` is ``DiagnosticStatus.OK``/``WARN``/``ERROR``/``STALE``."""
    status = DiagnosticStatus()
    status.level = level
    status.name, status.hardware_id, status.message = name, hardware_id, message
    status.values = [KeyValue(key=str(k), value=_format(v)) for k, v in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    return msg


def diagnostic_values(msg: DiagnosticArray) -> dict[str, str]:
    """The key/value pairs of a DiagnosticArray's first status (tests, tools)."""
    return {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
