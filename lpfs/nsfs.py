"""The files lpfs-ns lays over /proc, /dev and /sys inside its mount namespace.

A small FUSE filesystem, separate from the sysfs mount, that answers from a
running lpfs daemon over its control socket:

    kmsg                   /dev/kmsg: a write is one log record, a read one record
    cmdline, meminfo       /proc/cmdline, /proc/meminfo as the reader's task sees them
    modules                /proc/modules: this machine's modules and the emulated ones
    version                /proc/version with the emulated release
    tainted                /proc/sys/kernel/tainted: the host's bits OR the emulated ones
    ftrace_enabled         /proc/sys/kernel/ftrace_enabled, emulated
    dynamic_debug_control  /sys/kernel/debug/dynamic_debug/control, for lpfs's pr_debug sites
    module/                /sys/module: a symlink per module, emulated ones shadowing the host's
    kernel/                /sys/kernel: the host's entries, livepatch and the modules' kobjects

The host's own versions are read through descriptors opened before they are
shadowed.
"""

import argparse
import errno
import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import binding, control
from .binding import FuseOSError, fuse_get_context
from .errors import ControlError
from .fs import mount_options
from .klog import Record
from .nskernel import KernelDir

# The /proc file each emulated show function fills.
PROC_FUNCTIONS = {"cmdline": "cmdline_proc_show", "meminfo": "meminfo_proc_show"}
HOST_FILES = {
    "cmdline": "/proc/cmdline",
    "meminfo": "/proc/meminfo",
    "modules": "/proc/modules",
    "version": "/proc/version",
    "tainted": "/proc/sys/kernel/tainted",
}


@dataclass(eq=False)
class Handle:
    name: str
    flags: int
    snapshot: bytes | None = None
    next_seq: int = -1  # kmsg: the first record this reader has not seen


class NsFiles:
    """fusepy operations for the namespace's files; state in names no FUSE op has."""

    use_ns = True

    def __init__(
        self, client: control.Client, sysfs_mount: Path, host_modules: Path, host_kernel: Path
    ) -> None:
        self._client = client
        self._sysfs = sysfs_mount
        self._host_modules = host_modules
        self._kernel = KernelDir(host_kernel, sysfs_mount)
        # Mountpoints of lpfs-ns, there as long as the namespace: the kernel may cache them.
        self.stable_entries = frozenset(
            {"/kernel", *(f"/kernel/{name}" for name in self._kernel.stubs)}
        )
        self._host_fds = {
            name: os.open(path, os.O_RDONLY)
            for name, path in HOST_FILES.items()
            if os.path.exists(path)  # a kernel without modules has no /proc/modules
        }
        self._release = os.uname().release
        self._handles: dict[int, Handle] = {}
        self._counter = itertools.count(1)
        self._started = time.time()
        self._files: dict[
            str, tuple[int, Callable[[int], bytes] | None, Callable[[bytes], None] | None]
        ] = {
            "kmsg": (0o644, None, self._write_kmsg),
            "cmdline": (0o444, lambda pid: self._proc_text("cmdline", pid), None),
            "meminfo": (0o444, lambda pid: self._proc_text("meminfo", pid), None),
            "modules": (0o444, lambda pid: self._modules(), None),
            "version": (0o444, lambda pid: self._version(), None),
            "tainted": (0o644, lambda pid: self._tainted(), None),
            "ftrace_enabled": (0o644, lambda pid: self._ftrace(), self._write_ftrace),
            "dynamic_debug_control": (0o644, lambda pid: self._dyndbg(None), self._write_dyndbg),
        }

    def __call__(self, op: str, *args: Any) -> Any:
        # fusepy dispatches through here; mfusepy calls the methods directly.
        method = getattr(self, op, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        return method(*args)

    # -- talking to the daemon -------------------------------------------------

    def _call(self, cmd: str, **args: Any) -> Any:
        try:
            reply = self._client.call(cmd, **args)
        except ControlError:
            raise FuseOSError(errno.EIO) from None
        if not reply.get("ok"):
            raise FuseOSError(reply.get("errno") or errno.EIO)
        return reply.get("data")

    def _host(self, name: str) -> bytes:
        fd = self._host_fds.get(name)
        return b"" if fd is None else os.pread(fd, 1 << 20, 0)

    def _proc_text(self, name: str, pid: int) -> bytes:
        running = self._call("running", function=PROC_FUNCTIONS[name], pid=pid)
        if running is None or running["output"] is None:
            return self._host(name)
        text = running["output"]
        return (text if text.endswith("\n") else text + "\n").encode()

    def _modules(self) -> bytes:
        status = self._call("status")
        names = {m["name"] for m in status["modules"]}
        lines = [
            f"{m['name']} {m['size']} {m['refcnt']} - Live 0x0000000000000000"
            + (" (K)" if m["livepatch"] else "")
            for m in reversed(status["modules"])
        ]
        host = [
            line
            for line in self._host("modules").decode().splitlines()
            if line.split(" ", 1)[0] not in names
        ]
        return "".join(line + "\n" for line in lines + host).encode()

    def _version(self) -> bytes:
        release = self._call("status")["kernel"]
        return self._host("version").decode().replace(self._release, release, 1).encode()

    def _tainted(self) -> bytes:
        host = int(self._host("tainted").decode().strip() or 0)
        return f"{host | self._call('status')['tainted']}\n".encode()

    def _ftrace(self) -> bytes:
        return f"{self._call('sysctl', name='kernel.ftrace_enabled')}\n".encode()

    def _write_ftrace(self, data: bytes) -> None:
        try:
            value = int(data.decode().strip())
        except ValueError:
            raise FuseOSError(errno.EINVAL) from None
        self._call("sysctl", name="kernel.ftrace_enabled", value=value)

    def _dyndbg(self, query: str | None) -> bytes:
        return str(self._call("dyndbg", query=query)).encode()

    def _write_dyndbg(self, data: bytes) -> None:
        self._dyndbg(data.decode(errors="replace"))

    def _write_kmsg(self, data: bytes) -> None:
        self._call("kmsg", text=data.decode(errors="replace"))

    # -- the tree ------------------------------------------------------------

    def _module_target(self, name: str) -> str | None:
        emulated = {m["name"] for m in self._call("status")["modules"]}
        if name in emulated:
            return str(self._sysfs / "module" / name)
        if (self._host_modules / name).exists():
            return str(self._host_modules / name)
        return None

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        now = int(self._started * 1e9)
        base = {
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": now,
            "st_mtime": now,
            "st_ctime": now,
        }
        parts = [p for p in path.split("/") if p]
        if not parts or parts in (["module"], ["kernel"]):
            return {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if len(parts) == 2 and parts[0] == "kernel":
            entry = self._kernel.entry(parts[1])
            if entry is None:
                raise FuseOSError(errno.ENOENT)
            nlink = 2 if stat.S_ISDIR(entry.mode) else 1
            return {**base, "st_mode": entry.mode, "st_nlink": nlink, "st_size": len(entry.target)}
        if len(parts) == 2 and parts[0] == "module":
            target = self._module_target(parts[1])
            if target is None:
                raise FuseOSError(errno.ENOENT)
            return {**base, "st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1, "st_size": len(target)}
        if len(parts) == 1 and parts[0] in self._files:
            mode = self._files[parts[0]][0]
            return {**base, "st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": 0}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if path == "/":
            return [".", "..", "module", "kernel", *self._files]
        if path == "/kernel":
            return [".", "..", *self._kernel.names()]
        if path == "/module":
            emulated = [m["name"] for m in self._call("status")["modules"]]
            host = [n for n in os.listdir(self._host_modules) if n not in emulated]
            return [".", "..", *emulated, *host]
        raise FuseOSError(errno.ENOTDIR)

    def readlink(self, path: str) -> str:
        parent, _, name = path.rpartition("/")
        if parent == "/kernel":
            entry = self._kernel.entry(name)
            target = entry.target if entry is not None and stat.S_ISLNK(entry.mode) else None
        else:
            target = self._module_target(name)
        if target is None:
            raise FuseOSError(errno.ENOENT)
        return target

    def open(self, path: str, flags: int) -> int:
        name = path.lstrip("/")
        if name not in self._files:
            raise FuseOSError(errno.ENOENT)
        _mode, _reader, writer = self._files[name]
        access = flags & os.O_ACCMODE
        if access != os.O_RDONLY and writer is None:
            raise FuseOSError(errno.EACCES)
        fh = next(self._counter)
        self._handles[fh] = Handle(name, flags)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles[fh]
        if handle.name == "kmsg":
            return self._read_kmsg(handle, size)
        _mode, reader, _writer = self._files[handle.name]
        if reader is None:
            raise FuseOSError(errno.EINVAL)
        if offset == 0 or handle.snapshot is None:
            handle.snapshot = reader(fuse_get_context()[2])
        return handle.snapshot[offset : offset + size]

    def _read_kmsg(self, handle: Handle, size: int) -> bytes:
        """devkmsg_read(): one record per read; the end of the ring is EAGAIN or EOF."""
        records = [Record(**r) for r in self._call("dmesg")]
        fresh = [r for r in records if r.seq >= handle.next_seq]
        if not fresh:
            if handle.flags & os.O_NONBLOCK:
                raise FuseOSError(errno.EAGAIN)
            return b""
        line = fresh[0].kmsg().encode()
        if len(line) > size:
            raise FuseOSError(errno.EINVAL)
        handle.next_seq = fresh[0].seq + 1
        return line

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        _mode, _reader, writer = self._files[self._handles[fh].name]
        if writer is None:
            raise FuseOSError(errno.EACCES)
        writer(data)
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        return None

    def release(self, path: str, fh: int) -> None:
        self._handles.pop(fh, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lpfs.nsfs")
    parser.add_argument("mountpoint")
    parser.add_argument("--mount", required=True, help="the lpfs sysfs mount")
    parser.add_argument("--host-modules", required=True, help="the host's /sys/module, bound aside")
    parser.add_argument("--host-kernel", required=True, help="the host's /sys/kernel, bound aside")
    args = parser.parse_args(argv)
    sysfs = Path(args.mount).absolute()
    client = control.Client(control.socket_path(sysfs))
    ops = NsFiles(client, sysfs, Path(args.host_modules), Path(args.host_kernel))
    options = {**mount_options(), "fsname": "lpfs-ns", "subtype": "lpfs-ns"}
    binding.serve(ops, args.mountpoint, **options)


if __name__ == "__main__":
    main()
