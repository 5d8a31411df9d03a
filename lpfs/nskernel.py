"""/sys/kernel inside lpfs-ns: the host's entries, livepatch, and the modules' kobjects.

/sys/kernel there is nsfs's ``kernel/`` directory, not a tmpfs: a tmpfs
with the mount's entries bound into it could only show the kobjects that
existed when the namespace started, since nothing inside the namespace
learns of a module loaded later (from another shell, or through ``lpfs
insmod`` rather than the stand-ins). Listed here, a module's directory is
there the moment its init has run, and gone with its exit.

Its entries are of three kinds. The host's own entries and ``livepatch``
are stubs that lpfs-ns binds the real directories and files over (they
exist as long as the namespace, so the kernel may cache them and never
asks again about a mountpoint). A directory a module adds under the
mount's ``kernel/`` is a symlink to it, as /sys/module's entries are.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .kobjects import LIVEPATCH_KOBJECT


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in /sys/kernel: a stub to bind over, or a symlink."""

    mode: int  # S_IFDIR, S_IFREG or S_IFLNK, with the permission bits
    target: str = ""  # a symlink's


class KernelDir:
    """The names of /sys/kernel in the namespace, and what each is."""

    def __init__(self, host_kernel: Path, sysfs_mount: Path) -> None:
        self._mount_kernel = sysfs_mount / "kernel"
        # The host's entries as the namespace starts: those lpfs-ns binds back.
        self._host: dict[str, Entry] = {LIVEPATCH_KOBJECT: Entry(stat.S_IFDIR | 0o755)}
        for name in sorted(os.listdir(host_kernel)):
            if name != LIVEPATCH_KOBJECT:
                self._host[name] = _stub(host_kernel / name)

    @property
    def stubs(self) -> list[str]:
        """The names that stay as long as the namespace: lpfs-ns's mountpoints."""
        return [name for name, entry in self._host.items() if not stat.S_ISLNK(entry.mode)]

    def names(self) -> list[str]:
        kobjects = [n for n in os.listdir(self._mount_kernel) if n not in self._host]
        return [*self._host, *kobjects]

    def entry(self, name: str) -> Entry | None:
        if name in self._host:
            return self._host[name]
        kobject = self._mount_kernel / name
        if not kobject.is_dir():
            return None
        return Entry(stat.S_IFLNK | 0o777, str(kobject))


def _stub(path: Path) -> Entry:
    """What stands in the host entry's place: a symlink as it is, else an empty node of
    its type and mode for the real one to be bound over."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return Entry(info.st_mode, os.readlink(path))
    kind = stat.S_IFDIR if stat.S_ISDIR(info.st_mode) else stat.S_IFREG
    return Entry(kind | stat.S_IMODE(info.st_mode))
