"""ament_pep257 over the package (``colcon test`` only)."""

import pytest
from ament_pep257.main import main


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257() -> None:
    """Docstrings follow PEP 257 (Google style: a summary line, then sections)."""
    rc = main(argv=[".", "test"])
    assert rc == 0, "Found code style errors / warnings"
