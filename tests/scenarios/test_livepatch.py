"""test-livepatch.sh's cases, minus the lines of /proc effects (the grep lines)."""

from selftest import Selftest

LP1 = "test_klp_livepatch"
LP2 = "test_klp_syscall"
LP3 = "test_klp_callbacks_demo"
REPLACE = "test_klp_atomic_replace"


def test_basic_function_patching(klp: Selftest) -> None:
    """Load, disable and unload one livepatch; the log matches the kernel's."""
    klp.start_test("basic function patching")
    klp.load_lp(LP1)
    klp.disable_lp(LP1)
    klp.unload_lp(LP1)
    klp.check_result(f"""
        % insmod test_modules/{LP1}.ko
        livepatch: enabling patch '{LP1}'
        livepatch: '{LP1}': initializing patching transition
        livepatch: '{LP1}': starting patching transition
        livepatch: '{LP1}': completing patching transition
        livepatch: '{LP1}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP1}/enabled
        livepatch: '{LP1}': initializing unpatching transition
        livepatch: '{LP1}': starting unpatching transition
        livepatch: '{LP1}': completing unpatching transition
        livepatch: '{LP1}': unpatching complete
        % rmmod {LP1}""")


def test_multiple_livepatches(klp: Selftest) -> None:
    """Two non-replace patches stack and are removed in reverse order."""
    klp.start_test("multiple livepatches")
    klp.load_lp(LP1)
    klp.load_lp(REPLACE, "replace=0")
    klp.disable_lp(REPLACE)
    klp.unload_lp(REPLACE)
    klp.disable_lp(LP1)
    klp.unload_lp(LP1)
    klp.check_result(f"""
        % insmod test_modules/{LP1}.ko
        livepatch: enabling patch '{LP1}'
        livepatch: '{LP1}': initializing patching transition
        livepatch: '{LP1}': starting patching transition
        livepatch: '{LP1}': completing patching transition
        livepatch: '{LP1}': patching complete
        % insmod test_modules/{REPLACE}.ko replace=0
        livepatch: enabling patch '{REPLACE}'
        livepatch: '{REPLACE}': initializing patching transition
        livepatch: '{REPLACE}': starting patching transition
        livepatch: '{REPLACE}': completing patching transition
        livepatch: '{REPLACE}': patching complete
        % echo 0 > /sys/kernel/livepatch/{REPLACE}/enabled
        livepatch: '{REPLACE}': initializing unpatching transition
        livepatch: '{REPLACE}': starting unpatching transition
        livepatch: '{REPLACE}': completing unpatching transition
        livepatch: '{REPLACE}': unpatching complete
        % rmmod {REPLACE}
        % echo 0 > /sys/kernel/livepatch/{LP1}/enabled
        livepatch: '{LP1}': initializing unpatching transition
        livepatch: '{LP1}': starting unpatching transition
        livepatch: '{LP1}': completing unpatching transition
        livepatch: '{LP1}': unpatching complete
        % rmmod {LP1}""")


def test_atomic_replace_livepatch(klp: Selftest) -> None:
    """A replace patch takes over three patches, whose modules then unload without a disable."""
    klp.start_test("atomic replace livepatch")
    klp.load_lp(LP1)
    klp.load_lp(LP2)
    klp.load_lp(LP3)
    assert 3 == len(klp.mnt.patches())
    klp.load_lp(REPLACE, "replace=1")
    klp.loop_until(lambda: klp.mnt.patches() == [REPLACE], "only the replace patch left")
    klp.unload_lp(LP3)
    klp.unload_lp(LP2)
    klp.unload_lp(LP1)
    klp.disable_lp(REPLACE)
    klp.unload_lp(REPLACE)
    klp.check_result(f"""
        % insmod test_modules/{LP1}.ko
        livepatch: enabling patch '{LP1}'
        livepatch: '{LP1}': initializing patching transition
        livepatch: '{LP1}': starting patching transition
        livepatch: '{LP1}': completing patching transition
        livepatch: '{LP1}': patching complete
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        livepatch: '{LP2}': patching complete
        % insmod test_modules/{LP3}.ko
        livepatch: enabling patch '{LP3}'
        livepatch: '{LP3}': initializing patching transition
        {LP3}: pre_patch_callback: vmlinux
        livepatch: '{LP3}': starting patching transition
        livepatch: '{LP3}': completing patching transition
        {LP3}: post_patch_callback: vmlinux
        livepatch: '{LP3}': patching complete
        % insmod test_modules/{REPLACE}.ko replace=1
        livepatch: enabling patch '{REPLACE}'
        livepatch: '{REPLACE}': initializing patching transition
        livepatch: '{REPLACE}': starting patching transition
        livepatch: '{REPLACE}': completing patching transition
        livepatch: '{REPLACE}': patching complete
        % rmmod {LP3}
        % rmmod {LP2}
        % rmmod {LP1}
        % echo 0 > /sys/kernel/livepatch/{REPLACE}/enabled
        livepatch: '{REPLACE}': initializing unpatching transition
        livepatch: '{REPLACE}': starting unpatching transition
        livepatch: '{REPLACE}': completing unpatching transition
        livepatch: '{REPLACE}': unpatching complete
        % rmmod {REPLACE}""")
