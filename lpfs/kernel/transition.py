"""The transition engine: the kernel's per-task consistency model.

Mirrors kernel/livepatch/transition.c. One patch at a time is in transition
towards a target state; every task starts in the opposite state and switches
once no function being (un)patched is on its stack. A try that leaves tasks
behind queues a retry; every 15th retry sends fake signals. ``force`` moves
every pending task at once; ``reverse`` turns the transition around.

All methods expect the core lock (klp_mutex) to be held by the caller.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from lpfs.kernel.clock import Clock
from lpfs.kernel.klog import KERN_NOTICE, KERN_WARNING, KernelLog
from lpfs.kernel.lifecycle import Lifecycle
from lpfs.kernel.structs import KlpObject, Patch
from lpfs.kernel.tasks import PatchState, SchedState, Task, TaskSource

SIGNALS_TIMEOUT: Final = 15


class Klp(Protocol):
    """What the transition asks of the livepatch core (core.c's side of transition.c)."""

    @property
    def lifecycle(self) -> Lifecycle: ...

    def functions_to_check(self, patch: Patch, target: PatchState) -> frozenset[str]: ...

    def note_replacement_calls(self) -> None: ...

    def object_loaded(self, obj: KlpObject) -> bool: ...

    def post_patch_callback(self, patch: Patch, obj: KlpObject) -> None: ...

    def post_unpatch_callback(self, patch: Patch, obj: KlpObject) -> None: ...

    def unpatch_objects(self, patch: Patch) -> None: ...

    def unpatch_replaced_patches(self, new_patch: Patch) -> None: ...

    def discard_nops(self, patch: Patch) -> None: ...


def _direction(target: PatchState) -> str:
    return "patching" if target == PatchState.PATCHED else "unpatching"


@dataclass(frozen=True, slots=True)
class TransitionStatus:
    """A snapshot of the transition in progress, for ``lpfs status``."""

    patch: str
    direction: str
    tasks_switched: int
    tasks_total: int
    tries: int
    next_signal_in: int


@dataclass(frozen=True, slots=True)
class Blocker:
    """A task that keeps the transition from completing, and why.

    ``reason`` is worded as the kernel's klp_try_switch_task() debug line.
    """

    pid: int
    comm: str
    reason: str
    function: str | None


class Transition:
    """klp_transition_patch, klp_target_state and the verbs that move them."""

    def __init__(
        self,
        core: Klp,
        source: TaskSource,
        log: KernelLog,
        clock: Clock,
        on_retry_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._core = core
        self.source = source
        self._log = log
        self._clock = clock
        self._on_retry_queued = on_retry_queued
        self.patch: Patch | None = None
        self.target = PatchState.IDLE
        self.signals_cnt = 0
        self.tries = 0
        self.retry_queued = False

    @property
    def initial_state(self) -> PatchState:
        """The state every task starts the current transition in."""
        return PatchState(int(not self.target))

    def _notice(self, text: str) -> None:
        self._log.printk(KERN_NOTICE, f"livepatch: {text}")

    def _debug(self, site: str, text: str) -> None:
        self._log.pr_debug(site, f"livepatch: {text}")

    # -- lifecycle, in the kernel's order ------------------------------------

    def init(self, patch: "Patch", target: PatchState) -> None:
        """klp_init_transition(): every task starts in the state opposite to the target."""
        self._debug(
            "klp_init_transition",
            f"'{patch.name}': initializing {_direction(target)} transition",
        )
        self.patch = patch
        self.target = target
        for task in self.source.tasks():
            task.patch_state = self.initial_state
            task.pending = False
        for func in patch.funcs():
            func.transition = True

    def start(self) -> None:
        """klp_start_transition(): mark every task that has to switch."""
        assert self.patch is not None
        self._notice(f"'{self.patch.name}': starting {_direction(self.target)} transition")
        for task in self.source.tasks():
            task.pending = task.patch_state != self.target
        self.signals_cnt = 0
        self.tries = 0

    def try_complete(self) -> None:
        """klp_try_complete_transition(): switch what can switch, then finish or requeue."""
        patch = self.patch
        assert patch is not None
        checked = self._core.functions_to_check(patch, self.target)
        complete = True
        for blocker in self._try_switch(checked):
            complete = False
            self._log.pr_debug(
                "klp_try_switch_task",
                f"livepatch: klp_try_switch_task: {blocker.comm}:{blocker.pid} {blocker.reason}",
            )
        self._core.note_replacement_calls()
        self.tries += 1
        if not complete:
            automatic = self._core.lifecycle.automatic_signals
            if automatic and self.signals_cnt and self.signals_cnt % SIGNALS_TIMEOUT == 0:
                self.send_signals()
            self.signals_cnt += 1
            self.retry_queued = True
            self._on_retry_queued()
            return
        self.complete()
        # Freeing belongs here rather than in complete(), which the cancel
        # path shares, exactly as in the kernel.
        self._core.lifecycle.free_unused_patches(patch)

    def complete(self) -> None:
        """klp_complete_transition(): settle objects and tasks, report completion."""
        patch = self.patch
        assert patch is not None
        direction = _direction(self.target)
        self._debug("klp_complete_transition", f"'{patch.name}': completing {direction} transition")
        if patch.replace and self.target == PatchState.PATCHED:
            self._core.unpatch_replaced_patches(patch)
            self._core.discard_nops(patch)
        if self.target == PatchState.UNPATCHED:
            self._core.unpatch_objects(patch)
        for func in patch.funcs():
            func.transition = False
        for task in self.source.tasks():
            task.patch_state = PatchState.IDLE
            task.pending = False
        for obj in patch.objects:
            if not self._core.object_loaded(obj):
                continue
            if self.target == PatchState.PATCHED:
                self._core.post_patch_callback(patch, obj)
            else:
                self._core.post_unpatch_callback(patch, obj)
        self._notice(f"'{patch.name}': {direction} complete")
        self._core.lifecycle.transition_completed(patch, self.target)
        self.patch = None
        self.target = PatchState.IDLE
        self.retry_queued = False

    def cancel(self) -> None:
        """klp_cancel_transition(): an enable failed before the transition started."""
        assert self.patch is not None
        self._debug(
            "klp_cancel_transition",
            f"'{self.patch.name}': canceling patching transition, going to unpatch",
        )
        self.target = PatchState.UNPATCHED
        self.complete()

    def reverse(self) -> None:
        """klp_reverse_transition(): head back; the retry already queued finishes it."""
        patch = self.patch
        assert patch is not None
        turn = (
            "patching to unpatching"
            if self.target == PatchState.PATCHED
            else "unpatching to patching"
        )
        self._debug("klp_reverse_transition", f"'{patch.name}': reversing transition from {turn}")
        for task in self.source.tasks():
            task.pending = False
        patch.enabled = not patch.enabled
        self.target = PatchState(int(not self.target))
        self.start()

    def force(self) -> None:
        """klp_force_transition(): every pending task jumps to the target state."""
        patch = self.patch
        assert patch is not None
        self._log.printk(KERN_WARNING, "livepatch: forcing remaining tasks to the patched state")
        for task in self.source.tasks():
            if task.pending:
                task.pending = False
                task.patch_state = self.target
        self._core.lifecycle.mark_forced(patch, self.target)

    # -- per task ------------------------------------------------------------

    def _try_switch(self, checked: frozenset[str], dry_run: bool = False) -> Iterator[Blocker]:
        """klp_try_switch_task() for every task not at the target: yields why each task
        that cannot switch now cannot; the others switch unless ``dry_run``.

        Idle tasks switch in the idle loop. A running task switches at its
        next return to user space (or cond_resched) unless it is running
        inside a function being replaced; a sleeping one needs a reliable
        stack free of those functions. The rule is one expression in the
        loop, as a try asks it of every task of the system; a blocked task's
        reason is yielded, not kept, so a try over many tasks leaves the
        cyclic collector nothing new to walk.
        """
        target = self.target
        for task in self.source.tasks():
            if task.patch_state == target:
                continue
            if task.idle or (
                checked.isdisjoint(task.stack)
                and (not task.unreliable or task.state == SchedState.RUNNING)
            ):
                if not dry_run:
                    task.pending = False
                    task.patch_state = target
                continue
            yield self._check(task, checked)

    @staticmethod
    def _check(task: Task, checked: frozenset[str]) -> Blocker:
        """Why _try_switch() holds a task back, in klp_try_switch_task()'s words."""
        on_stack = next((frame for frame in task.stack if frame in checked), None)
        if task.state == SchedState.RUNNING:
            return Blocker(task.pid, task.comm, "is running", on_stack)
        if task.unreliable:
            return Blocker(task.pid, task.comm, "has an unreliable stack", None)
        return Blocker(task.pid, task.comm, f"is sleeping on function {on_stack}", on_stack)

    def send_signals(self) -> None:
        """klp_send_signals(): a fake signal to every task still pending.

        A user task sleeping interruptibly is woken and switches on its way
        back to user space; an uninterruptible sleeper and kthreads stay.
        Before 5.1 only the signal attribute sends them, announced each time.
        """
        if self.signals_cnt == SIGNALS_TIMEOUT or not self._core.lifecycle.automatic_signals:
            self._notice("signaling remaining tasks")
        for task in self.source.tasks():
            if task.pending and not task.kthread and task.state == SchedState.SLEEPING:
                task.pending = False
                task.patch_state = self.target

    # -- views ---------------------------------------------------------------

    def blockers(self) -> list[Blocker]:
        """The tasks that would keep the transition from completing right now."""
        if self.patch is None:
            return []
        checked = self._core.functions_to_check(self.patch, self.target)
        return list(self._try_switch(checked, dry_run=True))

    def status(self) -> TransitionStatus | None:
        if self.patch is None:
            return None
        tasks = self.source.tasks()
        switched = sum(1 for task in tasks if task.patch_state == self.target)
        # Signals go out on the try that finds signals_cnt at a multiple of 15.
        cnt = self.signals_cnt
        next_signal = (SIGNALS_TIMEOUT if cnt == 0 else (-cnt) % SIGNALS_TIMEOUT) + 1
        return TransitionStatus(
            patch=self.patch.name,
            direction=_direction(self.target),
            tasks_switched=switched,
            tasks_total=len(tasks),
            tries=self.tries,
            next_signal_in=next_signal,
        )
