"""lpfs.kernel.lifecycle and legacy: the profile picks one lifecycle at boot (docs/kernel.md §2)."""

import errno

import pytest

from lpfs.errors import KernelError
from lpfs.kernel.clock import FakeClock
from lpfs.kernel.core import Core
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.legacy import Legacy
from lpfs.kernel.lifecycle import Modern
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import FuncDef, ModuleDef, ObjectDef, Patch
from lpfs.kernel.tasks import SchedState, SimulatedTasks, Task

CMDLINE = FuncDef("cmdline_proc_show", "livepatch_cmdline_proc_show")


def make_core(version: tuple[int, int]) -> Core:
    clock = FakeClock()
    return Core(KernelLog(clock), SimulatedTasks(ncpus=2), Profile(version), clock)


def load(core: Core, name: str = "lp_a") -> Patch:
    patch = core.insmod(ModuleDef(name, objects=(ObjectDef("vmlinux", (CMDLINE,)),))).patch
    assert patch is not None
    return patch


def forced_patch(core: Core) -> Patch:
    """A patch whose patching transition a sleeper blocked until a force."""
    core.spawn_task(Task(100, "sleeper", SchedState.SLEEPING, (CMDLINE.old_name,)))
    patch = load(core)
    core.force_store(patch, True)
    core.tick()
    core.tasks.remove(100)
    return patch


@pytest.mark.parametrize(
    ("version", "kind"), [((4, 15), Legacy), ((5, 0), Legacy), ((5, 1), Modern), ((7, 3), Modern)]
)
def test_the_profile_picks_the_lifecycle(version, kind) -> None:
    assert kind is type(make_core(version).lifecycle)


def test_a_legacy_disabled_patch_can_be_enabled_again() -> None:
    core = make_core((5, 0))
    patch = load(core)
    core.enabled_store(patch, False)

    core.enabled_store(patch, True)

    assert (True, 1, [patch]) == (patch.enabled, patch.module.refcnt, core.patches)


def test_a_modern_disabled_patch_is_freed() -> None:
    core = make_core((5, 1))
    patch = load(core)

    core.enabled_store(patch, False)

    assert (True, 0, []) == (patch.freed, patch.module.refcnt, core.patches)


def test_a_legacy_force_keeps_every_later_reference() -> None:
    """The flag before 5.1 is global: a patch loaded after the force keeps its reference too."""
    core = make_core((5, 0))
    forced = forced_patch(core)
    later = load(core, "lp_b")
    core.enabled_store(later, False)
    core.enabled_store(forced, False)

    assert (1, 1) == (forced.module.refcnt, later.module.refcnt)
    with pytest.raises(KernelError) as info:
        core.rmmod("lp_b")
    assert errno.EWOULDBLOCK == info.value.errno


def test_a_reset_forgets_the_legacy_force() -> None:
    core = make_core((5, 0))
    forced_patch(core)

    core.reset()
    patch = load(core)
    core.enabled_store(patch, False)

    assert 0 == patch.module.refcnt
