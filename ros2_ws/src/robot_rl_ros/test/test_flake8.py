"""ament_flake8 over the package (`colcon test` only: the ament linters are not on PyPI)."""

from pathlib import Path

import pytest
from ament_flake8.main import main_with_errors


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8() -> None:
    """No flake8 error under the package's configuration (120 columns, as ruff)."""
    rc, errors = main_with_errors(argv=["--config", str(Path(__file__).with_name("flake8.ini"))])
    assert rc == 0, f"Found {len(errors)} code style errors / warnings:\n" + "\n".join(errors)
