"""The module loader's side of livepatch: loading and unloading modules.

insmod and rmmod as kernel/module/main.c runs them for livepatch's sake:
the taint at load, parameters, the module's own init and exit lines and
work items, and klp_module_coming()/klp_module_going(), which patch and
unpatch a target module's objects. ``Core`` owns one ``ModuleLoader`` and
is its ``Klp``: the loader takes the core's lock, and its methods ending in
``_locked`` expect it held.
"""

import errno
import threading
import time
from typing import Final, Protocol

from lpfs.errors import KernelError
from lpfs.kernel import kobjects, params
from lpfs.kernel.changes import StateChanges
from lpfs.kernel.klog import KERN_ERR, KERN_INFO, KERN_NOTICE, KERN_WARNING, KernelLog
from lpfs.kernel.kprobes import Kprobe, Kprobes
from lpfs.kernel.lifecycle import Lifecycle
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import (
    VMLINUX,
    Func,
    KlpObject,
    Module,
    ModuleDef,
    ModuleState,
    Patch,
    TaskDef,
)
from lpfs.kernel.tasks import SimulatedTasks, Task
from lpfs.kernel.transition import Transition

TAINT_LIVEPATCH: Final = 15
FIRST_WORKER_PID: Final = 10000  # pids of the work items modules start


class Klp(Protocol):
    """What the loader asks of the livepatch core (core.Core)."""

    lock: threading.RLock
    changed: StateChanges
    log: KernelLog
    profile: Profile
    tasks: SimulatedTasks
    modules: dict[str, Module]
    patches: list[Patch]
    engine: Transition
    tainted: int
    kprobes: Kprobes

    @property
    def lifecycle(self) -> Lifecycle: ...
    def pr(self, level: int, text: str) -> None: ...
    def klp_enable_patch_locked(self, module: Module) -> None: ...
    def init_object_loaded(self, obj: KlpObject) -> None: ...
    def pre_patch_callback(self, patch: Patch, obj: KlpObject) -> int: ...
    def post_patch_callback(self, patch: Patch, obj: KlpObject) -> None: ...
    def pre_unpatch_callback(self, patch: Patch, obj: KlpObject) -> None: ...
    def post_unpatch_callback(self, patch: Patch, obj: KlpObject) -> None: ...
    def patch_object(self, obj: KlpObject) -> int: ...
    def unpatch_object(self, obj: KlpObject, nops_only: bool = False) -> None: ...
    def running_func(self, function: str, pid: int, obj: str = VMLINUX) -> Func | None: ...
    def spawn_task(self, task: Task, parent: Task | None = None) -> Task: ...


class ModuleLoader:
    """insmod, rmmod and what livepatch does when modules come and go."""

    def __init__(self, core: Klp) -> None:
        self._core = core

    def insmod(self, definition: ModuleDef, args: tuple[str, ...] = ()) -> Module:
        """Load a module and run its init; a livepatch module's init is klp_enable_patch().

        ``args`` are ``name=value`` module parameters. Raises KernelError:
        EEXIST if a module of that name is loaded, or the error of
        klp_enable_patch(), in which case the module is not loaded.
        """
        if definition.livepatch:
            self._core.tasks.prefetch()  # the transition's first try, scanned without the lock
        with self._core.lock:
            if definition.name in self._core.modules:
                raise KernelError(errno.EEXIST)
            module = Module(
                definition,
                created=time.time(),
                params={p.name: p.default for p in definition.params},
            )
            if definition.livepatch:
                self._taint_livepatch_locked(module)
            self._core.modules[module.name] = module
            try:
                self._module_coming_locked(module)
            except KernelError:
                self._forget_module_locked(module)
                self._core.changed.notify_all()
                raise
            try:
                self._parse_args_locked(module, args)
                self._module_init_locked(module)
            except KernelError:
                module.state = ModuleState.GOING
                self._stop_module_tasks_locked(module)
                self._module_going_locked(module)
                self._forget_module_locked(module)
                raise
            finally:
                self._core.changed.notify_all()
            module.state = ModuleState.LIVE
            return module

    def _module_init_locked(self, module: Module) -> None:
        """The module's init function: its own lines, its kobjects, its kprobes, its work
        items, klp_enable_patch()."""
        definition = module.definition
        for text in definition.init:
            self.pr_module(module, text)
        kobjects.create(self._core, module)
        for kprobe in definition.kprobes:
            post = kprobe.post_handler
            has_post = bool(module.params[post]) if isinstance(post, str) else post
            self._core.kprobes.register(Kprobe(module.name, kprobe.symbol, has_post))
        for task_def in definition.tasks:
            self._start_module_task_locked(module, task_def)
        if definition.calls_klp_enable_patch:
            self._core.klp_enable_patch_locked(module)

    def rmmod(self, name: str) -> None:
        """Unload a module.

        Raises KernelError: ENOENT if it is not loaded, EWOULDBLOCK while a
        reference is held (a livepatch whose patch exists, or was forced).
        """
        with self._core.lock:
            module = self._core.modules.get(name)
            if module is None:
                raise KernelError(errno.ENOENT)
            if module.refcnt > 0:
                raise KernelError(errno.EWOULDBLOCK)
            module.state = ModuleState.GOING
            self._stop_module_tasks_locked(module)
            for text in module.definition.exit:
                self.pr_module(module, text)
            self._core.lifecycle.module_exit(module)
            self._module_going_locked(module)
            self._forget_module_locked(module)
            self._core.changed.notify_all()

    def _taint_livepatch_locked(self, module: Module) -> None:
        if not self._core.tainted & (1 << TAINT_LIVEPATCH):
            self._core.log.printk(
                KERN_NOTICE, f"{module.name}: tainting kernel with TAINT_LIVEPATCH"
            )
        self._core.tainted |= 1 << TAINT_LIVEPATCH

    def _parse_args_locked(self, module: Module, args: tuple[str, ...]) -> None:
        """parse_args(): set declared parameters; others are ignored with a warning.

        Raises KernelError (EINVAL, or ERANGE for an int out of range) for a
        value the parameter's type rejects.
        """
        for arg in args:
            name, sep, value = arg.partition("=")
            param = module.definition.param(name.replace("-", "_"))
            if param is None:
                self._core.log.printk(
                    KERN_WARNING, f"{module.name}: unknown parameter '{name}' ignored"
                )
                continue
            try:
                module.params[param.name] = params.parse(
                    param, value if sep else None, self._core.profile
                )
            except KernelError:
                self._core.log.printk(
                    KERN_ERR, f"{module.name}: '{value}' invalid for parameter '{param.name}'"
                )
                raise KernelError(errno.EINVAL) from None

    def set_param(self, module: Module, name: str, text: str) -> None:
        """A write to /sys/module/<module>/parameters/<name>. Raises KernelError."""
        param = module.definition.param(name)
        assert param is not None
        with self._core.lock:
            if not module.loaded:
                raise KernelError(errno.ENODEV)
            module.params[name] = params.parse(param, text, self._core.profile)
            for pid, task_def in list(module.tasks.items()):
                if task_def.while_param == name and not module.params[name]:
                    self._finish_module_task_locked(module, pid)
            self._core.changed.notify_all()

    def _start_module_task_locked(self, module: Module, task_def: TaskDef) -> None:
        for text in task_def.start:
            self.pr_module(module, text)
        if task_def.while_param is not None and not module.params[task_def.while_param]:
            for text in task_def.finish:
                self.pr_module(module, text)
            return
        pid = FIRST_WORKER_PID
        while self._core.tasks.get(pid) is not None:
            pid += 1
        task = Task(
            pid=pid,
            comm=task_def.comm,
            state=task_def.state,
            stack=task_def.stack,
            kthread=task_def.kthread,
        )
        self._core.spawn_task(task)
        module.tasks[pid] = task_def

    def _finish_module_task_locked(self, module: Module, pid: int) -> None:
        task_def = module.tasks.pop(pid)
        if self._core.tasks.get(pid) is not None:
            self._core.tasks.remove(pid)
        for text in task_def.finish:
            self.pr_module(module, text)

    def _stop_module_tasks_locked(self, module: Module) -> None:
        for pid in list(module.tasks):
            self._finish_module_task_locked(module, pid)

    def pr_module(self, module: Module, text: str, **fields: str) -> None:
        """pr_info() from a module: its name, then the text with its placeholders filled."""
        values = dict.fromkeys(("object", "callback", "state", "info"), "")
        values.update(fields, module=module.name)
        self._core.log.printk(KERN_INFO, f"{module.name}: {text.format_map(values)}")

    def _forget_module_locked(self, module: Module) -> None:
        self._core.kprobes.unregister_module(module.name)
        module.loaded = False
        del self._core.modules[module.name]

    def _module_coming_locked(self, module: Module) -> None:
        """klp_module_coming(): patch the new module's object in every patch that has one.

        Raises KernelError if a pre_patch callback fails; the patches applied
        so far are reverted and the module is refused.
        """
        if module.name == VMLINUX and self._core.profile.refuses_vmlinux_module:
            self._core.pr(KERN_ERR, "vmlinux.ko: invalid module name")
            raise KernelError(errno.EINVAL)
        for patch in self._core.patches:
            obj = patch.find_object(module.name)
            if obj is None:
                continue
            try:
                self._core.init_object_loaded(obj)
            except KernelError as exc:
                self._core.pr(
                    KERN_WARNING,
                    f"failed to initialize patch '{patch.name}' for module '{module.name}' "
                    f"({-exc.errno})",
                )
                self._refuse_module_locked(patch, module)
                raise
            if not self._core.lifecycle.applies_to_module(patch):
                continue
            self._core.pr(
                KERN_NOTICE, f"applying patch '{patch.name}' to loading module '{module.name}'"
            )
            ret = self._core.pre_patch_callback(patch, obj)
            if ret:
                self._core.pr(KERN_WARNING, f"pre-patch callback failed for object '{obj.name}'")
                self._refuse_module_locked(patch, module)
                raise KernelError(abs(ret))
            ret = self._core.patch_object(obj)
            if ret:
                self._core.pr(
                    KERN_WARNING,
                    f"failed to apply patch '{patch.name}' to module '{module.name}' ({ret})",
                )
                self._core.post_unpatch_callback(patch, obj)
                self._refuse_module_locked(patch, module)
                raise KernelError(abs(ret))
            if patch is not self._core.engine.patch:
                self._core.post_patch_callback(patch, obj)

    def _refuse_module_locked(self, patch: Patch, module: Module) -> None:
        """klp_module_coming()'s error path: undo the patches applied before this one."""
        self._core.pr(
            KERN_WARNING,
            f"patch '{patch.name}' failed for module '{module.name}', "
            f"refusing to load module '{module.name}'",
        )
        self._cleanup_module_patches_locked(module, limit=patch)

    def _module_going_locked(self, module: Module) -> None:
        """klp_module_going(): revert every patch's object for the departing module."""
        self._cleanup_module_patches_locked(module, limit=None)

    def _cleanup_module_patches_locked(self, module: Module, limit: Patch | None) -> None:
        """klp_cleanup_module_patches_limited(): unpatch the module's objects up to ``limit``."""
        for patch in self._core.patches:
            if patch is limit:
                break
            obj = patch.find_object(module.name)
            if obj is None or not self._core.lifecycle.applies_to_module(patch):
                continue
            if patch is not self._core.engine.patch:
                self._core.pre_unpatch_callback(patch, obj)
            self._core.pr(
                KERN_NOTICE, f"reverting patch '{patch.name}' on unloading module '{module.name}'"
            )
            self._core.unpatch_object(obj)
            self._core.post_unpatch_callback(patch, obj)
