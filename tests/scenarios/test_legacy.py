"""The 4.15-5.0 lifecycle, and the upstream sequence that led 5.1 to remove it.

Before 5.1 a disabled patch stays registered (its directory stays, enabled
reads 0, `echo 1` enables it again) and the stacking rules refuse to open a
"hole": only the first disabled patch may be enabled, only the last enabled
one disabled.
"""

import pytest
from support import shipped

from lpfs.pytest_plugin import LpfsMount

P1, P2, P3 = "test_klp_livepatch", "test_klp_syscall", "test_klp_atomic_replace"
BUSY = "Device or resource busy"


@pytest.fixture
def legacy(lpfs_factory) -> LpfsMount:
    return lpfs_factory("--kernel", "4.19")


def enabled(mnt: LpfsMount, patch: str) -> str:
    return mnt.read(f"kernel/livepatch/{patch}/enabled").strip()


def write(mnt: LpfsMount, patch: str, value: str, attr: str = "enabled") -> str:
    """echo VALUE > the attribute; bash's error text, or '' on success."""
    return mnt.sh(f"echo {value} > kernel/livepatch/{patch}/{attr}").stderr.strip()


def test_disabled_patch_stays_registered(legacy: LpfsMount) -> None:
    """Disabling keeps the directory with enabled 0 and drops the module reference."""
    legacy.insmod(shipped(P1))
    assert "" == write(legacy, P1, "0")
    assert (["test_klp_livepatch"], "0", "0\n") == (
        legacy.patches(),
        enabled(legacy, P1),
        legacy.read(f"module/{P1}/refcnt"),
    )
    assert "" == write(legacy, P1, "1")
    assert "1" == enabled(legacy, P1)


def test_hole_in_the_stack_is_refused(legacy: LpfsMount) -> None:
    """Patch 3 cannot load above a disabled patch 2 until patch 2 is enabled again,
    and then patch 1 cannot be disabled under it."""
    legacy.insmod(shipped(P1))
    legacy.insmod(shipped(P2))
    assert "" == write(legacy, P2, "0")
    result = legacy.command("insmod", str(shipped(P3)))
    assert (1, True) == (result.returncode, result.stderr.strip().endswith(BUSY))
    assert ([P2, P1], "0") == (sorted(legacy.patches(), reverse=True), enabled(legacy, P2))
    assert not (legacy.mountpoint / "module" / P3).exists()
    assert "" == write(legacy, P2, "1")
    legacy.insmod(shipped(P3))
    assert write(legacy, P1, "0").endswith(f"write error: {BUSY}")
    assert "1" == enabled(legacy, P1)


def test_reenabling_above_a_disabled_patch_is_refused(legacy: LpfsMount) -> None:
    """With patch 2 disabled, patch 1 may be disabled; then patch 2 cannot come back."""
    legacy.insmod(shipped(P1))
    legacy.insmod(shipped(P2))
    assert "" == write(legacy, P2, "0")
    assert "" == write(legacy, P1, "0")
    assert write(legacy, P2, "1").endswith(f"write error: {BUSY}")
    assert ("0", "0") == (enabled(legacy, P1), enabled(legacy, P2))


def test_newest_kernel_frees_the_disabled_patch(mnt: LpfsMount) -> None:
    """From 5.1 on the disabled patch 2 is freed, so patch 3 loads."""
    mnt.insmod(shipped(P1))
    mnt.insmod(shipped(P2))
    assert "" == write(mnt, P2, "0")
    assert [P1] == mnt.patches()
    mnt.insmod(shipped(P3))
    assert sorted([P1, P3]) == mnt.patches()


def test_rmmod_needs_a_disabled_patch(legacy: LpfsMount) -> None:
    """An enabled patch's module is in use; a disabled one unloads and takes its directory."""
    legacy.insmod(shipped(P1))
    result = legacy.command("rmmod", P1)
    assert f"rmmod: ERROR: Module {P1} is in use" == result.stderr.strip()
    write(legacy, P1, "0")
    legacy.rmmod(P1)
    assert ([], False) == (legacy.patches(), (legacy.mountpoint / "module" / P1).exists())


def test_attributes_of_the_time(legacy: LpfsMount) -> None:
    """4.19 has enabled, transition, signal and force, and no later attributes."""
    legacy.insmod(shipped(P1))
    rights = legacy.sh(f"stat --format '%n %A' kernel/livepatch/{P1}/*").stdout.split("\n")
    assert [
        f"kernel/livepatch/{P1}/enabled -rw-r--r--",
        f"kernel/livepatch/{P1}/force --w-------",
        f"kernel/livepatch/{P1}/signal --w-------",
        f"kernel/livepatch/{P1}/transition -r--r--r--",
        f"kernel/livepatch/{P1}/vmlinux drwxr-xr-x",
    ] == sorted(line for line in rights if line)


def test_signals_only_on_request(legacy: LpfsMount) -> None:
    """No fake signal comes by itself; a write to signal sends one at once."""
    legacy.add_task(100, "task100", "sleeping", ["schedule", "cmdline_proc_show"])
    legacy.insmod(shipped(P1))
    legacy.tick(40)
    assert "1" == legacy.read(f"kernel/livepatch/{P1}/transition").strip()
    assert "livepatch: signaling remaining tasks" not in legacy.dmesg()
    assert "" == write(legacy, P1, "1", attr="signal")
    assert "livepatch: signaling remaining tasks" in legacy.dmesg()
    legacy.tick(1)
    assert "0" == legacy.read(f"kernel/livepatch/{P1}/transition").strip()


def test_signal_outside_a_transition_is_einval(legacy: LpfsMount) -> None:
    """signal, like force, needs the patch to be in transition."""
    legacy.insmod(shipped(P1))
    assert write(legacy, P1, "1", attr="signal").endswith("write error: Invalid argument")
    assert "" == write(legacy, P1, "0", attr="signal")


def test_4_15_has_neither_force_nor_signal(lpfs_factory) -> None:
    """force and signal arrived in 4.16 (with the fake signal and klp_forced)."""
    mnt = lpfs_factory("--kernel", "4.15")
    mnt.insmod(shipped(P1))
    assert ["enabled", "transition", "vmlinux"] == sorted(
        entry.name for entry in (mnt.livepatch_dir / P1).iterdir()
    )
