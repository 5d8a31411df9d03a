"""Fixtures: a real lpfs daemon per session (reset per test) or per test."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lpfs_fixtures import Mount, start_daemon, stop_daemon

from lpfs.fuse import binding


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of lpfs's own FUSE session are deselected, not skipped, on a libfuse binding."""
    if binding.NAME == "lpfs.fuse.session":
        return
    own = [item for item in items if item.get_closest_marker("own_session")]
    if own:
        config.hook.pytest_deselected(items=own)
        items[:] = [item for item in items if item not in own]


@pytest.fixture(scope="session")
def session_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    path = tmp_path_factory.mktemp("lpfs") / "mnt"
    start_daemon(path, "--transition-interval", "0")
    try:
        yield Mount(path)
    finally:
        stop_daemon(path)


@pytest.fixture
def mnt(session_mount: Mount) -> Mount:
    """A mounted daemon in a freshly booted state, with retries stepped by `lpfs tick`."""
    session_mount.lpfs("reset")
    return session_mount


@pytest.fixture
def make_mount(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """A factory for daemons with their own options; each is unmounted at teardown."""
    made: list[Path] = []

    def make(*options: str, name: str = "mnt") -> Mount:
        path = tmp_path / name
        start_daemon(path, *options)
        made.append(path)
        return Mount(path)

    yield make
    for path in made:
        stop_daemon(path)
