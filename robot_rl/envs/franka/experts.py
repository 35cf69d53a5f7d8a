"""Scripted experts for the Panda tasks: closed-loop controllers on the policy's own observation.

Each expert sees exactly what a learned policy sees (the dict observation; no privileged
simulator state) and returns an action in the env's ``Box(-1, 1, (4,))``. They are the
demonstrators for behaviour cloning and the reference for `robot-rl eval --policy expert`.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.envs.franka.panda_env import MOTIONS

MAX_DISPLACEMENT = 0.05
"""TCP displacement per step at |action| = 1 [m] (PandaEnv.max_displacement)."""
CTRL_DT = 0.04
"""Control period [s] (PandaEnv.ctrl_dt)."""
FR3_BRAKING = 2.5
"""TCP deceleration [m/s^2] the experts plan their stops with in ``motion="fr3"`` envs."""


def _move(grip: np.ndarray, target: np.ndarray, gripper: float, gain: float = 1.0) -> np.ndarray:
    """Action that moves the TCP towards ``target`` [m] at most one full step, with ``gripper``."""
    delta = gain * (target - grip) / MAX_DISPLACEMENT
    norm = float(np.linalg.norm(delta))
    if norm > 1.0:
        delta /= norm
    return np.array([delta[0], delta[1], delta[2], gripper])


class _Expert:
    """What every Panda expert shares: the env's ``motion`` mode and how a move is commanded in it.

    In ``motion="servo"`` envs a move is :func:`_move`: a step towards the target, which the arm completes
    within the period. An arm within the FR3's acceleration limits (``motion="fr3"``) cannot stop within a
    period, and commanded that way it overshoots every stop (and oscillates about a goal). There a move that
    ends at its target is also capped at the speed from which the TCP can still stop there with
    :attr:`braking` (``v <= sqrt(2 a d)``); a move towards a target that runs ahead of the TCP (a push, a
    strike) is not.

    Args:
        motion: The env's ``motion`` kwarg (``"servo"`` or ``"fr3"``).
    """

    def __init__(self, motion: str = "servo") -> None:
        if motion not in MOTIONS:
            raise ValueError(f"`motion` must be one of {', '.join(map(repr, MOTIONS))}. Got {motion!r}.")
        self.motion = motion
        self.braking = FR3_BRAKING
        """The TCP deceleration the approaches plan their stops with in fr3 mode [m/s^2]."""
        self.reset()

    def reset(self) -> None:
        """Start a new episode."""

    def _move(
        self, grip: np.ndarray, target: np.ndarray, gripper: float, gain: float = 1.0, carrot: bool = False
    ) -> np.ndarray:
        """Action towards ``target`` [m] with ``gripper`` (class docstring); ``carrot``: the target runs ahead."""
        action = _move(grip, target, gripper, gain)
        if self.motion == "servo" or carrot:
            return action
        cap = CTRL_DT * math.sqrt(2.0 * self.braking * float(np.linalg.norm(target - grip))) / MAX_DISPLACEMENT
        norm = float(np.linalg.norm(action[:3]))
        if norm > cap:
            action[:3] *= cap / norm
        return action


class ReachExpert(_Expert):
    """Move straight to the goal."""

    def reset(self) -> None:
        """Start a new episode."""

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action for one observation. Shape: (4,)."""
        return self._move(obs["observation"][:3], obs["desired_goal"], -1.0)


class PushExpert(_Expert):
    """Push the cube with the closed fingertips along the cube-to-goal line, re-approaching when it drifts.

    Phases: rise, go above a point behind the cube (opposite the goal), descend, push through the
    cube's centre towards the goal, slowing down near it; if the cube turns off the pushing line,
    lift and approach again from the new "behind" point. Once the cube is close, hold still.
    """

    approach_height = 0.09
    """TCP height while travelling above the table [m] (clears the cube's top with the fingertips)."""
    push_height = 0.02
    """TCP height while pushing [m]: just below the cube's centre (0.025 m), so it slides without tipping."""
    standoff = 0.065
    """Distance behind the cube centre where the fingertips come down before a push [m]."""
    contact = 0.04
    """Fingertip distance behind the cube centre while in contact (half cube + pad) [m]."""

    def reset(self) -> None:
        """Start a new episode in the approach phase."""
        self._pushing = False
        self._arrived = False

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action for one observation. Shape: (4,)."""
        o = obs["observation"]
        grip, cube, goal = o[:3], o[3:6], obs["desired_goal"]
        to_goal = goal[:2] - cube[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.02:
            self._arrived = True
        if self._arrived and dist < 0.035:
            # Arrived: hold still, so the cube is not disturbed.
            return np.array([0.0, 0.0, 0.0, -1.0])
        self._arrived = False
        direction = to_goal / dist
        behind = cube[:2] - self.standoff * direction
        rel = grip[:2] - cube[:2]
        along = float(rel @ direction)
        lateral = abs(float(rel[0] * direction[1] - rel[1] * direction[0]))
        if self._pushing and (lateral > 0.025 or along > -0.02):
            self._pushing = False  # the cube turned off the pushing line
        if not self._pushing:
            horizontal = float(np.linalg.norm(grip[:2] - behind))
            if horizontal > 0.01:
                if grip[2] < self.approach_height - 0.02 and horizontal > 0.025:
                    return self._move(grip, np.array([grip[0], grip[1], self.approach_height]), -1.0)
                # Descend while closing in on the start point, staying clear of the cube.
                height = self.approach_height if horizontal > 0.04 else self.push_height
                return self._move(grip, np.array([behind[0], behind[1], height]), -1.0, gain=0.8)
            if grip[2] > self.push_height + 0.01:
                return self._move(grip, np.array([behind[0], behind[1], self.push_height]), -1.0, gain=0.7)
            self._pushing = True
        # Push along the line, slowing down near the goal; steer back through the cube's centre.
        step = min(0.025, 0.25 * dist + 0.003)
        line_point = cube[:2] - self.contact * direction
        offset = line_point - grip[:2]
        offset -= float(offset @ direction) * direction
        xy = grip[:2] + step * direction + 0.7 * offset
        # The target runs a step ahead (a carrot, not a stop); the step shrinks near the goal.
        return self._move(grip, np.array([xy[0], xy[1], self.push_height]), -1.0, carrot=True)


class PickAndPlaceExpert(_Expert):
    """Open, align above the cube, descend, close, lift and carry it to the goal, hold it there."""

    hover = 0.07
    """Height above the cube while aligning [m]."""

    def reset(self) -> None:
        """Start a new episode in the approach phase."""
        self._grasped_steps = 0
        self._descending = False

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action for one observation. Shape: (4,)."""
        o = obs["observation"]
        grip, cube, fingers, goal = o[:3], o[3:6], o[9:11], obs["desired_goal"]
        grip_vel = o[20:23]
        rel = cube - grip
        horizontal = float(np.linalg.norm(rel[:2]))
        width = float(fingers.sum())
        near = horizontal < 0.025 and abs(rel[2]) < 0.03
        holding = near and 0.01 < width < 0.053
        self._grasped_steps = self._grasped_steps + 1 if holding else 0
        if self._grasped_steps >= 3:
            # Carry: move the cube (held at the TCP) to the goal.
            return self._move(grip, goal - (cube - grip), -1.0, gain=0.8)
        if near and width < 0.075 and grip[2] - cube[2] < 0.008:
            return np.array([0.0, 0.0, 0.0, -1.0])  # closing on the cube
        if self._descending and horizontal > 0.02:
            self._descending = False  # the cube moved away: align again
        if not self._descending:
            above = np.array([cube[0], cube[1], cube[2] + self.hover])
            if grip[2] < cube[2] + 0.04 and horizontal > 0.02:
                return self._move(grip, np.array([grip[0], grip[1], above[2]]), 1.0)  # rise clear of the cube
            if horizontal > 0.006 or float(np.linalg.norm(grip_vel[:2])) > 0.05:
                return self._move(grip, above, 1.0, gain=0.8 if horizontal > 0.03 else 0.5)
            self._descending = True
        if grip[2] - cube[2] > 0.004:
            target = np.array([cube[0], cube[1], cube[2]])
            return self._move(grip, target, 1.0, gain=1.0 if grip[2] - cube[2] > 0.06 else 0.5)
        return np.array([0.0, 0.0, 0.0, -1.0])


class SlideExpert(_Expert):
    """Strike the puck along the puck-to-goal line with the speed that makes it stop at the goal.

    A released puck decelerates at ``mu g`` (friction 0.05, so about 0.49 m/s^2) and stops after
    ``v^2 / (2 mu g)``. The expert comes down behind the puck, pushes it along the line with the
    speed profile ``v(d) = sqrt(2 mu g d)`` (d the remaining distance), ramping up gently, and lets
    go once the puck is at that speed. The fingertips' cross-section is a rectangle, so the
    expert aims the corner (or face) that meets the puck at the point opposite the goal, so the
    contact pushes through the puck's centre.
    """

    deceleration = 0.05 * 9.81
    """Expected sliding deceleration of the released puck [m/s^2]."""
    approach_height = 0.06
    """TCP height while travelling [m] (the puck's top is at 0.02 m)."""
    push_height = 0.012
    """TCP height while pushing [m]: the pads span 0.0025-0.0215 m, the puck 0-0.02 m."""
    puck_radius = 0.03
    tip_half = np.array([0.0085, 0.01])
    """Half extents of the closed fingertips' cross-section along world x, y [m]."""
    standoff = 0.012
    """Gap between the fingertips and the puck where the fingertips come down [m]."""
    max_accel_step = 0.01
    contact_step = 0.005
    """Per-step advance while closing the last gap to the puck [m]."""
    speed_factor = 1.0
    """Fraction of v(d) the fingertips move at."""
    max_reach = 0.76
    release_distance = 0.04
    """Puck-to-goal distance where the hand lets go even within reach [m] (the line's direction
    becomes ill-defined close to the goal)."""
    """Horizontal distance from the robot base where the push ends [m]."""
    """Largest increase of the per-step displacement during the push [m] (a gentle ramp)."""

    def reset(self) -> None:
        """Start a new episode in the approach phase."""
        self._phase = "approach"
        self._step = 0.0

    def _tip_target(self, puck: np.ndarray, direction: np.ndarray, gap: float) -> np.ndarray:
        # The fingertip feature that meets the puck first when moving along `direction`.
        corner = np.sign(direction) * self.tip_half
        if abs(direction[1]) < 0.1:
            corner[1] = 0.0  # nearly along x: the front face pushes
        if abs(direction[0]) < 0.1:
            corner[0] = 0.0
        return puck[:2] - (self.puck_radius + gap) * direction - corner

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action for one observation. Shape: (4,)."""
        o = obs["observation"]
        grip, puck, goal = o[:3], o[3:6], obs["desired_goal"]
        puck_vel = o[14:17] + o[20:23]
        to_goal = goal[:2] - puck[:2]
        dist = float(np.linalg.norm(to_goal))
        direction = to_goal / max(dist, 1e-6)
        speed = float(puck_vel[:2] @ direction)
        if self._phase == "released":
            # Pull back and up, away from the sliding puck.
            return self._move(grip, np.array([grip[0], grip[1], self.approach_height]), -1.0)
        if self._phase == "approach":
            start = self._tip_target(puck, direction, self.standoff)
            horizontal = float(np.linalg.norm(grip[:2] - start))
            if horizontal > 0.006:
                if grip[2] < self.approach_height - 0.02 and horizontal > 0.03:
                    return self._move(grip, np.array([grip[0], grip[1], self.approach_height]), -1.0)
                height = self.approach_height if horizontal > 0.04 else self.push_height
                return self._move(grip, np.array([start[0], start[1], height]), -1.0, gain=0.7)
            if grip[2] > self.push_height + 0.004:
                return self._move(grip, np.array([start[0], start[1], self.push_height]), -1.0, gain=0.6)
            self._phase = "strike"
        # Strike: move the fingertips at the speed v(d) = sqrt(2 a d) of the remaining distance d. A
        # hand on that profile decelerates at exactly a, as friction would decelerate the free puck,
        # so the puck rides along and, once the hand has to stop (its reach), slides on to the goal.
        target_speed = math.sqrt(2.0 * self.deceleration * dist)
        reach = float(np.hypot(grip[0], grip[1]))
        if reach > self.max_reach or dist < self.release_distance or speed >= target_speed:
            self._phase = "released"
            back = grip[:2] - 0.05 * direction
            return self._move(grip, np.array([back[0], back[1], self.approach_height]), -1.0)
        if speed < 0.05:
            # Not touching yet: creep into contact, since an impact would launch the light puck
            # faster than the hand moves.
            self._step = self.contact_step
        else:
            self._step = min(
                self._step + self.max_accel_step, self.speed_factor * target_speed * 0.04, MAX_DISPLACEMENT
            )
        # Advance along the line while steering the contact feature back onto it.
        on_line = self._tip_target(puck, direction, 0.0)
        offset = on_line - grip[:2]
        offset -= float(offset @ direction) * direction
        xy = grip[:2] + self._step * direction + 0.7 * offset
        return self._move(grip, np.array([xy[0], xy[1], self.push_height]), -1.0, carrot=True)


EXPERTS = {
    "PandaReach": ReachExpert,
    "PandaPush": PushExpert,
    "PandaSlide": SlideExpert,
    "PandaPickAndPlace": PickAndPlaceExpert,
}


def make_expert(env_id: str, motion: str = "servo") -> ReachExpert | PushExpert | SlideExpert | PickAndPlaceExpert:
    """The scripted expert for a robot_rl env id (sparse or Dense variant) and the env's ``motion`` mode.

    Pass ``env.unwrapped.motion_mode`` for ``motion``: the servo-mode expert overshoots on an arm with the FR3's
    limits.
    """
    name = env_id.split("/")[-1].split("-")[0].removesuffix("Dense")
    if name not in EXPERTS:
        raise ValueError(f"no scripted expert for {env_id!r}. Experts exist for: {', '.join(EXPERTS)}.")
    return EXPERTS[name](motion)
