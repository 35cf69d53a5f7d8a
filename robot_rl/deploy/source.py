"""What a path holds, opened once: an exported policy folder, a bc|diffusion training run or a residual run.

:func:`open_policy` decides the kind from the folder's files, validates what its users run on (the card's
runtime fields, a run's policy options and weights, a residual's algorithm, scale, agent description and base,
the env id and the robot family) and returns an :class:`OpenedPolicy`: the env the policy acts in, the robot
(from the env registry), the card or the run's config, and how to build what runs
(:meth:`OpenedPolicy.load_policy`, :meth:`OpenedPolicy.actor`, :meth:`OpenedPolicy.load_agent`). Evaluation,
the ROS 2 node, residual training (its base) and the residual exporter open paths here.

The kinds::

    exported   policies/NAME: metadata.json + policy.onnx                  (robot-rl export)
    run        RUN_DIR: config.json + policy.safetensors                    (robot-rl train bc|diffusion)
    residual   RUN_DIR: config.json + agent.json + agent.safetensors        (robot-rl train residual)

A refusal is one line, a ``ValueError`` (the CLI prints it and exits 2): :class:`PolicyOpenError`, or the
reader's own (:class:`~robot_rl.export.metadata.PolicyFormatError` for a card,
:class:`~robot_rl.policies.checkpoint.RunError` for a run, :class:`~robot_rl.rl.agent_io.AgentFileError` for a
residual agent's files).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from robot_rl.envs.registry import RobotSpec, check_env_id, robot_of
from robot_rl.export.metadata import METADATA_FILE, ONNX_FILE, read_metadata
from robot_rl.rl import agent_io

if TYPE_CHECKING:
    from robot_rl.export.metadata import PolicyMetadata

Kind = Literal["exported", "run", "residual"]
KINDS: tuple[Kind, ...] = ("exported", "run", "residual")
KIND_TEXT: dict[str, str] = {
    "exported": f"an exported policy folder ({METADATA_FILE} + {ONNX_FILE}, from `robot-rl export`)",
    "run": "a bc|diffusion training run (config.json + policy.safetensors, from `robot-rl train bc|diffusion`)",
    "residual": "a residual run (config.json + agent.json + agent.safetensors, from `robot-rl train residual`)",
}
"""Each kind as the messages describe it."""
RUN_CONFIG = "config.json"
"""A training run's resolved config (``robot_rl.policies.checkpoint.CONFIG``; that module loads torch)."""
RESIDUAL_ALGOS = ("sac", "ppo", "dsrl")


class PolicyOpenError(ValueError):
    """A path that is not the policy its user needs, or one whose files are inconsistent (one line)."""


@dataclasses.dataclass(frozen=True)
class OpenedPolicy:
    """What a path holds, validated (:func:`open_policy`)."""

    path: Path
    """The folder, as given."""
    kind: Kind
    """``exported``, ``run`` (bc|diffusion) or ``residual``."""
    policy_type: str
    """``bc`` or ``diffusion`` (an exported folder's base, a run), ``residual`` (a residual run)."""
    env_id: str
    """The env it was trained on (registered)."""
    env_kwargs: dict[str, Any]
    """The env's kwargs as the card or the run's config records them (a run's include its ``randomize``)."""
    robot: RobotSpec
    """The robot family, the hardware and its hardware file (the env registry's)."""
    demo_seeds: tuple[int, ...]
    """Env seeds of the demos it was trained on: evaluations must use others."""
    card: PolicyMetadata | None = None
    """An exported folder's card (metadata.json)."""
    config: dict[str, Any] | None = None
    """A run's config.json (bc|diffusion or residual), as written."""
    base: OpenedPolicy | None = None
    """A residual run's base (an exported base folder or a bc|diffusion run)."""
    agent: dict[str, Any] | None = None
    """A residual run's agent description (agent.json)."""

    @property
    def residual_algo(self) -> str | None:
        """The residual in it (``sac``, ``ppo``, ``dsrl``): an exported stack's or a residual run's; None for a base."""
        if self.kind == "residual":
            assert self.config is not None
            return str(self.config["algo"])
        if self.card is not None and self.card.residual:
            return str(self.card.residual["algo"])
        return None

    @property
    def is_base(self) -> bool:
        """A bc or diffusion policy without a residual (what a residual can be trained on)."""
        return self.residual_algo is None

    @property
    def description(self) -> str:
        """The kind in words (``an exported policy folder (...)``)."""
        return KIND_TEXT[self.kind]

    def load_policy(self, threads: int = 1) -> Any:
        """The Policy (:class:`robot_rl.policies.layout.Policy` protocol): ONNX for a folder, torch for a run.

        Raises:
            PolicyOpenError: a residual run (its actor is base and agent together: :meth:`actor`).
        """
        if self.kind == "exported":
            from robot_rl.runtime.onnx_policy import OnnxPolicy

            return OnnxPolicy(self.path, threads=threads)
        if self.kind == "run":
            from robot_rl.policies.checkpoint import load_policy

            return load_policy(self.path)
        raise PolicyOpenError(
            f"{self.path} is {self.description}: it has no single policy; its actor is its base and its agent "
            "together (OpenedPolicy.actor)."
        )

    def load_agent(self) -> Any:
        """A residual run's agent (:class:`robot_rl.rl.agent_io.Agent`, rebuilt from safetensors)."""
        if self.kind != "residual":
            raise PolicyOpenError(f"{self.path} is {self.description}, not {KIND_TEXT['residual']}: it has no agent.")
        return agent_io.load_agent(self.path)

    def residual_options(self) -> dict[str, Any]:
        """A residual run's options (a copy), ``feedback`` set (False for runs from before the option)."""
        if self.kind != "residual":
            raise PolicyOpenError(f"{self.path} is {self.description}, not {KIND_TEXT['residual']}.")
        assert self.config is not None
        options = json.loads(json.dumps(self.config["options"]))
        options["feedback"] = bool(options.get("feedback", False))
        return options

    def base_info(self) -> dict[str, Any]:
        """How a residual run records this base in its config.json (``base``): path, source, type, env, seeds."""
        if not self.is_base or self.kind == "residual":
            raise PolicyOpenError(f"{self.path} holds a {self.residual_algo} residual; it is no base.")
        if self.kind == "exported":
            assert self.card is not None
            return {
                "path": str(self.path),
                "source": "onnx",
                "policy_type": self.card.base.policy_type,
                "env_id": self.card.env_id,
                "env_kwargs": {},
                "seeds": self.card.training_data.seeds,
            }
        assert self.config is not None
        return {
            "path": str(self.path),
            "source": "run",
            "policy_type": self.config["policy_type"],
            "env_id": self.config["env_id"],
            "env_kwargs": {k: v for k, v in self.config.get("env_kwargs", {}).items() if k != "randomize"},
            "seeds": self.config["data"]["seeds"],
        }

    def set_inference_steps(self, policy: Any, steps: int | None) -> None:
        """Run ``policy`` (from :meth:`load_policy`) with ``steps`` denoising steps (None: as trained or exported).

        Raises:
            PolicyOpenError: not a diffusion policy, or an exported graph with another number built in.
        """
        if steps is None or steps == getattr(policy, "inference_steps", None):
            return
        if getattr(policy, "inference_steps", None) is None:
            raise PolicyOpenError(
                f"`inference_steps` applies to diffusion policies; {self.path} is a {policy.kind} policy."
            )
        if self.kind == "exported":
            assert self.card is not None
            raise PolicyOpenError(
                f"{self.path} has {policy.inference_steps} denoising steps built into its graph; re-export the run "
                f"with `robot-rl export --run {self.card.base.run_dir} --inference-steps {steps} --out NEW_DIR` to "
                "evaluate another number."
            )
        policy.inference_steps = steps

    def actor(
        self, env: Any, n_action_steps: int | None = None, inference_steps: int | None = None
    ) -> tuple[Callable[[dict[str, Any]], Any], Callable[[int], None]]:
        """An ``obs -> action`` function for ``env`` and its per-episode ``reset(seed)``, without a Controller.

        A folder or run through :class:`~robot_rl.policies.layout.ChunkedActor`; a residual run as its base plus
        its agent (:class:`~robot_rl.rl.wrappers.ResidualActor`, or :class:`~robot_rl.rl.wrappers.NoiseActor` for
        dsrl), the arithmetic it was trained with.

        Raises:
            ValueError: the policy's observation or action layout does not fit ``env``; options it cannot take.
        """
        from robot_rl.policies.layout import ChunkedActor, check_layout

        if self.kind == "residual":
            from robot_rl.rl.wrappers import NoiseActor, ResidualActor

            assert self.base is not None
            agent = self.load_agent()
            base = self.base.load_policy()
            check_layout(base.layout, env.observation_space, base.action_dim, env.action_space)
            if self.residual_algo == "dsrl":
                noise = NoiseActor(agent, base)
                return noise, noise.reset
            options = self.residual_options()
            residual = ResidualActor(agent, base, options["scale"], env.action_space, options["feedback"])
            return residual, residual.reset
        policy = self.load_policy()
        check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
        self.set_inference_steps(policy, inference_steps)
        chunked = ChunkedActor(policy, n_action_steps=n_action_steps)
        return chunked, chunked.reset


def policy_kind(path: str | os.PathLike[str]) -> Kind | None:
    """The kind ``path`` holds, judged by its files alone (None: none); :func:`open_policy` validates it.

    A run's kind is its config.json's ``policy_type`` (a stray ``model.zip`` in a bc run does not make it a
    residual run); a config.json that cannot be read counts as a residual run's when agent.json is beside it.
    """
    folder = Path(path)
    if (folder / METADATA_FILE).is_file():
        return "exported"
    if not (folder / RUN_CONFIG).is_file():
        return None
    try:
        policy_type = json.loads((folder / RUN_CONFIG).read_text()).get("policy_type")
    except (OSError, ValueError, AttributeError):  # the reader says what is wrong with it
        return "residual" if (folder / agent_io.DESCRIPTION).is_file() else "run"
    return "residual" if policy_type == "residual" else "run"


def _expected(accept: Collection[str], base_only: bool) -> str:
    text = " or ".join(KIND_TEXT[k] for k in KINDS if k in accept)
    return text + (" holding a bc or diffusion base (residuals do not stack)" if base_only else "")


def _arrived(folder: Path) -> str:
    """What a path that is none of the kinds holds, in words."""
    if not folder.exists():
        return "nothing: no such file or folder"
    if not folder.is_dir():
        return "a file, not a folder"
    if (folder / ONNX_FILE).is_file():
        return (
            f"{ONNX_FILE} without its {METADATA_FILE} (the card `robot-rl export` writes beside the graph, with its "
            "sha256): copy the whole folder, or export it again"
        )
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "an empty folder"
    return f"a folder of {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"


def open_policy(
    path: str | os.PathLike[str],
    accept: Collection[Kind] = KINDS,
    *,
    base_only: bool = False,
    what: str = "",
) -> OpenedPolicy:
    """Open and validate what ``path`` holds.

    Args:
        path: An exported policy folder, a bc|diffusion training run or a residual run.
        accept: The kinds the caller can use (default: all three).
        base_only: Refuse a residual (an exported stack or a residual run): the caller needs a base.
        what: How the caller names the path in messages (``--base``).

    Returns:
        The :class:`OpenedPolicy`.

    Raises:
        PolicyOpenError: none of the kinds, a kind the caller cannot use, or files that contradict each other
            (what was expected, what arrived, what is valid).
        PolicyFormatError, RunError, AgentFileError: the card, the run's config or the agent's files refused by
            their readers (one line each).
    """
    folder = Path(path)
    where = f"{what} {folder}" if what else str(folder)
    kind = policy_kind(folder)
    if kind is None:
        raise PolicyOpenError(f"{where}: expected {_expected(accept, base_only)}; got {_arrived(folder)}.")
    if kind not in accept:
        raise PolicyOpenError(f"{where}: expected {_expected(accept, base_only)}; got {KIND_TEXT[kind]}.")
    opened = {"exported": _open_exported, "run": _open_run, "residual": _open_residual}[kind](folder)
    if base_only and not opened.is_base:
        raise PolicyOpenError(
            f"{where}: expected {_expected(accept, base_only)}; got {opened.description} with a "
            f"{opened.residual_algo} residual."
        )
    return opened


def _robot(env_id: Any, where: str) -> tuple[str, RobotSpec]:
    if not isinstance(env_id, str):
        raise PolicyOpenError(f"{where}: `env_id` must be a registered env id (`robot-rl envs`). Got {env_id!r}.")
    try:
        env_id = check_env_id(env_id)
    except ValueError as err:  # unknown or retired: the registry's message names the valid ids or the successor
        raise PolicyOpenError(f"{where}: env_id: {err}") from None
    return env_id, robot_of(env_id)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise PolicyOpenError(f"{where}: the demo seeds must be a list of integers. Got {value!r}.")
    return tuple(value)


def _open_exported(folder: Path) -> OpenedPolicy:
    card = read_metadata(folder)  # every runtime field checked (PolicyMetadata.check_runtime)
    where = str(folder / METADATA_FILE)
    if not (folder / card.onnx.file).is_file():
        raise PolicyOpenError(f"{folder}: expected its graph {card.onnx.file} beside {METADATA_FILE}; it is missing.")
    env_id, robot = _robot(card.env_id, where)
    if card.action.family != robot.family:
        raise PolicyOpenError(
            f"{where}: action.family is {card.action.family!r}, but {env_id} is a {robot.family} env (valid: "
            f"{robot.family!r})."
        )
    if not isinstance(card.env_kwargs, dict):
        raise PolicyOpenError(f"{where}: `env_kwargs` must be an object. Got {card.env_kwargs!r}.")
    seeds = _seeds(card.training_data.seeds, f"{where}: training_data.seeds")
    return OpenedPolicy(folder, "exported", card.base.policy_type, env_id, card.env_kwargs, robot, seeds, card=card)


def _open_run(folder: Path) -> OpenedPolicy:
    from robot_rl.policies.checkpoint import WEIGHTS, RunError, read_config
    from robot_rl.policies.models import POLICY_TYPES, config_from_json

    config = read_config(folder)
    where = str(folder / RUN_CONFIG)
    kind = config["policy_type"]
    if kind not in POLICY_TYPES:
        raise RunError(f"{folder}: unknown policy_type {kind!r} in {RUN_CONFIG}; valid: {', '.join(POLICY_TYPES)}.")
    for key in ("obs_layout", "action_dim"):
        if key not in config:
            raise RunError(f"{where} lacks {key!r}: it is damaged, or was not written by `robot-rl train {kind}`.")
    if not isinstance(config["policy"], dict):
        raise PolicyOpenError(f"{where}: `policy` must be an object of {kind} options. Got {config['policy']!r}.")
    try:
        config_from_json(POLICY_TYPES[kind][1], config["policy"])  # the options' own checks: counts, horizons
    except (ValueError, TypeError) as err:
        raise PolicyOpenError(f"{where}: policy: {err}") from None
    action_dim = config["action_dim"]
    if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
        raise PolicyOpenError(f"{where}: `action_dim` must be an integer >= 1. Got {action_dim!r}.")
    if not (folder / WEIGHTS).is_file():
        raise RunError(f"{folder} has no {WEIGHTS} yet (training has not saved a checkpoint).")
    env_id, robot = _robot(config["env_id"], where)
    env_kwargs = config.get("env_kwargs", {})
    if not isinstance(env_kwargs, dict):
        raise PolicyOpenError(f"{where}: `env_kwargs` must be an object. Got {env_kwargs!r}.")
    seeds = _seeds(config["data"].get("seeds") if isinstance(config["data"], dict) else None, f"{where}: data.seeds")
    return OpenedPolicy(folder, "run", kind, env_id, env_kwargs, robot, seeds, config=config)


def _open_residual(folder: Path) -> OpenedPolicy:
    from robot_rl.policies.checkpoint import read_config
    from robot_rl.policies.residual import resolve_scale

    config = read_config(folder)
    where = str(folder / RUN_CONFIG)
    if config["policy_type"] != "residual":
        raise PolicyOpenError(
            f"{where}: policy_type {config['policy_type']!r} beside {agent_io.DESCRIPTION}; a residual run's is "
            "'residual'. The folder is damaged."
        )
    algo = config.get("algo")
    if algo not in RESIDUAL_ALGOS:
        raise PolicyOpenError(f"{where}: algo must be one of {list(RESIDUAL_ALGOS)}. Got {algo!r}.")
    options, base_entry = config.get("options"), config.get("base")
    if not isinstance(options, dict) or not isinstance(base_entry, dict) or "path" not in base_entry:
        raise PolicyOpenError(f"{where}: expected `options` and `base` (with its `path`) objects; the run is damaged.")
    agent = agent_io.read_description(folder)  # a zip-only run is refused here with how to convert it
    if agent["algo"] != algo:
        raise PolicyOpenError(
            f"{folder}: {agent_io.DESCRIPTION} holds a {agent['algo']} agent; {RUN_CONFIG} says {algo}."
        )
    if not (folder / agent_io.DEPLOYED).is_file():
        raise agent_io.AgentFileError(
            f"{folder} has no {agent_io.DEPLOYED}: the residual run has not reached its first evaluation."
        )
    base = open_policy(base_entry["path"], ("exported", "run"), base_only=True, what=f"{where}: base")
    env_id, robot = _robot(config.get("env_id"), where)
    if robot != base.robot:
        raise PolicyOpenError(
            f"{where}: env {env_id} is a {robot.family} env; its base acts for the {base.robot.family}."
        )
    action_dim = base.card.action_dim if base.card is not None else int(base.config["action_dim"])  # type: ignore[index]
    try:
        if algo == "dsrl":
            bound = options.get("noise_bound")
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound) or bound <= 0:
                raise ValueError(f"`noise_bound` must be a finite number > 0. Got {bound!r}.")
        else:
            resolve_scale(options.get("scale"), action_dim)
    except (ValueError, TypeError) as err:
        raise PolicyOpenError(f"{where}: options: {err}") from None
    if not isinstance(options.get("feedback", False), bool):
        raise PolicyOpenError(f"{where}: options: `feedback` must be true or false. Got {options['feedback']!r}.")
    data = config.get("data")
    seeds = _seeds(data.get("seeds") if isinstance(data, dict) else None, f"{where}: data.seeds")
    env_kwargs = config.get("env_kwargs", {})
    if not isinstance(env_kwargs, dict):
        raise PolicyOpenError(f"{where}: `env_kwargs` must be an object. Got {env_kwargs!r}.")
    return OpenedPolicy(
        folder, "residual", "residual", env_id, env_kwargs, robot, seeds, config=config, base=base, agent=agent
    )
