"""Helpers that mount a real lpfs daemon and drive it the way users do.

FUSE tests need /dev/fuse and fusermount. They are skipped where those are
missing, unless LPFS_REQUIRE_FUSE=1 (as in CI), where that is a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODULES = Path(__file__).parent / "modules"


def fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount") is None:
        return "fusermount is missing (apt install fuse)"
    return None


def require_fuse() -> None:
    problem = fuse_problem()
    if problem is None:
        return
    if os.environ.get("LPFS_REQUIRE_FUSE") == "1":
        pytest.fail(f"LPFS_REQUIRE_FUSE=1 but {problem}")
    pytest.skip(problem)


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
    if result.returncode != 0 and os.path.ismount(path):
        subprocess.run(["fusermount", "-u", "-z", str(path)], check=False)


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")
