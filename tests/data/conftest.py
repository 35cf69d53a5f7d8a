"""Shared demonstration files for the data tests: a few expert episodes, collected once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from robot_rl.data import collect
from robot_rl.data.integrity import CHECKSUM_ATTR, checksum_value, digest

PUSH = "robot_rl/PandaPush-v0"
HOVER = "robot_rl/QuadrotorHover-v1"


@pytest.fixture(scope="session")
def _collected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demos")
    files = {}
    for env_id, episodes in ((PUSH, 3), (HOVER, 2)):
        out = root / f"{env_id.split('/')[-1]}.hdf5"
        collect(env_id, "expert", episodes, out, seed=0, progress=False)
        files[env_id] = out
    return files


@pytest.fixture
def demo_file(_collected: dict[str, Path], tmp_path: Path):
    """``demo_file(env_id)``: a private copy of the session's expert demos of ``env_id``."""

    def _copy(env_id: str = PUSH) -> Path:
        dst = tmp_path / _collected[env_id].name
        if not dst.exists():
            shutil.copy(_collected[env_id], dst)
        return dst

    return _copy


def edit_dataset(path: Path, key: str, edit: Callable[[np.ndarray], None], reseal: bool = True) -> None:
    """Change dataset ``key`` (``data/demo_0/actions``) of ``path`` in place with ``edit(values)``.

    With ``reseal`` the dataset's checksum is recomputed: the file looks as if it had been written with
    the new values (a recorder that stored a NaN). Without it, it is a file changed after it was written.
    """
    with h5py.File(path, "r+") as f:
        values = f[key][()]
        edit(values)
        f[key][...] = values
        if reseal:
            f[key].attrs[CHECKSUM_ATTR] = checksum_value(digest(values))
