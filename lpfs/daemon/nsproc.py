"""/proc inside lpfs-ns: the real procfs, reached name by name, and lpfs's own files.

procfs cannot gain an entry from inside a mount namespace: a bind needs an
existing target, procfs refuses to be an overlay layer, and a tmpfs with
the entries bound back freezes the list of pids at the namespace's start.
A FUSE filesystem that served /proc's contents itself would break the
magic links (/proc/self/fd/N, /proc/<pid>/exe), which only procfs can
resolve. So lpfs-ns binds the real procfs aside (with the files it lays
over, such as /proc/sys/kernel/tainted) and puts nsfs's proc/ on /proc,
where each name of the real procfs stands for itself:

- a pid, listed afresh on every readdir, is a symlink to its directory in
  the real procfs, so the kernel resolves everything below it, magic links
  included, in procfs itself;
- procfs's own symlinks keep their text: ``self`` reads as the reader's
  process id (``thread-self`` as ``<tgid>/task/<tid>``), ``mounts`` as
  ``self/mounts``;
- every other entry (``sys``, ``stat``, ``uptime``, ...) is a stub lpfs-ns
  binds the real one over, so its path stays under /proc (procps's sysctl
  refuses a key whose real path is not under /proc/sys).

lpfs's own files are served in front of them: cmdline, meminfo, modules,
version, kallsyms, and the entries modules create with proc_create_single().
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """A real procfs name: a stub of its type and mode, or a symlink and its text."""

    mode: int
    target: str = ""


class ProcDir:
    """The names of /proc in the namespace."""

    def __init__(self, real_proc: Path, proc: Path = Path("/proc")) -> None:
        self._real = real_proc
        # /proc is still the real procfs when nsfs starts: its fixed entries become stubs.
        self._fixed: dict[str, int] = {}
        for name in os.listdir(proc):
            if name.isdigit():
                continue  # a pid: it may be gone by now
            info = (proc / name).lstat()
            if not stat.S_ISLNK(info.st_mode):
                kind = stat.S_IFDIR if stat.S_ISDIR(info.st_mode) else stat.S_IFREG
                self._fixed[name] = kind | stat.S_IMODE(info.st_mode)

    def stubs(self, own: list[str]) -> list[str]:
        """The entries lpfs-ns binds the real ones over: all but pids, symlinks and ``own``."""
        return [name for name in self._fixed if name not in own]

    def names(self, own: list[str]) -> list[str]:
        """Every name: lpfs's own first, then the real procfs's (pids included)."""
        return [*own, *(name for name in os.listdir(self._real) if name not in own)]

    def entry(self, name: str, pid: int) -> ProcEntry | None:
        """What ``name`` is for the process with thread id ``pid``, if procfs has it."""
        if name in self._fixed:
            return ProcEntry(self._fixed[name])
        real = self._real / name
        if name.isdigit():
            return ProcEntry(stat.S_IFLNK | 0o777, str(real)) if real.exists() else None
        if name in ("self", "thread-self"):
            return self._self_link(name, pid)
        if not real.is_symlink():
            return None
        return ProcEntry(stat.S_IFLNK | 0o777, os.readlink(real))

    def _self_link(self, name: str, tid: int) -> ProcEntry:
        """proc_self_get_link(), proc_thread_self_get_link(): the reader's own directory."""
        tgid = self.tgid(tid)
        if tgid is None:  # not a process of this pid namespace: let procfs resolve it
            return ProcEntry(stat.S_IFLNK | 0o777, str(self._real / name))
        text = str(tgid) if name == "self" else f"{tgid}/task/{tid}"
        return ProcEntry(stat.S_IFLNK | 0o777, text)

    def tgid(self, tid: int) -> int | None:
        """The process a thread belongs to (a FUSE request names the calling thread)."""
        try:
            status = (self._real / str(tid) / "status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
        return None

    def comm(self, pid: int) -> str:
        """The comm of a task, as the function tracer records it."""
        try:
            return (self._real / str(pid) / "comm").read_text().strip()
        except OSError:
            return "<...>"
