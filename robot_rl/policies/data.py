"""Training windows from a demonstration file: observation histories and action chunks.

Sample ``t`` of a demo pairs observations ``t - n_obs + 1 .. t`` (the first observation repeated
before the start) with actions ``t .. t + horizon - 1`` (the last action repeated past the end:
the expert holds still once done). All windows of all demos are gathered by index from a few
contiguous arrays, so a batch is two tensor gathers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robot_rl.data.dataset import DemoDataset
from robot_rl.data.integrity import nonfinite
from robot_rl.data.schema import DatasetError
from robot_rl.policies.base import ObsLayout, parse_key


@dataclasses.dataclass
class DemoWindows:
    """All windows of some demos, ready for batching."""

    obs: torch.Tensor
    """Concatenated flattened observations of every demo, (N, obs_dim)."""
    actions: torch.Tensor
    """Concatenated actions, (N, A)."""
    obs_index: torch.Tensor
    """(num_windows, n_obs) row indices into ``obs``."""
    action_index: torch.Tensor
    """(num_windows, horizon) row indices into ``actions``."""
    demos: list[str]
    seeds: list[int | None]

    def __len__(self) -> int:
        return len(self.obs_index)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs (B, n_obs, D), actions (B, H, A)) for window indices ``index``."""
        return self.obs[self.obs_index[index]], self.actions[self.action_index[index]]


@dataclasses.dataclass
class DemoData:
    """A demonstration file split for training."""

    path: Path
    env_id: str
    env_kwargs: dict
    layout: ObsLayout
    action_dim: int
    train: DemoWindows
    valid: DemoWindows | None
    sha256: str
    """Hash of the file's bytes (provenance in the run config and the policy card)."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _windows(
    demos: Sequence,
    layout: ObsLayout,
    n_obs: int,
    horizon: int,
    names: list[str],
    seeds: list[int | None],
    path: Path | None = None,
) -> DemoWindows:
    obs_parts, action_parts, obs_index, action_index = [], [], [], []
    offset = 0
    for demo in demos:
        obs = layout.flatten_batch(demo.obs, demo.actions)
        # The reader refused NaN/inf in the file; this catches a feature that makes one from finite inputs.
        bad = nonfinite(obs)
        if bad is not None:
            raise DatasetError(
                f"{path}: {demo.name} step {bad.index[0]}: the policy input built from obs keys {list(layout.keys)} "
                f"and features holds {bad.value} (column {bad.index[1]}) although the file's numbers are finite; "
                "choose other --policy.obs-keys or --policy.features."
            )
        length = len(obs)
        t = np.arange(length)
        obs_index.append(offset + np.clip(t[:, None] + np.arange(-n_obs + 1, 1)[None, :], 0, length - 1))
        action_index.append(offset + np.clip(t[:, None] + np.arange(horizon)[None, :], 0, length - 1))
        obs_parts.append(obs)
        action_parts.append(demo.actions)
        offset += length
    return DemoWindows(
        obs=torch.as_tensor(np.concatenate(obs_parts), dtype=torch.float32),
        actions=torch.as_tensor(np.concatenate(action_parts), dtype=torch.float32),
        obs_index=torch.as_tensor(np.concatenate(obs_index)),
        action_index=torch.as_tensor(np.concatenate(action_index)),
        demos=names,
        seeds=seeds,
    )


def load_demo_data(
    path: str | os.PathLike[str],
    obs_keys: Sequence[str],
    n_obs_steps: int,
    horizon: int,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_demos: int | None = None,
    successful_only: bool = True,
    relative_goal: bool = False,
    features: Sequence[str] = (),
) -> DemoData:
    """Read ``path`` and build train/validation windows.

    The split is the file's own (``mask/train`` and ``mask/valid``, written by ``robot-rl data
    split``) when it has one, else a random ``val_fraction`` of the demos (seeded).

    Raises:
        DatasetError: the file is not a demo file, is damaged (a dataset does not match its checksum),
            holds NaN or inf (the message names demo, key and step), holds no usable demos, or lacks
            ``obs_keys`` (the message lists the keys it has).
    """
    path = Path(path)
    with DemoDataset(path) as ds:
        names = list(ds.demo_names)
        if not names:
            raise DatasetError(f"{path} holds no demonstrations; collect some with `robot-rl collect`.")
        demos = [ds[name] for name in names]
        masks = ds.masks()
        meta = ds.meta
    if successful_only:
        demos = [d for d in demos if d.success]
        if not demos:
            raise DatasetError(f"{path}: none of its {len(names)} demos is labelled successful.")
    if max_demos is not None:
        demos = demos[:max_demos]
    have = demos[0].obs
    try:
        entries = [parse_key(k)[0] for k in obs_keys]
    except ValueError as err:
        raise DatasetError(str(err)) from None
    wanted = list(dict.fromkeys([*entries, *(("desired_goal", "achieved_goal") if relative_goal else ())]))
    missing = [k for k in wanted if k not in have]
    if missing:
        raise DatasetError(
            f"{path}: the config asks for observation keys {list(obs_keys)}"
            f"{' and relative_goal' if relative_goal else ''}, but the file's demos have {sorted(have)} "
            f"(missing {missing}). Set --policy.obs-keys to keys the file has."
        )
    specs: tuple = ()
    if features:
        from robot_rl.envs.registry import make
        from robot_rl.policies.features import feature_for_env

        env = make(meta.env_id, **dict(meta.env_kwargs))
        try:
            specs = tuple(feature_for_env(name, env) for name in features)
        except ValueError as err:
            raise DatasetError(f"{path}: {err}") from None
        finally:
            env.close()
    layout = ObsLayout(tuple(obs_keys), tuple(tuple(have[n].shape[1:]) for n in entries), relative_goal, specs)
    action_dim = int(demos[0].actions.shape[1])
    by_name = {d.name: d for d in demos}
    if masks.get("train") and masks.get("valid"):
        train_names = [n for n in masks["train"] if n in by_name]
        valid_names = [n for n in masks["valid"] if n in by_name]
    else:
        order = np.random.default_rng(split_seed).permutation(len(demos))
        n_valid = int(round(val_fraction * len(demos))) if len(demos) > 1 else 0
        valid_names = sorted((demos[i].name for i in order[:n_valid]), key=names.index)
        train_names = [d.name for d in demos if d.name not in set(valid_names)]
    if not train_names:
        raise DatasetError(f"{path}: no demos left for training after the validation split.")

    def windows(selected: list[str]) -> DemoWindows:
        chosen = [by_name[n] for n in selected]
        return _windows(chosen, layout, n_obs_steps, horizon, selected, [d.seed for d in chosen], path)

    return DemoData(
        path=path,
        env_id=meta.env_id,
        env_kwargs=dict(meta.env_kwargs),
        layout=layout,
        action_dim=action_dim,
        train=windows(train_names),
        valid=windows(valid_names) if valid_names else None,
        sha256=file_sha256(path),
    )
