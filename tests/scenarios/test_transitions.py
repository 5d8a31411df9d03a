"""Transitions that do not complete at once: blocked tasks, fake signals, force, reversal."""

import errno
import os
import subprocess
import sys

import pytest
from selftest import Selftest
from support import shipped

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_livepatch"
OLD, NEW = "cmdline_proc_show", "livepatch_cmdline_proc_show"


def transition(mnt: LpfsMount, patch: str = LP) -> str:
    return mnt.read(f"kernel/livepatch/{patch}/transition").strip()


def test_blocked_patching_is_reversed(klp: Selftest) -> None:
    """An uninterruptible task in the old function blocks patching past the fake signal;
    `echo 0` reverses the transition and the next retry completes it."""
    mnt = klp.mnt
    mnt.add_task(100, "task100", "uninterruptible", ["schedule", OLD, "seq_read"])
    klp.start_test("blocked patching, reversed")
    klp.load_lp_nowait(LP)
    assert ("1", "1") == (transition(mnt), mnt.read(f"kernel/livepatch/{LP}/enabled").strip())
    mnt.tick(14)
    assert "signaling remaining tasks" not in klp.result()
    mnt.tick(1)
    assert "1" == transition(mnt)
    klp.log(f"% echo 0 > /sys/kernel/livepatch/{LP}/enabled")
    mnt.sh(f"echo 0 > kernel/livepatch/{LP}/enabled", check=True)
    assert ("1", "0") == (transition(mnt), mnt.read(f"kernel/livepatch/{LP}/enabled").strip())
    mnt.tick(1)
    assert [] == mnt.patches()
    klp.unload_lp(LP)
    klp.check_result(f"""
        % insmod test_modules/{LP}.ko
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: '{LP}': starting patching transition
        livepatch: signaling remaining tasks
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': reversing transition from patching to unpatching
        livepatch: '{LP}': starting unpatching transition
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete
        % rmmod {LP}""")


def test_forced_unpatching_keeps_module_in_use(klp: Selftest) -> None:
    """A task asleep in the replacement blocks unpatching; force completes it at the
    next retry, and the forced patch's module can never be removed."""
    mnt = klp.mnt
    klp.load_lp(LP)
    mnt.add_task(200, "task200", "uninterruptible", ["schedule", NEW])
    klp.start_test("forced unpatching")
    klp.log(f"% echo 0 > /sys/kernel/livepatch/{LP}/enabled")
    mnt.sh(f"echo 0 > kernel/livepatch/{LP}/enabled", check=True)
    assert "1" == transition(mnt)
    mnt.sh(f"echo 1 > kernel/livepatch/{LP}/force", check=True)
    assert "1" == transition(mnt)
    mnt.tick(1)
    assert [] == mnt.patches()
    assert "1\n" == mnt.read(f"module/{LP}/refcnt")
    result = mnt.command("rmmod", LP)
    assert (1, f"rmmod: ERROR: Module {LP} is in use\n") == (result.returncode, result.stderr)
    klp.check_result(f"""
        % echo 0 > /sys/kernel/livepatch/{LP}/enabled
        livepatch: '{LP}': initializing unpatching transition
        livepatch: '{LP}': starting unpatching transition
        livepatch: forcing remaining tasks to the patched state
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete""")


def test_forced_patching_leaves_module_removable(klp: Selftest) -> None:
    """Forcing a plain patch's patching transition does not pin its module (5.18+)."""
    mnt = klp.mnt
    mnt.add_task(300, "task300", "uninterruptible", [OLD])
    klp.load_lp_nowait(LP)
    mnt.sh(f"echo 1 > kernel/livepatch/{LP}/force", check=True)
    mnt.tick(1)
    assert "0" == transition(mnt)
    mnt.run("task", "exit", "300")
    klp.disable_lp(LP)
    klp.unload_lp(LP)
    assert not (mnt.mountpoint / "module" / LP).exists()


def test_fake_signal_switches_interruptible_sleeper(klp: Selftest) -> None:
    """A user task asleep (interruptibly) in the old function is switched by the fake
    signal of the 16th try, so the 17th completes the transition."""
    mnt = klp.mnt
    mnt.add_task(400, "task400", "sleeping", ["schedule", OLD])
    klp.load_lp_nowait(LP)
    mnt.tick(14)
    assert "1" == transition(mnt)
    mnt.tick(1)
    assert "livepatch: signaling remaining tasks" in klp.result()
    assert "1" == transition(mnt)
    mnt.tick(1)
    assert "0" == transition(mnt)


def test_busy_during_transition(klp: Selftest, tmp_path) -> None:
    """While one patch is in transition, disabling another and loading a livepatch fail
    with EBUSY, and the refused module is not left loaded."""
    mnt = klp.mnt
    klp.load_lp("test_klp_syscall")
    mnt.add_task(500, "task500", "uninterruptible", [OLD])
    klp.load_lp_nowait(LP)
    result = mnt.sh("echo 0 > kernel/livepatch/test_klp_syscall/enabled")
    assert "write error: Device or resource busy" in result.stderr
    fd = os.open(mnt.livepatch_dir / "test_klp_syscall" / "enabled", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"0\n")
        assert errno.EBUSY == info.value.errno
    finally:
        os.close(fd)
    result = mnt.command("insmod", str(shipped("test_klp_callbacks_demo")))
    assert 1 == result.returncode
    assert "could not insert module" in result.stderr
    assert result.stderr.rstrip().endswith("Device or resource busy")
    assert not (mnt.mountpoint / "module" / "test_klp_callbacks_demo").exists()


def test_retry_timer_completes_transition(lpfs_factory) -> None:
    """With a real retry interval, a transition completes by itself once its blocker wakes."""
    mnt = lpfs_factory("--transition-interval", "0.05")
    mnt.add_task(600, "task600", "uninterruptible", [OLD])
    mnt.insmod(shipped(LP))
    assert "1" == transition(mnt)
    mnt.run("task", "set", "600", "--stack", "do_idle")
    mnt.run("wait", LP, "--idle", "--timeout", "10")
    assert "0" == transition(mnt)


@pytest.mark.parametrize(("finish", "code"), [("wake", 0), ("reverse", 1)])
def test_status_wait_reports_the_outcome(lpfs_factory, finish: str, code: int) -> None:
    """`lpfs status --wait` follows a transition: exit 0 when it completes, 1 when reversed."""
    mnt = lpfs_factory("--transition-interval", "0.05")
    mnt.add_task(700, "task700", "uninterruptible", [OLD])
    mnt.insmod(shipped(LP))
    waiter = subprocess.Popen(
        [sys.executable, "-m", "lpfs", "status", "--wait", "--mount", str(mnt.mountpoint)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = waiter.stdout.readline()  # it has seen the patching transition
        if finish == "wake":
            mnt.run("task", "set", "700", "--stack", "do_idle")
        else:
            mnt.sh(f"echo 0 > kernel/livepatch/{LP}/enabled", check=True)
        out, _ = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
    assert code == waiter.returncode
    assert f"{LP} patching: " in first
    assert out.rstrip().endswith("complete" if code == 0 else "reversed")
