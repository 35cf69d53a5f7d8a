"""QuadrotorWaypoint-v1: fly to a 3-D point and hold it."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.quadrotor.hover import random_tilt
from robot_rl.envs.quadrotor.quadrotor_env import ACTION_TABLE, OBSERVATION_TABLE, VERSION_HISTORY, QuadrotorEnv


class QuadrotorWaypointEnv(QuadrotorEnv):
    __doc__ = (
        """Fly a Crazyflie-class quadrotor to a goal point and hold it there.

    ## Action Space
"""
        + ACTION_TABLE
        + """
    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    Start and goal drawn uniformly in the box x, y in [-1, 1] m, z in [0.5, 1.5] m, at least 0.3 m
    apart; the vehicle starts nearly still (velocity within +-0.1 m/s, tilt up to 0.1 rad).

    ## Rewards
    Sparse (default): -1 per step while farther than 0.1 m from the goal, else 0. Dense
    (``QuadrotorWaypointDense-v1``): minus the distance [m].
    A crash also costs the worst per-step reward (-1 sparse, minus the geofence diagonal dense)
    for every step left, so crashing early never pays (``crash_penalty``).

    ## Episode End
    Terminates on a crash (floor, tilt past 80 degrees, geofence). Truncated after 250 steps
    (5 s). ``info["is_success"]`` is 1.0 once the vehicle has stayed within 0.1 m of the goal for
    the last 1 s; evaluation counts the last step's value.
"""
        + VERSION_HISTORY
    )

    box_low = np.array([-1.0, -1.0, 0.5])
    """Lower corner of the start and goal box [m]."""
    box_high = np.array([1.0, 1.0, 1.5])
    """Upper corner of the start and goal box [m]."""

    def _reset_task(self) -> None:
        rng = self.np_random
        start = rng.uniform(self.box_low, self.box_high)
        while True:
            goal = rng.uniform(self.box_low, self.box_high)
            if np.linalg.norm(goal - start) >= 0.3:
                break
        self._set_state(start, rng.uniform(-0.1, 0.1, size=3), random_tilt(rng, 0.1), np.zeros(3))
        self._set_goal(goal)
