"""PandaPush-v0: push a cube across the table to a goal."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.franka.panda_env import OBSERVATION_TABLE, PandaEnv

CUBE_HALF = 0.025
"""Half edge of the cube [m]."""


class PandaPushEnv(PandaEnv):
    __doc__ = (
        """Push a 5 cm, 0.2 kg cube across the table to a goal on the table; the gripper stays closed.

    ## Action Space
    See :class:`PandaEnv`: TCP displacement [x 0.05 m] and gripper opening, ``Box(-1, 1, (4,))``.
    The gripper is held closed in this task; its action entry is ignored.

    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    The ``home`` keyframe with the TCP at about (0.45, 0, 0.25) m. The cube is placed uniformly
    within +-0.15 m (x, y) of (0.55, 0) m, at least 0.1 m (xy) from the home TCP; the goal is drawn
    on the table in the same square, at least 0.05 m from the cube. (The square sits 0.1 m further
    out than Fetch's, centred on the initial gripper, because the Panda cannot reach the table top
    closer than about 0.3 m from its base.)

    ## Rewards
    Sparse (default): -1 per step while the cube is farther than 0.05 m from the goal, else 0.
    Dense (``PandaPushDense-v0``): minus the cube-goal distance [m].

    ## Episode End
    Never terminates; truncated after 50 steps (2 s). ``info["is_success"]`` is 1.0 while the
    cube centre is within 0.05 m of the goal; evaluation counts the last step's value.

    ## Version History
    * v0: initial version.
    """
    )

    scene_file = "franka/scene.xml"
    block_gripper = True
    obj_range = 0.15
    """Half-width of the square the cube is placed in [m]."""
    target_range = 0.15
    """Half-width of the square the goal is drawn in [m]."""
    min_object_distance = 0.1
    """Smallest initial TCP-to-cube distance in the xy plane [m]."""
    object_z = CUBE_HALF
    sample_center = np.array([0.55, 0.0])
    """Centre of the squares the cube and the goal are drawn in [m, world xy]."""

    def _reset_task(self) -> None:
        home_xy = self.initial_tcp[:2]
        rng = self.np_random
        while True:
            obj_xy = self.sample_center + rng.uniform(-self.obj_range, self.obj_range, size=2)
            if np.linalg.norm(obj_xy - home_xy) >= self.min_object_distance:
                break
        self._place_object(obj_xy, self.object_z)
        while True:
            goal = self._sample_goal(rng)
            if np.linalg.norm(goal[:2] - obj_xy) > self.distance_threshold:
                break
        self._set_goal(goal)

    def _sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        xy = self.sample_center + rng.uniform(-self.target_range, self.target_range, size=2)
        return np.array([xy[0], xy[1], self.object_z])
