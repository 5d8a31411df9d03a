"""The files lpfs-ns lays over /proc, /dev and /sys inside its mount namespace.

A small FUSE filesystem, separate from the sysfs mount, that answers from a
running lpfs daemon over its control socket:

    kmsg                   /dev/kmsg: a write is one log record, a read one record
    tainted                /proc/sys/kernel/tainted: the host's bits OR the emulated ones
    ftrace_enabled         /proc/sys/kernel/ftrace_enabled, emulated
    module/                /sys/module: a symlink per module, emulated ones shadowing the host's
    kernel/                /sys/kernel: the host's entries, livepatch, the modules' kobjects,
                           and lpfs's own tracing/, debug/tracing/, debug/kprobes/ and
                           debug/dynamic_debug/control (see nskernel.py)
    proc/                  /proc: the real procfs's names as symlinks, and lpfs's cmdline,
                           meminfo, modules, version, kallsyms and the modules' proc
                           entries (see nsproc.py)
    stubs                  the kernel/ paths lpfs-ns binds the host's entries back over

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
from typing import Any, Final

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.daemon.livepatchfs import mount_options
from lpfs.daemon.nskernel import KernelDir
from lpfs.daemon.nsproc import ProcDir
from lpfs.errors import ControlError
from lpfs.fuse import binding
from lpfs.fuse.binding import FuseOSError, fuse_get_context
from lpfs.kernel.klog import Record
from lpfs.kernel.procfs import VMLINUX_SHOW

HOST_FILES: Final = {
    "cmdline": "/proc/cmdline",
    "meminfo": "/proc/meminfo",
    "modules": "/proc/modules",
    "version": "/proc/version",
    "tainted": "/proc/sys/kernel/tainted",
    "kallsyms": "/proc/kallsyms",
}
# The function tracer's files (kernel/trace/trace.c), at both places tracefs shows.
TRACING_FILES: Final = {
    "tracing_on": 0o640,
    "current_tracer": 0o640,
    "set_ftrace_filter": 0o640,
    "trace": 0o640,
    "available_tracers": 0o440,
    "available_filter_functions": 0o440,
}
TRACING_DIRS: Final = ("/kernel/tracing", "/kernel/debug/tracing")


@dataclass(frozen=True, slots=True)
class File:
    """One of nsfs's files: its mode, what a read by a pid shows, what a write does, and
    what an open with O_TRUNC does."""

    mode: int
    read: Callable[[int], bytes] | None = None
    write: Callable[[bytes], None] | None = None
    truncate: Callable[[], None] | None = None


@dataclass(eq=False)
class Handle:
    path: str
    file: File
    flags: int
    snapshot: bytes | None = None
    next_seq: int = -1  # kmsg: the first record this reader has not seen


class NsFiles:
    """fusepy operations for the namespace's files; state in names no FUSE op has."""

    use_ns = True

    def __init__(
        self,
        client: Client,
        sysfs_mount: Path,
        host_modules: Path,
        host_kernel: Path,
        real_proc: Path,
    ) -> None:
        self._client = client
        self._sysfs = sysfs_mount
        self._host_modules = host_modules
        self._kernel = KernelDir(host_kernel, sysfs_mount)
        self._proc = ProcDir(real_proc)
        self._host_fds = {
            name: os.open(path, os.O_RDONLY)
            for name, path in HOST_FILES.items()
            if os.path.exists(path)  # a kernel without modules has no /proc/modules
        }
        self._release = os.uname().release
        self._handles: dict[int, Handle] = {}
        self._counter = itertools.count(1)
        self._started = time.time()
        self._files: dict[str, File] = {
            "/kmsg": File(0o644, write=self._write_kmsg),
            "/tainted": File(0o644, lambda pid: self._tainted()),
            "/ftrace_enabled": File(0o644, lambda pid: self._ftrace(), self._write_ftrace),
            "/stubs": File(0o444, lambda pid: self._stubs()),
            "/proc/cmdline": File(0o444, lambda pid: self._proc_text("cmdline", pid)),
            "/proc/meminfo": File(0o444, lambda pid: self._proc_text("meminfo", pid)),
            "/proc/modules": File(0o444, lambda pid: self._modules()),
            "/proc/version": File(0o444, lambda pid: self._version()),
            "/proc/kallsyms": File(0o444, lambda pid: self._kallsyms()),
            "/kernel/debug/dynamic_debug/control": File(
                0o644, lambda pid: self._dyndbg(None), self._write_dyndbg
            ),
            "/kernel/debug/kprobes/enabled": File(
                0o600, lambda pid: self._kprobes()["enabled"].encode(), self._write_kprobes
            ),
            "/kernel/debug/kprobes/list": File(0o400, lambda pid: self._kprobes()["list"].encode()),
        }
        for directory in TRACING_DIRS:
            for name, mode in TRACING_FILES.items():
                self._files[f"{directory}/{name}"] = self._tracing_file(name, mode)
        self._dirs = {
            os.path.dirname(path) for path in self._files if os.path.dirname(path) != "/"
        } | {"/", "/module", "/kernel", "/kernel/debug", "/proc"}
        # Mountpoints of lpfs-ns, there as long as the namespace: the kernel may cache them.
        self.stable_entries = frozenset({*self._dirs, *(f"/{stub}" for stub in self._stub_paths())})
        self.stable_entries -= {"/"}

    def _stub_paths(self) -> list[str]:
        """Where lpfs-ns binds the host's entries back: under kernel/ and proc/."""
        own_proc = [p.removeprefix("/proc/") for p in self._files if p.startswith("/proc/")]
        return self._kernel.stubs() + [f"proc/{name}" for name in self._proc.stubs(own_proc)]

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
        """The host's file, whole (kallsyms runs to megabytes)."""
        fd = self._host_fds.get(name)
        if fd is None:
            return b""
        chunks: list[bytes] = []
        while chunk := os.pread(fd, 1 << 20, sum(map(len, chunks))):
            chunks.append(chunk)
        return b"".join(chunks)

    def _run_show(self, function: str, pid: int, obj: str = "vmlinux") -> str | None:
        """A task's read runs a show function: the output of the replacement it runs, or
        None for the original code."""
        ran = self._call("call", function=function, pid=pid, comm=self._proc.comm(pid), object=obj)
        if ran is None or ran["output"] is None:
            return None
        text = str(ran["output"])
        return text if text.endswith("\n") else text + "\n"

    def _proc_text(self, name: str, pid: int) -> bytes:
        text = self._run_show(VMLINUX_SHOW[name], pid)
        return self._host(name) if text is None else text.encode()

    def _module_procs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The /proc entries loaded modules created: name -> (module, its [[proc]])."""
        return {
            proc["name"]: (module["name"], proc)
            for module in self._call("status")["modules"]
            for proc in module["procs"]
        }

    def _module_proc_file(self, name: str) -> File | None:
        found = self._module_procs().get(name)
        if found is None:
            return None
        module, proc = found

        def read(pid: int) -> bytes:
            text = self._run_show(proc["show"], pid, module)
            return (proc["output"] if text is None else text).encode()

        return File(proc["mode"], read)

    def _kallsyms(self) -> bytes:
        own = "".join(f"{line}\n" for line in self._call("kallsyms"))
        return self._host("kallsyms") + own.encode()

    def _stubs(self) -> bytes:
        return "".join(f"{stub}\n" for stub in self._stub_paths()).encode()

    def _tracing_file(self, name: str, mode: int) -> File:
        def write(data: bytes) -> None:
            self._call("tracing", file=name, data=data.decode(errors="replace"))

        return File(
            mode,
            lambda pid: str(self._call("tracing", file=name)).encode(),
            write if mode & 0o200 else None,
            lambda: self._call("tracing", file=name, truncate=True),
        )

    def _kprobes(self) -> dict[str, str]:
        return dict(self._call("kprobes"))

    def _write_kprobes(self, data: bytes) -> None:
        self._call("kprobes", enabled=data.decode(errors="surrogateescape"))

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

    def _lookup(self, path: str) -> tuple[int, str, File | None]:
        """What ``path`` is: its mode, a symlink's target, and one of nsfs's files.
        FuseOSError(ENOENT) if nothing."""
        if path in self._dirs:
            return stat.S_IFDIR | 0o755, "", None
        file = self._files.get(path)
        parent, _, name = path.rpartition("/")
        if file is None and parent == "/proc":
            # procfs's own names first: a module's entry never shadows one (proc_create()
            # refuses a name taken), and pids are looked up far more often.
            proc = self._proc.entry(name, fuse_get_context()[2])
            if proc is not None:
                return proc.mode, proc.target, None
            file = self._module_proc_file(name)
        if file is not None:
            return stat.S_IFREG | file.mode, "", file
        if parent == "/module":
            target = self._module_target(name)
            if target is not None:
                return stat.S_IFLNK | 0o777, target, None
        entry = None
        if parent == "/kernel":
            entry = self._kernel.entry(name)
        elif parent == "/kernel/debug":
            entry = self._kernel.debug_entry(name)
        if entry is None:
            raise FuseOSError(errno.ENOENT)
        return entry.mode, entry.target, None

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        now = int(self._started * 1e9)
        mode, target, _file = self._lookup(path)
        return {
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": now,
            "st_mtime": now,
            "st_ctime": now,
            "st_mode": mode,
            "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
            "st_size": len(target),
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        if path not in self._dirs:
            raise FuseOSError(errno.ENOTDIR)
        prefix = path.rstrip("/") + "/"
        own = [
            p[len(prefix) :]
            for p in [*self._files, *self._dirs]
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]
        if path == "/kernel":
            return [".", "..", *self._kernel.names()]
        if path == "/kernel/debug":
            return [".", "..", *self._kernel.debug_names()]
        if path == "/proc":
            return [".", "..", *self._proc.names([*own, *self._module_procs()])]
        if path == "/module":
            emulated = [m["name"] for m in self._call("status")["modules"]]
            host = [n for n in os.listdir(self._host_modules) if n not in emulated]
            return [".", "..", *emulated, *host]
        return [".", "..", *own]

    def readlink(self, path: str) -> str:
        mode, target, _file = self._lookup(path)
        if not stat.S_ISLNK(mode):
            raise FuseOSError(errno.EINVAL)
        return target

    def open(self, path: str, flags: int) -> int:
        _mode, _target, file = self._lookup(path)
        if file is None:
            raise FuseOSError(errno.EISDIR)
        access = flags & os.O_ACCMODE
        if access != os.O_RDONLY and file.write is None:
            raise FuseOSError(errno.EACCES)
        if access != os.O_RDONLY and flags & os.O_TRUNC and file.truncate is not None:
            file.truncate()
        fh = next(self._counter)
        self._handles[fh] = Handle(path, file, flags)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles[fh]
        if handle.path == "/kmsg":
            return self._read_kmsg(handle, size)
        if handle.file.read is None:
            raise FuseOSError(errno.EINVAL)
        if offset == 0 or handle.snapshot is None:
            handle.snapshot = handle.file.read(fuse_get_context()[2])
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
        writer = self._handles[fh].file.write
        if writer is None:
            raise FuseOSError(errno.EACCES)
        writer(data)
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        """An O_TRUNC that came as its own request (no atomic O_TRUNC)."""
        _mode, _target, file = self._lookup(path)
        if file is not None and file.truncate is not None and length == 0:
            file.truncate()

    def release(self, path: str, fh: int) -> None:
        self._handles.pop(fh, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lpfs.daemon.nsfs")
    parser.add_argument("mountpoint")
    parser.add_argument("--mount", required=True, help="the lpfs sysfs mount")
    parser.add_argument("--host-modules", required=True, help="the host's /sys/module, bound aside")
    parser.add_argument("--host-kernel", required=True, help="the host's /sys/kernel, bound aside")
    parser.add_argument("--real-proc", required=True, help="the real procfs, bound aside")
    args = parser.parse_args(argv)
    sysfs = Path(args.mount).absolute()
    client = Client(socket_path(sysfs))
    ops = NsFiles(
        client, sysfs, Path(args.host_modules), Path(args.host_kernel), Path(args.real_proc)
    )
    options = {**mount_options(), "fsname": "lpfs-ns", "subtype": "lpfs-ns"}
    binding.serve(ops, args.mountpoint, **options)


if __name__ == "__main__":
    main()
