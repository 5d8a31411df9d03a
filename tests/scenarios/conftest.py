"""Fixtures shared by the selftest scenarios."""

import pytest
from selftest import Selftest

from lpfs.pytest_plugin import LpfsMount


@pytest.fixture
def klp(mnt: LpfsMount) -> Selftest:
    """functions.sh's helpers over a freshly reset mount."""
    return Selftest(mnt)
