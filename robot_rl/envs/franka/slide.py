"""PandaSlide-v0: strike a puck so that it slides to a goal beyond the arm's reach."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.franka.panda_env import OBSERVATION_TABLE
from robot_rl.envs.franka.push import PandaPushEnv

PUCK_HALF_HEIGHT = 0.01
"""Half height of the puck [m] (radius 0.03 m)."""


class PandaSlideEnv(PandaPushEnv):
    __doc__ = (
        """Slide a low-friction puck (radius 0.03 m, 2 cm thick, 0.2 kg, friction 0.05) to a goal on a long table.

    ## Action Space
    See :class:`PandaEnv`: TCP displacement [x 0.05 m] and gripper opening, ``Box(-1, 1, (4,))``.
    The gripper is held closed in this task; its action entry is ignored.

    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    The puck lies within +-0.08 m (x, y) of (0.45, 0) m; the goal is drawn within +-0.2 m of
    (0.8, 0) m, at least 0.1 m from the puck, often beyond what the arm can reach (about
    0.85 m from the base), so the puck has to be struck and left to slide.

    ## Rewards
    Sparse (default): -1 per step while the puck is farther than 0.05 m from the goal, else 0.
    Dense (``PandaSlideDense-v0``): minus the puck-goal distance [m].

    ## Episode End
    Never terminates; truncated after 50 steps (2 s). ``info["is_success"]`` as in PandaPush.

    ## Version History
    * v0: initial version.
    """
    )

    scene_file = "franka/slide_scene.xml"
    obj_range = 0.08
    target_range = 0.2
    object_center = np.array([0.45, 0.0])
    """Centre of the puck's start square [m]."""
    target_center = np.array([0.8, 0.0])
    """Centre of the goal square [m]."""
    object_z = PUCK_HALF_HEIGHT

    def _reset_task(self) -> None:
        rng = self.np_random
        obj_xy = self.object_center + rng.uniform(-self.obj_range, self.obj_range, size=2)
        self._place_object(obj_xy, self.object_z)
        while True:
            goal_xy = self.target_center + rng.uniform(-self.target_range, self.target_range, size=2)
            if np.linalg.norm(goal_xy - obj_xy) >= 0.1:
                break
        self._set_goal(np.array([goal_xy[0], goal_xy[1], self.object_z]))
