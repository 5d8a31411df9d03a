"""What lpfs's own tests share besides the pytest plugin's mounts.

A test that needs a tool or a device this machine lacks (/dev/fuse,
fusermount, unshare, kmod, binutils, shellcheck, ...) is skipped, unless
LPFS_STRICT=1 (as in CI, where `make test` has installed them all): there
that is a failure.
"""

import contextlib
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


def shipped(name: str) -> Path:
    """The module file lpfs ships for the kernel's test module ``name``."""
    return MODULES / f"{name}.toml"


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
