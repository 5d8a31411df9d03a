"""test-state.sh's cases: klp states handed over between cumulative patches."""

from selftest import Selftest

LP = "test_klp_state"
LP2 = "test_klp_state2"
LP3 = "test_klp_state3"


def test_system_state_modification(klp: Selftest) -> None:
    """A patch sets up its state in its callbacks and releases it when disabled."""
    klp.start_test("system state modification")
    klp.load_lp(LP)
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: allocate_loglevel_state: allocating space to store console_loglevel
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        {LP}: fix_console_loglevel: fixing console_loglevel
        livepatch: '{LP}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        {LP}: pre_unpatch_callback: vmlinux
        {LP}: restore_console_loglevel: restoring console_loglevel
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        {LP}: post_unpatch_callback: vmlinux
        {LP}: free_loglevel_state: freeing space for the stored console_loglevel
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_taking_over_system_state_modification(klp: Selftest) -> None:
    """A newer version of the state takes it over from the patch it replaces."""
    klp.start_test("taking over system state modification")
    klp.load_lp(LP)
    klp.load_lp(LP2)
    klp.unload_lp(LP)
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        {LP}: pre_patch_callback: vmlinux
        {LP}: allocate_loglevel_state: allocating space to store console_loglevel
        livepatch: '{LP}': starting patching transition
        livepatch: '{LP}': completing patching transition
        {LP}: post_patch_callback: vmlinux
        {LP}: fix_console_loglevel: fixing console_loglevel
        livepatch: '{LP}': patching complete
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        {LP2}: allocate_loglevel_state: space to store console_loglevel already allocated
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        {LP2}: fix_console_loglevel: taking over the console_loglevel change
        livepatch: '{LP2}': patching complete
        % rmmod {LP}
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        {LP2}: restore_console_loglevel: restoring console_loglevel
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        {LP2}: free_loglevel_state: freeing space for the stored console_loglevel
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}""")


def test_compatible_cumulative_livepatches(klp: Selftest) -> None:
    """Patches with the same state version replace each other in either order."""
    klp.start_test("compatible cumulative livepatches")
    klp.load_lp(LP2)
    klp.load_lp(LP3)
    klp.unload_lp(LP2)
    klp.load_lp(LP2)
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.unload_lp(LP3)
    klp.check_result(f"""
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        {LP2}: allocate_loglevel_state: allocating space to store console_loglevel
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        {LP2}: fix_console_loglevel: fixing console_loglevel
        livepatch: '{LP2}': patching complete
        % insmod test_modules/{LP3}.ko
        livepatch: enabling patch '{LP3}'
        livepatch: '{LP3}': initializing patching transition
        {LP3}: pre_patch_callback: vmlinux
        {LP3}: allocate_loglevel_state: space to store console_loglevel already allocated
        livepatch: '{LP3}': starting patching transition
        livepatch: '{LP3}': completing patching transition
        {LP3}: post_patch_callback: vmlinux
        {LP3}: fix_console_loglevel: taking over the console_loglevel change
        livepatch: '{LP3}': patching complete
        % rmmod {LP2}
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        {LP2}: allocate_loglevel_state: space to store console_loglevel already allocated
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        {LP2}: fix_console_loglevel: taking over the console_loglevel change
        livepatch: '{LP2}': patching complete
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        {LP2}: restore_console_loglevel: restoring console_loglevel
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        {LP2}: free_loglevel_state: freeing space for the stored console_loglevel
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}
        % rmmod {LP3}""")


def test_incompatible_cumulative_livepatches(klp: Selftest) -> None:
    """A patch with an older state version is refused."""
    klp.start_test("incompatible cumulative livepatches")
    klp.load_lp(LP2)
    klp.load_failing_mod(LP)
    klp.disable_lp(LP2)
    klp.unload_lp(LP2)
    klp.check_result(f"""
        % insmod test_modules/{LP2}.ko
        livepatch: enabling patch '{LP2}'
        livepatch: '{LP2}': initializing patching transition
        {LP2}: pre_patch_callback: vmlinux
        {LP2}: allocate_loglevel_state: allocating space to store console_loglevel
        livepatch: '{LP2}': starting patching transition
        livepatch: '{LP2}': completing patching transition
        {LP2}: post_patch_callback: vmlinux
        {LP2}: fix_console_loglevel: fixing console_loglevel
        livepatch: '{LP2}': patching complete
        % insmod test_modules/{LP}.ko
        livepatch: Livepatch patch ({LP}) is not compatible with the already installed livepatches.
        insmod: ERROR: could not insert module test_modules/{LP}.ko: Invalid parameters
        % echo 0 > /sys/kernel/livepatch/{LP2}/enabled
        livepatch: '{LP2}': initializing unpatching transition
        {LP2}: pre_unpatch_callback: vmlinux
        {LP2}: restore_console_loglevel: restoring console_loglevel
        livepatch: '{LP2}': starting unpatching transition
        livepatch: '{LP2}': completing unpatching transition
        {LP2}: post_unpatch_callback: vmlinux
        {LP2}: free_loglevel_state: freeing space for the stored console_loglevel
        livepatch: '{LP2}': unpatching complete
        % rmmod {LP2}""")
