"""Residual agents on disk without pickles: safetensors tensors and a JSON description.

stable-baselines3 saves an agent as a zip whose ``data`` entry it unpickles with cloudpickle when the
zip is opened, so loading a ``model.zip`` someone handed you runs whatever code its author put in it.
A residual run therefore keeps its agents as plain tensors (safetensors) beside a JSON description of
the networks (algorithm, spaces, hidden layers), and rebuilds stable-baselines3's own policy classes
from that description before loading the tensors into them: nothing is unpickled, and a crafted file
can at worst be refused.

Files of a residual run (written by :mod:`robot_rl.rl.train`)::

    agent.json               the networks: format, algorithm, observation and action shapes, hidden
                             layers, critic LayerNorm, PPO's initial log std
    agent.safetensors        the deployed agent's policy weights (eval, export, the exported graph)
    best.safetensors         the policy weights of the best evaluation so far
    checkpoint.safetensors   the whole training state at the last evaluation: policy (actor, critics,
                             target critics), optimizer moments, entropy coefficient, env steps
                             (``train residual --resume`` continues from it)

Runs from before this format hold only stable-baselines3 zips; :func:`convert_zip` rewrites one in
this format, and only behind the caller's explicit statement that the zip's author is trusted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "robot_rl.residual_agent/1"
DESCRIPTION = "agent.json"
DEPLOYED = "agent.safetensors"
BEST = "best.safetensors"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_ZIP = "model.zip"

_POLICY = "policy"
_SPACES = ("observation_low", "observation_high", "action_low", "action_high")


class AgentFileError(ValueError):
    """A residual agent's files are missing, of an older format or not what their description says."""


def describe(model: Any, algo: str, net: list[int], critic_layer_norm: bool, log_std_init: float | None) -> dict:
    """The JSON description of ``model``'s networks (what :func:`load_agent` rebuilds)."""
    return {
        "format": FORMAT,
        "algo": algo,
        "observation_shape": list(model.observation_space.shape),
        "action_shape": list(model.action_space.shape),
        "net": list(net),
        "critic_layer_norm": bool(critic_layer_norm),
        "log_std_init": log_std_init,
    }


def write_description(run_dir: Path, description: dict[str, Any]) -> None:
    """``agent.json`` of a run."""
    _atomic_write_text(run_dir / DESCRIPTION, json.dumps(description, indent=2) + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _space_tensors(model: Any) -> dict[str, Any]:
    import torch

    obs, act = model.observation_space, model.action_space
    values = (obs.low, obs.high, act.low, act.high)
    pairs = zip(_SPACES, values, strict=True)
    return {f"space/{name}": torch.as_tensor(np.asarray(v, dtype=np.float32)) for name, v in pairs}


def _flatten_optimizer(name: str, state: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Tensors of an optimizer's state into ``tensors``; returns the JSON-able rest."""
    import torch

    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, layout: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    prefix = f"optim/{name}/"
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(index), {})[field] = value
    for index, entry in layout["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": layout["param_groups"]}


def save_weights(
    model: Any,
    path: Path,
    *,
    training_state: bool = False,
    num_timesteps: int | None = None,
    total_timesteps: int | None = None,
) -> None:
    """The policy weights of ``model`` (with ``training_state``, also its optimizers and entropy coefficient).

    ``num_timesteps`` (the agent's steps so far) and ``total_timesteps`` (the run's target) go into the file's
    metadata.

    Written to a temporary file and renamed, so a run killed mid-write keeps its previous file.
    """
    from safetensors.torch import save_file

    tensors = {f"{_POLICY}/{k}": v.detach().cpu().contiguous().clone() for k, v in model.policy.state_dict().items()}
    tensors.update(_space_tensors(model))
    metadata = {"format": FORMAT, "num_timesteps": str(int(num_timesteps if num_timesteps is not None else 0))}
    if total_timesteps is not None:
        metadata["total_timesteps"] = str(int(total_timesteps))
    if training_state:
        names, variables = model._get_torch_save_params()
        optimizers = {}
        for name in names:
            if name == _POLICY:
                continue
            optimizers[name] = _flatten_optimizer(name, _getattr_path(model, name).state_dict(), tensors)
        for name in variables:
            tensors[f"variable/{name}"] = _getattr_path(model, name).detach().cpu().contiguous().clone()
        metadata["optimizers"] = json.dumps(optimizers)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _getattr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AgentFileError(f"{path}: not a readable safetensors file ({err}); the run's agent is damaged.") from err
    if metadata.get("format") != FORMAT:
        raise AgentFileError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}.")
    return tensors, metadata


def read_description(run_dir: Path) -> dict[str, Any]:
    """``agent.json`` of a run, checked; a legacy run (zip only) is refused with how to convert it."""
    path = run_dir / DESCRIPTION
    if not path.is_file():
        if (run_dir / LEGACY_ZIP).is_file():
            raise AgentFileError(
                f"{run_dir} holds its agent only as a stable-baselines3 {LEGACY_ZIP} (written before runs were "
                "pickle-free); opening that zip runs any code its author put in it, so eval, export and training "
                f"never do. If you made the run or trust who did, convert it once: `robot-rl convert --run {run_dir} "
                "--trust-pickle`."
            )
        raise AgentFileError(
            f"{run_dir} has no {DESCRIPTION}: the residual run did not start or its folder is damaged."
        )
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AgentFileError(f"{path}: not valid JSON ({err}).") from err
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        found = description.get("format") if isinstance(description, dict) else type(description).__name__
        raise AgentFileError(f"{path}: format {found!r}, expected {FORMAT!r}.")
    if description.get("algo") not in ("sac", "ppo", "dsrl"):
        raise AgentFileError(f"{path}: algo {description.get('algo')!r}; valid: sac, ppo, dsrl.")
    return description


def _spaces(tensors: dict[str, Any], description: dict[str, Any], path: Path) -> tuple[Any, Any]:
    from gymnasium import spaces

    missing = [name for name in _SPACES if f"space/{name}" not in tensors]
    if missing:
        raise AgentFileError(f"{path}: no space bounds {missing}; the file was not written by robot-rl.")
    low, high, a_low, a_high = (tensors[f"space/{name}"].numpy() for name in _SPACES)
    for name, shape, value in (
        ("observation", description["observation_shape"], low),
        ("action", description["action_shape"], a_low),
    ):
        if list(value.shape) != list(shape):
            raise AgentFileError(f"{path}: {name} shape {list(value.shape)}, agent.json says {list(shape)}.")
    return spaces.Box(low, high, dtype=np.float32), spaces.Box(a_low, a_high, dtype=np.float32)


def build_policy(description: dict[str, Any], observation_space: Any, action_space: Any) -> Any:
    """stable-baselines3's policy network for ``description`` (untrained; :func:`load_agent` fills it)."""
    if description["algo"] == "ppo":
        from stable_baselines3.common.policies import ActorCriticPolicy

        return ActorCriticPolicy(
            observation_space,
            action_space,
            lambda _: 0.0,
            net_arch=list(description["net"]),
            log_std_init=float(description["log_std_init"]),
        )
    from robot_rl.rl.sac_policy import ResidualSACPolicy

    return ResidualSACPolicy(
        observation_space,
        action_space,
        lambda _: 0.0,
        net_arch=list(description["net"]),
        critic_layer_norm=bool(description["critic_layer_norm"]),
    )


@dataclasses.dataclass
class Agent:
    """A residual run's agent for inference: stable-baselines3's policy network, rebuilt from tensors."""

    algo: str
    policy: Any
    """stable-baselines3's ``SACPolicy`` or ``ActorCriticPolicy`` (in eval mode)."""
    num_timesteps: int
    sha256: str

    @property
    def observation_space(self) -> Any:
        """What the agent observes (flattened observation and base action)."""
        return self.policy.observation_space

    @property
    def action_space(self) -> Any:
        """The agent's output (correction or noise), in [-1, 1]."""
        return self.policy.action_space

    @property
    def actor(self) -> Any:
        """SAC's actor (``latent_pi``, ``mu``)."""
        return self.policy.actor

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """The agent's action, as stable-baselines3's ``model.predict`` returns it."""
        return self.policy.predict(observation, deterministic=deterministic)


def load_agent(run_dir: str | os.PathLike[str], weights: str = DEPLOYED) -> Agent:
    """The agent of a residual run (``weights``: ``agent.safetensors``, ``best.safetensors`` or the checkpoint).

    Raises:
        AgentFileError: files missing, of the old (pickled) format, or inconsistent with agent.json.
    """
    from robot_rl.export.metadata import sha256_file

    run_dir = Path(run_dir)
    description = read_description(run_dir)
    path = run_dir / weights
    if not path.is_file():
        raise AgentFileError(f"{run_dir} has no {weights}: the residual run has not reached its first evaluation.")
    tensors, metadata = _read(path)
    observation_space, action_space = _spaces(tensors, description, path)
    policy = build_policy(description, observation_space, action_space)
    state = {k[len(_POLICY) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{_POLICY}/")}
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise AgentFileError(f"{path}: its tensors do not fit the networks agent.json describes ({detail}).") from err
    policy.set_training_mode(False)
    return Agent(description["algo"], policy, int(metadata.get("num_timesteps", 0)), sha256_file(path))


def restore_training_state(model: Any, path: Path) -> int:
    """Load a checkpoint's policy, optimizers and entropy coefficient into ``model``; returns its env steps."""
    import torch

    tensors, metadata = _read(path)
    if "optimizers" not in metadata:
        raise AgentFileError(f"{path} holds policy weights only, not a training state to resume from.")
    optimizers = json.loads(metadata["optimizers"])
    params = {_POLICY: {k[len(_POLICY) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{_POLICY}/")}}
    for name, layout in optimizers.items():
        params[name] = _unflatten_optimizer(name, layout, tensors)
    try:
        model.set_parameters(params, exact_match=True, device="cpu")
    except (RuntimeError, ValueError, KeyError) as err:
        raise AgentFileError(f"{path}: does not fit this run's networks ({str(err).splitlines()[0]}).") from err
    _, variables = model._get_torch_save_params()
    for name in variables:
        key = f"variable/{name}"
        if key not in tensors:
            raise AgentFileError(f"{path}: no {name} in the training state.")
        with torch.no_grad():
            _getattr_path(model, name).copy_(tensors[key])
    return int(metadata.get("num_timesteps", 0))


def convert_zip(run_dir: Path, *, trust_pickle: bool) -> list[Path]:
    """Rewrite a legacy run's stable-baselines3 zips as safetensors (opt-in: the zip is unpickled).

    Returns the files written. ``trust_pickle`` must be True: loading the zip executes its pickled data.
    """
    from stable_baselines3 import PPO, SAC

    if not trust_pickle:
        raise ValueError(
            f"converting {run_dir / LEGACY_ZIP} opens a stable-baselines3 pickle, which runs any code its author put "
            "in it; pass --trust-pickle only for runs you made or whose author you trust."
        )
    zip_path = run_dir / LEGACY_ZIP
    if not zip_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {LEGACY_ZIP} to convert.")
    if (run_dir / DESCRIPTION).is_file():
        raise ValueError(f"{run_dir} already holds a pickle-free agent ({DESCRIPTION}); nothing to convert.")
    config = json.loads((run_dir / "config.json").read_text())
    algo, options = config["algo"], config["options"]
    cls = PPO if algo == "ppo" else SAC
    written = []
    for name, target in ((LEGACY_ZIP, DEPLOYED), ("best.zip", BEST), ("last.zip", CHECKPOINT)):
        if not (run_dir / name).is_file():
            continue
        model = cls.load(run_dir / name, device="cpu")
        if not written:
            write_description(
                run_dir,
                describe(
                    model,
                    algo,
                    options["net"],
                    bool(options.get("critic_layer_norm", False)),
                    -1.0 if algo == "ppo" else None,
                ),
            )
            written.append(run_dir / DESCRIPTION)
        save_weights(model, run_dir / target, training_state=target == CHECKPOINT, num_timesteps=model.num_timesteps)
        written.append(run_dir / target)
    return written
