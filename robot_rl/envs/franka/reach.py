"""PandaReach-v0: move the gripper's TCP to a 3-D goal."""

from __future__ import annotations

from robot_rl.envs.franka.panda_env import OBSERVATION_TABLE, PandaEnv


class PandaReachEnv(PandaEnv):
    __doc__ = (
        """Move the Panda's tool centre point (TCP, between the fingertips) to a goal in the air.

    ## Action Space
    See :class:`PandaEnv`: TCP displacement [x 0.05 m] and gripper opening, ``Box(-1, 1, (4,))``.
    The gripper is held closed in this task; its action entry is ignored.

    ## Observation Space
"""
        + OBSERVATION_TABLE
        + """
    ## Starting State
    The ``home`` keyframe: TCP at about (0.45, 0, 0.25) m pointing down. The goal is drawn
    uniformly in a 0.3 m cube centred on the home TCP position.

    ## Rewards
    Sparse (default): -1 per step while the TCP is farther than 0.05 m from the goal, else 0.
    Dense (``PandaReachDense-v0``): minus the TCP-goal distance [m].

    ## Episode End
    Never terminates; truncated after 50 steps (2 s at ``ctrl_dt`` 0.04 s).
    ``info["is_success"]`` is 1.0 while the TCP is within 0.05 m of the goal.

    ## Version History
    * v0: initial version.
    """
    )

    scene_file = "franka/reach_scene.xml"
    has_object = False
    block_gripper = True
    target_range = 0.15
    """Half-width of the goal box around the home TCP position [m]."""

    def _reset_task(self) -> None:
        goal = self.initial_tcp + self.np_random.uniform(-self.target_range, self.target_range, size=3)
        self._set_goal(goal)
