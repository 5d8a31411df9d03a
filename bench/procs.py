"""The mounts and processes the bench starts, and the guarantee that none outlives it.

Every mountpoint lives under one temporary root; ``Reaper.close()`` unmounts
whatever is still mounted under it (``fusermount -u``, then ``-u -z`` as the
last resort) and ends every process the bench recorded, by pid.
"""

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.daemon import livepatchfs
from lpfs.fuse import mounttable
from lpfs.fuse.mounttable import is_mounted

LPFS: Final = (sys.executable, "-m", "lpfs")  # as lpfs/testing/plugin.py runs it
TIMEOUT: Final = 60.0
POLL: Final = 0.001
EXIT_TIMEOUT: Final = 10.0
MB: Final = 1 << 20


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command; CalledProcessError (with its stderr) if it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, args, result.stdout, result.stderr.strip()
        )
    return result


def lpfs(*args: str) -> subprocess.CompletedProcess[str]:
    return run(*LPFS, *args)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll every millisecond; TimeoutError naming ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL)


def answers(mountpoint: Path) -> bool:
    """The mount serves its livepatch directory (an empty mountpoint has none)."""
    try:
        os.stat(mountpoint / "kernel" / "livepatch")
    except OSError:
        return False
    return True


def alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def baseline_options() -> str:
    """lpfs's own mount options (livepatchfs.mount_options()) as -o text, under another fsname."""
    options = {**livepatchfs.mount_options(), "fsname": "lpfs-baseline", "subtype": "lpfs-baseline"}
    # fusepy's rule: True is a bare flag, False is left out, anything else key=value.
    words = [k if v is True else f"{k}={v}" for k, v in options.items() if v is not False]
    return ",".join(words)


class Reaper:
    """Everything started under ``root``: unmounted and ended on close(), whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pids: set[int] = set()
        self._children: list[subprocess.Popen[bytes]] = []

    def adopt(self, pid: int) -> None:
        self._pids.add(pid)

    def adopt_child(self, child: "subprocess.Popen[bytes]") -> None:
        self._children.append(child)
        self._pids.add(child.pid)

    def forget(self, pid: int) -> None:
        self._pids.discard(pid)

    def mounts(self) -> list[Path]:
        paths = {Path(entry.path) for entry in mounttable.mount_table()}
        return sorted(p for p in paths if p.is_relative_to(self.root))

    def close(self, settle: float = 0.0) -> list[str]:
        """Unmount, then end processes; returns what had to be cleaned up.

        After a failure, a daemon forked by an interrupted `lpfs mount` may
        still be on its way to mounting: ``settle`` seconds later, a second
        pass catches it.
        """
        cleaned = self._sweep()
        if settle:
            time.sleep(settle)
            cleaned += self._sweep()
        return cleaned

    def _sweep(self) -> list[str]:
        cleaned = []
        for path in reversed(self.mounts()):
            cleaned.append(f"unmounted {path}")
            subprocess.run(["fusermount", "-u", str(path)], capture_output=True, check=False)
            if is_mounted(path):
                subprocess.run(
                    ["fusermount", "-u", "-z", str(path)], capture_output=True, check=False
                )
        for pid in sorted(self._pids):
            if alive(pid):
                cleaned.append(f"ended pid {pid}")
                _end(pid)
        for child in self._children:
            if child.poll() is None:
                child.kill()
            child.wait()
        return cleaned


def _end(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- lpfs ---------------------------------------------------------------------


@dataclass(frozen=True)
class LpfsDaemon:
    path: Path
    pid: int


def daemon_pid(mountpoint: Path) -> int:
    reply = Client(socket_path(mountpoint), timeout=5).call("ping")
    return int(reply["data"]["pid"])


def mount_lpfs(reaper: Reaper, path: Path, *options: str) -> tuple[LpfsDaemon, float]:
    """`lpfs mount --daemon`, until the mount answers; the daemon and the seconds it took."""
    path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lpfs("mount", str(path), "--daemon", *options)
    wait_until(lambda: answers(path), f"lpfs at {path}")
    elapsed = time.perf_counter() - start
    daemon = LpfsDaemon(path, daemon_pid(path))
    reaper.adopt(daemon.pid)
    return daemon, elapsed


def umount_lpfs(reaper: Reaper, daemon: LpfsDaemon) -> float:
    """`lpfs umount` (which waits for the daemon to exit), until the mount is gone."""
    start = time.perf_counter()
    lpfs("umount", str(daemon.path))
    wait_until(lambda: not is_mounted(daemon.path), f"{daemon.path} to unmount")
    elapsed = time.perf_counter() - start
    reaper.forget(daemon.pid)
    return elapsed


def fusermount_lpfs(reaper: Reaper, daemon: LpfsDaemon) -> float:
    """`fusermount -u` on an lpfs mount, until the daemon has exited and the mount is gone:
    the daemon's own share of `lpfs umount`, without the CLI's start-up."""
    start = time.perf_counter()
    run("fusermount", "-u", str(daemon.path))
    wait_until(lambda: not alive(daemon.pid), f"lpfs daemon {daemon.pid} to exit")
    wait_until(lambda: not is_mounted(daemon.path), f"{daemon.path} to unmount")
    elapsed = time.perf_counter() - start
    reaper.forget(daemon.pid)
    return elapsed


def start_lpfs_mount(path: Path, *options: str) -> "subprocess.Popen[bytes]":
    """`lpfs mount --daemon` without waiting: for mounting many at once."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*LPFS, "mount", str(path), "--daemon", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_lpfs_umount(path: Path) -> "subprocess.Popen[bytes]":
    """`lpfs umount` without waiting: for unmounting many at once."""
    return subprocess.Popen(
        [*LPFS, "umount", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


# -- the C baseline -----------------------------------------------------------


@dataclass(frozen=True)
class BaselineFs:
    path: Path
    process: "subprocess.Popen[bytes]"
    threaded: bool
    log: Path  # its stderr

    def diagnosis(self) -> str:
        text = self.log.read_text(errors="replace").strip() if self.log.exists() else ""
        state = "still mounted" if is_mounted(self.path) else "not mounted"
        return f"baseline_fs at {self.path} ({state}): {text or 'no output'}"


def mount_baseline(
    reaper: Reaper, binary: Path, path: Path, threaded: bool
) -> tuple[BaselineFs, float]:
    """Start bench/baseline_fs in the foreground, until the mount answers."""
    path.mkdir(parents=True, exist_ok=True)
    args = [str(binary), str(path), "-f", *([] if threaded else ["-s"])]
    log = path.with_name(path.name + ".log")
    start = time.perf_counter()
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*args, "-o", baseline_options()], stdout=subprocess.DEVNULL, stderr=stderr
        )
    reaper.adopt_child(process)
    baseline = BaselineFs(path, process, threaded, log)
    wait_until(lambda: answers(path) or process.poll() is not None, f"baseline at {path}")
    elapsed = time.perf_counter() - start
    if process.poll() is not None:
        raise RuntimeError(f"exited {process.returncode}: {baseline.diagnosis()}")
    return baseline, elapsed


def umount_baseline(reaper: Reaper, baseline: BaselineFs) -> float:
    """`fusermount -u`, until the filesystem process has exited and the mount is gone.

    RuntimeError if it has not exited within EXIT_TIMEOUT seconds (it is then killed).
    """
    start = time.perf_counter()
    run("fusermount", "-u", str(baseline.path))
    try:
        baseline.process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        diagnosis = baseline.diagnosis()
        baseline.process.kill()
        baseline.process.wait()
        raise RuntimeError(f"no exit {EXIT_TIMEOUT:.0f} s after unmount: {diagnosis}") from None
    wait_until(lambda: not is_mounted(baseline.path), f"{baseline.path} to unmount")
    elapsed = time.perf_counter() - start
    reaper.forget(baseline.process.pid)
    return elapsed


def python_startup() -> float:
    """Seconds for `python -I -c pass` with this interpreter."""
    start = time.perf_counter()
    run(sys.executable, "-I", "-c", "pass")
    return time.perf_counter() - start


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")
