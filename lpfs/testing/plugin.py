"""pytest fixtures that give a test its own emulated livepatch sysfs.

Registered as the ``lpfs`` plugin (entry point ``pytest11``), so installing
lpfs is enough. ``lpfs`` mounts a fresh daemon for one test; ``lpfs_shared``
hands every test the one daemon of the session, reset to a freshly booted
kernel; ``lpfs_factory`` mounts daemons with options of the test's own. All
step transition retries only on ``tick()`` unless told otherwise. Every
method runs the ``lpfs`` command, as a user's shell would, and raises
``LpfsCommandError`` with its stderr when it fails; ``command()`` returns the
completed process instead.
"""

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import pytest

from lpfs.fuse import mounttable

COMMAND_TIMEOUT: Final = 60.0
_TASK_FLAGS: Final = ("kthread", "unreliable")
# Every mount steps its retries only on tick(), unless its own options say otherwise.
_DEFAULT_OPTIONS: Final = ("--transition-interval", "0")


class LpfsCommandError(Exception):
    """An ``lpfs`` command that exited non-zero; the message carries its stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"lpfs {' '.join(args)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


class LpfsMount:
    """A mounted lpfs daemon, driven through its CLI."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.livepatch_dir = mountpoint / "kernel" / "livepatch"

    def run(self, *args: str) -> str:
        """Run ``lpfs ARGS --mount MOUNTPOINT``; its stdout, or LpfsCommandError."""
        return _lpfs([*args, "--mount", str(self.mountpoint)])

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``lpfs ARGS --mount MOUNTPOINT``; its completed process, whatever its exit."""
        return lpfs_command(*args, "--mount", str(self.mountpoint))

    def sh(self, script: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a bash script in the mountpoint; with ``check``, CalledProcessError if it fails."""
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.mountpoint,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=check,
        )

    def read(self, rel: str | os.PathLike[str]) -> str:
        """The text of a file, by its path relative to the mountpoint."""
        return (self.mountpoint / rel).read_text()

    def patches(self) -> list[str]:
        """The patches in ``kernel/livepatch``, sorted."""
        return sorted(os.listdir(self.livepatch_dir))

    def insmod(self, file: str | os.PathLike[str], *params: str) -> None:
        self.run("insmod", os.fspath(file), *params)

    def rmmod(self, name: str) -> None:
        self.run("rmmod", name)

    def add_task(
        self,
        pid: int,
        comm: str,
        state: str,
        stack: Iterable[str],
        *,
        kthread: bool = False,
        unreliable: bool = False,
        parent: int | None = None,
    ) -> None:
        """A simulated task; ``stack`` is innermost first; with ``parent`` it is forked."""
        args = ["task", "add", "--pid", str(pid), "--comm", comm, "--state", state]
        args += ["--stack", ",".join(stack)]
        if kthread:
            args.append("--kthread")
        if unreliable:
            args.append("--unreliable")
        if parent is not None:
            args += ["--parent", str(parent)]
        self.run(*args)

    def set_task(self, pid: int, **changes: Any) -> None:
        """Change a task's ``state``, ``stack``, ``comm``, ``kthread`` or ``unreliable``."""
        args = ["task", "set", str(pid)]
        for key, value in changes.items():
            if key in _TASK_FLAGS:
                args.append(f"--{key}" if value else f"--no-{key}")
            elif key == "stack":
                args += ["--stack", ",".join(value)]
            elif key in ("state", "comm"):
                args += [f"--{key}", str(value)]
            else:
                raise TypeError(f"set_task: no task field '{key}'")
        self.run(*args)

    def exit_task(self, pid: int) -> None:
        self.run("task", "exit", str(pid))

    def tick(self, n: int = 1) -> int:
        """Run up to ``n`` transition retries; returns how many ran."""
        return int(json.loads(self.run("tick", str(n), "--json"))["tries"])

    def wait_gone(self, patch: str, timeout: float = 10.0) -> None:
        """Until the patch's directory is gone; LpfsCommandError on timeout."""
        self.run("wait", patch, "--gone", "--timeout", str(timeout))

    def wait_idle(self, patch: str, timeout: float = 10.0) -> None:
        """Until the patch is not in transition; LpfsCommandError on timeout."""
        self.run("wait", patch, "--idle", "--timeout", str(timeout))

    def dmesg(self) -> list[str]:
        """The kernel log's lines without their timestamps."""
        return [json.loads(line)["text"] for line in self.run("dmesg", "--json").splitlines()]

    def status(self) -> dict[str, Any]:
        """``lpfs status --json``: kernel, taint, patches, modules and the transition."""
        status: dict[str, Any] = json.loads(self.run("status", "--json"))
        return status

    def reset(self) -> None:
        """Unload everything and clear the log: a freshly booted kernel."""
        self.run("reset")


def lpfs_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``lpfs ARGS`` with this interpreter; its completed process, whatever its exit."""
    return subprocess.run(
        [sys.executable, "-m", "lpfs", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _lpfs(args: list[str]) -> str:
    result = lpfs_command(*args)
    if result.returncode != 0:
        raise LpfsCommandError(args, result.returncode, result.stderr)
    return result.stdout


@contextlib.contextmanager
def mounted(path: str | os.PathLike[str], *options: str) -> Iterator[LpfsMount]:
    """Mount a daemon at ``path`` with ``lpfs mount``'s ``options`` (after
    ``--transition-interval 0``, which a later one overrides), and always take it
    down again on the way out, whatever happened meanwhile."""
    where = Path(path)
    where.mkdir(parents=True, exist_ok=True)
    where = where.resolve()  # as the mount table will show it
    _lpfs(["mount", str(where), "--daemon", *_DEFAULT_OPTIONS, *options])
    try:
        yield LpfsMount(where)
    finally:
        umount(where)


def umount(path: str | os.PathLike[str]) -> None:
    """Take down the mount at ``path``, whatever state its daemon is in: ``lpfs umount``,
    then, if a busy or dead daemon left it mounted, ``fusermount -u -z``."""
    with contextlib.suppress(LpfsCommandError, subprocess.TimeoutExpired):
        _lpfs(["umount", os.fspath(path)])
    if mounttable.is_mounted(path):
        mounttable.unmount(Path(path), lazy=True)


class LpfsFactory(Protocol):
    """What ``lpfs_factory`` gives: a mount of its own per call, with these options."""

    def __call__(self, *options: str) -> LpfsMount: ...


@pytest.fixture
def lpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LpfsMount]:
    """A freshly mounted lpfs for this test alone, unmounted afterwards."""
    with mounted(tmp_path_factory.mktemp("lpfs") / "mnt") as mount:
        yield mount


@pytest.fixture
def lpfs_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LpfsFactory]:
    """Mounts of this test's own, each with the ``lpfs mount`` options it is called
    with (``lpfs_factory("--kernel", "4.19")``); all unmounted afterwards."""
    with contextlib.ExitStack() as mounts:

        def make(*options: str) -> LpfsMount:
            path = tmp_path_factory.mktemp("lpfs") / "mnt"
            return mounts.enter_context(mounted(path, *options))

        yield make


@pytest.fixture(scope="session")
def lpfs_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LpfsMount]:
    """One lpfs mount for the whole session; tests should take ``lpfs_shared`` instead."""
    with mounted(tmp_path_factory.mktemp("lpfs-session") / "mnt") as mount:
        yield mount


@pytest.fixture
def lpfs_shared(lpfs_session: LpfsMount) -> LpfsMount:
    """The session's lpfs mount, reset to a freshly booted kernel: cheaper than ``lpfs``."""
    lpfs_session.reset()
    return lpfs_session
