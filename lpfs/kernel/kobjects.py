"""Kobjects a module adds to /sys/kernel, and what their attributes show.

A module file's ``[[kobject]]`` is what kobject_create_and_add(name,
kernel_kobj) and sysfs_create_file() make in a module's init: a directory
/sys/kernel/<name> with attribute files, there from the module's init until
its exit. An attribute shows a constant, a module parameter, or a count the
task model keeps: the pids of an int array parameter that have not yet
called the module's replacement of a function, counted down as
test_klp_syscall's lp_sys_getpid() does.
"""

from __future__ import annotations

import errno
from typing import Final, Protocol

from lpfs.errors import KernelError
from lpfs.kernel import params
from lpfs.kernel.klog import KERN_ERR, KERN_WARNING, KernelLog
from lpfs.kernel.structs import AttrDef, Func, KobjectDef, Module, ParamText, PendingCallers
from lpfs.kernel.tasks import SchedState, SimulatedTasks

LIVEPATCH_KOBJECT: Final = "livepatch"  # klp_root_kobj, beside which modules add theirs
# What the kernel itself has in /sys/kernel (kernel/ksysfs.c and the subsystems
# that add to kernel_kobj), as a Debian amd64 kernel shows it: a module's
# kobject of one of these names fails to register.
KERNEL_OWN: Final = frozenset(
    {
        LIVEPATCH_KOBJECT,
        *("address_bits", "boot_params", "btf", "cgroup", "config", "cpu_byteorder"),
        *("debug", "fscaps", "iommu_groups", "irq", "kexec_crash_loaded"),
        *("kexec_crash_size", "kexec_loaded", "mm", "notes", "oops_count", "profiling"),
        *("rcu_expedited", "rcu_normal", "reboot", "security", "slab", "software_nodes"),
        *("tracing", "uevent_helper", "uevent_seqnum", "vmcoreinfo", "warn_count"),
    }
)


class Kernel(Protocol):
    """What kobjects ask of the kernel: its modules, its log, its tasks and who runs what."""

    modules: dict[str, Module]
    log: KernelLog
    tasks: SimulatedTasks

    def running_func(self, function: str, pid: int) -> Func | None: ...


def find(core: Kernel, name: str) -> tuple[Module, KobjectDef] | None:
    """The loaded module that owns /sys/kernel/<name>, and its kobject."""
    for module in core.modules.values():
        for kobj in module.definition.kobjects:
            if kobj.name == name:
                return module, kobj
    return None


def create(core: Kernel, module: Module) -> None:
    """kobject_create_and_add() and sysfs_create_file() in the module's init.

    A name /sys/kernel already has fails as kobject_add_internal() does, and
    the init returns ENOMEM for the NULL kobject, as the kernel's test
    modules do. The pids an attribute counts are adopted by the task model:
    those it does not know are processes of this machine.
    """
    for kobj in module.definition.kobjects:
        found = find(core, kobj.name)
        if kobj.name in KERNEL_OWN or (found is not None and found[0] is not module):
            core.log.printk(
                KERN_WARNING, f"sysfs: cannot create duplicate filename '/kernel/{kobj.name}'"
            )
            core.log.printk(
                KERN_ERR,
                f"kobject: kobject_add_internal failed for {kobj.name} with -EEXIST, don't try "
                "to register things with the same name in the same directory.",
            )
            raise KernelError(errno.ENOMEM)
        for attr in kobj.attrs:
            if isinstance(attr.value, PendingCallers):
                pids = module.params[attr.value.param]
                assert isinstance(pids, tuple)
                module.pending_callers.setdefault(attr.value, [int(pid) for pid in pids])
                for pid in pids:
                    core.tasks.adopt_process(int(pid))


def show(core: Kernel, module: Module, attr: AttrDef) -> str:
    """The attribute's show(): the constant, the parameter, or the pids left to call."""
    value = attr.value
    if isinstance(value, str):
        return value
    if isinstance(value, ParamText):
        param = module.definition.param(value.param)
        assert param is not None
        return params.show(param, module.params[value.param])
    core.tasks.follow(module.pending_callers[value])  # their states as they are now
    note_replacement_calls(core)
    return f"{len(module.pending_callers[value])}\n"


def note_replacement_calls(core: Kernel) -> None:
    """lp_sys_getpid()'s countdown: a listed task that runs calls the function in a loop, so
    once it runs the module's replacement it has called it, and leaves the count."""
    for module in core.modules.values():
        patch = module.patch
        if patch is None:
            continue
        for callers, pids in module.pending_callers.items():
            for pid in set(pids):
                task = core.tasks.get(pid)
                if task is None or task.state != SchedState.RUNNING:
                    continue
                func = core.running_func(callers.function, pid)
                if func is not None and any(func is own for own in patch.funcs()):
                    pids[:] = [each for each in pids if each != pid]
