"""Where the transition engine's tasks come from.

A task is what the kernel's ``struct task_struct`` is to livepatch: a pid, a
comm, a scheduling state, a kernel stack to check, and a patch state that the
engine moves from one function set to the other. ``SimulatedTasks`` holds
tasks that tests and scenario files create and change; every source also
supplies one idle task per CPU (``swapper/N``), as the kernel keeps them.
"""

import os
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Protocol


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

    Callers hold the core lock; this class has no lock of its own.
    """

    def __init__(self, ncpus: int | None = None) -> None:
        self._idle = idle_tasks(ncpus or os.cpu_count() or 1)
        self._by_pid: dict[int, Task] = {}

    def tasks(self) -> list[Task]:
        return [*self._by_pid.values(), *self._idle]

    def get(self, pid: int) -> Task | None:
        return self._by_pid.get(pid)

    def add(self, task: Task, parent: Task | None = None) -> Task:
        """Add a task; a forked child inherits its parent's patch state and pending flag.

        Raises KeyError if the pid is taken.
        """
        if task.pid in self._by_pid or task.pid <= 0:
            raise KeyError(task.pid)
        if parent is not None:
            task.patch_state = parent.patch_state
            task.pending = parent.pending
        self._by_pid[task.pid] = task
        return task

    def remove(self, pid: int) -> Task:
        """A task exits and disappears. Raises KeyError for an unknown pid."""
        return self._by_pid.pop(pid)

    def clear(self) -> None:
        self._by_pid.clear()
        for task in self._idle:
            task.patch_state = PatchState.IDLE
            task.pending = False
