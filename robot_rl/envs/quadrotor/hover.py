"""QuadrotorHover-v1: hold a fixed point in the air after a disturbed start."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.quadrotor.quadrotor_env import ACTION_TABLE, OBSERVATION_TABLE, VERSION_HISTORY, QuadrotorEnv


def random_tilt(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A quaternion (w, x, y, z) tilted about a random horizontal axis by up to ``max_angle`` [rad]."""
    angle = rng.uniform(0.0, max_angle)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    half = 0.5 * angle
    return np.array([np.cos(half), np.sin(half) * np.cos(heading), np.sin(half) * np.sin(heading), 0.0])


class QuadrotorHoverEnv(QuadrotorEnv):
    __doc__ = (
        """Hold a Crazyflie-class quadrotor at (0, 0, 1) m after a disturbed start.

    ## Action Space
"""
        + ACTION_TABLE
        + """
    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    Within +-0.2 m of the goal, velocity within +-0.3 m/s per axis, tilted up to 0.3 rad, body rates
    within +-1 rad/s, the rotors at hover thrust.

    ## Rewards
    Sparse (default): -1 per step while farther than 0.1 m from the goal, else 0. Dense
    (``QuadrotorHoverDense-v1``): minus the distance [m].
    A crash also costs the worst per-step reward (-1 sparse, minus the geofence diagonal dense)
    for every step left, so crashing early never pays (``crash_penalty``).

    ## Episode End
    Terminates on a crash: floor contact or below 0.03 m, tilt past 80 degrees, or leaving the
    geofence (|x|, |y| <= 2 m, z <= 2.5 m); ``info["crash"]`` names which. Truncated after 250
    steps (5 s at 50 Hz). ``info["is_success"]`` is 1.0 once the vehicle has stayed within 0.1 m of
    the goal for the last 1 s.
"""
        + VERSION_HISTORY
    )

    hover_point = np.array([0.0, 0.0, 1.0])
    """Goal position [m, world]."""

    def _reset_task(self) -> None:
        rng = self.np_random
        pos = self.hover_point + rng.uniform(-0.2, 0.2, size=3)
        vel = rng.uniform(-0.3, 0.3, size=3)
        rates = rng.uniform(-1.0, 1.0, size=3)
        self._set_state(pos, vel, random_tilt(rng, 0.3), rates)
        self._set_goal(self.hover_point)
