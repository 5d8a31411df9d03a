"""test-callbacks.sh's cases: every callback line, in the kernel's order."""

from selftest import Selftest

LP = "test_klp_callbacks_demo"
LP2 = "test_klp_callbacks_demo2"
TARGET = "test_klp_callbacks_mod"
BUSY = "test_klp_callbacks_busy"


def test_target_module_before_livepatch(klp: Selftest) -> None:
    """A target module loaded first gets every callback at enable and disable."""
    klp.start_test("target module before livepatch")
    klp.load_mod(TARGET)
    klp.load_lp(LP)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.unload_mod(TARGET)
    klp.check_result(f"""
        % insmod test_modules/{TARGET}.ko
        {TARGET}: {TARGET}_init
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        {LP}: post_patch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        {LP}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit""")


def test_module_coming_notifier(klp: Selftest) -> None:
    """A target module loaded after the patch is patched as it comes."""
    klp.start_test("module_coming notifier")
    klp.load_lp(LP)
    klp.load_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.unload_mod(TARGET)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {LP}: post_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {TARGET}: {TARGET}_init
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        {LP}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit""")


def test_module_going_notifier(klp: Selftest) -> None:
    """A target module unloaded while patched is reverted as it goes."""
    klp.start_test("module_going notifier")
    klp.load_mod(TARGET)
    klp.load_lp(LP)
    klp.unload_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{TARGET}.ko
        {TARGET}: {TARGET}_init
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        {LP}: post_patch_callback: {TARGET} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': patching complete
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit
        {LP}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        livepatch: reverting patch '{LP}' on unloading module '{TARGET}'
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_module_coming_and_module_going_notifiers(klp: Selftest) -> None:
    """A target module that comes and goes under an enabled patch."""
    klp.start_test("module_coming and module_going notifiers")
    klp.load_lp(LP)
    klp.load_mod(TARGET)
    klp.unload_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {LP}: post_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {TARGET}: {TARGET}_init
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit
        {LP}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        livepatch: reverting patch '{LP}' on unloading module '{TARGET}'
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_target_module_not_present(klp: Selftest) -> None:
    """Only the vmlinux callbacks run when the target module is absent."""
    klp.start_test("target module not present")
    klp.load_lp(LP)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_pre_patch_callback_enodev(klp: Selftest) -> None:
    """A failing pre_patch callback makes the livepatch's insmod fail."""
    klp.start_test("pre-patch callback -ENODEV")
    klp.load_mod(TARGET)
    klp.load_failing_mod(LP, "pre_patch_ret=-19")
    klp.unload_mod(TARGET)
    klp.check_result(f"""
        % insmod test_modules/{TARGET}.ko
        {TARGET}: {TARGET}_init
        % insmod test_modules/{LP}.ko pre_patch_ret=-19
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        test_klp_callbacks_demo: pre_patch_callback: vmlinux
        livepatch: pre-patch callback failed for object 'vmlinux'
        livepatch: failed to enable patch '{LP}'
        livepatch: '{LP}': canceling patching transition, going to unpatch
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        insmod: ERROR: could not insert module test_modules/{LP}.ko: No such device
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit""")


def test_module_coming_pre_patch_callback_enodev(klp: Selftest) -> None:
    """A failing pre_patch callback refuses the target module's load."""
    klp.start_test("module_coming + pre-patch callback -ENODEV")
    klp.load_lp(LP)
    klp.set_pre_patch_ret(LP, -19)
    klp.load_failing_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % echo -19 > /sys/module/{LP}/parameters/pre_patch_ret
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        livepatch: pre-patch callback failed for object '{TARGET}'
        livepatch: patch '{LP}' failed for module '{TARGET}', refusing to load module '{TARGET}'
        insmod: ERROR: could not insert module test_modules/{TARGET}.ko: No such device
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_multiple_target_modules(klp: Selftest) -> None:
    """Two target modules, one loaded before the patch and one after."""
    klp.start_test("multiple target modules")
    klp.load_mod(BUSY, "block_transition=N")
    klp.load_lp(LP)
    klp.load_mod(TARGET)
    klp.unload_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.unload_mod(BUSY)
    klp.check_result(f"""
        % insmod test_modules/{BUSY}.ko block_transition=N
        {BUSY}: {BUSY}_init
        {BUSY}: busymod_work_func enter
        {BUSY}: busymod_work_func exit
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: pre_patch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        {LP}: post_patch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': patching complete
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {LP}: post_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {TARGET}: {TARGET}_init
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit
        {LP}: pre_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        livepatch: reverting patch '{LP}' on unloading module '{TARGET}'
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        {LP}: pre_unpatch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        {LP}: post_unpatch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}
        % rmmod {BUSY}
        {BUSY}: {BUSY}_exit""")


def test_busy_target_module(lpfs_factory) -> None:
    """A task asleep in a patched function stalls the transition; disabling reverses it,
    and the retry timer (not the write) completes the reversal."""
    klp = Selftest(lpfs_factory("--transition-interval", "0.05"))
    klp.start_test("busy target module")
    klp.load_mod(BUSY, "block_transition=Y")
    klp.load_lp_nowait(LP)
    klp.wait_for_transition(LP)
    klp.load_mod(TARGET)
    klp.unload_mod(TARGET)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.unload_mod(BUSY)
    klp.check_result(f"""
        % insmod test_modules/{BUSY}.ko block_transition=Y
        {BUSY}: {BUSY}_init
        {BUSY}: busymod_work_func enter
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: pre_patch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': starting patching transition
        % insmod test_modules/{TARGET}.ko
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        {LP}: pre_patch_callback: {TARGET} -> [MODULE_STATE_COMING] Full formed, running module_init
        {TARGET}: {TARGET}_init
        % rmmod {TARGET}
        {TARGET}: {TARGET}_exit
        livepatch: reverting patch '{LP}' on unloading module '{TARGET}'
        {LP}: post_unpatch_callback: {TARGET} -> [MODULE_STATE_GOING] Going away
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': reversing transition from patching to unpatching
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        {LP}: post_unpatch_callback: {BUSY} -> [MODULE_STATE_LIVE] Normal state
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}
        % rmmod {BUSY}
        {BUSY}: busymod_work_func exit
        {BUSY}: {BUSY}_exit""")


def test_multiple_livepatches(klp: Selftest) -> None:
    """Two livepatches, each with its own callbacks."""
    klp.start_test("multiple livepatches")
    klp.load_lp(LP)
    klp.load_lp(LP2)
    klp.disable_lp(LP2)
    klp.disable_lp(LP)
    klp.unload_lp(LP2)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        livepatch: '{LP2}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        livepatch: '{LP2}': unpatching complete
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        livepatch: '{LP}': unpatching complete
        % rmmod {LP2}
        % rmmod {LP}""")


def test_atomic_replace(klp: Selftest) -> None:
    """A replace patch takes over without running the replaced patch's callbacks."""
    klp.start_test("atomic replace")
    klp.load_lp(LP)
    klp.load_lp(LP2, "replace=1")
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        livepatch: '{LP}': patching complete
        % insmod test_modules/{LP2}.ko replace=1
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        livepatch: '{LP2}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}
        % rmmod {LP}""")
