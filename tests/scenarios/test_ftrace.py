"""test-ftrace.sh's cases: kernel.ftrace_enabled, and the function tracer beside a livepatch.

/proc/cmdline's reads are this process's calls of cmdline_proc_show (what
lpfs ns's /proc/cmdline makes); the tracing files are lpfs ns's, through the
same control requests.
"""

import errno
import os

from selftest import Selftest

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path

LP = "test_klp_livepatch"
PATCHED = f"{LP}: this has been live patched"


def set_ftrace_enabled(klp: Selftest, value: int) -> str:
    """sysctl -q kernel.ftrace_enabled=VALUE: '' on success, else sysctl's error text."""
    reply = Client(socket_path(klp.mnt.mountpoint)).call(
        "sysctl", name="kernel.ftrace_enabled", value=value
    )
    if reply["ok"]:
        return ""
    return f'sysctl: setting key "kernel.ftrace_enabled": {os.strerror(reply["errno"])}'


def test_ftrace_enabled_refuses_disable(klp: Selftest) -> None:
    """7.3: ftrace_disable_supported() is false, and the refusal is all the case logs."""
    klp.start_test("livepatch interaction with ftrace_enabled sysctl")
    error = set_ftrace_enabled(klp, 0)
    assert 1 == klp.control("sysctl", name="kernel.ftrace_enabled")
    klp.log(f"livepatch: {error}")
    klp.check_result("""
        livepatch: sysctl: setting key "kernel.ftrace_enabled": Operation not supported""")
    deprecated = "The ftrace_enabled file is deprecated and no longer disables ftrace"
    assert 1 == klp.mnt.dmesg().count(deprecated)  # pr_warn_once()
    assert os.strerror(errno.EOPNOTSUPP) in set_ftrace_enabled(klp, 0)
    assert 1 == klp.mnt.dmesg().count(deprecated)


def test_ftrace_enabled_sysctl_before_7_3(lpfs_factory) -> None:
    """7.2: ftrace off makes the livepatch's ftrace registration fail, and ftrace cannot
    be turned off under a livepatch."""
    klp = Selftest(lpfs_factory("--kernel", "7.2"))
    klp.start_test("livepatch interaction with ftrace_enabled sysctl")
    assert "" == set_ftrace_enabled(klp, 0)
    klp.log("livepatch: kernel.ftrace_enabled = 0")
    klp.load_failing_mod(LP)
    assert "" == set_ftrace_enabled(klp, 1)
    klp.log("livepatch: kernel.ftrace_enabled = 1")
    klp.load_lp(LP)
    assert PATCHED == klp.cat("cmdline_proc_show")
    klp.log(f"livepatch: {set_ftrace_enabled(klp, 0)}")
    assert PATCHED == klp.cat("cmdline_proc_show")
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        livepatch: kernel.ftrace_enabled = 0
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)
        livepatch: failed to patch object 'vmlinux'
        livepatch: failed to enable patch '{LP}'
        livepatch: '{LP}': canceling patching transition, going to unpatch
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        insmod: ERROR: could not insert module test_modules/{LP}.ko: Device or resource busy
        livepatch: kernel.ftrace_enabled = 1
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        livepatch: '{LP}': patching complete
        livepatch: sysctl: setting key "kernel.ftrace_enabled": Device or resource busy
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


TRACED_CASE = f"""
    % insmod test_modules/{LP}.ko
    livepatch: enabling patch '{LP}'
    livepatch: '{LP}': initializing patching transition
    livepatch: '{LP}': starting patching transition
    livepatch: '{LP}': completing patching transition
    livepatch: '{LP}': patching complete
    livepatch: ok
    % echo 0 > /sys/kernel/livepatch/{LP}/enabled
    livepatch: '{LP}': initializing unpatching transition
    livepatch: '{LP}': starting unpatching transition
    livepatch: '{LP}': completing unpatching transition
    livepatch: '{LP}': unpatching complete
    % rmmod {LP}"""


def test_trace_livepatched_function(klp: Selftest) -> None:
    """The replacement is traced as it runs, and the patch stays in effect."""
    klp.start_test("trace livepatched function and check that the live patch remains in effect")
    klp.load_lp(LP)
    klp.trace_function("livepatch_cmdline_proc_show")
    if klp.cat("cmdline_proc_show") == PATCHED:
        klp.log("livepatch: ok")
    klp.check_traced_functions("livepatch_cmdline_proc_show")
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(TRACED_CASE)


def test_livepatch_traced_function(klp: Selftest) -> None:
    """A function already traced can be patched: both ftrace_ops run, the tracer records
    the original's entry and the patch is in effect."""
    klp.start_test("livepatch a traced function and check that the live patch remains in effect")
    klp.trace_function("cmdline_proc_show")
    klp.load_lp(LP)
    if klp.cat("cmdline_proc_show") == PATCHED:
        klp.log("livepatch: ok")
    klp.check_traced_functions("cmdline_proc_show")
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(TRACED_CASE)


def test_trace_shows_both_entries(klp: Selftest) -> None:
    """With an empty filter the tracer sees the original's entry and the replacement's,
    each called from seq_read_iter, in the kernel's trace format."""
    klp.cleanup_tracing()
    klp.tracing("current_tracer", "function\n", truncate=True)
    klp.tracing("tracing_on", "1\n", truncate=True)
    klp.load_lp(LP)
    klp.cat("cmdline_proc_show")
    events = [line.split(": ", 1)[1] for line in klp.tracing("trace").splitlines()[-2:]]
    assert ["cmdline_proc_show <-seq_read_iter", "livepatch_cmdline_proc_show <-seq_read_iter"] == (
        events
    )
    assert "#### all functions enabled ####\n" == klp.tracing("set_ftrace_filter")
    klp.cleanup_tracing()
    assert "# entries-in-buffer/entries-written: 0/0   #P:1" in klp.tracing("trace")
