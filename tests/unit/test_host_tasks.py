"""Reading host threads from /proc: stat and stack parsing, and the live process table."""

import os
import subprocess
import time

import pytest

from lpfs.kernel import tasks as tasks_module
from lpfs.kernel.tasks import (
    HostTasks,
    SchedState,
    ThreadInfo,
    parse_stack,
    parse_stat,
    read_thread,
)


def scanned(source: HostTasks) -> dict[int, object]:
    """The source's tasks after a scan, by pid."""
    source.prefetch()
    return {task.pid: task for task in source.tasks()}


class TestParse:
    def test_stat_with_parentheses_in_comm(self):
        """comm is what lies between the first '(' and the last ')'."""
        text = "42 (a) (b)) S 7 42 42 0 -1 4194560 0 0 0 0 0 0"
        assert ("a) (b)", "S", 7, 4194560) == parse_stat(text)

    def test_stack_frames_without_offsets(self):
        """Stack lines give their function names, module suffixes dropped."""
        text = (
            "[<0>] hrtimer_nanosleep+0x74/0xf0\n"
            "[<0>] busymod_work_func+0x10/0x20 [test_klp_callbacks_busy]\n"
            "[<0>] do_syscall_64+0x71/0x280\n"
        )
        assert ("hrtimer_nanosleep", "busymod_work_func", "do_syscall_64") == parse_stack(text)


class TestHostThreads:
    def test_a_sleeping_process_is_seen(self):
        """A `sleep` shows as a sleeping user task (with its stack, where readable)."""
        child = subprocess.Popen(["sleep", "30"])
        try:
            time.sleep(0.2)
            info = read_thread(child.pid, child.pid)
            assert info is not None
            assert ("sleep", SchedState.SLEEPING, False) == (info.comm, info.state, info.kthread)
            tasks = scanned(HostTasks(ncpus=1))
            assert "sleep" == tasks[child.pid].comm  # type: ignore[attr-defined]
        finally:
            child.kill()
            child.wait()

    def test_own_threads_are_not_tasks(self):
        """The daemon's own process is left out."""
        assert os.getpid() not in scanned(HostTasks(ncpus=1))

    def test_new_thread_inherits_through_on_new(self):
        """A thread that appears is handed to on_new with its parent's task."""
        source = HostTasks(ncpus=1)
        scanned(source)
        seen = []
        source.on_new = lambda task, parent: seen.append((task.pid, parent))
        child = subprocess.Popen(["sleep", "30"])
        try:
            time.sleep(0.2)
            scanned(source)
            assert child.pid in [pid for pid, _ in seen]
        finally:
            child.kill()
            child.wait()


def thread(tid: int) -> ThreadInfo:
    return ThreadInfo(tid, tid, f"t{tid}", SchedState.SLEEPING, 1, False, ())


class TestScansOffTheLock:
    """prefetch() scans /proc; tasks(), called under the core lock, only takes a scan in."""

    @pytest.fixture
    def machine(self, monkeypatch: pytest.MonkeyPatch) -> list[list[ThreadInfo]]:
        """The threads each scan finds, in the order scans run."""
        scans: list[list[ThreadInfo]] = []
        monkeypatch.setattr(tasks_module, "host_threads", lambda exclude: scans.pop(0))
        return scans

    def test_tasks_reads_nothing_between_scans(self, machine: list[list[ThreadInfo]]) -> None:
        source = HostTasks(ncpus=1)
        machine.append([thread(10), thread(11)])
        source.prefetch()
        first = [task.pid for task in source.tasks()]
        assert ([10, 11, 0], [10, 11, 0]) == (first, [task.pid for task in source.tasks()])

    def test_exited_threads_go_and_new_ones_inherit(self, machine: list[list[ThreadInfo]]) -> None:
        source = HostTasks(ncpus=1)
        machine += [[thread(10), thread(11)], [thread(11), thread(12)]]
        source.prefetch()
        source.tasks()
        seen = []
        source.on_new = lambda task, parent: seen.append(task.pid)
        source.prefetch()
        assert ([11, 12, 0], [12]) == ([task.pid for task in source.tasks()], seen)

    def test_the_scan_that_started_last_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A scan that ends after a newer one was taken in is dropped, not applied over it."""
        source = HostTasks(ncpus=1)

        def older_scan(exclude: int) -> list[ThreadInfo]:
            # While this scan reads /proc, a newer one starts, ends and is taken in.
            monkeypatch.setattr(tasks_module, "host_threads", lambda exclude: [thread(12)])
            source.prefetch()
            source.tasks()
            return [thread(10)]

        monkeypatch.setattr(tasks_module, "host_threads", older_scan)
        source.prefetch()
        assert [12, 0] == [task.pid for task in source.tasks()]
