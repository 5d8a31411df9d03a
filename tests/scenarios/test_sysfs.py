"""test-sysfs.sh's cases: the rights and values of every attribute, and the log."""

import pytest
from selftest import Selftest

LP = "test_klp_livepatch"
LP2 = "test_klp_callbacks_demo"
LP3 = "test_klp_syscall"
TARGET = "test_klp_callbacks_mod"
REPLACE = "test_klp_atomic_replace"


def test_sysfs_test(klp: Selftest) -> None:
    """Every attribute of a loaded patch has the kernel's rights and value."""
    klp.start_test("sysfs test")
    klp.load_lp(LP)
    klp.check_sysfs_rights(LP, "", "drwxr-xr-x")
    klp.check_sysfs_rights(LP, "enabled", "-rw-r--r--")
    klp.check_sysfs_value(LP, "enabled", "1")
    klp.check_sysfs_rights(LP, "force", "--w-------")
    klp.check_sysfs_rights(LP, "transition", "-r--r--r--")
    klp.check_sysfs_value(LP, "transition", "0")
    klp.check_sysfs_rights(LP, "vmlinux/patched", "-r--r--r--")
    klp.check_sysfs_value(LP, "vmlinux/patched", "1")
    klp.check_sysfs_rights(LP, "replace", "-r--r--r--")
    klp.check_sysfs_rights(LP, "stack_order", "-r--r--r--")
    klp.check_sysfs_value(LP, "stack_order", "1")
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        livepatch: '{LP}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_sysfs_test_object_patched(klp: Selftest) -> None:
    """An object's patched reads 1 only while its module is loaded."""
    klp.start_test("sysfs test object/patched")
    klp.load_lp(LP2)
    klp.check_sysfs_value(LP2, f"{TARGET}/patched", "0")
    klp.load_mod(TARGET)
    klp.check_sysfs_value(LP2, f"{TARGET}/patched", "1")
    klp.unload_mod(TARGET)
    klp.check_sysfs_value(LP2, f"{TARGET}/patched", "0")
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.check_result(f"""
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        livepatch: '{LP2}': patching complete
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP2}' to loading module '{TARGET}'
        {LP2}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {LP2}: post_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {TARGET}: test_klp_callbacks_mod_init
        % rmmod {TARGET}
        {TARGET}: test_klp_callbacks_mod_exit
        {LP2}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        livepatch: reverting patch '{LP2}' on unloading module '{TARGET}'
        {LP2}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}""")


@pytest.mark.parametrize("replace", ["1", "0"])
def test_sysfs_test_replace(klp: Selftest, replace: str) -> None:
    """replace reads the patch's atomic-replace flag."""
    klp.start_test(f"sysfs test replace {'enabled' if replace == '1' else 'disabled'}")
    klp.load_lp(REPLACE, f"replace={replace}")
    klp.check_sysfs_rights(REPLACE, "replace", "-r--r--r--")
    klp.check_sysfs_value(REPLACE, "replace", replace)
    klp.disable_lp(REPLACE)
    klp.unload_lp(REPLACE)
    klp.check_result(f"""
        % insmod test_modules/{REPLACE}.ko replace={replace}
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
        % rmmod {REPLACE}""")


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
