"""The 4.15-5.0 lifecycle: a patch is registered, then enabled, and stays registered.

A livepatch module's init calls klp_register_patch() (the directory appears,
``enabled`` reads 0) and then klp_enable_patch(); its exit calls
klp_unregister_patch(). Disabling leaves the patch registered and ``echo 1``
enables it again, subject to the stacking rules: only the first disabled
patch can be enabled, only the last enabled one disabled. Every enable takes
a module reference, which the end of an unpatching transition drops, unless
anything was ever forced. Methods expect the core lock held.
"""

import errno

from lpfs.errors import KernelError
from lpfs.kernel.lifecycle import Klp
from lpfs.kernel.structs import Module, Patch
from lpfs.kernel.tasks import PatchState


class Legacy:
    """The ``Lifecycle`` of 4.15-5.0, as core.c of that time has it."""

    automatic_signals = False

    def __init__(self, core: Klp) -> None:
        self._core = core
        # klp_force_transition() before 5.1: one flag for every patch, never cleared.
        self.forced = False

    def enable_at_init(self, module: Module) -> None:
        """A sample module's init of that time: klp_register_patch(), then klp_enable_patch()."""
        module.patch = Patch(module, replace=False, states=())
        self.register_and_enable(module.patch)

    def register_and_enable(self, patch: Patch) -> None:
        """Register, then enable; unregister if that fails.

        Raises KernelError with the failing step's errno.
        """
        try:
            self._core.init_patch_locked(patch)
            self.enable(patch)
        except KernelError:
            self.unregister(patch)
            raise

    def enabled_store(self, patch: Patch, enabled: bool) -> None:
        """1 enables, 0 disables, each by its stacking rule."""
        if enabled:
            self.enable(patch)
        else:
            self.disable(patch)

    def enable(self, patch: Patch) -> None:
        """__klp_enable_patch() of 4.15-5.0: takes a module reference on every enable.

        Raises KernelError: EBUSY during a transition or when the patch below is
        disabled, EINVAL if already enabled.
        """
        core = self._core
        if core.engine.patch is not None:
            raise KernelError(errno.EBUSY)
        if patch.enabled:
            raise KernelError(errno.EINVAL)
        position = core.patches.index(patch)
        if position > 0 and not core.patches[position - 1].enabled:
            raise KernelError(errno.EBUSY)  # only the first disabled patch can be enabled
        patch.module.refcnt += 1
        core.start_patching_locked(patch)

    def disable(self, patch: Patch) -> None:
        """__klp_disable_patch() of 4.15-5.0.

        Raises KernelError: EINVAL if not enabled, EBUSY during a transition or
        when the patch above is enabled.
        """
        core = self._core
        if not patch.enabled:
            raise KernelError(errno.EINVAL)
        if core.engine.patch is not None:
            raise KernelError(errno.EBUSY)
        position = core.patches.index(patch)
        if position + 1 < len(core.patches) and core.patches[position + 1].enabled:
            raise KernelError(errno.EBUSY)  # only the last enabled patch can be disabled
        core.start_unpatching_locked(patch)

    def module_exit(self, module: Module) -> None:
        """The sample module's exit: klp_unregister_patch() of its patch."""
        if module.patch is not None:
            self.unregister(module.patch)

    def unregister(self, patch: Patch) -> None:
        """klp_unregister_patch(): the directory goes; registering took no module reference."""
        self._core.free_patch(patch, put_module=False)

    def applies_to_module(self, patch: Patch) -> bool:
        """Only a patch that is enabled or in transition reaches a coming or going module."""
        return patch.enabled or patch is self._core.engine.patch

    def transition_completed(self, patch: Patch, target: PatchState) -> None:
        """klp_complete_transition() of that time drops the reference taken at enable
        once unpatched, unless anything was ever forced."""
        if target == PatchState.UNPATCHED and not self.forced:
            patch.module.refcnt -= 1

    def free_unused_patches(self, patch: Patch) -> None:
        """Nothing: a disabled patch stays registered until its module goes."""

    def mark_forced(self, patch: Patch, target: PatchState) -> None:
        """One global flag: no livepatch module's reference is dropped again."""
        self.forced = True
