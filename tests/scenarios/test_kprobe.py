"""test-kprobe.sh's cases, and the same conflict the other way round.

A kprobe with a post handler takes cmdline_proc_show's IPMODIFY slot
(kprobe_ipmodify_ops), so the livepatch cannot register its ftrace handler;
one without a post handler joins kprobe_ftrace_ops and leaves the slot free.
"""

import errno

from selftest import Selftest

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path

LP = "test_klp_livepatch"
KPROBE = "test_klp_kprobe"


def test_kprobed_function_with_post_handler(klp: Selftest) -> None:
    """The livepatch of a function a post-handler kprobe holds fails with EBUSY."""
    klp.start_test("livepatch interaction with kprobed function with post_handler")
    klp.control("kprobes", enabled="1\n")
    klp.load_mod(KPROBE, "has_post_handler=y")
    klp.load_failing_mod(LP)
    klp.unload_mod(KPROBE)
    klp.check_result(f"""
        % insmod test_modules/{KPROBE}.ko has_post_handler=y
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
        % rmmod {KPROBE}""")


def test_kprobed_function_without_post_handler(klp: Selftest) -> None:
    """Without a post handler the kprobe leaves the slot to the livepatch."""
    klp.start_test("livepatch interaction with kprobed function without post_handler")
    klp.load_mod(KPROBE, "has_post_handler=n")
    klp.load_lp(LP)
    klp.unload_mod(KPROBE)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{KPROBE}.ko has_post_handler=n
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        livepatch: '{LP}': patching complete
        % rmmod {KPROBE}
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_kprobe_after_livepatch_loads_unarmed(klp: Selftest) -> None:
    """~6.14+: __register_kprobe() drops the arming error, so the module loads and its
    probe is neither armed nor listed."""
    klp.load_lp(LP)
    klp.start_test("kprobe with post_handler on a livepatched function")
    klp.load_mod(KPROBE, "has_post_handler=y")
    assert {"enabled": "1\n", "list": ""} == klp.control("kprobes")
    klp.unload_mod(KPROBE)
    klp.check_result(f"""
        % insmod test_modules/{KPROBE}.ko has_post_handler=y
        % rmmod {KPROBE}""")


def test_kprobe_after_livepatch_fails_before_6_14(lpfs_factory) -> None:
    """Up to 6.13 register_kprobe() returns the arming error: the module's init fails."""
    klp = Selftest(lpfs_factory("--kernel", "6.13"))
    klp.load_lp(LP)
    klp.start_test("kprobe with post_handler on a livepatched function")
    klp.load_failing_mod(KPROBE)
    klp.check_result(f"""
        % insmod test_modules/{KPROBE}.ko
        insmod: ERROR: could not insert module test_modules/{KPROBE}.ko: Device or resource busy""")


def test_kprobes_disabled_leave_the_slot(klp: Selftest) -> None:
    """With kprobes/enabled 0 a probe is registered unarmed, so the livepatch loads;
    arming them all again then fails for it, with the kprobes warning and EBUSY."""
    klp.control("kprobes", enabled="0\n")
    klp.load_mod(KPROBE)
    klp.load_lp(LP)
    refused = Client(socket_path(klp.mnt.mountpoint)).call("kprobes", enabled="1\n")
    assert (False, errno.EBUSY) == (refused["ok"], refused["errno"])
    assert klp.mnt.dmesg()[-1] == (
        "kprobes: Kprobes globally enabled, but failed to enable 1 out of 1 probes. "
        "Please check which kprobes are kept disabled via debugfs."
    )
    assert "kprobes: Kprobes globally disabled" in klp.mnt.dmesg()
