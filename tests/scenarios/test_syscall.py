"""test-syscall.sh: getpid patched while real processes hammer it.

The processes are real (Python's os.getpid() in a loop, as
test_klp-call_getpid calls it); the daemon simulates its tasks, so it
adopts the pids klp_pids names, which then switch at their next syscall
exit and count down npids at their next getpid.
"""

import os

from selftest import Selftest
from support import getpid_loops

MOD_SYSCALL = "test_klp_syscall"
# min(nproc, 128) in the script; at most 4 here, as each one keeps a CPU busy.
NPROC = min(os.cpu_count() or 1, 4)


def test_patch_getpid_syscall_while_being_heavily_hammered(klp: Selftest) -> None:
    """Every listed process calls the replacement getpid: npids reaches 0."""
    klp.start_test("patch getpid syscall while being heavily hammered")
    with getpid_loops(NPROC) as loops:
        pid_list = ",".join(str(loop.pid) for loop in loops)
        klp.load_lp(MOD_SYSCALL, f"klp_pids={pid_list}")
        npids = klp.mnt.mountpoint / "kernel" / MOD_SYSCALL / "npids"
        klp.loop_until(lambda: npids.read_text() == "0\n", "every process patched")
        pending_pids = npids.read_text().strip()
        klp.log(f"{MOD_SYSCALL}: Remaining not livepatched processes: {pending_pids}")
    klp.disable_lp(MOD_SYSCALL)
    klp.unload_lp(MOD_SYSCALL)
    klp.check_result(f"""
        % insmod test_modules/{MOD_SYSCALL}.ko klp_pids={pid_list}
        livepatch: enabling patch '{MOD_SYSCALL}'
        livepatch: '{MOD_SYSCALL}': initializing patching transition
        livepatch: '{MOD_SYSCALL}': starting patching transition
        livepatch: '{MOD_SYSCALL}': completing patching transition
        livepatch: '{MOD_SYSCALL}': patching complete
        {MOD_SYSCALL}: Remaining not livepatched processes: 0
        % echo 0 > /sys/kernel/livepatch/{MOD_SYSCALL}/enabled
        livepatch: '{MOD_SYSCALL}': initializing unpatching transition
        livepatch: '{MOD_SYSCALL}': starting unpatching transition
        livepatch: '{MOD_SYSCALL}': completing unpatching transition
        livepatch: '{MOD_SYSCALL}': unpatching complete
        % rmmod {MOD_SYSCALL}""")


def test_pending_until_switched(klp: Selftest) -> None:
    """The processes switch at their own syscall exits, whatever holds the rest of the
    transition up: npids reaches 0 while a task sleeping in getpid keeps it going."""
    klp.mnt.add_task(100, "task100", "uninterruptible", ["__x64_sys_getpid"])
    klp.start_test("getpid processes switch while another task blocks the transition")
    with getpid_loops(2) as loops:
        pid_list = ",".join(str(loop.pid) for loop in loops)
        klp.load_lp_nowait(MOD_SYSCALL, f"klp_pids={pid_list}")
        klp.wait_for_transition(MOD_SYSCALL)
        npids = klp.mnt.read(f"kernel/{MOD_SYSCALL}/npids")
        klp.log(f"{MOD_SYSCALL}: Remaining not livepatched processes: {npids.strip()}")
    klp.mnt.run("task", "exit", "100")
    klp.mnt.tick()
    klp.disable_lp(MOD_SYSCALL)
    klp.unload_lp(MOD_SYSCALL)
    klp.check_result(f"""
        % insmod test_modules/{MOD_SYSCALL}.ko klp_pids={pid_list}
        livepatch: enabling patch '{MOD_SYSCALL}'
        livepatch: '{MOD_SYSCALL}': initializing patching transition
        livepatch: '{MOD_SYSCALL}': starting patching transition
        {MOD_SYSCALL}: Remaining not livepatched processes: 0
        livepatch: '{MOD_SYSCALL}': completing patching transition
        livepatch: '{MOD_SYSCALL}': patching complete
        % echo 0 > /sys/kernel/livepatch/{MOD_SYSCALL}/enabled
        livepatch: '{MOD_SYSCALL}': initializing unpatching transition
        livepatch: '{MOD_SYSCALL}': starting unpatching transition
        livepatch: '{MOD_SYSCALL}': completing unpatching transition
        livepatch: '{MOD_SYSCALL}': unpatching complete
        % rmmod {MOD_SYSCALL}""")
