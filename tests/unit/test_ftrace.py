"""lpfs.kernel.ftrace and lpfs.kernel.kprobes: the IPMODIFY slot, the sysctl, the tracer's files, the
kprobes switch (docs/kernel.md §11)."""

import errno

import pytest

from lpfs.errors import KernelError
from lpfs.kernel.clock import FakeClock
from lpfs.kernel.ftrace import ALL_FUNCTIONS, LIVEPATCH, Ftrace
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.kprobes import IPMODIFY_OWNER, Kprobe, Kprobes
from lpfs.kernel.profiles import Profile

KNOWN = {"cmdline_proc_show", "meminfo_proc_show", "livepatch_cmdline_proc_show"}


def make(version: tuple[int, int] = (7, 3)) -> tuple[Ftrace, Kprobes]:
    clock = FakeClock()
    log = KernelLog(clock)
    ftrace = Ftrace(log, Profile(version), clock, lambda: set(KNOWN))
    return ftrace, Kprobes(log, Profile(version), ftrace)


def errno_of(call) -> int:
    with pytest.raises(KernelError) as info:
        call()
    return info.value.errno


class TestIpmodify:
    def test_one_owner_per_function(self):
        ftrace, _ = make()
        assert 0 == ftrace.claim_ipmodify("f", LIVEPATCH, True)
        assert -errno.EBUSY == ftrace.claim_ipmodify("f", IPMODIFY_OWNER)
        ftrace.release_ipmodify("f", LIVEPATCH)
        assert 0 == ftrace.claim_ipmodify("f", IPMODIFY_OWNER)

    def test_permanent_ops_need_ftrace_enabled(self):
        ftrace, _ = make((7, 2))
        ftrace.set_enabled(False, permanent_ops=False)
        assert -errno.EBUSY == ftrace.claim_ipmodify("f", LIVEPATCH, True)
        assert 0 == ftrace.claim_ipmodify("f", IPMODIFY_OWNER)


class TestSysctl:
    def test_busy_under_a_livepatch_before_7_3(self):
        ftrace, _ = make((7, 2))
        assert errno.EBUSY == errno_of(lambda: ftrace.set_enabled(False, permanent_ops=True))
        assert ftrace.enabled

    def test_refused_from_7_3_with_one_warning(self):
        ftrace, _ = make()
        for _ in range(2):
            assert errno.EOPNOTSUPP == errno_of(lambda: ftrace.set_enabled(False, False))
        assert ftrace.enabled
        deprecated = "The ftrace_enabled file is deprecated and no longer disables ftrace"
        assert [deprecated] == [r.text for r in ftrace.log.records()]


class TestTracer:
    def test_filter_globs_removal_and_truncation(self):
        ftrace, _ = make()
        assert ALL_FUNCTIONS == ftrace.show("set_ftrace_filter")
        ftrace.store("set_ftrace_filter", "*cmdline_proc_show meminfo_proc_show\n")
        ftrace.store("set_ftrace_filter", "!meminfo_proc_show")
        expected = "cmdline_proc_show\nlivepatch_cmdline_proc_show\n"
        assert expected == ftrace.show("set_ftrace_filter")
        assert errno.EINVAL == errno_of(lambda: ftrace.store("set_ftrace_filter", "nosuch"))
        ftrace.truncate("set_ftrace_filter")
        assert ALL_FUNCTIONS == ftrace.show("set_ftrace_filter")

    def test_records_only_when_on_and_filtered(self):
        ftrace, _ = make()
        ftrace.call("cmdline_proc_show", "seq_read_iter", "cat", 42)
        ftrace.store("current_tracer", "function\n")
        ftrace.store("set_ftrace_filter", "cmdline_proc_show\n")
        ftrace.call("meminfo_proc_show", "seq_read_iter", "cat", 42)
        ftrace.call("cmdline_proc_show", "seq_read_iter", "cat", 42)
        ftrace.store("tracing_on", "0\n")
        ftrace.call("cmdline_proc_show", "seq_read_iter", "cat", 43)
        trace = ftrace.show("trace")
        assert "# entries-in-buffer/entries-written: 1/1   #P:1" in trace
        assert trace.endswith(
            "             cat-42      [000] .....     0.000000: cmdline_proc_show <-seq_read_iter\n"
        )

    def test_file_checks(self):
        ftrace, _ = make()
        assert errno.EINVAL == errno_of(lambda: ftrace.store("current_tracer", "graph\n"))
        assert errno.EINVAL == errno_of(lambda: ftrace.store("tracing_on", "-1\n"))
        assert "function nop\n" == ftrace.show("available_tracers")


class TestKprobes:
    def test_post_handler_probe_takes_the_slot_and_gives_it_back(self):
        ftrace, kprobes = make()
        kprobes.register(Kprobe("m", "f", post_handler=True))
        assert -errno.EBUSY == ftrace.claim_ipmodify("f", LIVEPATCH, True)
        kprobes.unregister_module("m")
        assert 0 == ftrace.claim_ipmodify("f", LIVEPATCH, True)

    def test_arming_failure_by_release(self):
        for version, fails in (((6, 13), True), ((6, 14), False)):
            ftrace, kprobes = make(version)
            ftrace.claim_ipmodify("f", LIVEPATCH, True)
            probe = Kprobe("m", "f", post_handler=True)
            if fails:
                assert errno.EBUSY == errno_of(lambda: kprobes.register(probe))  # noqa: B023
            else:
                kprobes.register(probe)
            assert [] == kprobes.probes

    def test_disarmed_probes_leave_the_slot(self):
        ftrace, kprobes = make()
        kprobes.set_enabled(False)
        kprobes.register(Kprobe("m", "f", post_handler=True))
        assert 0 == ftrace.claim_ipmodify("f", LIVEPATCH, True)
        assert errno.EBUSY == errno_of(lambda: kprobes.set_enabled(True))
        assert "1\n" == kprobes.show_enabled()
