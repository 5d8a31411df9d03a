"""Fixtures: the pytest plugin's mounts (lpfs.testing.plugin), under lpfs's own policy
for a machine without FUSE."""

import pytest
from support import require_fuse

from lpfs.fuse import binding
from lpfs.pytest_plugin import LpfsMount

# The plugin's fixtures that mount a daemon.
MOUNTING = frozenset({"lpfs", "lpfs_factory", "lpfs_session", "lpfs_shared"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of lpfs's own FUSE session are deselected, not skipped, on a libfuse binding."""
    if binding.NAME == "lpfs.fuse.session":
        return
    own = [item for item in items if item.get_closest_marker("own_session")]
    if own:
        config.hook.pytest_deselected(items=own)
        items[:] = [item for item in items if item not in own]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that mounts is skipped without /dev/fuse and fusermount (fails under LPFS_STRICT)."""
    if MOUNTING.intersection(getattr(item, "fixturenames", ())):
        require_fuse()


@pytest.fixture
def mnt(lpfs_shared: LpfsMount) -> LpfsMount:
    """The plugin's shared mount, freshly reset, under the name these tests give it."""
    return lpfs_shared
