"""/sys/kernel inside lpfs-ns: the host's entries, livepatch, the modules' kobjects,
and lpfs's own tracing and debug files.

/sys/kernel there is nsfs's ``kernel/`` directory, not a tmpfs: a tmpfs
with the mount's entries bound into it could only show the kobjects that
existed when the namespace started, since nothing inside the namespace
learns of a module loaded later (from another shell, or through ``lpfs
insmod`` rather than the stand-ins). Listed here, a module's directory is
there the moment its init has run, and gone with its exit.

Its entries are of four kinds. The host's own entries and ``livepatch``
are stubs that lpfs-ns binds the real directories and files over (they
exist as long as the namespace, so the kernel may cache them and never
asks again about a mountpoint); ``stubs()`` lists them. A directory a
module adds under the mount's ``kernel/`` is a symlink to it, as
/sys/module's entries are. ``tracing`` and ``debug`` are nsfs's own
directories, so that a script's tracing and kprobes settings stay inside
the namespace: ``debug`` holds stubs for the host's debugfs entries beside
lpfs's ``tracing``, ``kprobes`` and ``dynamic_debug``.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lpfs.kernel.kobjects import LIVEPATCH_KOBJECT

DIR_MODE: Final = stat.S_IFDIR | 0o755
# nsfs's own directories under kernel/ and kernel/debug/, never the host's.
OWN_KERNEL_DIRS: Final = ("debug", "tracing")
OWN_DEBUG_DIRS: Final = ("dynamic_debug", "kprobes", "tracing")


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in /sys/kernel: a stub to bind over, a symlink, or nsfs's own directory."""

    mode: int  # S_IFDIR, S_IFREG or S_IFLNK, with the permission bits
    target: str = ""  # a symlink's
    own: bool = False  # one of nsfs's directories, with files of its own


class KernelDir:
    """The names of /sys/kernel and /sys/kernel/debug in the namespace, and what each is."""

    def __init__(self, host_kernel: Path, sysfs_mount: Path) -> None:
        self._mount_kernel = sysfs_mount / "kernel"
        # The host's entries as the namespace starts: those lpfs-ns binds back.
        self._top: dict[str, Entry] = {LIVEPATCH_KOBJECT: Entry(DIR_MODE)}
        self._top.update(_host_stubs(host_kernel, (LIVEPATCH_KOBJECT, *OWN_KERNEL_DIRS)))
        self._top.update({name: Entry(DIR_MODE, own=True) for name in OWN_KERNEL_DIRS})
        self._debug = _host_stubs(host_kernel / "debug", OWN_DEBUG_DIRS)
        self._debug.update({name: Entry(DIR_MODE, own=True) for name in OWN_DEBUG_DIRS})

    def stubs(self) -> list[str]:
        """The mountpoints lpfs-ns binds over, relative to /sys: they stay as long as
        the namespace."""
        return [
            f"kernel/{name}"
            for name, entry in self._top.items()
            if not stat.S_ISLNK(entry.mode) and not entry.own
        ] + [
            f"kernel/debug/{name}"
            for name, entry in self._debug.items()
            if not stat.S_ISLNK(entry.mode) and not entry.own
        ]

    def names(self) -> list[str]:
        kobjects = [n for n in os.listdir(self._mount_kernel) if n not in self._top]
        return [*self._top, *kobjects]

    def debug_names(self) -> list[str]:
        return list(self._debug)

    def entry(self, name: str) -> Entry | None:
        if name in self._top:
            return self._top[name]
        kobject = self._mount_kernel / name
        if not kobject.is_dir():
            return None
        return Entry(stat.S_IFLNK | 0o777, str(kobject))

    def debug_entry(self, name: str) -> Entry | None:
        return self._debug.get(name)


def _host_stubs(directory: Path, skip: tuple[str, ...]) -> dict[str, Entry]:
    """A stub for each of the host directory's entries but ``skip``; none if it is absent."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {name: _stub(directory / name) for name in names if name not in skip}


def _stub(path: Path) -> Entry:
    """What stands in the host entry's place: a symlink as it is, else an empty node of
    its type and mode for the real one to be bound over."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return Entry(info.st_mode, os.readlink(path))
    kind = stat.S_IFDIR if stat.S_ISDIR(info.st_mode) else stat.S_IFREG
    return Entry(kind | stat.S_IMODE(info.st_mode))
