"""lpfs's FUSE session on real mounts: what it leaves behind, and no caller left waiting.

Every mount a test makes is taken down and every process stopped, even on
failure; a caller that could hang in uninterruptible sleep runs in a child
with a timeout, and its connection is aborted if it does.
"""

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import missing, require_fuse, shipped

from lpfs.fuse import mounttable
from lpfs.fuse.session import FuseOSError, Session
from lpfs.fuse.wire import ROOT_ID
from lpfs.pytest_plugin import LpfsMount, lpfs_command


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        missing("root, to mount tmpfs and abort connections")


class Held:
    """A directory of files; reading ``held`` waits until the test releases it."""

    def __init__(self) -> None:
        self.files = {f"/f{i}": b"x\n" for i in range(20)} | {"/held": b"answer\n"}
        self.entered = threading.Event()
        self.release = threading.Event()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/":
            return {"st_mode": 0o40755, "st_nlink": 2}
        if path in self.files:
            return {"st_mode": 0o100644, "st_size": len(self.files[path])}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *(name[1:] for name in self.files)]

    def open(self, path: str, flags: int) -> int:
        return 1

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path == "/held":
            self.entered.set()
            self.release.wait(30)
        return self.files[path][offset : offset + size]


class Served:
    """A session serving ``Held`` at a mountpoint, in a thread of this process."""

    def __init__(self, mountpoint: Path) -> None:
        self.ops = Held()
        self.path = mountpoint
        self.session = Session(self.ops, {"direct_io": True, "entry_timeout": 0, "attr_timeout": 0})
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            self.session.serve_at(str(self.path))
        except BaseException as exc:
            self.failure = exc

    def mount(self) -> mounttable.MountEntry:
        """This session's mount, once mounted."""
        entry = mounttable.top_mount(str(self.path))
        assert entry is not None and entry.fstype == "fuse"
        return entry

    def ended(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@pytest.fixture
def connections() -> Iterator[Path]:
    """/sys/fs/fuse/connections, where a connection is aborted: mounted for the test if it
    was not."""
    path = Path("/sys/fs/fuse/connections")
    if mounttable.top_mount(str(path)) is not None:
        yield path
        return
    subprocess.run(["mount", "-t", "fusectl", "fusectl", str(path)], check=True)
    ours = mounttable.top_mount(str(path))
    try:
        yield path
    finally:
        if ours is not None and ours == mounttable.top_mount(str(path)):
            subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def served(tmp_path: Path, connections: Path) -> Iterator[Served]:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    served = Served(mnt)
    served.thread.start()
    try:
        wait_for(lambda: mounttable.is_mounted(mnt), "the mount")
        os.listdir(mnt)  # INIT is answered
        yield served
    finally:
        served.ops.release.set()
        if served.thread.is_alive():
            abort(mounttable.top_mount(str(mnt)))
        served.thread.join(10)
        detach_all(mnt)
    assert not served.thread.is_alive()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def abort(entry: mounttable.MountEntry | None) -> None:
    """End a FUSE connection: every request waiting on it fails at once."""
    if entry is not None and entry.fstype.startswith("fuse"):
        with contextlib.suppress(OSError):
            Path(f"/sys/fs/fuse/connections/{entry.fuse_connection}/abort").write_text("1")


def detach_all(path: Path) -> None:
    """Unmount everything at ``path``, top first."""
    while mounttable.top_mount(os.path.realpath(path)) is not None:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    """A tmpfs at ``path`` holding a marker file; everything at ``path`` is unmounted after."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "below", str(path)], check=True)
    try:
        (path / "marker").write_text("tmpfs\n")
        yield path / "marker"
    finally:
        detach_all(path)


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# -- nodes ---------------------------------------------------------------------


def test_nodes_go_back_to_the_root_alone_once_the_kernel_forgets(served: Served) -> None:
    for _ in range(3):
        for name in os.listdir(served.path):
            if name != "held":
                os.stat(served.path / name)
                (served.path / name).read_bytes()
    assert len(served.session.nodes) > 1

    # The kernel forgets a node when its inode is evicted, not at once: drop its caches
    # and wait for the FORGETs.
    for _ in range(10):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(served.session.nodes) == 1, "FORGETs", timeout=1)
            break
    assert [ROOT_ID] == list(served.session.nodes)
    assert {} == served.session.dirs


# -- ends of the connection ------------------------------------------------------------


def test_an_abort_ends_the_session_cleanly_and_leaves_the_mount(served: Served) -> None:
    ours = served.mount()
    abort(ours)
    assert served.ended(5)
    assert (None, True) == (served.failure, served.session.connection_ended)
    assert ours == mounttable.top_mount(str(served.path))  # left in place, as libfuse leaves it
    with pytest.raises(OSError) as stale:
        os.stat(served.path)
    assert errno.ENOTCONN == stale.value.errno


def test_a_caller_killed_while_its_request_is_held_exits_once_answered(served: Served) -> None:
    caller = subprocess.Popen(["cat", str(served.path / "held")], stdout=subprocess.DEVNULL)
    try:
        assert served.ops.entered.wait(5)
        caller.kill()
        time.sleep(0.2)
        # request_wait_answer(): a request the daemon has read is waited for, even now.
        assert ("D", [(caller.pid, True)]) == (
            state(caller.pid),
            [(u.pid, u.waiting) for u in mounttable.mount_users(served.mount().mount_id)],
        )
        answered = time.monotonic()
        served.ops.release.set()
        caller.wait(5)
        assert time.monotonic() - answered < 1
    finally:
        served.ops.release.set()
        caller.kill()
        caller.wait(10)


def test_a_lazily_detached_session_ends_once_its_held_request_is_answered(
    served: Served,
) -> None:
    caller = subprocess.Popen(["cat", str(served.path / "held")], stdout=subprocess.PIPE)
    try:
        assert served.ops.entered.wait(5)
        assert 0 == mounttable.unmount(served.path, lazy=True).returncode
        assert not served.ended(0.2)  # it still owes the caller its answer
        served.ops.release.set()
        assert b"answer\n" == caller.communicate(timeout=5)[0]
        assert served.ended(5)
        assert (None, True) == (served.failure, served.session.connection_ended)
    finally:
        served.ops.release.set()
        caller.kill()
        caller.wait(10)


# -- what lpfs unmounts ------------------------------------------------------------


def _daemon_pid(path: Path) -> int:
    return int(LpfsMount(path).status()["pid"])


def _mount_daemon(path: Path) -> None:
    """``lpfs mount --daemon`` at ``path``, left for the test itself to take down."""
    require_fuse()
    path.mkdir(exist_ok=True)
    result = lpfs_command("mount", str(path), "--daemon")
    assert 0 == result.returncode, result.stderr


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# libfuse unmounts on its own terms (fuse_kern_unmount()), and libfuse 2 mounts only on an
# empty directory: on a libfuse binding these are deselected (tests/conftest.py).
own_session = pytest.mark.own_session


@own_session
def test_a_filesystem_below_survives_lpfs_umount(tmp_path: Path) -> None:
    path = tmp_path / "mnt"
    with tmpfs(path) as marker:
        _mount_daemon(path)
        assert 0 == lpfs_command("umount", str(path)).returncode
        top = mounttable.top_mount(str(path))
        assert ("tmpfs", "tmpfs\n") == (top and top.fstype, marker.read_text())


@own_session
@pytest.mark.parametrize("how", ["tmpfs", "bind"])
def test_a_mount_above_survives_the_daemons_exit(tmp_path: Path, how: str) -> None:
    path, source = tmp_path / "mnt", tmp_path / "source"
    source.mkdir()
    (source / "marker").write_text("above\n")
    _mount_daemon(path)
    try:
        pid = _daemon_pid(path)
        if how == "bind":
            subprocess.run(["mount", "--bind", str(source), str(path)], check=True)
        else:
            subprocess.run(["mount", "-t", "tmpfs", "above", str(path)], check=True)
            (path / "marker").write_text("above\n")
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: _exited(pid), "the daemon's exit")
        top = mounttable.top_mount(str(path))
        assert top is not None and not top.fstype.startswith("fuse")
        assert "above\n" == (path / "marker").read_text()
    finally:
        detach_all(path)


# -- the reproductions, through the lpfs command ------------------------------


def test_enotsupp_from_a_callback_fails_the_write_at_once(lpfs_factory, connections: Path) -> None:
    mnt = lpfs_factory("--kernel", "4.18")
    mnt.insmod(shipped("test_klp_callbacks_demo"))
    patch = mnt.livepatch_dir / "test_klp_callbacks_demo"
    (patch / "enabled").write_text("0\n")
    mnt.run("wait", "test_klp_callbacks_demo", "--idle")
    (mnt.mountpoint / "module/test_klp_callbacks_demo/parameters/pre_patch_ret").write_text(
        "-524\n"
    )
    started = time.monotonic()
    writer = subprocess.Popen(
        ["bash", "-c", f"echo 1 > {patch / 'enabled'}"], stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = writer.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        abort(mounttable.top_mount(str(mnt.mountpoint)))  # frees the writer from its wait
        writer.kill()
        writer.communicate(timeout=10)
        pytest.fail("the write waits for an answer the kernel dropped")
    assert time.monotonic() - started < 1
    assert (1, "Operation not supported") == (writer.returncode, stderr.strip().split(": ")[-1])


def test_names_with_a_slash_list_as_the_kernel_lists_them(mnt: LpfsMount, tmp_path: Path) -> None:
    module = tmp_path / "slashes.toml"
    module.write_text(
        'name = "slashes"\n[[object]]\nname = "../../etc"\n'
        '[[object.func]]\nold_name = "f/../x"\nnew_name = "y"\n'
    )
    mnt.insmod(str(module))
    found = mnt.sh("find kernel/livepatch/slashes -name '*!*'")
    assert (
        0,
        ["kernel/livepatch/slashes/..!..!etc", "kernel/livepatch/slashes/..!..!etc/f!..!x,1"],
    ) == (
        found.returncode,
        sorted(found.stdout.split()),
    )


def test_lpfs_umount_lazy_names_who_keeps_the_daemon(lpfs_factory) -> None:
    mnt = lpfs_factory()
    pid = _daemon_pid(mnt.mountpoint)
    held = os.open(mnt.mountpoint / "kernel", os.O_RDONLY)
    try:
        holder = subprocess.Popen(["sleep", "30"], stdin=held)
    finally:
        os.close(held)
    try:
        result = lpfs_command("umount", "--lazy", str(mnt.mountpoint))
        assert (
            0,
            f"lpfs: umount: daemon {pid} serves the detached mount until pid {holder.pid} (sleep) leaves\n",
        ) == (result.returncode, result.stderr)
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: _exited(pid), "the daemon's exit")
