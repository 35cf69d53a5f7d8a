"""PandaPickAndPlace-v0: grasp a cube and carry it to a goal on the table or in the air."""

from __future__ import annotations

import numpy as np

from robot_rl.envs.franka.panda_env import OBSERVATION_TABLE
from robot_rl.envs.franka.push import PandaPushEnv


class PandaPickAndPlaceEnv(PandaPushEnv):
    __doc__ = (
        """Grasp a 5 cm, 0.2 kg cube and move it to a goal that is in the air half of the time.

    ## Action Space
    See :class:`PandaEnv`: TCP displacement [x 0.05 m] and gripper opening (-1 closed, +1 open
    to 0.08 m), ``Box(-1, 1, (4,))``.

    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    As PandaPush: cube within +-0.15 m of (0.55, 0) m (x, y). The goal's x, y are drawn
    in the same square; with probability 0.5 it lies on the table, otherwise up to 0.45 m above.

    ## Rewards
    Sparse (default): -1 per step while the cube is farther than 0.05 m from the goal, else 0.
    Dense (``PandaPickAndPlaceDense-v0``): minus the cube-goal distance [m].

    ## Episode End
    Never terminates; truncated after 50 steps (2 s). ``info["is_success"]`` as in PandaPush.

    ## Version History
    * v0: initial version.
    """
    )

    block_gripper = False
    goal_height = 0.45
    """Largest goal height above the cube's resting height [m]."""

    def _sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        goal = super()._sample_goal(rng)
        if rng.uniform() < 0.5:
            goal[2] += rng.uniform(0.0, self.goal_height)
        return goal
