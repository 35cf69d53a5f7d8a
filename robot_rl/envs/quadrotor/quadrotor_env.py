"""The quadrotor base environment: CTBR commands to an on-board rate loop, goal-conditioned.

Shared by QuadrotorHover, QuadrotorWaypoint and QuadrotorTrack. Frames: world z up, the floor at
z = 0; body FLU. One policy step (``ctrl_dt``, 0.02 s = 50 Hz) runs ``ctrl_dt / sim_dt`` physics
steps (``sim_dt`` 0.002 s = 500 Hz by default, 0.001 s for 1 kHz); the rate controller and mixer
run at every physics step, the rotors follow their commands with a first-order lag.
"""

from __future__ import annotations

import collections
import math
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from robot_rl.envs.base import MujocoGoalEnv
from robot_rl.envs.quadrotor.flight_controller import (
    Mixer,
    QuadrotorParams,
    RateController,
    RateControllerConfig,
)
from robot_rl.envs.randomization import QUADROTOR_PRESETS, RandomizationSample

MAX_RATES = (6.0, 6.0, 3.0)
"""Body-rate command at |action| = 1 for roll, pitch, yaw [rad/s]."""

GUST_CORRELATION_TIME = 0.5
"""Correlation time of the Ornstein-Uhlenbeck wind-gust force [s]."""

OBSERVATION_TABLE = """
    Observation ``observation`` (``Box(-inf, inf, (21,), float64)`` for Hover and Waypoint; Track
    appends the upcoming reference points), what motion capture and the IMU give a real vehicle:

    =====  ====================================================  =======
    idx    quantity                                              unit
    =====  ====================================================  =======
    0-2    position (world)                                      m
    3-5    linear velocity (world)                               m/s
    6-14   attitude: rotation matrix body->world, row-major      1
    15-17  body rates (gyro; roll, pitch, yaw)                   rad/s
    18-20  goal position relative to the vehicle (world)         m
    =====  ====================================================  =======

    ``achieved_goal``: position [m]; ``desired_goal``: goal position [m] (the reference point for
    Track). Noise (``obs_noise_std``) and latency (``obs_latency_steps``) apply to ``observation``.
"""

ACTION_TABLE = """
    Action ``Box(-1, 1, (4,), float64)``, collective thrust and body rates (CTBR) for the on-board
    rate controller:

    ===  ===================================  ======================================
    idx  command                              physical value
    ===  ===================================  ======================================
    0    collective thrust                    (a + 1) / 2 x 0.596 N (hover near -0.11)
    1    roll rate (body x)                   a x 6 rad/s
    2    pitch rate (body y)                  a x 6 rad/s
    3    yaw rate (body z)                    a x 3 rad/s
    ===  ===================================  ======================================

    Commands outside [-1, 1] are clipped and counted in ``info["clipped_commands"]``; rotor commands
    the mixer clips to [0, 0.149] N are counted in ``info["motor_saturations"]``.
"""

VERSION_HISTORY = """
    ## Version History
    * v1: a crash costs the worst per-step reward for every step left (``crash_penalty``), so an
      agent maximizing the return no longer learns to crash early. Dynamics, observations, actions,
      starting states and episode ends are those of v0 (a policy trained on v0 flies the same on v1).
    * v0: initial version (retired; making it raises an error that names v1).
"""


class QuadrotorEnv(MujocoGoalEnv):
    """Crazyflie 2.1-class quadrotor flown through CTBR commands; see the task classes."""

    scene_file = "quadrotor/scene.xml"
    home_keyframe = "hover"
    randomization_keys = frozenset(
        {
            "obs_noise_std",
            "action_latency_steps",
            "obs_latency_steps",
            "mass_scale",
            "inertia_scale",
            "motor_constant_scale",
            "motor_lag_scale",
            "drag_coefficient",
            "wind_gust_std",
            "wind_steady",
        }
    )
    randomization_presets = QUADROTOR_PRESETS
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}

    geofence_low: ClassVar[np.ndarray] = np.array([-2.0, -2.0, 0.0])
    """Lower corner of the allowed flight volume [m, world]."""
    geofence_high: ClassVar[np.ndarray] = np.array([2.0, 2.0, 2.5])
    """Upper corner of the allowed flight volume [m, world]."""
    min_altitude: ClassVar[float] = 0.03
    """Below this height the vehicle counts as crashed into the floor [m]."""
    max_tilt: ClassVar[float] = math.radians(80.0)
    """Largest angle between body z and world z before the episode ends as a crash [rad]."""
    hold_time: ClassVar[float] = 1.0
    """Time the vehicle must stay within ``distance_threshold`` of the goal to succeed [s]."""
    episode_steps: ClassVar[int] = 250
    """Control periods per episode (the registered time limit; the crash penalty charges what is left)."""

    def __init__(
        self,
        ctrl_dt: float = 0.02,
        sim_dt: float = 0.002,
        distance_threshold: float = 0.1,
        rate_controller: RateControllerConfig | None = None,
        camera: str = "chase",
        **kwargs: Any,
    ) -> None:
        self._rate_config = rate_controller
        super().__init__(ctrl_dt=ctrl_dt, sim_dt=sim_dt, distance_threshold=distance_threshold, camera=camera, **kwargs)

    # ----------------------------------------------------------------- setup
    def _setup(self) -> None:
        m = self.model
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float64)
        body = m.body("cf2").id
        self._body = body
        self.params = QuadrotorParams(
            mass=float(m.body_mass[body]),
            inertia=tuple(float(v) for v in m.body_inertia[body]),
            arm=float(abs(m.site_pos[m.site("rotor1").id][0])),
            torque_ratio=float(abs(m.actuator_gear[0, 5])),
            max_rotor_thrust=float(m.actuator_ctrlrange[0, 1]),
        )
        """Nominal parameters the controllers use (randomization changes the plant, not these)."""
        self.rate_controller = RateController(self.params, self.sim_dt, self._rate_config)
        self.mixer = Mixer(self.params)
        self._goal_site = m.site("goal").id
        self._nominal["actuator_gear"] = m.actuator_gear.copy()
        self._nominal["actuator_dynprm"] = m.actuator_dynprm.copy()
        self._qpos = self.data.qpos
        self._qvel = self.data.qvel
        self._ctrl = self.data.ctrl
        self._force = self.data.xfrc_applied[body]
        self._gust = [0.0, 0.0, 0.0]
        self._obs_history: collections.deque[np.ndarray] = collections.deque()
        self.clipped_commands = 0
        self._hold_steps = 0
        self._t = 0
        self._crash: str | None = None
        self._goal = np.array([0.0, 0.0, 1.0])
        self._neutral = np.array([2.0 * self.params.hover_thrust / self.params.max_thrust - 1.0, 0.0, 0.0, 0.0])

    def _object_body(self) -> int | None:
        return None

    def _neutral_action(self) -> np.ndarray:
        return self._neutral.copy()

    def _apply_randomization(self, s: RandomizationSample) -> None:
        super()._apply_randomization(s)
        m, nominal, body = self.model, self._nominal, self._body
        m.actuator_gear[:] = nominal["actuator_gear"] * s.motor_constant_scale
        m.actuator_dynprm[:] = nominal["actuator_dynprm"]
        m.actuator_dynprm[:, 0] *= s.motor_lag_scale
        m.body_mass[body] = nominal["body_mass"][body] * s.mass_scale
        m.body_inertia[body] = nominal["body_inertia"][body] * s.inertia_scale

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset to the ``hover`` keyframe, then let the task place the vehicle and the goal."""
        self.rate_controller.reset()
        self.mixer.reset()
        self.clipped_commands = 0
        self._hold_steps = 0
        self._t = 0
        self._crash = None
        self._gust = [0.0, 0.0, 0.0]
        self._force[:] = 0.0
        self._obs_history.clear()
        obs, info = super().reset(seed=seed, options=options)
        return obs, info

    def _set_state(self, pos: np.ndarray, vel: np.ndarray, quat: np.ndarray, rates: np.ndarray) -> None:
        """Place the vehicle: position [m], velocity [m/s, world], attitude (w, x, y, z), body rates [rad/s]."""
        q = self._qpos
        q[0:3] = pos
        q[3:7] = quat / np.linalg.norm(quat)
        self._qvel[0:3] = vel
        self._qvel[3:6] = rates
        # Rotors start at the hover thrust (commanded and actual).
        hover = self.params.hover_thrust / 4.0
        self._ctrl[:] = hover
        self.data.act[:] = hover

    def _set_goal(self, goal: np.ndarray) -> None:
        self._goal = np.asarray(goal, dtype=np.float64).copy()
        self.model.site_pos[self._goal_site] = self._goal

    # --------------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Advance one policy period: the rate loop, mixer and physics run ``n_substeps`` times.

        Raises:
            ValueError: the action has the wrong shape or holds NaN/inf; the state is untouched.
        """
        raw = self._validate_finite(action)
        clipped = np.minimum(np.maximum(raw, -1.0), 1.0)
        if not np.array_equal(clipped, raw):
            self.clipped_commands += 1
        action = clipped
        if self._sample.action_latency_steps:
            self._pending.append(action)
            action = (
                self._pending.popleft() if len(self._pending) > self._sample.action_latency_steps else self._neutral
            )
        self._simulate(action)
        self._t += 1
        obs = self._get_obs()
        distance = math.dist(self._achieved_goal().tolist(), self._goal.tolist())
        within = distance <= self.distance_threshold
        self._hold_steps = self._hold_steps + 1 if within else 0
        self._crash = self._crash_reason()
        terminated = self._crash is not None
        if self.reward_type == "sparse":
            reward = 0.0 if within else -1.0
        else:
            reward = -distance
        if terminated:
            reward -= self.crash_penalty()
        info = {
            "is_success": float(self._is_success()),
            "distance": distance,
            "crash": self._crash,
            "clipped_commands": self.clipped_commands,
            "motor_saturations": self.mixer.saturations,
        }
        return obs, reward, terminated, False, info

    def _simulate(self, action: np.ndarray) -> None:
        a0, a1, a2, a3 = action.tolist()
        thrust = 0.5 * (a0 + 1.0) * self.params.max_thrust
        rates_des = (a1 * MAX_RATES[0], a2 * MAX_RATES[1], a3 * MAX_RATES[2])
        s = self._sample
        drag, gust_std = s.drag_coefficient, s.wind_gust_std
        if gust_std > 0.0:
            # Ornstein-Uhlenbeck gust force, stationary std gust_std, held over the policy period.
            decay = math.exp(-self.ctrl_dt / GUST_CORRELATION_TIME)
            scale = gust_std * math.sqrt(1.0 - decay * decay)
            noise = self.np_random.normal(size=3).tolist()
            self._gust = [decay * g + scale * n for g, n in zip(self._gust, noise, strict=True)]
        gx, gy, gz = self._gust
        if s.wind_steady:
            gx += s.wind_steady * math.cos(s.wind_direction)
            gy += s.wind_steady * math.sin(s.wind_direction)
        qvel, ctrl, force = self._qvel, self._ctrl, self._force
        rate_ctl, mixer = self.rate_controller, self.mixer
        model, data = self.model, self.data
        for _ in range(self.n_substeps):
            vx, vy, vz, p, q, r = qvel[0:6].tolist()  # free joint: world linear, body angular
            ctrl[:] = mixer.rotor_thrusts(thrust, rate_ctl.torque(rates_des, (p, q, r)))
            force[0:3] = (gx - drag * vx, gy - drag * vy, gz - drag * vz)
            mujoco.mj_step(model, data)

    def crash_penalty(self) -> float:
        """What a crash costs on top of the step's reward: the worst per-step reward for every period left.

        A crash ends the episode, and every per-step reward is <= 0, so without it an agent maximizing the
        return would learn to crash early (measured: a residual trained on the dense reward did). The worst
        per-step reward is -1 (sparse) or minus the geofence's diagonal (dense: no distance inside the
        fence is larger), so any crash returns less than any flight that lasts the episode.
        ``compute_reward`` (goal relabelling) gives the per-step reward only.
        """
        worst = 1.0 if self.reward_type == "sparse" else float(np.linalg.norm(self.geofence_high - self.geofence_low))
        return worst * max(self.episode_steps - self._t, 0)

    def _crash_reason(self) -> str | None:
        x, y, z = self._qpos[0:3].tolist()
        w, qx, qy, qz = self._qpos[3:7].tolist()
        if z < self.min_altitude or self.data.ncon > 0:
            return "floor"
        cos_tilt = 1.0 - 2.0 * (qx * qx + qy * qy)  # world-z component of body z
        if cos_tilt < math.cos(self.max_tilt):
            return "tilt"
        lo, hi = self.geofence_low, self.geofence_high
        if not (lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1] and z <= hi[2]):
            return "geofence"
        return None

    def _is_success(self) -> bool:
        return self._hold_steps * self.ctrl_dt >= self.hold_time - 1e-9 and self._crash is None

    def _validate_finite(self, action: Any) -> np.ndarray:
        shape = self.action_space.shape
        try:
            arr = np.array(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be a numeric array of shape {shape}; got {type(action).__name__}.") from None
        if arr.shape != shape:
            raise ValueError(
                f"action must have shape {shape} (collective thrust, roll, pitch, yaw rate); got shape {arr.shape}."
            )
        if not all(map(math.isfinite, arr.ravel().tolist())):
            bad = np.flatnonzero(~np.isfinite(arr)).tolist()
            raise ValueError(f"action must be finite; entries {bad} are NaN or inf: {arr.tolist()}.")
        return arr

    # --------------------------------------------------------------- observation
    def _state_vector(self) -> list[float]:
        qpos, qvel = self._qpos.tolist(), self._qvel.tolist()
        w, x, y, z = qpos[3:7]
        rot = (
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        )  # fmt: skip
        gx, gy, gz = self._goal.tolist()
        return [*qpos[0:3], *qvel[0:3], *rot, *qvel[3:6], gx - qpos[0], gy - qpos[1], gz - qpos[2]]

    def _observation(self) -> np.ndarray:
        return np.array(self._state_vector())

    def robot_state(self) -> dict[str, np.ndarray]:
        """The true vehicle state the safety filter and its violation check read (copies).

        Keys: ``position`` [m, world] (3,), ``velocity`` [m/s, world] (3,), ``rotation`` body->world
        row-major (9,), ``body_rates`` [rad/s, body] (3,). On hardware the same keys come from the
        pose/odometry topics; unlike ``observation`` they carry no simulated noise or latency.
        """
        state = self._state_vector()
        return {
            "position": np.array(state[0:3]),
            "velocity": np.array(state[3:6]),
            "rotation": np.array(state[6:15]),
            "body_rates": np.array(state[15:18]),
        }

    def _get_obs(self) -> dict[str, np.ndarray]:
        obs = super()._get_obs()
        lag = self._sample.obs_latency_steps
        if lag:
            self._obs_history.append(obs["observation"])
            while len(self._obs_history) > lag + 1:
                self._obs_history.popleft()
            obs["observation"] = self._obs_history[0]
        return obs

    def _achieved_goal(self) -> np.ndarray:
        return self._qpos[0:3]

    @property
    def hover_action(self) -> np.ndarray:
        """The action that holds a level, still vehicle in place (nominal parameters). Shape: (4,)."""
        return self._neutral.copy()

    @property
    def time(self) -> float:
        """Time since the episode started [s]."""
        return self._t * self.ctrl_dt
