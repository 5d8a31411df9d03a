"""Unmounting and stale-mount recovery, shared by the daemon and the CLI."""

import errno
import os
import shutil
import subprocess
from pathlib import Path

# fusermount from FUSE 2, or fusermount3 where only FUSE 3's is installed.
FUSERMOUNT = shutil.which("fusermount") or shutil.which("fusermount3") or "fusermount"


def is_stale(path: Path) -> bool:
    """A FUSE mount whose daemon died: every access fails with ENOTCONN."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def unmount(path: Path, lazy: bool = False) -> subprocess.CompletedProcess[str]:
    args = [FUSERMOUNT, "-u", *(["-z"] if lazy else []), os.fspath(path)]
    return subprocess.run(args, capture_output=True, text=True, check=False)
