"""test-livepatch.sh's cases; /proc reads are this process's calls of the show functions."""

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


TARGET = "test_klp_mod_target"
TARGET_PATCH = "test_klp_mod_patch"
TARGET_ORIGINAL = f"{TARGET}: original output\n"
TARGET_PATCHED = f"{TARGET_PATCH}: this has been live patched"


def cat_target(klp: Selftest) -> str:
    """cat /proc/test_klp_mod_target: the module's own show unless a patch redirects it."""
    return klp.cat("test_klp_mod_target_show", TARGET) or TARGET_ORIGINAL


def test_module_function_patching(klp: Selftest) -> None:
    """A patch of a function in a loaded target module; the target outlives the patch."""
    klp.start_test("module function patching")
    klp.load_mod(TARGET)
    assert TARGET_ORIGINAL == cat_target(klp)
    klp.load_lp(TARGET_PATCH)
    assert TARGET_PATCHED == cat_target(klp)
    klp.disable_lp(TARGET_PATCH)
    klp.unload_lp(TARGET_PATCH)
    assert TARGET_ORIGINAL == cat_target(klp)
    klp.unload_mod(TARGET)
    klp.check_result(f"""
        % insmod test_modules/{TARGET}.ko
        {TARGET}: test_klp_mod_target_init
        % insmod test_modules/{TARGET_PATCH}.ko
        livepatch: enabling patch '{TARGET_PATCH}'
        livepatch: '{TARGET_PATCH}': initializing patching transition
        livepatch: '{TARGET_PATCH}': starting patching transition
        livepatch: '{TARGET_PATCH}': completing patching transition
        livepatch: '{TARGET_PATCH}': patching complete
        % echo 0 > /sys/kernel/livepatch/{TARGET_PATCH}/enabled
        livepatch: '{TARGET_PATCH}': initializing unpatching transition
        livepatch: '{TARGET_PATCH}': starting unpatching transition
        livepatch: '{TARGET_PATCH}': completing unpatching transition
        livepatch: '{TARGET_PATCH}': unpatching complete
        % rmmod {TARGET_PATCH}
        % rmmod {TARGET}
        {TARGET}: test_klp_mod_target_exit""")


def test_module_function_patching_livepatch_first(klp: Selftest) -> None:
    """The target loads under the patch: klp_module_coming() applies it before its init."""
    klp.start_test("module function patching (livepatch first)")
    klp.load_lp(TARGET_PATCH)
    klp.load_mod(TARGET)
    assert TARGET_PATCHED == cat_target(klp)
    klp.disable_lp(TARGET_PATCH)
    klp.unload_lp(TARGET_PATCH)
    assert TARGET_ORIGINAL == cat_target(klp)
    klp.unload_mod(TARGET)
    klp.check_result(f"""
        % insmod test_modules/{TARGET_PATCH}.ko
        livepatch: enabling patch '{TARGET_PATCH}'
        livepatch: '{TARGET_PATCH}': initializing patching transition
        livepatch: '{TARGET_PATCH}': starting patching transition
        livepatch: '{TARGET_PATCH}': completing patching transition
        livepatch: '{TARGET_PATCH}': patching complete
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{TARGET_PATCH}' to loading module '{TARGET}'
        {TARGET}: test_klp_mod_target_init
        % echo 0 > /sys/kernel/livepatch/{TARGET_PATCH}/enabled
        livepatch: '{TARGET_PATCH}': initializing unpatching transition
        livepatch: '{TARGET_PATCH}': starting unpatching transition
        livepatch: '{TARGET_PATCH}': completing unpatching transition
        livepatch: '{TARGET_PATCH}': unpatching complete
        % rmmod {TARGET_PATCH}
        % rmmod {TARGET}
        {TARGET}: test_klp_mod_target_exit""")
