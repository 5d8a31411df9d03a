"""Helpers that mount a real lpfs daemon and drive it the way users do.

A test that needs a tool or a device this machine lacks (/dev/fuse,
fusermount, unshare, kmod, binutils, shellcheck, ...) is skipped, unless
LPFS_STRICT=1 (as in CI, where `make test` has installed them all): there
that is a failure.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from lpfs.formats.modpath import SHIPPED_MODULES
from lpfs.fuse import mounttable

MODULES = SHIPPED_MODULES
# The Debian package of each program a test runs, for the message.
PACKAGES = {
    "fusermount": "fuse",
    "unshare": "util-linux",
    "readelf": "binutils",
    "modinfo": "kmod",
    "shellcheck": "shellcheck",
    "sysctl": "procps",
    "useradd": "passwd",
}


def missing(problem: str) -> NoReturn:
    """Skip for a missing tool or device; under LPFS_STRICT=1 fail instead."""
    if os.environ.get("LPFS_STRICT") == "1":
        pytest.fail(f"LPFS_STRICT=1 and {problem}")
    pytest.skip(problem)


def require_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            missing(f"{name} is missing (apt install {PACKAGES[name]})")


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        missing("/dev/fuse is missing")
    require_tools("fusermount")


def lpfs_cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the lpfs command with this interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "lpfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"lpfs {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


class Mount:
    """A running daemon and its mountpoint, with the commands tests need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.klp = path / "kernel" / "livepatch"

    def lpfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return lpfs_cli(*args, "--mount", str(self.path), check=check)

    def sh(self, script: str, check: bool = False) -> subprocess.CompletedProcess:
        """Run a bash script in the mount's directory."""
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def insmod(self, module: str, *params: str, check: bool = True) -> subprocess.CompletedProcess:
        path = module if module.endswith(".toml") else str(MODULES / f"{module}.toml")
        return self.lpfs("insmod", path, *params, check=check)

    def rmmod(self, name: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.lpfs("rmmod", name, check=check)

    def status(self) -> dict:
        return json.loads(self.lpfs("status", "--json").stdout)

    def dmesg(self) -> list[str]:
        """The log without timestamps."""
        records = [json.loads(line) for line in self.lpfs("dmesg", "--json").stdout.splitlines()]
        return [record["text"] for record in records]

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def patch_dir(self, patch: str) -> Path:
        return self.klp / patch

    def patches(self) -> list[str]:
        return sorted(os.listdir(self.klp))

    def tick(self, count: int = 1) -> None:
        self.lpfs("tick", str(count))

    def add_task(self, pid: int, *stack: str, state: str = "sleeping", **flags: bool) -> None:
        args = ["task", "add", "--pid", str(pid), "--state", state, "--stack", ",".join(stack)]
        args += [f"--{flag}" for flag, on in flags.items() if on]
        self.lpfs(*args)


def start_daemon(path: Path, *options: str) -> None:
    require_fuse()
    path.mkdir(exist_ok=True)
    lpfs_cli("mount", str(path), "--daemon", *options)


def stop_daemon(path: Path) -> None:
    """Unmount, whatever state the daemon is in; never leave a mount behind."""
    result = lpfs_cli("umount", str(path), check=False)
    if result.returncode != 0 and mounttable.is_mounted(path):
        subprocess.run(["fusermount", "-u", "-z", str(path)], check=False)


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# What the selftests' test_klp-call_getpid does: call getpid until killed.
GETPID_LOOP = "import os\nwhile True:\n    os.getpid()\n"


@contextlib.contextmanager
def getpid_loops(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` real processes calling getpid in a loop; killed and reaped on the way out."""
    loops: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            loops.append(subprocess.Popen([sys.executable, "-c", GETPID_LOOP]))
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
