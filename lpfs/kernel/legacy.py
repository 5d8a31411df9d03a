"""The 4.15-5.0 lifecycle: a patch is registered, then enabled, and stays registered.

A livepatch module's init calls klp_register_patch() (the directory appears,
``enabled`` reads 0) and then klp_enable_patch(); its exit calls
klp_unregister_patch(). Disabling leaves the patch registered and ``echo 1``
enables it again, subject to the stacking rules: only the first disabled
patch can be enabled, only the last enabled one disabled. Functions here
expect the core lock held.
"""

import errno
from typing import Protocol

from lpfs.errors import KernelError
from lpfs.kernel.structs import Patch
from lpfs.kernel.transition import Transition


class Klp(Protocol):
    """What this lifecycle asks of the livepatch core."""

    patches: list[Patch]
    engine: Transition

    def init_patch_locked(self, patch: Patch) -> None: ...

    def start_patching_locked(self, patch: Patch) -> None: ...

    def start_unpatching_locked(self, patch: Patch) -> None: ...

    def free_patch(self, patch: Patch, put_module: bool = True) -> None: ...


def register_and_enable(core: Klp, patch: Patch) -> None:
    """A sample module's init of that time: register, then enable; unregister if that fails.

    Raises KernelError with the failing step's errno.
    """
    try:
        core.init_patch_locked(patch)
        enable(core, patch)
    except KernelError:
        unregister(core, patch)
        raise


def enable(core: Klp, patch: Patch) -> None:
    """__klp_enable_patch() of 4.15-5.0: takes a module reference on every enable.

    Raises KernelError: EBUSY during a transition or when the patch below is
    disabled, EINVAL if already enabled.
    """
    if core.engine.patch is not None:
        raise KernelError(errno.EBUSY)
    if patch.enabled:
        raise KernelError(errno.EINVAL)
    position = core.patches.index(patch)
    if position > 0 and not core.patches[position - 1].enabled:
        raise KernelError(errno.EBUSY)  # only the first disabled patch can be enabled
    patch.module.refcnt += 1
    core.start_patching_locked(patch)


def disable(core: Klp, patch: Patch) -> None:
    """__klp_disable_patch() of 4.15-5.0.

    Raises KernelError: EINVAL if not enabled, EBUSY during a transition or
    when the patch above is enabled.
    """
    if not patch.enabled:
        raise KernelError(errno.EINVAL)
    if core.engine.patch is not None:
        raise KernelError(errno.EBUSY)
    position = core.patches.index(patch)
    if position + 1 < len(core.patches) and core.patches[position + 1].enabled:
        raise KernelError(errno.EBUSY)  # only the last enabled patch can be disabled
    core.start_unpatching_locked(patch)


def unregister(core: Klp, patch: Patch) -> None:
    """klp_unregister_patch(): the directory goes; registering took no module reference."""
    core.free_patch(patch, put_module=False)
