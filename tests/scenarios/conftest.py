"""Fixtures shared by the selftest scenarios."""

import pytest
from lpfs_fixtures import Mount
from selftest import Selftest


@pytest.fixture
def klp(mnt: Mount) -> Selftest:
    """functions.sh's helpers over a freshly reset mount."""
    return Selftest(mnt)
