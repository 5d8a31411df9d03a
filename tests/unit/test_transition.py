"""lpfs.kernel.transition: the per-task model of docs/kernel.md §4, stepped with ``Core.tick``."""

import pytest

from lpfs.kernel.clock import FakeClock
from lpfs.kernel.core import Core
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import FuncDef, ModuleDef, ObjectDef
from lpfs.kernel.tasks import PatchState, SchedState, SimulatedTasks, Task
from lpfs.kernel.transition import Blocker, TransitionStatus

OLD = "cmdline_proc_show"
NEW = "livepatch_cmdline_proc_show"
SIGNALING = "livepatch: signaling remaining tasks"


def module(name, *funcs, replace=False) -> ModuleDef:
    """A livepatch module redirecting vmlinux functions given as (old, new) pairs."""
    vmlinux = ObjectDef("vmlinux", tuple(FuncDef(old, new) for old, new in funcs or ((OLD, NEW),)))
    return ModuleDef(name, replace=replace, objects=(vmlinux,))


@pytest.fixture
def core():
    """A newest kernel with two idle CPUs, stepped by hand."""
    clock = FakeClock()
    return Core(KernelLog(clock), SimulatedTasks(ncpus=2), Profile(), clock)


def add(core, pid, *stack, state=SchedState.SLEEPING, **flags) -> Task:
    """Add a task called ``t<pid>`` with ``stack`` as its kernel stack."""
    return core.tasks.add(Task(pid, f"t{pid}", state, stack, **flags))


def insmod(core, name="lp", *funcs, **options):
    """Load a livepatch module and return its patch."""
    return core.insmod(module(name, *funcs, **options)).patch


def lines(core) -> list[str]:
    return [record.text for record in core.log.records()]


def states(core) -> list[tuple[int, bool]]:
    """Every task's (patch_state, pending), the idle tasks last."""
    return [(int(task.patch_state), task.pending) for task in core.tasks.tasks()]


def in_transition(core) -> bool:
    return core.engine.patch is not None


class TestTryComplete:
    """klp_try_complete_transition(): which tasks switch, and when the transition ends."""

    def test_sleeping_task_in_old_function_blocks_patching(self, core):
        """A task asleep in the function being patched keeps the transition open."""
        add(core, 100, "do_syscall_64", OLD)

        insmod(core)

        assert in_transition(core)

    def test_sleeping_task_blocks_until_it_wakes(self, core):
        """Once the task has left the function, the next retry completes the transition."""
        task = add(core, 100, OLD)
        insmod(core)
        task.stack = ("do_nanosleep",)

        core.tick()

        assert not in_transition(core)

    def test_exiting_task_stops_blocking(self, core):
        """A blocking task that exits no longer holds the transition."""
        add(core, 100, OLD)
        insmod(core)
        core.tasks.remove(100)

        core.tick()

        assert not in_transition(core)

    def test_sleeping_task_elsewhere_switches(self, core):
        """A task asleep outside the checked functions switches at the first try."""
        add(core, 100, "do_nanosleep")

        insmod(core)

        assert not in_transition(core)

    def test_task_in_replacement_blocks_unpatching(self, core):
        """A task asleep in the replacement function keeps an unpatching transition open."""
        patch = insmod(core)
        add(core, 100, NEW)

        core.enabled_store(patch, False)

        assert in_transition(core)

    def test_task_in_old_function_does_not_block_unpatching(self, core):
        """Unpatching checks only the replacement, not the original function."""
        patch = insmod(core)
        add(core, 100, OLD)

        core.enabled_store(patch, False)

        assert not in_transition(core)

    def test_running_task_switches(self, core):
        """A running task switches on its next return to user space."""
        add(core, 100, "do_syscall_64", state=SchedState.RUNNING)

        insmod(core)

        assert not in_transition(core)

    def test_running_task_inside_checked_function_blocks(self, core):
        """A task running inside the function being patched cannot switch."""
        add(core, 100, OLD, state=SchedState.RUNNING)

        insmod(core)

        assert in_transition(core)

    def test_unreliable_sleeping_task_blocks(self, core):
        """A sleeping task whose stack cannot be trusted never switches by itself."""
        add(core, 100, "do_nanosleep", unreliable=True)

        insmod(core)

        assert in_transition(core)

    def test_idle_tasks_always_switch(self, core):
        """Idle tasks switch in the idle loop, whatever their stack shows."""
        for task in core.tasks.tasks():
            task.stack = (OLD,)

        insmod(core)

        assert not in_transition(core)

    def test_task_states_during_transition(self, core):
        """The blocked task stays unpatched and pending; the idle tasks are patched."""
        add(core, 100, OLD)

        insmod(core)

        assert [(0, True), (1, False), (1, False)] == states(core)

    def test_task_states_reset_after_completion(self, core):
        """After completion every task is back to -1 with nothing pending."""
        task = add(core, 100, OLD)
        insmod(core)
        task.stack = ()

        core.tick()

        assert [(-1, False)] * 3 == states(core)

    def test_tick_retries(self, core):
        """Each tick is one more try while the transition stays blocked."""
        add(core, 100, OLD)
        insmod(core)

        ran = core.tick(3)

        assert (3, 4) == (ran, core.engine.tries)

    def test_tick_stops_at_completion(self, core):
        """Ticks stop running once the transition has completed."""
        task = add(core, 100, OLD)
        insmod(core)
        task.stack = ()

        assert 1 == core.tick(5)

    def test_tick_without_transition_runs_nothing(self, core):
        """With no transition in progress a tick does nothing."""
        assert 0 == core.tick()

    def test_retry_is_queued_while_blocked(self, core):
        """An unsuccessful try queues the delayed retry."""
        add(core, 100, OLD)

        insmod(core)

        assert core.engine.retry_queued


class TestCheckedFunctions:
    """klp_check_stack_func(): with stacked patches, the code each switch replaces."""

    def test_second_patch_checks_first_patch_replacement(self, core):
        """Patching a function already patched checks the older patch's new function."""
        insmod(core, "lp_a")
        add(core, 100, NEW)

        insmod(core, "lp_b", (OLD, "b_cmdline_proc_show"))

        assert in_transition(core)

    def test_second_patch_ignores_original_function(self, core):
        """Patching a function already patched does not check the original function."""
        insmod(core, "lp_a")
        add(core, 100, OLD)

        insmod(core, "lp_b", (OLD, "b_cmdline_proc_show"))

        assert not in_transition(core)

    def test_unpatching_top_patch_checks_its_own_replacement(self, core):
        """Unpatching the newer patch checks its replacement, not the older one's."""
        insmod(core, "lp_a")
        top = insmod(core, "lp_b", (OLD, "b_cmdline_proc_show"))
        add(core, 100, NEW)
        add(core, 101, "b_cmdline_proc_show")

        core.enabled_store(top, False)

        assert [(101, "b_cmdline_proc_show")] == [
            (b.pid, b.function) for b in core.engine.blockers()
        ]

    def test_nop_checks_replaced_patch_replacement(self, core):
        """A replace patch's NOP checks the function the older patch redirects to."""
        insmod(core, "lp_a")
        add(core, 100, NEW)

        insmod(core, "lp_r", ("meminfo_proc_show", "livepatch_meminfo_proc_show"), replace=True)

        assert [(100, NEW)] == [(b.pid, b.function) for b in core.engine.blockers()]


@pytest.fixture
def stuck(core):
    """A patching transition after its first try, held by an uninterruptible task."""
    add(core, 100, OLD, state=SchedState.UNINTERRUPTIBLE)
    return insmod(core)


class TestSignals:
    """docs/kernel.md §4.3: fake signals every 15 retries, announced once."""

    def test_no_notice_before_sixteenth_try(self, core, stuck):
        """The first try and 14 retries send no signal."""
        core.tick(14)

        assert SIGNALING not in lines(core)

    def test_notice_on_sixteenth_try(self, core, stuck):
        """The 15th retry, the 16th try, announces the signals as its last line."""
        core.tick(15)

        assert SIGNALING == lines(core)[-1]

    def test_notice_only_once(self, core, stuck):
        """Later rounds of signals are sent silently."""
        core.tick(60)

        assert 1 == lines(core).count(SIGNALING)

    def test_interruptible_user_task_switches(self, core):
        """A user task asleep interruptibly is switched by the fake signal."""
        task = add(core, 100, OLD)
        insmod(core)

        core.tick(15)

        assert (PatchState.PATCHED, False) == (task.patch_state, task.pending)

    def test_signalled_task_completes_at_next_try(self, core):
        """The signalling try itself does not complete; the next one does."""
        add(core, 100, OLD)
        insmod(core)
        core.tick(15)
        during = in_transition(core)

        core.tick()

        assert (True, False) == (during, in_transition(core))

    def test_uninterruptible_task_stays(self, core, stuck):
        """An uninterruptible sleeper is not switched by the fake signal."""
        core.tick(15)

        assert (PatchState.UNPATCHED, True) == (
            core.tasks.get(100).patch_state,
            core.tasks.get(100).pending,
        )

    def test_kthread_stays(self, core):
        """A kthread is only woken, not switched, by the fake signal."""
        task = add(core, 100, OLD, kthread=True)
        insmod(core)

        core.tick(15)

        assert (PatchState.UNPATCHED, True) == (task.patch_state, task.pending)

    def test_reversal_restarts_the_count(self, core):
        """After a reversal the notice comes again on the 16th try of the new direction."""
        add(core, 100, OLD, state=SchedState.UNINTERRUPTIBLE)
        add(core, 101, NEW, state=SchedState.UNINTERRUPTIBLE)
        patch = insmod(core)
        core.tick(10)
        core.enabled_store(patch, False)
        core.tick(15)
        before = lines(core).count(SIGNALING)

        core.tick()

        assert (0, 1) == (before, lines(core).count(SIGNALING))


class TestForce:
    """klp_force_transition()."""

    def test_moves_pending_tasks_to_target(self, core, stuck):
        """Every pending task, uninterruptible ones included, jumps to the target state."""
        core.force_store(stuck, True)

        assert [(1, False)] * 3 == states(core)

    def test_moves_kthreads_and_unreliable_tasks(self, core):
        """Force also moves kthreads and tasks with unreliable stacks."""
        add(core, 100, OLD, kthread=True)
        add(core, 101, unreliable=True)
        patch = insmod(core)

        core.force_store(patch, True)

        assert [(1, False)] * 4 == states(core)

    def test_does_not_complete_by_itself(self, core, stuck):
        """The force write leaves the transition open."""
        core.force_store(stuck, True)

        assert in_transition(core)

    def test_completes_at_next_tick(self, core, stuck):
        """The next retry finds every task switched and completes."""
        core.force_store(stuck, True)

        core.tick()

        assert (False, True) == (in_transition(core), stuck.enabled)

    def test_blocked_forever_without_force(self, core, stuck):
        """Without force, a stuck transition survives many retries."""
        core.tick(100)

        assert in_transition(core)


class TestReverse:
    """klp_reverse_transition()."""

    def test_makes_no_try(self, core, stuck):
        """A reversal starts the new direction but tries nothing until the next retry."""
        core.enabled_store(stuck, False)

        assert (0, "livepatch: 'lp': starting unpatching transition") == (
            core.engine.tries,
            lines(core)[-1],
        )

    def test_unswitched_tasks_are_already_at_new_target(self, core, stuck):
        """The blocked task is already unpatched; the switched idle tasks become pending."""
        core.enabled_store(stuck, False)

        assert [(0, False), (1, True), (1, True)] == states(core)

    def test_target_flips(self, core, stuck):
        """The engine now heads for the unpatched state."""
        core.enabled_store(stuck, False)

        assert PatchState.UNPATCHED == core.engine.target

    def test_next_tick_completes(self, core, stuck):
        """The retry already queued completes the reversed transition."""
        core.enabled_store(stuck, False)

        core.tick()

        assert (False, True) == (in_transition(core), stuck.freed)


class TestFork:
    """A forked task copies its parent's patch state and pending flag."""

    def test_child_of_blocked_parent(self, core):
        """A child of a task that has not switched starts unswitched and pending."""
        parent = add(core, 100, OLD)
        insmod(core)

        child = core.spawn_task(Task(101, "child"), parent)

        assert (PatchState.UNPATCHED, True) == (child.patch_state, child.pending)

    def test_child_of_switched_parent(self, core):
        """A child of a task that has switched starts switched."""
        add(core, 100, OLD)
        parent = add(core, 101, "do_nanosleep")
        insmod(core)

        child = core.spawn_task(Task(102, "child", stack=(OLD,)), parent)

        assert (PatchState.PATCHED, False) == (child.patch_state, child.pending)

    def test_parentless_task_starts_unswitched(self, core, stuck):
        """A task spawned without a parent during a transition starts in the initial state."""
        task = core.spawn_task(Task(101, "t101"))

        assert (PatchState.UNPATCHED, True) == (task.patch_state, task.pending)

    def test_force_moves_parentless_task(self, core, stuck):
        """Force also moves a task spawned during the transition, so the next retry completes."""
        core.spawn_task(Task(101, "t101", stack=(OLD,)))
        core.force_store(stuck, True)

        core.tick()

        assert not in_transition(core)

    def test_taken_pid_is_refused(self, core):
        """A pid can only be used once."""
        add(core, 100)

        with pytest.raises(KeyError):
            add(core, 100)


class TestStatus:
    """Transition.status() and blockers(): the views behind ``lpfs status``."""

    def test_nothing_when_idle(self, core):
        """Without a transition there is no status and no blocker."""
        assert (None, []) == (core.engine.status(), core.engine.blockers())

    def test_status_after_first_try(self, core, stuck):
        """The status counts the switched tasks, the tries and the tries until the signal."""
        assert (
            TransitionStatus(
                patch="lp",
                direction="patching",
                tasks_switched=2,
                tasks_total=3,
                tries=1,
                next_signal_in=15,
            )
            == core.engine.status()
        )

    def test_next_signal_counts_down(self, core, stuck):
        """After 14 retries the next try is the one that signals."""
        core.tick(14)

        assert 1 == core.engine.status().next_signal_in

    def test_next_signal_restarts_after_signal(self, core, stuck):
        """After the signalling try the next signal is 15 tries away."""
        core.tick(15)

        assert 15 == core.engine.status().next_signal_in

    def test_status_of_unpatching(self, core):
        """An unpatching transition reports its direction."""
        patch = insmod(core)
        add(core, 100, NEW)
        core.enabled_store(patch, False)

        assert "unpatching" == core.engine.status().direction

    def test_sleeping_blocker(self, core, stuck):
        """A sleeper is reported with the function it sleeps on."""
        assert [Blocker(100, "t100", f"is sleeping on function {OLD}", OLD)] == (
            core.engine.blockers()
        )

    def test_running_blocker(self, core):
        """A task running in a checked function is reported as running."""
        add(core, 100, OLD, state=SchedState.RUNNING)
        insmod(core)

        assert [Blocker(100, "t100", "is running", OLD)] == core.engine.blockers()

    def test_unreliable_blocker(self, core):
        """A sleeper with an unreliable stack is reported without a function."""
        add(core, 100, unreliable=True)
        insmod(core)

        assert [Blocker(100, "t100", "has an unreliable stack", None)] == core.engine.blockers()

    def test_blockers_after_force(self, core, stuck):
        """Once forced, nothing blocks."""
        core.force_store(stuck, True)

        assert [] == core.engine.blockers()


class TestDebugLines:
    """The per-task pr_debug lines of klp_try_switch_task."""

    def test_off_by_default(self, core, stuck):
        """The selftests' dynamic-debug setup hides the per-task lines."""
        assert [] == [text for text in lines(core) if "klp_try_switch_task" in text]

    def test_shown_when_enabled(self, core):
        """With the site enabled each blocked task is named with its reason."""
        core.log.dyndbg_control("func klp_try_switch_task +p")
        add(core, 100, OLD)

        insmod(core)

        assert (
            f"livepatch: klp_try_switch_task: t100:100 is sleeping on function {OLD}"
            == (lines(core)[-1])
        )
