"""A FUSE mount of lpfs's own: made with mount(2) as root or through fusermount, and
taken down only if it is still the one lpfs made.

At mount time its id is read from /proc/self/mountinfo (a stat of the
mountpoint would wait for INIT, which the same thread has still to answer);
at the end it is unmounted only if that mount is still the top one at the
path, so a filesystem mounted below, above or over it is never touched. A
connection that ended (ENODEV, or POLLERR after an abort) is left as it is,
as libfuse leaves it (fuse_kern_unmount() in lib/mount.c).
"""

import logging
import os
import select
import socket
import stat
import subprocess
from typing import Any, Final

from lpfs.fuse import mounttable
from lpfs.fuse.mounttable import FUSERMOUNT

log = logging.getLogger(__name__)

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH, UMOUNT_NOFOLLOW = 0x2, 0x8
FLAG_OPTIONS: Final = ("allow_other", "default_permissions")


class FuseMount:
    """The device fd of one mount and what is needed to take that mount down."""

    def __init__(self, mountpoint: str, options: dict[str, Any]) -> None:
        self.fsname = str(options.get("fsname", "lpfs"))
        self.subtype = str(options.get("subtype", ""))
        self.flags = [flag for flag in FLAG_OPTIONS if options.get(flag)]
        self.path = os.path.realpath(mountpoint)  # as the mount table shows it
        self.fd = -1
        self.mount_id: int | None = None

    def mount(self) -> int:
        """Mount and return the device's fd."""
        if os.geteuid() == 0:
            self._mount_as_root()
        else:
            self._mount_through_fusermount()
        ours = mounttable.top_mount(self.path)
        if ours is not None and ours.fstype.split(".")[0] == "fuse":
            self.mount_id = ours.mount_id
        return self.fd

    def _mount_as_root(self) -> None:
        # Resolved once: the mount lands on this directory whatever its path becomes.
        target = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.path = os.readlink(f"/proc/self/fd/{target}")
            self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
            data = (
                f"fd={self.fd},rootmode={stat.S_IFDIR:o},"
                f"user_id={os.getuid()},group_id={os.getgid()}"
            )
            fstype = f"fuse.{self.subtype}" if self.subtype else "fuse"
            _libc_call(
                "mount",
                self.fsname,
                f"/proc/self/fd/{target}",
                fstype,
                MS_NOSUID | MS_NODEV,
                ",".join([data, *self.flags]),
            )
        except OSError:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            raise
        finally:
            os.close(target)

    def _mount_through_fusermount(self) -> None:
        options = [f"fsname={self.fsname}"]
        if self.subtype:
            options.append(f"subtype={self.subtype}")
        self.fd = _fusermount(self.path, ",".join([*options, *self.flags]))

    def close(self, connection_ended: bool) -> None:
        """Close the device, then unmount if the mount is still lpfs's and still served.

        Closing first ends the connection, so nothing can wait on the daemon
        while it unmounts.
        """
        if self.fd < 0:
            return
        poller = select.poll()
        poller.register(self.fd, 0)
        aborted = any(events & select.POLLERR for _, events in poller.poll(0))
        os.close(self.fd)
        self.fd = -1
        if connection_ended or aborted or not self._still_ours():
            return
        if os.geteuid() == 0:
            try:
                _libc_call("umount2", self.path, MNT_DETACH | UMOUNT_NOFOLLOW)
            except OSError as exc:
                log.warning("unmounting %s: %s", self.path, exc.strerror)
        else:
            subprocess.run(
                [FUSERMOUNT, "-u", "-q", "-z", "--", self.path], check=False, capture_output=True
            )

    def _still_ours(self) -> bool:
        top = mounttable.top_mount(self.path)
        return top is not None and top.mount_id == self.mount_id


def _libc_call(name: str, *args: object) -> None:
    import ctypes  # only to mount and unmount as root: not worth its import time at start

    libc = ctypes.CDLL(None, use_errno=True)
    encoded = [os.fsencode(a) if isinstance(a, str) else a for a in args]
    if getattr(libc, name)(*encoded) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def _fusermount(mountpoint: str, options: str) -> int:
    """Mount through the setuid fusermount, which passes back the device's fd."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = {**os.environ, "_FUSE_COMMFD": str(theirs.fileno())}
        result = subprocess.run(
            [FUSERMOUNT, "-o", options, "--", mountpoint],
            env=env,
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip() or "fusermount failed")
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise RuntimeError("fusermount passed no file descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]
