"""QuadrotorTrack-v1: follow a figure-eight given as upcoming setpoints."""

from __future__ import annotations

import math

import numpy as np

from robot_rl.envs.quadrotor.hover import random_tilt
from robot_rl.envs.quadrotor.quadrotor_env import ACTION_TABLE, OBSERVATION_TABLE, VERSION_HISTORY, QuadrotorEnv


class QuadrotorTrackEnv(QuadrotorEnv):
    __doc__ = (
        """Track a figure-eight reference with a Crazyflie-class quadrotor.

    ## Action Space
"""
        + ACTION_TABLE
        + """
    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    Track appends the next 10 reference points at 0.1 s spacing, relative to the vehicle
    (indices 21-50, m), so ``observation`` is ``Box(-inf, inf, (51,), float64)``.

    ## Reference
    A lemniscate around (0, 0, 1) m: x = 0.6 sin(w t), y = 0.3 sin(2 w t), z = 1, period 2 pi / w
    = 6 s (peak speed about 0.75 m/s). Each episode starts at a random phase.

    ## Starting State
    On the reference at the episode's start phase, within +-0.05 m, nearly still.

    ## Rewards
    Sparse (default): -1 per step while farther than 0.1 m from the current reference point, else
    0. Dense (``QuadrotorTrackDense-v1``): minus that distance [m].
    A crash also costs the worst per-step reward (-1 sparse, minus the geofence diagonal dense)
    for every step left, so crashing early never pays (``crash_penalty``).

    ## Episode End
    Terminates on a crash (floor, tilt past 80 degrees, geofence). Truncated after 500 steps
    (10 s). ``info["tracking_rmse"]`` is the RMS distance to the reference so far [m];
    ``info["is_success"]`` is 1.0 while that RMSE is at most 0.1 m and nothing crashed.
"""
        + VERSION_HISTORY
    )

    amplitude = (0.6, 0.3)
    """Half-widths of the figure-eight along x and y [m]."""
    period = 6.0
    """Period of the figure-eight [s]."""
    center = np.array([0.0, 0.0, 1.0])
    """Centre of the figure-eight [m]."""
    horizon = 10
    """Upcoming reference points in the observation."""
    horizon_dt = 0.1
    """Spacing of the upcoming reference points [s]."""
    rmse_threshold = 0.1
    """Tracking RMSE for success [m]."""
    episode_steps = 500
    """Control periods per episode (10 s)."""

    def reference(self, t: float) -> np.ndarray:
        """Reference position at episode time ``t`` [s]. Shape: (3,)."""
        w = 2.0 * math.pi / self.period
        phase = w * t + self._phase
        return self.center + np.array(
            [self.amplitude[0] * math.sin(phase), self.amplitude[1] * math.sin(2.0 * phase), 0.0]
        )

    def _setup(self) -> None:
        self._phase = 0.0
        self._sq_error = 0.0
        super()._setup()

    def _reset_task(self) -> None:
        rng = self.np_random
        self._phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self._sq_error = 0.0
        start = self.reference(0.0) + rng.uniform(-0.05, 0.05, size=3)
        self._set_state(start, rng.uniform(-0.05, 0.05, size=3), random_tilt(rng, 0.05), np.zeros(3))
        self._set_goal(self.reference(0.0))

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Advance one period; the goal moves along the reference (see :class:`QuadrotorEnv`)."""
        self._set_goal(self.reference(self.time + self.ctrl_dt))
        obs, reward, terminated, truncated, info = super().step(action)
        self._sq_error += info["distance"] ** 2
        rmse = math.sqrt(self._sq_error / self._t)
        info["tracking_rmse"] = rmse
        info["is_success"] = float(rmse <= self.rmse_threshold and info["crash"] is None)
        return obs, reward, terminated, truncated, info

    def _is_success(self) -> bool:
        if self._t == 0:
            return False
        return math.sqrt(self._sq_error / self._t) <= self.rmse_threshold and self._crash is None

    def _observation(self) -> np.ndarray:
        state = self._state_vector()
        pos = self._qpos[0:3]
        ahead = [self.reference(self.time + (k + 1) * self.horizon_dt) - pos for k in range(self.horizon)]
        return np.concatenate((state, np.concatenate(ahead)))
