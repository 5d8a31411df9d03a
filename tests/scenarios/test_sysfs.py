"""test-sysfs.sh's stack_order case, an attribute of newer kernels than the
real ones conformance/ boots (its other cases are shared step lists,
conformance/scenarios.py, checked against the real kernels' recordings by
tests/conformance)."""

from selftest import Selftest

LP = "test_klp_livepatch"
LP2 = "test_klp_callbacks_demo"
LP3 = "test_klp_syscall"


def test_sysfs_test_stack_order_value(klp: Selftest) -> None:
    """stack_order counts load order and closes up when a patch leaves."""
    klp.start_test("sysfs test stack_order value")
    klp.load_lp(LP)
    klp.check_sysfs_value(LP, "stack_order", "1")
    klp.load_lp(LP2)
    klp.check_sysfs_value(LP2, "stack_order", "2")
    klp.load_lp(LP3)
    klp.check_sysfs_value(LP3, "stack_order", "3")
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.check_sysfs_value(LP, "stack_order", "1")
    klp.check_sysfs_value(LP3, "stack_order", "2")
    klp.disable_lp(LP3)
    klp.unload_lp(LP3)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        livepatch: '{LP}': patching complete
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        livepatch: '{LP2}': patching complete
        % insmod test_modules/{LP3}.ko
        livepatch: enabling patch '{LP3}'
        livepatch: '{LP3}': initializing patching transition
        livepatch: '{LP3}': starting patching transition
        livepatch: '{LP3}': completing patching transition
        livepatch: '{LP3}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}
        % echo 0 > /sys/kernel/livepatch/{LP3}/enabled
        livepatch: '{LP3}': initializing unpatching transition
        livepatch: '{LP3}': starting unpatching transition
        livepatch: '{LP3}': completing unpatching transition
        livepatch: '{LP3}': unpatching complete
        % rmmod {LP3}
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")
