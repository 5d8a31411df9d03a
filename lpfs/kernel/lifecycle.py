"""How a patch comes and goes: the lifecycle of the emulated release.

Releases differ in what a livepatch module's init and exit call, what
``echo 0/1 > enabled`` does to a patch not in transition, who holds the
module's reference, what a force marks, and whether a patch reaches modules
loaded after it. ``Core`` picks one ``Lifecycle`` from the profile when it
boots: ``Modern`` (5.1 on) here, ``Legacy`` (4.15-5.0) in legacy.py. The
mechanisms both share (klp_init_patch(), the transition's start, the free)
stay in the core. Methods expect the core lock held.
"""

import errno
from typing import Protocol

from lpfs.errors import KernelError
from lpfs.kernel.klog import KERN_ERR
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import Module, Patch
from lpfs.kernel.tasks import PatchState


class Engine(Protocol):
    """What a lifecycle reads of the transition: the patch in transition, if any."""

    @property
    def patch(self) -> Patch | None: ...


class Klp(Protocol):
    """What a lifecycle asks of the livepatch core."""

    @property
    def profile(self) -> Profile: ...

    @property
    def engine(self) -> Engine: ...

    patches: list[Patch]

    def pr(self, level: int, text: str) -> None: ...

    def init_patch_locked(self, patch: Patch) -> None: ...

    def start_patching_locked(self, patch: Patch) -> None: ...

    def start_unpatching_locked(self, patch: Patch) -> None: ...

    def free_patch(self, patch: Patch, put_module: bool = True) -> None: ...

    def free_replaced_patches(self, new_patch: Patch) -> None: ...


class Lifecycle(Protocol):
    """The steps in which the releases' lifecycles differ."""

    @property
    def automatic_signals(self) -> bool:
        """Fake signals every 15th retry, the first announced; else only through the
        signal attribute, each announced."""
        ...

    def enable_at_init(self, module: Module) -> None:
        """The livepatch part of a module's init, after klp_enable_patch()'s common checks.

        Raises KernelError; the module is then refused.
        """
        ...

    def enabled_store(self, patch: Patch, enabled: bool) -> None:
        """enabled_store() for a patch not in transition whose state ``enabled`` changes."""
        ...

    def module_exit(self, module: Module) -> None:
        """The livepatch part of a module's exit."""
        ...

    def applies_to_module(self, patch: Patch) -> bool:
        """Whether klp_module_coming()/klp_module_going() (un)patch a module for ``patch``."""
        ...

    def transition_completed(self, patch: Patch, target: PatchState) -> None:
        """The end of klp_complete_transition(), the cancel path's included."""
        ...

    def free_unused_patches(self, patch: Patch) -> None:
        """The end of klp_try_complete_transition(), once it completed ``patch``'s
        transition: the frees that klp_complete_transition() leaves out, as the cancel
        path shares it."""
        ...

    def mark_forced(self, patch: Patch, target: PatchState) -> None:
        """The marks of klp_force_transition(): the modules it keeps referenced for good."""
        ...


class Modern:
    """5.1 on: klp_enable_patch() does it all, atomic replace included; a disabled
    patch is freed, never enabled again."""

    automatic_signals = True

    def __init__(self, core: Klp) -> None:
        self._core = core

    def enable_at_init(self, module: Module) -> None:
        """klp_enable_patch() past its first checks: compatible states, the module
        reference, klp_init_patch() and __klp_enable_patch(); the patch is freed if
        either fails."""
        if not self._is_patch_compatible(module):
            self._core.pr(
                KERN_ERR,
                f"Livepatch patch ({module.name}) is not compatible with the already "
                "installed livepatches.",
            )
            raise KernelError(errno.EINVAL)
        module.refcnt += 1  # try_module_get()
        patch = Patch(module, replace=self._replace_flag(module), states=module.definition.states)
        module.patch = patch
        try:
            self._core.init_patch_locked(patch)
            self._enable(patch)
        except KernelError:
            self._core.free_patch(patch)
            raise

    def _replace_flag(self, module: Module) -> bool:
        definition = module.definition
        if definition.replace_param is not None:
            return bool(module.params[definition.replace_param])
        return definition.replace

    def _is_patch_compatible(self, module: Module) -> bool:
        """klp_is_patch_compatible(): the new patch must keep every installed state."""
        if not self._core.profile.has_states:
            return True
        new_states = {state.id: state for state in module.definition.states}
        for old_patch in self._core.patches:
            for old_state in old_patch.states:
                state = new_states.get(old_state.id)
                if state is None:
                    if self._replace_flag(module):
                        return False
                elif state.version < old_state.version:
                    return False
        return True

    def _enable(self, patch: Patch) -> None:
        """__klp_enable_patch(): EBUSY during another transition, else start patching."""
        if self._core.engine.patch is not None:
            raise KernelError(errno.EBUSY)
        self._core.start_patching_locked(patch)

    def enabled_store(self, patch: Patch, enabled: bool) -> None:
        """Only a disable: a disabled patch cannot be enabled again (EINVAL)."""
        if enabled:
            raise KernelError(errno.EINVAL)
        self._disable(patch)

    def _disable(self, patch: Patch) -> None:
        """__klp_disable_patch(): start unpatching; EBUSY during any transition."""
        if self._core.engine.patch is not None:
            raise KernelError(errno.EBUSY)
        self._core.start_unpatching_locked(patch)

    def module_exit(self, module: Module) -> None:
        """Nothing: a patch holds its module, so the patch is freed before the exit runs."""

    def applies_to_module(self, patch: Patch) -> bool:
        """Every patch in klp_patches: a disabled one is freed, so never there."""
        return True

    def transition_completed(self, patch: Patch, target: PatchState) -> None:
        """Nothing: the module reference goes with the free."""

    def free_unused_patches(self, patch: Patch) -> None:
        """Free a disabled patch (klp_free_patch_async()), or the patches a replace patch
        replaced (klp_free_replaced_patches_async())."""
        if not patch.enabled:
            self._core.free_patch(patch)
        elif patch.replace:
            self._core.free_replaced_patches(patch)

    def mark_forced(self, patch: Patch, target: PatchState) -> None:
        """Every patch in klp_patches before 5.18; from then on only those being
        removed: the transition patch when unpatching, the replaced ones under a
        replace patch."""
        if not self._core.profile.forced_marks_only_removed:
            for each in self._core.patches:
                each.forced = True
        elif target == PatchState.UNPATCHED:
            patch.forced = True
        elif patch.replace:
            for each in self._core.patches:
                if each is not patch:
                    each.forced = True
