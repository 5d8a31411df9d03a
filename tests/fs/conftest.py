"""Fixtures shared by the filesystem tests."""

import pytest
from support import shipped

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_livepatch"


@pytest.fixture
def lp(mnt: LpfsMount) -> LpfsMount:
    """The mount with test_klp_livepatch loaded and its patching transition complete."""
    mnt.insmod(shipped(LP))
    return mnt


@pytest.fixture
def blocked(mnt: LpfsMount) -> LpfsMount:
    """test_klp_livepatch stuck patching: a task sleeps in cmdline_proc_show."""
    mnt.add_task(100, "task100", "uninterruptible", ["cmdline_proc_show"])
    mnt.insmod(shipped(LP))
    return mnt
