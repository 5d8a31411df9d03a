"""Reading host threads from /proc: stat and stack parsing, and the live process table."""

import os
import subprocess
import time

from lpfs.kernel.tasks import HostTasks, SchedState, parse_stack, parse_stat, read_thread


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
            tasks = {task.pid: task for task in HostTasks(ncpus=1).tasks()}
            assert "sleep" == tasks[child.pid].comm
        finally:
            child.kill()
            child.wait()

    def test_own_threads_are_not_tasks(self):
        """The daemon's own process is left out."""
        pids = {task.pid for task in HostTasks(ncpus=1).tasks()}
        assert os.getpid() not in pids

    def test_new_thread_inherits_through_on_new(self):
        """A thread that appears is handed to on_new with its parent's task."""
        source = HostTasks(ncpus=1)
        source.tasks()
        seen = []
        source.on_new = lambda task, parent: seen.append((task.pid, parent))
        child = subprocess.Popen(["sleep", "30"])
        try:
            time.sleep(0.2)
            source.tasks()
            assert child.pid in [pid for pid, _ in seen]
        finally:
            child.kill()
            child.wait()
