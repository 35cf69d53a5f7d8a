"""Shared MuJoCo goal-conditioned environment base (Gymnasium-Robotics goal-env API).

Subclasses load a scene, say how an action becomes actuator commands, and how the observation,
achieved goal and desired goal are read. This base owns the parts every robot shares: model
loading, ``ctrl_dt`` / ``sim_dt`` sub-stepping, input validation that leaves the state untouched,
domain randomization, action latency, observation noise, the vectorised sparse or dense reward,
and offscreen rendering.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from robot_rl.envs.randomization import PRESETS, DomainRandomization, RandomizationSample, resolve_randomization

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"


def goal_distance(goal_a: np.ndarray, goal_b: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis [m]. Shapes: (..., 3) -> (...)."""
    return np.linalg.norm(np.asarray(goal_a) - np.asarray(goal_b), axis=-1)


class MujocoGoalEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Goal-conditioned MuJoCo env with the Gymnasium-Robotics ``GoalEnv`` interface.

    Observations are dicts with ``observation``, ``achieved_goal`` and ``desired_goal``;
    ``compute_reward(achieved_goal, desired_goal, info)`` is vectorised over leading axes so
    hindsight relabelling (HER) can recompute rewards; ``info["is_success"]`` is 1.0 when the
    achieved goal is within ``distance_threshold`` of the desired goal.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 25}

    scene_file: ClassVar[str] = ""
    """Scene path relative to ``assets/``."""
    sim_dt: ClassVar[float] = 0.002
    """Physics step [s] (the scene's ``timestep``; an instance may override it with ``sim_dt=``)."""
    home_keyframe: ClassVar[str] = "home"
    """Keyframe every episode starts from."""
    randomization_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "object_mass_scale",
            "object_friction_scale",
            "joint_damping_scale",
            "actuator_gain_scale",
            "obs_noise_std",
            "action_noise_std",
            "action_latency_steps",
        }
    )
    """The DomainRandomization keys this env applies; setting any other key is refused."""
    randomization_presets: ClassVar[Mapping[str, DomainRandomization]] = PRESETS
    """The named settings ``randomize=`` accepts for this env."""

    def __init__(
        self,
        ctrl_dt: float = 0.04,
        reward_type: str = "sparse",
        distance_threshold: float = 0.05,
        randomize: str | DomainRandomization | dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 360,
        camera: str = "front",
        sim_dt: float | None = None,
    ) -> None:
        if sim_dt is not None:
            if not (isinstance(sim_dt, int | float) and 0.0 < sim_dt <= ctrl_dt):
                raise ValueError(f"`sim_dt` must be in (0, ctrl_dt={ctrl_dt}] s. Got {sim_dt!r}.")
            self.sim_dt = float(sim_dt)
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"`reward_type` must be 'sparse' or 'dense'. Got {reward_type!r}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"`render_mode` must be None or 'rgb_array'. Got {render_mode!r}.")
        n_substeps = round(ctrl_dt / self.sim_dt)
        if n_substeps < 1 or abs(n_substeps * self.sim_dt - ctrl_dt) > 1e-9:
            raise ValueError(f"`ctrl_dt` must be a positive multiple of sim_dt={self.sim_dt} s. Got {ctrl_dt}.")
        self.ctrl_dt = float(ctrl_dt)
        self.n_substeps = n_substeps
        self.reward_type = reward_type
        self.distance_threshold = float(distance_threshold)
        self.randomization = resolve_randomization(randomize, self.randomization_presets)
        unsupported = sorted(self.randomization.changed_keys() - self.randomization_keys)
        if unsupported:
            raise ValueError(
                f"{type(self).__name__} does not randomize {', '.join(unsupported)}. "
                f"Its randomization keys: {', '.join(sorted(self.randomization_keys))}."
            )
        self.render_mode = render_mode
        self._render_size = (height, width)
        self._camera = camera
        self._renderer: mujoco.Renderer | None = None

        self.model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / self.scene_file))
        if sim_dt is not None:
            self.model.opt.timestep = self.sim_dt
        if abs(self.model.opt.timestep - self.sim_dt) > 1e-12:
            raise RuntimeError(f"{self.scene_file} has timestep {self.model.opt.timestep}, expected {self.sim_dt}.")
        self.data = mujoco.MjData(self.model)
        self._home_key = self.model.key(self.home_keyframe).id
        self._nominal = {
            "geom_friction": self.model.geom_friction.copy(),
            "body_mass": self.model.body_mass.copy(),
            "body_inertia": self.model.body_inertia.copy(),
            "dof_damping": self.model.dof_damping.copy(),
            "actuator_gainprm": self.model.actuator_gainprm.copy(),
            "actuator_biasprm": self.model.actuator_biasprm.copy(),
        }
        self._const_masses = np.concatenate([self.model.body_mass, self.model.body_inertia.ravel()])
        """The masses and inertias the model's derived constants were computed for (compiled: the nominal ones)."""
        self._sample = RandomizationSample()
        self._pending: collections.deque[np.ndarray] = collections.deque()
        self._goal = np.zeros(3)
        self._setup()

        obs = self._get_obs()
        self.observation_space = gym.spaces.Dict(
            {
                "observation": gym.spaces.Box(-np.inf, np.inf, shape=obs["observation"].shape, dtype=np.float64),
                "achieved_goal": gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64),
                "desired_goal": gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64),
            }
        )

    # ----------------------------------------------------------------- subclass hooks
    def _setup(self) -> None:
        """Look up model ids and build spaces; called once after the model loads."""
        raise NotImplementedError

    def _reset_task(self) -> None:
        """Place objects and sample ``self._goal`` using ``self.np_random``."""
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        """Write actuator commands for one control period from a validated action."""
        raise NotImplementedError

    def _observation(self) -> np.ndarray:
        """The proprioceptive and object state vector (noise-free)."""
        raise NotImplementedError

    def _achieved_goal(self) -> np.ndarray:
        """The quantity compared with the goal [m]. Shape: (3,)."""
        raise NotImplementedError

    def _simulate(self) -> None:
        """Advance the physics one control period (``n_substeps`` steps of ``sim_dt``) after ``_apply_action``."""
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)

    def _neutral_action(self) -> np.ndarray:
        """Action applied while a latency queue is filling (hold still)."""
        return np.zeros(self.action_space.shape, dtype=np.float64)

    # ------------------------------------------------------------------ goal-env API
    @property
    def dt(self) -> float:
        """Time between two ``step`` calls [s], as Gymnasium's MuJoCo envs define ``dt``: the control period."""
        return self.ctrl_dt

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Sparse: -1 until within ``distance_threshold``, then 0. Dense: minus the distance [m].

        Vectorised: goals of shape (..., 3) give rewards of shape (...).
        """
        d = goal_distance(achieved_goal, desired_goal)
        if self.reward_type == "sparse":
            return -(d > self.distance_threshold).astype(np.float32)
        return -d.astype(np.float32)

    def compute_terminated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> bool:
        """Episodes never terminate early (the goal can be left again); they are truncated by time."""
        return False

    def compute_truncated(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> bool:
        """Truncation is left to the TimeLimit wrapper registered with the env."""
        return False

    # ----------------------------------------------------------------- gym.Env API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset to the ``home`` keyframe, draw randomization, objects and goal from the seed."""
        super().reset(seed=seed)
        mujoco.mj_resetDataKeyframe(self.model, self.data, self._home_key)
        self._sample = self.randomization.sample(self.np_random)
        self._apply_randomization(self._sample)
        self._refresh_mass_constants()
        self._pending.clear()
        self._reset_task()
        mujoco.mj_forward(self.model, self.data)
        obs = self._get_obs()
        return obs, {"is_success": float(self._is_success()), "randomization": self._sample}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Advance one control period (``ctrl_dt``) with ``n_substeps`` physics steps.

        Raises:
            ValueError: the action has the wrong shape or holds NaN/inf; the state is untouched.
        """
        action = self._validate_action(action)
        if self._sample.action_noise_std > 0.0:
            noise = self.np_random.normal(0.0, self._sample.action_noise_std, action.shape)
            action = np.clip(action + noise, self.action_space.low, self.action_space.high)
        if self._sample.action_latency_steps:
            self._pending.append(action)
            if len(self._pending) > self._sample.action_latency_steps:
                action = self._pending.popleft()
            else:
                action = self._neutral_action()
        self._apply_action(action)
        self._simulate()
        obs = self._get_obs()
        # The scalar form of compute_reward (one distance on Python floats, no array round trips).
        distance = math.dist(obs["achieved_goal"].tolist(), self._goal.tolist())
        success = distance <= self.distance_threshold
        if self.reward_type == "sparse":
            reward = 0.0 if success else -1.0
        else:
            reward = -distance
        return obs, reward, False, False, {"is_success": float(success)}

    def render(self) -> np.ndarray | None:
        """An RGB frame from the scene's ``front`` camera. Shape: (height, width, 3)."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            height, width = self._render_size
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        """Release the offscreen renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --------------------------------------------------------------------- helpers
    def _validate_action(self, action: Any) -> np.ndarray:
        """The action as a new float64 array clipped to the action space; raises before any state change."""
        space = self.action_space
        shape = space.shape
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be a numeric array of shape {shape}; got {type(action).__name__}.") from None
        if arr.shape != shape:
            raise ValueError(
                f"action must have shape {shape} (see the env docstring for each entry); got shape {arr.shape}."
            )
        # math.isfinite over Python floats: a few times cheaper than np.isfinite + all on a 4-vector.
        if not all(map(math.isfinite, arr.ravel().tolist())):
            bad = np.flatnonzero(~np.isfinite(arr)).tolist()
            raise ValueError(f"action must be finite; entries {bad} are NaN or inf: {arr.tolist()}.")
        # Same values as np.clip for finite input (a new array either way), at a third of the cost.
        return np.minimum(np.maximum(arr, space.low), space.high)

    def _get_obs(self) -> dict[str, np.ndarray]:
        observation = self._observation()
        if self._sample.obs_noise_std > 0.0:
            observation = observation + self.np_random.normal(0.0, self._sample.obs_noise_std, observation.shape)
        return {
            "observation": observation,
            "achieved_goal": self._achieved_goal().copy(),
            "desired_goal": self._goal.copy(),
        }

    def _is_success(self) -> bool:
        return math.dist(self._achieved_goal(), self._goal) <= self.distance_threshold

    def _object_body(self) -> int | None:
        """Body id of the manipulated object, if the scene has one."""
        return None

    def _refresh_mass_constants(self) -> None:
        """Recompute the model's mass-derived constants after the randomization changed a body's mass or inertia.

        MuJoCo derives constants from the masses when it compiles (``body_subtreemass``, ``dof_M0``, ...), and
        writing ``body_mass`` afterwards leaves them stale: on mujoco 3.11 the joint-space inertia then keeps the
        compiled mass while gravity uses the new one (a quadrotor at 0.7x mass accelerated as 0.027 kg under a
        0.0189 kg weight), and mujoco 4 lets a randomized cube's velocity blow up. ``mj_setConst`` recomputes them
        (it runs the kinematics at ``qpos0``, so the keyframe is restored after it). Masses equal to those the
        constants were computed for (nominal episodes) skip it: those episodes stay bit-identical.
        """
        m = self.model
        masses = np.concatenate([m.body_mass, m.body_inertia.ravel()])
        if np.array_equal(masses, self._const_masses):
            return
        mujoco.mj_setConst(m, self.data)
        mujoco.mj_resetDataKeyframe(m, self.data, self._home_key)
        self._const_masses = masses

    def _apply_randomization(self, s: RandomizationSample) -> None:
        m, nominal = self.model, self._nominal
        m.geom_friction[:] = nominal["geom_friction"]
        m.body_mass[:] = nominal["body_mass"]
        m.body_inertia[:] = nominal["body_inertia"]
        m.dof_damping[:] = nominal["dof_damping"]
        m.actuator_gainprm[:] = nominal["actuator_gainprm"]
        m.actuator_biasprm[:] = nominal["actuator_biasprm"]
        body = self._object_body()
        if body is not None:
            m.body_mass[body] *= s.object_mass_scale
            m.body_inertia[body] *= s.object_mass_scale
            m.geom_friction[m.geom_bodyid == body, 0] *= s.object_friction_scale
        m.dof_damping[:] *= s.joint_damping_scale
        m.actuator_gainprm[:, 0] *= s.actuator_gain_scale
        m.actuator_biasprm[:, 1:3] *= s.actuator_gain_scale
