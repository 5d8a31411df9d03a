"""test-livepatch.sh's cases with the test modules that only newer kernels have
(the others are shared step lists, conformance/scenarios.py, checked against
the real kernels' recordings by tests/conformance); /proc reads are this
process's calls of the show functions."""

from selftest import Selftest

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
