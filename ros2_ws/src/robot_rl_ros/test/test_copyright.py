"""ament_copyright over the package (``colcon test`` only)."""

import pytest
from ament_copyright.main import main


@pytest.mark.skip(reason="The sources carry no per-file copyright header; the license is the repository's LICENSE.")
@pytest.mark.copyright
@pytest.mark.linter
def test_copyright() -> None:
    """Every source file has a copyright and license header."""
    rc = main(argv=[".", "test"])
    assert rc == 0, "Found errors"
