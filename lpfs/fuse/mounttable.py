"""The mount table, unmounting and stale-mount recovery, shared by the daemon and the CLI.

Nothing here touches a FUSE mount's files: a stat or an open of a mount whose
daemon is busy (or not yet initialised) would wait for that daemon.
"""

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

# fusermount from FUSE 2, or fusermount3 where only FUSE 3's is installed.
FUSERMOUNT = shutil.which("fusermount") or shutil.which("fusermount3") or "fusermount"
MOUNTINFO = "/proc/self/mountinfo"


class MountEntry(NamedTuple):
    """One line of /proc/<pid>/mountinfo (Documentation/filesystems/proc.rst)."""

    mount_id: int
    parent_id: int
    device: str  # major:minor; a FUSE connection's number is its minor
    path: str
    fstype: str

    @property
    def fuse_connection(self) -> str:
        """The name of the connection's directory under /sys/fs/fuse/connections."""
        return self.device.split(":")[1]


def _unescape(field: str) -> str:
    # show_mountinfo() writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_table(mountinfo: str = MOUNTINFO) -> list[MountEntry]:
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
        entries = []
        for line in lines:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            entries.append(
                MountEntry(int(fields[0]), int(fields[1]), fields[2], _unescape(fields[4]), fstype)
            )
        return entries


def top_mount(path: str, mountinfo: str = MOUNTINFO) -> MountEntry | None:
    """The mount a walk to ``path`` ends in: the one at ``path`` that nothing is mounted on."""
    here = [entry for entry in mount_table(mountinfo) if entry.path == path]
    covered = {entry.parent_id for entry in here}
    return next((entry for entry in reversed(here) if entry.mount_id not in covered), None)


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether anything is mounted at ``path``: the one probe lpfs and its tests use.

    Read from the mount table, never by a stat, so a stale mount (its daemon
    dead) counts, and a busy daemon cannot make the probe wait.
    """
    where = table_path(path)
    return any(entry.path == where for entry in mount_table())


def table_path(path: str | os.PathLike[str]) -> str:
    """``path`` as the mount table spells it, without a stat of the path itself.

    Only the parent is resolved: a realpath of a mountpoint would ask its daemon.
    """
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(parent), name)


class User(NamedTuple):
    """A process with a file open on a mount."""

    pid: int
    comm: str
    waiting: bool  # in uninterruptible sleep: for a FUSE mount, waiting for an answer


def mount_users(mount_id: int, waiting_only: bool = False) -> list[User]:
    """The processes with a file open on mount ``mount_id``.

    /proc/<pid>/fdinfo names each open file's mount without a lookup on it. A
    process waiting for a FUSE daemon's answer sleeps uninterruptibly, even
    after SIGKILL (request_wait_answer() in fs/fuse/dev.c).
    """
    users = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                comm, state = stat.read().rsplit(b")", 1)
            waiting = state.split()[0] == b"D"
            if (waiting or not waiting_only) and _has_file_on(entry.name, mount_id):
                name = comm.split(b"(", 1)[1].decode(errors="replace")
                users.append(User(int(entry.name), name, waiting))
        except OSError:  # the process has gone
            continue
    return users


def _has_file_on(pid: str, mount_id: int) -> bool:
    wanted = f"mnt_id:\t{mount_id}\n"
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as info:
            if wanted in info.read():
                return True
    return False


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
