"""Where the transition engine's tasks come from.

A task is what the kernel's ``struct task_struct`` is to livepatch: a pid, a
comm, a scheduling state, a kernel stack to check, and a patch state that the
engine moves from one function set to the other. ``SimulatedTasks`` holds
tasks that tests and scenario files create and change; every source also
supplies one idle task per CPU (``swapper/N``), as the kernel keeps them.
"""

import itertools
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final, Protocol


class PatchState(IntEnum):
    """A task's patch state (KLP_TRANSITION_IDLE/UNPATCHED/PATCHED)."""

    IDLE = -1
    UNPATCHED = 0
    PATCHED = 1


class SchedState(StrEnum):
    """What a task is doing, as far as a stack check cares."""

    RUNNING = "running"
    SLEEPING = "sleeping"  # interruptible (S): a fake signal wakes it
    UNINTERRUPTIBLE = "uninterruptible"  # (D): a fake signal does not

    @classmethod
    def parse(cls, text: str) -> "SchedState":
        """Accept the long names and ps's letters R, S and D; ValueError otherwise."""
        letters = {"R": cls.RUNNING, "S": cls.SLEEPING, "D": cls.UNINTERRUPTIBLE}
        if text in letters:
            return letters[text]
        return cls(text)


@dataclass(eq=False)
class Task:
    """One schedulable entity and its livepatch bookkeeping."""

    pid: int
    comm: str
    state: SchedState = SchedState.SLEEPING
    stack: tuple[str, ...] = ()
    kthread: bool = False
    unreliable: bool = False
    idle: bool = False
    patch_state: PatchState = PatchState.IDLE
    pending: bool = field(default=False)

    def view(self) -> dict[str, object]:
        """The task as ``lpfs tasks --json`` shows it."""
        return {
            "pid": self.pid,
            "comm": self.comm,
            "state": str(self.state),
            "stack": list(self.stack),
            "kthread": self.kthread,
            "unreliable": self.unreliable,
            "idle": self.idle,
            "patch_state": int(self.patch_state),
        }


class TaskSource(Protocol):
    """The tasks of the emulated system, idle tasks included."""

    def tasks(self) -> list[Task]: ...


def idle_tasks(ncpus: int) -> list[Task]:
    """One idle task per CPU, named as the kernel names them."""
    return [
        Task(pid=0, comm=f"swapper/{cpu}", state=SchedState.RUNNING, kthread=True, idle=True)
        for cpu in range(ncpus)
    ]


class SimulatedTasks:
    """Deterministic tasks whose state and stacks are set by hand.

    Besides them, processes of this machine that a module names (as
    test_klp_syscall's klp_pids does) are adopted: followed through /proc
    until they exit, as host mode follows every thread.

    Callers hold the core lock; this class has no lock of its own.
    """

    def __init__(self, ncpus: int | None = None) -> None:
        self._idle = idle_tasks(ncpus or os.cpu_count() or 1)
        self._by_pid: dict[int, Task] = {}
        self._adopted: dict[int, Task] = {}
        # Sets the patch state of a task that appears by itself (host threads).
        self.on_new: Callable[[Task, Task | None], None] = lambda task, parent: None

    def tasks(self) -> list[Task]:
        self.follow(list(self._adopted))
        return [*self._by_pid.values(), *self._adopted.values(), *self._idle]

    def follow(self, pids: Iterable[int]) -> None:
        """Bring the named processes of this machine in line with /proc now: a few reads
        each, for the few a module names, so callers may hold the core lock."""
        for pid in pids:
            task = self._adopted.get(pid)
            if task is None:
                continue
            info = read_thread(pid, pid)
            if info is None:
                del self._adopted[pid]
            else:
                _follow(task, info)

    def get(self, pid: int) -> Task | None:
        return self._by_pid.get(pid) or self._adopted.get(pid)

    def prefetch(self) -> None:
        """Read ahead, without the core lock, what the next ``tasks()`` needs: nothing here."""

    def adopt_process(self, pid: int) -> None:
        """Make a process of this machine a task, unless the pid is one already or no
        process has it: a user task whose patch state is set as a new task's."""
        if self.get(pid) is not None or pid <= 0:
            return
        info = read_thread(pid, pid)
        if info is None:
            return
        task = Task(pid=pid, comm=info.comm)
        _follow(task, info)
        self.on_new(task, None)
        self._adopted[pid] = task

    def add(self, task: Task) -> Task:
        """Add a task as it is; Core.spawn_task() sets a new task's patch state first.

        Raises KeyError if the pid is taken.
        """
        if task.pid in self._by_pid or task.pid in self._adopted or task.pid <= 0:
            raise KeyError(task.pid)
        self._by_pid[task.pid] = task
        return task

    def remove(self, pid: int) -> Task:
        """A task exits and disappears. Raises KeyError for an unknown pid."""
        return self._by_pid.pop(pid)

    def clear(self) -> None:
        self._by_pid.clear()
        self._adopted.clear()
        for task in self._idle:
            task.patch_state = PatchState.IDLE
            task.pending = False


PF_KTHREAD: Final = 0x00200000
# /proc/<pid>/stat state letters, by what a stack check and a fake signal see.
_HOST_STATES: Final = {
    "R": SchedState.RUNNING,
    "S": SchedState.SLEEPING,
    "D": SchedState.UNINTERRUPTIBLE,
    "I": SchedState.UNINTERRUPTIBLE,  # TASK_IDLE: not woken by a signal
    "T": SchedState.UNINTERRUPTIBLE,  # stopped and traced tasks are not woken either
    "t": SchedState.UNINTERRUPTIBLE,
    "Z": SchedState.SLEEPING,  # exited, not yet reaped: nothing of it runs
}


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """What /proc says of one thread."""

    pid: int
    tid: int
    comm: str
    state: SchedState
    ppid: int
    kthread: bool
    stack: tuple[str, ...] | None  # None: the stack cannot be read


def parse_stat(text: str) -> tuple[str, str, int, int]:
    """comm, state letter, ppid and flags from /proc/<pid>/task/<tid>/stat."""
    head, _, tail = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()
    return comm, fields[0], int(fields[1]), int(fields[6])


def parse_stack(text: str) -> tuple[str, ...]:
    """Function names from /proc/<pid>/task/<tid>/stack (``[<0>] func+0x74/0xf0 [mod]``)."""
    frames = []
    for line in text.splitlines():
        symbol = line.partition("] ")[2].split("+", 1)[0].strip()
        if symbol:
            frames.append(symbol)
    return tuple(frames)


def read_thread(pid: int, tid: int) -> ThreadInfo | None:
    """One thread as /proc shows it, or None if it has exited."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/stat", encoding="utf-8", errors="replace") as f:
            comm, letter, ppid, flags = parse_stat(f.read())
    except (OSError, IndexError, ValueError):
        return None
    try:
        with open(f"{base}/stack", encoding="utf-8", errors="replace") as f:
            stack: tuple[str, ...] | None = parse_stack(f.read())
    except OSError:
        stack = None
    return ThreadInfo(
        pid=pid,
        tid=tid,
        comm=comm,
        state=_HOST_STATES.get(letter, SchedState.SLEEPING),
        ppid=ppid,
        kthread=bool(flags & PF_KTHREAD),
        stack=stack,
    )


def _follow(task: Task, info: ThreadInfo) -> None:
    """Bring a task in line with what /proc says of its thread now."""
    task.comm = info.comm
    task.state = info.state
    task.kthread = info.kthread
    task.unreliable = info.stack is None
    task.stack = info.stack or ()


def host_threads(exclude_pid: int) -> list[ThreadInfo]:
    """Every thread of this machine (psutil enumerates), but those of ``exclude_pid``."""
    import psutil  # only host mode needs it: simulated daemons start faster without

    threads = []
    for pid in psutil.pids():
        if pid == exclude_pid:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            info = read_thread(pid, int(tid))
            if info is not None:
                threads.append(info)
    return threads


class HostTasks(SimulatedTasks):
    """The real threads of this machine, plus any simulated tasks added by hand.

    The threads are those of the newest scan of /proc: ``prefetch()`` scans,
    without the core lock (at thousands of threads a scan takes long enough
    to hold up every sysfs read), and the next ``tasks()``, under the lock,
    takes the scan in. Between scans ``tasks()`` reads nothing.

    A thread whose kernel stack cannot be read counts as having an
    unreliable stack. A thread that appears inherits the patch state of its
    process (or, for a new process, of its parent) through ``on_new``; one
    that exits disappears. The daemon's own threads are not tasks.
    """

    def __init__(self, ncpus: int | None = None, exclude_pid: int | None = None) -> None:
        super().__init__(ncpus)
        self._exclude = os.getpid() if exclude_pid is None else exclude_pid
        self._threads: dict[int, Task] = {}
        self._scans = itertools.count(1)  # numbers scans in the order they start
        self._taken = 0  # the number of the scan the threads are from
        # The newest finished scan not yet taken in; its own lock, as scanners hold no other.
        self._scanned: tuple[int, list[ThreadInfo]] | None = None
        self._scanned_lock = threading.Lock()

    def prefetch(self) -> None:
        """Scan this machine's threads for the next ``tasks()``; called without the core lock.

        Of scans that overlap, the one that started last wins, whichever ends last.
        """
        number = next(self._scans)
        threads = host_threads(self._exclude)
        with self._scanned_lock:
            if self._scanned is None or self._scanned[0] < number:
                self._scanned = (number, threads)

    def tasks(self) -> list[Task]:
        with self._scanned_lock:
            scanned, self._scanned = self._scanned, None
        if scanned is not None and scanned[0] > self._taken:
            self._taken = scanned[0]
            self._take(scanned[1])
        return [*self._threads.values(), *super().tasks()]

    def _take(self, snapshot: list[ThreadInfo]) -> None:
        """Follow a scan: threads that exited since the last one go, new ones come in."""
        seen: dict[int, Task] = {}
        fresh: list[tuple[Task, ThreadInfo]] = []
        for info in snapshot:
            task = self._threads.get(info.tid)
            if task is None:
                task = Task(pid=info.tid, comm=info.comm)
                fresh.append((task, info))
            _follow(task, info)
            seen[info.tid] = task
        self._threads = seen
        for task, info in fresh:
            leader = info.pid if info.tid != info.pid else info.ppid
            self.on_new(task, seen.get(leader) if leader != info.tid else None)

    def follow(self, pids: Iterable[int]) -> None:
        for pid in pids:
            task = self._threads.get(pid)
            if task is None:
                continue
            # /proc/<tid> answers for any thread, not only a process's leader.
            info = read_thread(pid, pid)
            if info is None:
                del self._threads[pid]
            else:
                _follow(task, info)
        super().follow(pids)

    def get(self, pid: int) -> Task | None:
        return self._threads.get(pid) or super().get(pid)

    def adopt_process(self, pid: int) -> None:
        """Nothing to do: every process of this machine is a task already."""

    def add(self, task: Task) -> Task:
        if task.pid in self._threads or os.path.exists(f"/proc/{task.pid}"):
            raise KeyError(task.pid)
        return super().add(task)
