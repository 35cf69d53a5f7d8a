"""The observation embedding the monitor scores: the policy's normalized observation history.

The exported graph standardizes its input with the training statistics on its card
(``metadata.normalization``: ``(obs - obs_mean) / obs_std`` per flattened entry); the monitor applies
the same standardization to the same history (``n_obs_steps`` flattened observations, oldest first,
the first observation of an episode repeated) and flattens it: one vector of
``n_obs_steps * obs_dim`` values per chunk. :func:`demo_embeddings` builds the same vectors for every
step of the policy's training demonstrations (numpy and h5py; no torch).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from robot_rl.export.metadata import PolicyMetadata
from robot_rl.policies.layout import ObsLayout


class TrainingDataMissing(FileNotFoundError):
    """The demonstrations the monitor learns the training distribution from cannot be found."""


@dataclasses.dataclass(frozen=True)
class ObsEmbedding:
    """Standardized, flattened observation histories.

    Args:
        mean: Training mean of the flattened observation. Shape: (obs_dim,).
        std: Training standard deviation (the policy's, already floored). Shape: (obs_dim,).
        n_obs_steps: Observations per history.
    """

    mean: np.ndarray
    std: np.ndarray
    n_obs_steps: int

    @classmethod
    def from_metadata(cls, metadata: PolicyMetadata) -> ObsEmbedding:
        """The normalization on the policy card."""
        norm = metadata.normalization
        mean = np.asarray(norm.obs_mean, dtype=np.float64)
        std = np.asarray(norm.obs_std, dtype=np.float64)
        if mean.shape != (metadata.observation.dim,) or std.shape != mean.shape:
            raise ValueError(
                f"metadata normalization has {mean.size} means and {std.size} stds for a "
                f"{metadata.observation.dim}-D observation."
            )
        return cls(mean, std, metadata.n_obs_steps)

    @property
    def dim(self) -> int:
        """Length of one embedding: ``n_obs_steps * obs_dim``."""
        return self.n_obs_steps * self.mean.size

    def __call__(self, histories: np.ndarray) -> np.ndarray:
        """Embed raw flattened histories.

        Args:
            histories: Shape (n_obs_steps, obs_dim) or (B, n_obs_steps, obs_dim).

        Returns:
            Shape (B, n_obs_steps * obs_dim) (B = 1 for a single history).
        """
        x = np.asarray(histories, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (self.n_obs_steps, self.mean.size):
            raise ValueError(
                f"histories must have shape (B, {self.n_obs_steps}, {self.mean.size}). Got {tuple(x.shape)}."
            )
        return ((x - self.mean) / self.std).reshape(len(x), -1)


def resolve_data_path(metadata: PolicyMetadata, data: str | os.PathLike[str] | None) -> Path:
    """The demonstration file to train on: ``data`` when given, else the card's ``training_data.path``.

    A relative card path is looked up from the working directory (where ``robot-rl train`` ran).

    Raises:
        TrainingDataMissing: the file does not exist (the message says which and how to point at it).
    """
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise TrainingDataMissing(f"--data {path}: no such file (expected the policy's demonstration HDF5).")
        return path
    path = Path(metadata.training_data.path)
    if not path.is_file():
        raise TrainingDataMissing(
            f"the policy's training data {path} (metadata.json training_data.path, relative to the working "
            f"directory {Path.cwd()}) does not exist; run from the directory the policy was trained in or pass "
            "--data FILE.hdf5 (the demos it was trained on)."
        )
    return path


def demo_histories(path: str | os.PathLike[str], layout: ObsLayout, n_obs_steps: int) -> tuple[np.ndarray, list[int]]:
    """Every observation history of the successful demos in ``path``, as the policy saw them in training.

    Returns:
        The raw flattened histories, shape (N, n_obs_steps, obs_dim), and the number of histories
        per demo (the demos' lengths), in file order.

    Raises:
        DatasetError: the file is not a demonstration file or holds no successful demo.
    """
    from robot_rl.data.dataset import DemoDataset
    from robot_rl.data.schema import DatasetError

    histories, lengths = [], []
    with DemoDataset(path) as ds:
        for name in ds.demo_names:
            demo = ds[name]
            if not demo.success:
                continue
            flat = layout.flatten_batch(demo.obs, demo.actions)
            t = np.arange(len(flat))
            index = np.clip(t[:, None] + np.arange(-n_obs_steps + 1, 1)[None, :], 0, len(flat) - 1)
            histories.append(flat[index])
            lengths.append(len(flat))
    if not histories:
        raise DatasetError(f"{path}: no successful demonstration to learn the training distribution from.")
    return np.concatenate(histories), lengths
