"""lpfs.kernel.core: the patch lifecycle of docs/kernel.md §2.1 and §3, row by row of §8's table.

DISABLED and REPLACED are freed synchronously (docs/kernel.md §10), so their rows are
checked as "gone by the time the call returns"; the kernel's brief window in
which a disabled patch still answers EINVAL is reproduced with ``free_pending``.
"""

import errno

import pytest

from lpfs.errors import KernelError
from lpfs.formats.modfile import parse
from lpfs.kernel.clock import FakeClock
from lpfs.kernel.core import Core
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import FuncDef, ModuleDef, ObjectDef, Patch, StateDef
from lpfs.kernel.tasks import SchedState, SimulatedTasks, Task

CMDLINE = ("cmdline_proc_show", "livepatch_cmdline_proc_show")
MEMINFO = ("meminfo_proc_show", "livepatch_meminfo_proc_show")
TAINT_LIVEPATCH = 1 << 15

# docs/kernel.md §8 rows for a patch that is first in klp_patches: what user space reads.
PATCHING_ROW = {"enabled": 1, "transition": 1, "dir": True, "refcnt": 1, "stack_order": 1}
ENABLED_ROW = {"enabled": 1, "transition": 0, "dir": True, "refcnt": 1, "stack_order": 1}
UNPATCHING_ROW = {"enabled": 0, "transition": 1, "dir": True, "refcnt": 1, "stack_order": 1}

# A patch touching vmlinux and a module object, as module files write them.
MODULE_PATCH = """
name = "lp_mod"

[[object]]
name = "vmlinux"

[[object.func]]
old_name = "meminfo_proc_show"
new_name = "livepatch_meminfo_proc_show"

[[object]]
name = "test_klp_mod"

[[object.func]]
old_name = "mod_func"
new_name = "livepatch_mod_func"
old_sympos = 2
"""


def make_core(profile: Profile | None = None) -> Core:
    clock = FakeClock()
    return Core(KernelLog(clock), SimulatedTasks(ncpus=2), profile or Profile(), clock)


@pytest.fixture
def core():
    """A freshly booted newest kernel with two idle CPUs and no other task."""
    return make_core()


def livepatch(name, *funcs, replace=False, states=()):
    """A livepatch module redirecting vmlinux functions given as (old, new) pairs."""
    vmlinux = ObjectDef("vmlinux", tuple(FuncDef(old, new) for old, new in funcs or (CMDLINE,)))
    return ModuleDef(
        name,
        replace=replace,
        objects=(vmlinux,),
        states=tuple(StateDef(id_, version) for id_, version in states),
    )


def load(core, name, *funcs, **options) -> Patch:
    """insmod a livepatch module and return its patch."""
    patch = core.insmod(livepatch(name, *funcs, **options)).patch
    assert patch is not None
    return patch


def sleeper(core, function, state=SchedState.SLEEPING) -> Task:
    """Add a task asleep in ``function``, which blocks any transition that checks it."""
    pid = 1 + max(task.pid for task in core.tasks.tasks())
    return core.tasks.add(Task(pid, f"sleeper{pid}", state, (function,)))


def patching(core, name="lp_a", *funcs, **options) -> Patch:
    """Load a patch whose patching transition stays blocked by a task in the old function."""
    sleeper(core, (funcs or (CMDLINE,))[0][0])
    return load(core, name, *funcs, **options)


def unpatching(core, name="lp_a") -> Patch:
    """Load a patch, then disable it while a task sleeps in its replacement."""
    patch = load(core, name)
    sleeper(core, CMDLINE[1])
    core.enabled_store(patch, False)
    return patch


def unblock(core) -> None:
    """Every simulated task leaves the kernel, and the next retry runs."""
    for task in core.tasks.tasks():
        task.stack = ()
    core.tick()


def row(core, patch) -> dict:
    """What user space sees of ``patch`` in the columns of docs/kernel.md §8."""
    present = core.find_patch(patch.name) is patch
    return {
        "enabled": int(patch.enabled),
        "transition": int(core.engine.patch is patch),
        "dir": present,
        "refcnt": patch.module.refcnt,
        "stack_order": core.stack_order(patch) if present else None,
    }


def freed_row(refcnt=0) -> dict:
    """A freed patch: no directory (so no stack_order), not enabled, not in transition."""
    return {"enabled": 0, "transition": 0, "dir": False, "refcnt": refcnt, "stack_order": None}


def lines(core, after=-1) -> list[str]:
    return [record.text for record in core.log.records(after)]


def errno_of(call, *args) -> int:
    """The errno a core call raises."""
    with pytest.raises(KernelError) as info:
        call(*args)
    return info.value.errno


@pytest.fixture
def free_pending(core, monkeypatch):
    """Defer klp_free_patch_finish() as the kernel's workqueue does; call to run it."""
    pending = []
    finish = core._free_patch_finish
    monkeypatch.setattr(core, "_free_patch_finish", lambda *args: pending.append(args))

    def run():
        while pending:
            finish(*pending.pop(0))

    return run


class TestPatchingState:
    """docs/kernel.md §8 PATCHING: an enable transition is running."""

    def test_row(self, core):
        """PATCHING reads enabled 1, transition 1, with the directory and a module reference."""
        patch = patching(core)

        assert PATCHING_ROW == row(core, patch)

    def test_completes_when_all_tasks_switch(self, core):
        """Once the blocking task has left the old function, the next retry enables the patch."""
        patch = patching(core)

        unblock(core)

        assert ENABLED_ROW == row(core, patch)

    def test_disable_reverses_to_unpatching(self, core):
        """Writing 0 turns the patching transition into an unpatching one."""
        patch = patching(core)

        core.enabled_store(patch, False)

        assert UNPATCHING_ROW == row(core, patch)

    def test_reversal_then_completion_frees_patch(self, core):
        """A reversed patching transition ends with the patch freed and its reference dropped."""
        patch = patching(core)
        core.enabled_store(patch, False)

        core.tick()

        assert (freed_row(), True) == (row(core, patch), patch.freed)

    def test_force_enables_at_next_retry(self, core):
        """Forcing leaves the transition open until the next retry completes it."""
        patch = patching(core)

        core.force_store(patch, True)
        during = row(core, patch)
        core.tick()

        assert (PATCHING_ROW, ENABLED_ROW) == (during, row(core, patch))


class TestEnabledState:
    """docs/kernel.md §8 ENABLED: the patch is fully applied."""

    def test_row(self, core):
        """ENABLED reads enabled 1, transition 0, with the directory and a module reference."""
        patch = load(core, "lp_a")

        assert ENABLED_ROW == row(core, patch)

    def test_insmod_completes_synchronously(self, core):
        """With no task in the old function, the first try inside insmod completes patching."""
        patch = load(core, "lp_a")

        assert (None, True) == (core.engine.patch, patch.enabled)

    def test_disable_starts_unpatching(self, core):
        """Writing 0 starts an unpatching transition of the patch."""
        patch = unpatching(core)

        assert UNPATCHING_ROW == row(core, patch)


class TestUnpatchingState:
    """docs/kernel.md §8 UNPATCHING: a disable transition is running."""

    def test_completion_frees_patch(self, core):
        """When every task has switched back, the patch is freed and the reference dropped."""
        patch = unpatching(core)

        unblock(core)

        assert (freed_row(), True) == (row(core, patch), patch.freed)

    def test_enable_reverses_to_patching(self, core):
        """Writing 1 turns the unpatching transition back into a patching one."""
        patch = unpatching(core)

        core.enabled_store(patch, True)

        assert PATCHING_ROW == row(core, patch)

    def test_reversal_then_completion_keeps_patch_enabled(self, core):
        """A reversed unpatching transition ends in ENABLED."""
        patch = unpatching(core)
        core.enabled_store(patch, True)

        core.tick()

        assert ENABLED_ROW == row(core, patch)

    def test_force_frees_patch_but_keeps_module_reference(self, core):
        """A forced unpatching frees the patch at the next retry and its module stays in use."""
        patch = unpatching(core)

        core.force_store(patch, True)
        core.tick()

        assert (freed_row(refcnt=1), True) == (row(core, patch), patch.freed)


class TestDisabledState:
    """docs/kernel.md §8 DISABLED, which lpfs frees before the completing call returns (§10)."""

    def test_freed_inside_the_disabling_write(self, core):
        """An unblocked disable completes and frees the patch within enabled_store."""
        patch = load(core, "lp_a")

        core.enabled_store(patch, False)

        assert (freed_row(), True) == (row(core, patch), patch.freed)

    def test_objects_are_freed_with_the_patch(self, core):
        """The object and func directories go with the patch."""
        patch = load(core, "lp_a")

        core.enabled_store(patch, False)

        assert [(True, False)] == [(obj.freed, obj.patched) for obj in patch.objects]

    def test_unlinked_before_directory_goes(self, core, free_pending):
        """While the free is pending the patch has left klp_patches but still holds the module."""
        patch = load(core, "lp_a")

        core.enabled_store(patch, False)

        assert ([], 1, False) == (core.patches, patch.module.refcnt, patch.freed)

    def test_pending_free_finishes_with_reference_dropped(self, core, free_pending):
        """The deferred klp_free_patch_finish() drops the module reference."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        free_pending()

        assert (0, True) == (patch.module.refcnt, patch.freed)


class TestFreedState:
    """docs/kernel.md §8 FREED: the patch is gone, the livepatch module is still loaded."""

    def test_module_stays_loaded(self, core):
        """Freeing the patch does not unload its module."""
        patch = load(core, "lp_a")

        core.enabled_store(patch, False)

        assert (patch.module, None) == (core.modules["lp_a"], patch.module.patch)

    def test_rmmod_succeeds(self, core):
        """With the reference dropped, the module can be removed."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        core.rmmod("lp_a")

        assert ({}, False) == (core.modules, patch.module.loaded)

    def test_insmod_after_rmmod_creates_a_new_patch(self, core):
        """Loading the module again gives a fresh, enabled patch."""
        old = load(core, "lp_a")
        core.enabled_store(old, False)
        core.rmmod("lp_a")

        new = load(core, "lp_a")

        assert (False, [new]) == (new is old, core.patches)

    @pytest.mark.parametrize("value", [True, False])
    def test_store_on_freed_patch_is_enodev(self, core, value):
        """A write through a handle to a freed patch fails with ENODEV (docs/kernel.md §1.2)."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        assert errno.ENODEV == errno_of(core.enabled_store, patch, value)


class TestEnabledStore:
    """docs/kernel.md §2.1 enabled_store: errnos and their guards."""

    def test_enable_enabled_patch_is_einval(self, core):
        """Writing 1 to an enabled patch fails: already in the requested state."""
        patch = load(core, "lp_a")

        assert errno.EINVAL == errno_of(core.enabled_store, patch, True)

    def test_enable_patching_patch_is_einval(self, core):
        """Writing 1 during the patch's own patching transition fails: already requested."""
        patch = patching(core)

        assert errno.EINVAL == errno_of(core.enabled_store, patch, True)

    def test_disable_unpatching_patch_is_einval(self, core):
        """Writing 0 during the patch's own unpatching transition fails: already requested."""
        patch = unpatching(core)

        assert errno.EINVAL == errno_of(core.enabled_store, patch, False)

    def test_same_state_write_changes_nothing(self, core):
        """A refused same-state write neither reverses the transition nor logs."""
        patch = unpatching(core)
        seq = core.log.last_seq

        errno_of(core.enabled_store, patch, False)

        assert (0, 1, []) == (patch.enabled, row(core, patch)["transition"], lines(core, seq))

    def test_reenable_disabled_patch_is_einval(self, core, free_pending):
        """A disabled patch whose free is pending cannot be enabled again."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        assert errno.EINVAL == errno_of(core.enabled_store, patch, True)

    def test_disable_disabled_patch_is_einval(self, core, free_pending):
        """A disabled patch whose free is pending refuses another 0."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        assert errno.EINVAL == errno_of(core.enabled_store, patch, False)

    def test_disable_during_other_transition_is_ebusy(self, core):
        """Disabling one patch while another is in transition fails with EBUSY."""
        first = load(core, "lp_a")
        patching(core, "lp_b", MEMINFO)

        assert errno.EBUSY == errno_of(core.enabled_store, first, False)

    def test_ebusy_leaves_patch_enabled(self, core):
        """The refused disable leaves the patch enabled and the other transition running."""
        first = load(core, "lp_a")
        second = patching(core, "lp_b", MEMINFO)

        errno_of(core.enabled_store, first, False)

        assert (1, second) == (first.enabled, core.engine.patch)


class TestForceStore:
    """docs/kernel.md §2.1 force_store."""

    def test_false_is_noop_without_transition(self, core):
        """Writing 0 to force succeeds on a patch that is not in transition."""
        patch = load(core, "lp_a")
        seq = core.log.last_seq

        core.force_store(patch, False)

        assert ([], False) == (lines(core, seq), patch.forced)

    def test_false_does_not_force(self, core):
        """Writing 0 during a transition moves no task and marks nothing."""
        patch = unpatching(core)

        core.force_store(patch, False)
        core.tick()

        assert (patch, False) == (core.engine.patch, patch.forced)

    def test_enabled_patch_is_einval(self, core):
        """Forcing a patch that is not in transition fails with EINVAL."""
        patch = load(core, "lp_a")

        assert errno.EINVAL == errno_of(core.force_store, patch, True)

    def test_other_patch_in_transition_is_einval(self, core):
        """Forcing a patch while another one is in transition fails with EINVAL."""
        first = load(core, "lp_a")
        patching(core, "lp_b", MEMINFO)

        assert errno.EINVAL == errno_of(core.force_store, first, True)


class TestInsmod:
    """The module loader's side of docs/kernel.md §3.1 and §3.2."""

    def test_ebusy_during_another_transition(self, core):
        """A livepatch load fails with EBUSY while another patch is in transition."""
        patching(core)

        assert errno.EBUSY == errno_of(core.insmod, livepatch("lp_b", MEMINFO))

    def test_ebusy_leaves_module_unloaded(self, core):
        """After the EBUSY the module is gone and klp_patches holds only the first patch."""
        first = patching(core)

        errno_of(core.insmod, livepatch("lp_b", MEMINFO))

        assert (["lp_a"], [first]) == (list(core.modules), core.patches)

    def test_eexist_for_loaded_module(self, core):
        """Loading a module of the same name as a loaded one fails with EEXIST."""
        load(core, "lp_a")

        assert errno.EEXIST == errno_of(core.insmod, livepatch("lp_a"))

    def test_eexist_after_disable(self, core):
        """A disabled livepatch's module stays loaded, so loading it again fails with EEXIST."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        assert errno.EEXIST == errno_of(core.insmod, livepatch("lp_a"))

    def test_livepatch_without_objects_is_einval(self, core):
        """klp_enable_patch() refuses a patch without objects, and the module is not loaded."""
        code = errno_of(core.insmod, ModuleDef("lp_a"))

        assert (errno.EINVAL, {}) == (code, core.modules)

    def test_plain_module_has_no_patch(self, core):
        """A module that is not a livepatch loads without a patch or a taint."""
        module = core.insmod(ModuleDef("test_klp_mod", livepatch=False))

        assert (None, [], 0, 0) == (module.patch, core.patches, module.refcnt, core.tainted)

    def test_unmarked_module_calling_klp_enable_patch_is_einval(self, core):
        """A module with objects but no livepatch marking fails with EINVAL and a pr_err."""
        unmarked = ModuleDef("lp_a", livepatch=False, objects=livepatch("lp_a").objects)

        code = errno_of(core.insmod, unmarked)

        assert (errno.EINVAL, ["livepatch: module lp_a is not marked as a livepatch module"]) == (
            code,
            lines(core),
        )

    def test_incompatible_state_wins_over_ebusy(self, core):
        """The state check runs before the transition check: EINVAL, not EBUSY."""
        load(core, "lp_a", states=[(1, 2)])
        sleeper(core, MEMINFO[0])
        load(core, "lp_b", MEMINFO)

        assert errno.EINVAL == errno_of(core.insmod, livepatch("lp_c", states=[(1, 1)]))

    def test_object_name_too_long_is_einval(self, core):
        """An object name of MODULE_NAME_LEN (56) characters fails with EINVAL."""
        definition = ModuleDef("lp_a", objects=(ObjectDef("m" * 56, (FuncDef(*CMDLINE),)),))

        assert (errno.EINVAL, {}) == (errno_of(core.insmod, definition), core.modules)

    @pytest.mark.parametrize(("version", "length"), [((6, 0), 128), ((6, 1), 512)])
    def test_func_name_too_long_is_einval(self, version, length):
        """An old_name of KSYM_NAME_LEN characters fails with EINVAL, before "enabling patch"."""
        core = make_core(Profile(version))

        code = errno_of(core.insmod, livepatch("lp_a", ("f" * length, "new_f")))

        assert (errno.EINVAL, ["lp_a: tainting kernel with TAINT_LIVEPATCH"]) == (
            code,
            lines(core),
        )

    @pytest.mark.parametrize(("version", "length"), [((6, 0), 127), ((6, 1), 511)])
    def test_longest_func_name_loads(self, version, length):
        """An old_name one shorter than KSYM_NAME_LEN is accepted."""
        core = make_core(Profile(version))

        assert load(core, "lp_a", ("f" * length, "new_f")).enabled

    def test_module_named_vmlinux_is_einval(self, core):
        """Since 5.8 klp_module_coming() refuses a module called vmlinux."""
        code = errno_of(core.insmod, ModuleDef("vmlinux", livepatch=False))

        assert (errno.EINVAL, ["livepatch: vmlinux.ko: invalid module name"], {}) == (
            code,
            lines(core),
            core.modules,
        )

    def test_module_named_vmlinux_loads_before_5_8(self):
        """Before 5.8 nothing refuses a module called vmlinux (docs/kernel.md §3.4)."""
        core = make_core(Profile((5, 7)))

        core.insmod(ModuleDef("vmlinux", livepatch=False))

        assert ["vmlinux"] == list(core.modules)


class TestRmmod:
    """docs/kernel.md §3.2: a livepatch module is held while its patch exists."""

    def test_ewouldblock_while_enabled(self, core):
        """An enabled patch's module cannot be removed."""
        load(core, "lp_a")

        assert errno.EWOULDBLOCK == errno_of(core.rmmod, "lp_a")

    def test_ewouldblock_while_in_transition(self, core):
        """A patch in transition keeps its module."""
        patching(core)

        assert errno.EWOULDBLOCK == errno_of(core.rmmod, "lp_a")

    def test_ewouldblock_after_forced_unpatching(self, core):
        """A forced unpatching never drops the module reference."""
        patch = unpatching(core)
        core.force_store(patch, True)
        core.tick()

        assert errno.EWOULDBLOCK == errno_of(core.rmmod, "lp_a")

    def test_refused_rmmod_keeps_module(self, core):
        """The refused rmmod leaves the module and its patch in place."""
        patch = load(core, "lp_a")

        errno_of(core.rmmod, "lp_a")

        assert (patch.module, [patch]) == (core.modules["lp_a"], core.patches)

    def test_enoent_for_unknown_module(self, core):
        """Removing a module that is not loaded fails with ENOENT."""
        assert errno.ENOENT == errno_of(core.rmmod, "lp_a")


class TestForcedFlag:
    """docs/kernel.md §2.1 force: which patches get ``forced`` and keep their module."""

    def test_forced_unpatching_marks_the_patch(self, core):
        """Forcing an unpatching transition marks the patch being removed."""
        patch = unpatching(core)

        core.force_store(patch, True)

        assert patch.forced

    def test_forced_unpatching_spares_other_patches(self, core):
        """On 5.18+ the other patches in klp_patches are not marked."""
        other = load(core, "lp_b", MEMINFO)
        patch = unpatching(core)

        core.force_store(patch, True)

        assert not other.forced

    def test_forced_patching_of_plain_patch_is_not_marked(self, core):
        """On 5.18+ forcing a plain patch to patched marks nothing."""
        other = load(core, "lp_b", MEMINFO)
        patch = patching(core)

        core.force_store(patch, True)

        assert (False, False) == (patch.forced, other.forced)

    def test_forced_patching_leaves_module_removable(self, core):
        """On 5.18+ a force-enabled plain patch can later be disabled and its module removed."""
        patch = patching(core)
        core.force_store(patch, True)
        core.tick()
        core.enabled_store(patch, False)

        core.rmmod("lp_a")

        assert {} == core.modules

    def test_before_5_18_force_marks_every_patch(self):
        """Before 5.18 forcing marks every patch in klp_patches, whatever the direction."""
        core = make_core(Profile((5, 17)))
        other = load(core, "lp_b", MEMINFO)
        patch = patching(core)

        core.force_store(patch, True)

        assert (True, True) == (patch.forced, other.forced)

    def test_before_5_18_forced_patching_keeps_module(self):
        """Before 5.18 a force-enabled patch's module stays in use after its disable."""
        core = make_core(Profile((5, 17)))
        patch = patching(core)
        core.force_store(patch, True)
        core.tick()
        core.enabled_store(patch, False)

        assert (1, errno.EWOULDBLOCK) == (patch.module.refcnt, errno_of(core.rmmod, "lp_a"))

    def test_forced_replace_marks_replaced_patches(self, core):
        """Forcing a replace patch marks the patches it replaces, not itself."""
        old = load(core, "lp_a")
        new = patching(core, "lp_r", MEMINFO, replace=True)

        core.force_store(new, True)

        assert (True, False) == (old.forced, new.forced)

    def test_forced_replace_keeps_replaced_modules(self, core):
        """The replaced patches are freed but their modules stay in use."""
        old = load(core, "lp_a")
        new = patching(core, "lp_r", MEMINFO, replace=True)
        core.force_store(new, True)
        core.tick()

        assert (True, 1, errno.EWOULDBLOCK) == (
            old.freed,
            old.module.refcnt,
            errno_of(core.rmmod, "lp_a"),
        )


@pytest.fixture
def replacing(core):
    """Two patches, then a replace patch that patches only cmdline and stays in transition.

    A task asleep in the older patch's meminfo replacement blocks the NOP that
    replaces it. Returns (old_a, old_mod, new).
    """
    old_a = load(core, "lp_a")
    old_mod = core.insmod(parse(MODULE_PATCH, "x.toml")).patch
    sleeper(core, MEMINFO[1])
    new = load(core, "lp_r", ("cmdline_proc_show", "replace_cmdline_proc_show"), replace=True)
    return old_a, old_mod, new


def layout(patch) -> list:
    """Each object's name and dynamic flag with its (func dir, nop) pairs."""
    return [
        (obj.name, obj.dynamic, [(func.dirname, func.nop) for func in obj.funcs])
        for obj in patch.objects
    ]


class TestAtomicReplace:
    """docs/kernel.md §3.3."""

    def test_nops_and_dynamic_objects_during_transition(self, core, replacing):
        """While in transition the replace patch has NOPs for everything the old patches patch."""
        *_, new = replacing

        assert [
            ("vmlinux", False, [("cmdline_proc_show,1", False), ("meminfo_proc_show,1", True)]),
            ("test_klp_mod", True, [("mod_func,2", True)]),
        ] == layout(new)

    def test_one_nop_per_function(self, core):
        """Two older patches of one function give the replace patch a single NOP for it."""
        load(core, "lp_a")
        load(core, "lp_b", (CMDLINE[0], "b_cmdline_proc_show"))

        new = load(core, "lp_r", MEMINFO, replace=True)

        assert [("vmlinux", False, [("meminfo_proc_show,1", False)])] == layout(new)

    def test_old_patches_stay_enabled_during_transition(self, core, replacing):
        """The patches being replaced keep their rows until the transition completes."""
        old_a, old_mod, _ = replacing

        assert [
            ENABLED_ROW,
            {**ENABLED_ROW, "stack_order": 2},
        ] == [row(core, old_a), row(core, old_mod)]

    def test_nops_discarded_after_completion(self, core, replacing):
        """On completion the NOPs and the dynamic objects are gone."""
        *_, new = replacing

        unblock(core)

        assert [("vmlinux", False, [("cmdline_proc_show,1", False)])] == layout(new)

    def test_replaced_patches_are_freed(self, core, replacing):
        """On completion the older patches are disabled and freed, their references dropped."""
        old_a, old_mod, new = replacing

        unblock(core)

        assert ([freed_row(), freed_row()], [new]) == (
            [row(core, old_a), row(core, old_mod)],
            core.patches,
        )

    def test_replace_patch_becomes_first(self, core, replacing):
        """The replace patch ends ENABLED, alone in klp_patches."""
        *_, new = replacing

        unblock(core)

        assert ENABLED_ROW == row(core, new)

    def test_replaced_modules_can_be_removed(self, core, replacing):
        """The replaced patches' modules can be removed without disabling them."""
        unblock(core)

        core.rmmod("lp_a")
        core.rmmod("lp_mod")

        assert ["lp_r"] == list(core.modules)

    def test_replaced_funcs_are_unpatched(self, core, replacing):
        """Only the replace patch's own funcs stay patched."""
        old_a, old_mod, new = replacing

        unblock(core)

        assert ([False], [False, False], [True]) == tuple(
            [func.patched for func in patch.funcs()] for patch in (old_a, old_mod, new)
        )

    def test_reversal_leaves_old_patches_untouched(self, core, replacing):
        """A reversed replace transition frees only the new patch."""
        old_a, old_mod, new = replacing
        core.enabled_store(new, False)

        core.tick()

        assert ([old_a, old_mod], True, 0) == (core.patches, new.freed, new.module.refcnt)

    def test_reversal_keeps_old_funcs_patched(self, core, replacing):
        """A reversed replace leaves the older patches' vmlinux funcs patched."""
        old_a, old_mod, new = replacing
        core.enabled_store(new, False)

        core.tick()

        # test_klp_mod is not loaded, so its func was never patched.
        assert [True, True, False] == [func.patched for func in [*old_a.funcs(), *old_mod.funcs()]]

    def test_replace_completion_logs_only_its_own_lines(self, core, replacing):
        """Replacing prints no line for the replaced patches."""
        seq = core.log.last_seq

        unblock(core)

        assert [
            "livepatch: 'lp_r': completing patching transition",
            "livepatch: 'lp_r': patching complete",
        ] == lines(core, seq)


class TestStackOrder:
    """docs/kernel.md §1.3 stack_order: the position in klp_patches."""

    def test_load_order(self, core):
        """Patches are numbered 1, 2, 3 in load order."""
        patches = [load(core, "lp_a"), load(core, "lp_b", MEMINFO), load(core, "lp_c")]

        assert [1, 2, 3] == [core.stack_order(patch) for patch in patches]

    def test_removal_renumbers_later_patches(self, core):
        """Disabling the middle patch moves the last one down."""
        first, middle, last = load(core, "lp_a"), load(core, "lp_b", MEMINFO), load(core, "lp_c")

        core.enabled_store(middle, False)

        assert [1, 2] == [core.stack_order(first), core.stack_order(last)]

    def test_unlinked_patch_reads_list_length(self, core):
        """An unlinked patch counts past the end of the list, like the kernel's loop."""
        load(core, "lp_a")
        middle = load(core, "lp_b", MEMINFO)
        load(core, "lp_c")

        core.enabled_store(middle, False)

        assert 2 == core.stack_order(middle)


class TestStateCompatibility:
    """docs/kernel.md §3.1 step 5: klp states of installed patches must be kept."""

    INCOMPATIBLE = (
        "livepatch: Livepatch patch (lp_b) is not compatible with the already installed "
        "livepatches."
    )

    def test_lower_version_is_einval(self, core):
        """A new patch with an older version of an installed state fails with EINVAL."""
        load(core, "lp_a", states=[(1, 2)])

        code = errno_of(core.insmod, livepatch("lp_b", MEMINFO, states=[(1, 1)]))

        assert (errno.EINVAL, ["lp_a"]) == (code, list(core.modules))

    def test_incompatibility_logs_only_its_error(self, core):
        """The refused load prints the pr_err and nothing else, not even "enabling patch"."""
        load(core, "lp_a", states=[(1, 2)])
        seq = core.log.last_seq

        errno_of(core.insmod, livepatch("lp_b", MEMINFO, states=[(1, 1)]))

        assert [self.INCOMPATIBLE] == lines(core, seq)

    @pytest.mark.parametrize("version", [2, 3])
    def test_same_or_newer_version_is_compatible(self, core, version):
        """A new patch keeping the state at the same or a newer version loads."""
        load(core, "lp_a", states=[(1, 2)])

        patch = load(core, "lp_b", MEMINFO, states=[(1, version)])

        assert patch.enabled

    def test_replace_patch_lacking_state_is_einval(self, core):
        """A replace patch must carry every installed state."""
        load(core, "lp_a", states=[(1, 0)])

        code = errno_of(core.insmod, livepatch("lp_b", MEMINFO, replace=True, states=[(2, 0)]))

        assert (errno.EINVAL, [self.INCOMPATIBLE]) == (code, lines(core)[-1:])

    def test_plain_patch_lacking_state_is_compatible(self, core):
        """A patch that is not a replace patch may leave an installed state alone."""
        load(core, "lp_a", states=[(1, 0)])

        patch = load(core, "lp_b", MEMINFO)

        assert patch.enabled

    def test_freed_patches_do_not_count(self, core):
        """Once the state's patch is disabled, an older version loads again."""
        old = load(core, "lp_a", states=[(1, 2)])
        core.enabled_store(old, False)

        patch = load(core, "lp_b", MEMINFO, states=[(1, 1)])

        assert patch.enabled


class TestKernelLog:
    """The lines the lifecycle prints (docs/kernel.md §4, §5, §7), in order."""

    def test_load_and_disable(self, core):
        """A clean load and disable prints the selftests' lines after the taint line."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)

        assert [
            "lp_a: tainting kernel with TAINT_LIVEPATCH",
            "livepatch: enabling patch 'lp_a'",
            "livepatch: 'lp_a': initializing patching transition",
            "livepatch: 'lp_a': starting patching transition",
            "livepatch: 'lp_a': completing patching transition",
            "livepatch: 'lp_a': patching complete",
            "livepatch: 'lp_a': initializing unpatching transition",
            "livepatch: 'lp_a': starting unpatching transition",
            "livepatch: 'lp_a': completing unpatching transition",
            "livepatch: 'lp_a': unpatching complete",
        ] == lines(core)

    def test_taint_line_printed_once(self, core):
        """Only the first livepatch module loaded prints the taint line."""
        load(core, "lp_a")
        seq = core.log.last_seq

        load(core, "lp_b", MEMINFO)

        assert ["livepatch: enabling patch 'lp_b'"] == lines(core, seq)[:1]

    def test_taint_set_even_if_enable_fails(self, core):
        """Loading a livepatch module taints the kernel before klp_enable_patch() can fail."""
        errno_of(core.insmod, ModuleDef("lp_a"))

        assert (TAINT_LIVEPATCH, ["lp_a: tainting kernel with TAINT_LIVEPATCH"]) == (
            core.tainted,
            lines(core),
        )

    def test_taint_stays_after_unload(self, core):
        """TAINT_LIVEPATCH is never cleared."""
        patch = load(core, "lp_a")
        core.enabled_store(patch, False)
        core.rmmod("lp_a")

        assert TAINT_LIVEPATCH == core.tainted

    def test_ebusy_insmod_prints_nothing(self, core):
        """A load refused with EBUSY leaves no line (the kernel is already tainted)."""
        patching(core)
        seq = core.log.last_seq

        errno_of(core.insmod, livepatch("lp_b", MEMINFO))

        assert [] == lines(core, seq)

    def test_blocked_load(self, core):
        """A blocked load stops after "starting"; the retry that completes it prints the rest."""
        patching(core)

        unblock(core)

        assert [
            "lp_a: tainting kernel with TAINT_LIVEPATCH",
            "livepatch: enabling patch 'lp_a'",
            "livepatch: 'lp_a': initializing patching transition",
            "livepatch: 'lp_a': starting patching transition",
            "livepatch: 'lp_a': completing patching transition",
            "livepatch: 'lp_a': patching complete",
        ] == lines(core)

    def test_reversal(self, core):
        """Reversing a patching transition prints the reversal and a new start."""
        patch = patching(core)
        seq = core.log.last_seq

        core.enabled_store(patch, False)
        core.tick()

        assert [
            "livepatch: 'lp_a': reversing transition from patching to unpatching",
            "livepatch: 'lp_a': starting unpatching transition",
            "livepatch: 'lp_a': completing unpatching transition",
            "livepatch: 'lp_a': unpatching complete",
        ] == lines(core, seq)

    def test_forced_unpatching(self, core):
        """Forcing an unpatching warns about the "patched" state, then completes at the retry."""
        patch = unpatching(core)
        seq = core.log.last_seq

        core.force_store(patch, True)
        core.tick()

        assert [
            "livepatch: forcing remaining tasks to the patched state",
            "livepatch: 'lp_a': completing unpatching transition",
            "livepatch: 'lp_a': unpatching complete",
        ] == lines(core, seq)


class TestReset:
    """reset() is a freshly booted kernel, sysctl and dynamic debug included."""

    def test_restores_ftrace_enabled_and_dynamic_debug(self):
        """ftrace_enabled goes back to 1 and the pr_debug sites to their start-up set."""
        core = make_core(Profile((7, 2)))  # the last release that can turn ftrace off
        core.set_ftrace_enabled(False)
        before = core.log.dyndbg_control()
        core.log.dyndbg_control("file kernel/livepatch/* -p")

        core.reset()

        assert (True, before) == (core.ftrace_enabled, core.log.dyndbg_control())
