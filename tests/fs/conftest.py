"""Fixtures shared by the filesystem tests."""

import pytest
from lpfs_fixtures import Mount

LP = "test_klp_livepatch"


@pytest.fixture
def lp(mnt: Mount) -> Mount:
    """The mount with test_klp_livepatch loaded and its patching transition complete."""
    mnt.insmod(LP)
    return mnt


@pytest.fixture
def blocked(mnt: Mount) -> Mount:
    """test_klp_livepatch stuck patching: a task sleeps in cmdline_proc_show."""
    mnt.add_task(100, "cmdline_proc_show", state="uninterruptible")
    mnt.insmod(LP)
    return mnt
