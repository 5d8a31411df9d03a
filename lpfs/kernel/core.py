"""The livepatch core: patches and their lifecycle.

Mirrors kernel/livepatch/core.c; the module loader's side is in loader.py,
a ``ModuleLoader`` the core owns.
``Core.lock`` plays klp_mutex: it protects every module, patch, object and
func, the transition engine and the task list. Public
methods take it; helpers whose names end in ``_locked`` expect it held, and so
does everything the transition engine calls back. Errors are raised as
``KernelError(errno)`` and leave the state as the kernel would.
"""

import errno
import threading
from collections.abc import Callable

from lpfs.errors import KernelError
from lpfs.kernel import kobjects
from lpfs.kernel.changes import StateChanges
from lpfs.kernel.clock import Clock, SystemClock
from lpfs.kernel.ftrace import LIVEPATCH, Ftrace
from lpfs.kernel.kallsyms import Kallsyms
from lpfs.kernel.klog import KERN_ERR, KERN_NOTICE, KERN_WARNING, KernelLog
from lpfs.kernel.kprobes import KPROBE_OPS_SYMBOLS, Kprobes
from lpfs.kernel.legacy import Legacy
from lpfs.kernel.lifecycle import Lifecycle, Modern
from lpfs.kernel.loader import ModuleLoader
from lpfs.kernel.procfs import SHOW_CALLER, VMLINUX_SHOW
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import (
    MODULE_NAME_LEN,
    VMLINUX,
    Func,
    KlpObject,
    Module,
    ModuleDef,
    ModuleState,
    Patch,
    kobject_name,
)
from lpfs.kernel.tasks import PatchState, SimulatedTasks, Task
from lpfs.kernel.transition import Transition


class Core:
    """The emulated kernel: loaded modules, klp_patches and the transition."""

    def __init__(
        self,
        log: KernelLog,
        tasks: SimulatedTasks | None = None,
        profile: Profile | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.lock = threading.RLock()
        # Notified on every state change; waiters (lpfs wait, the retry
        # timer) sleep on it with the lock released.
        self.changed = StateChanges(self.lock)
        self.log = log
        self.tasks = tasks if tasks is not None else SimulatedTasks()
        self.profile = profile or Profile()
        self.clock = clock or SystemClock()
        self.modules: dict[str, Module] = {}
        self.patches: list[Patch] = []  # klp_patches: enabled or in transition
        # Bumped whenever a patch joins or leaves klp_patches, so readers may keep
        # what they derive from the list (the names kernel/livepatch lists).
        self.patches_generation = 0
        self.tainted = 0
        self.lifecycle = self._boot_lifecycle()
        self.symbols: Kallsyms | None = None  # set by --symbols host
        self.ftrace = Ftrace(log, self.profile, self.clock, self.available_functions)
        self.kprobes = Kprobes(log, self.profile, self.ftrace)
        # ops->func_stack per patched function, oldest first.
        self._func_stacks: dict[tuple[str, str, int], list[Func]] = {}
        self.engine = Transition(self, self.tasks, log, self.clock, self.changed.notify_all)
        self.loader = ModuleLoader(self)
        self.tasks.on_new = self._adopt_task

    # -- helpers for log lines -----------------------------------------------

    def pr(self, level: int, text: str) -> None:
        """A line of kernel/livepatch/, its pr_fmt "livepatch: " first."""
        self.log.printk(level, f"livepatch: {text}")

    def _boot_lifecycle(self) -> Lifecycle:
        """The release's lifecycle, as it boots: 4.15-5.0 or 5.1 on."""
        return Legacy(self) if self.profile.legacy else Modern(self)

    # -- the module loader's verbs ------------------------------------------

    def insmod(self, definition: ModuleDef, args: tuple[str, ...] = ()) -> Module:
        """Load a module and run its init: ``ModuleLoader.insmod()``."""
        return self.loader.insmod(definition, args)

    def rmmod(self, name: str) -> None:
        """Unload a module: ``ModuleLoader.rmmod()``."""
        self.loader.rmmod(name)

    def set_param(self, module: Module, name: str, text: str) -> None:
        """A write to a module parameter: ``ModuleLoader.set_param()``."""
        self.loader.set_param(module, name, text)

    # -- tasks ---------------------------------------------------------------

    def spawn_task(self, task: Task, parent: Task | None = None) -> Task:
        """A new task; during a transition one without a parent starts unswitched.

        Raises KeyError if the pid is taken.
        """
        with self.lock:
            self._adopt_task(task, parent)
            self.tasks.add(task)
            self.changed.notify_all()
            return task

    def _adopt_task(self, task: Task, parent: Task | None) -> None:
        """A forked task copies its parent's patch state; an orphan starts unswitched."""
        if parent is not None:
            task.patch_state = parent.patch_state
            task.pending = parent.pending
        elif self.engine.patch is not None:
            task.patch_state = self.engine.initial_state
            task.pending = True

    # -- reset ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget every module and patch, clear the log, and put the sysctl and dynamic
        debug back as they were: a freshly booted kernel."""
        with self.lock:
            for patch in self.patches:
                patch.freed = True
                for obj in patch.objects:
                    obj.freed = True
            for module in self.modules.values():
                module.loaded = False
            self.patches.clear()
            self.patches_generation += 1
            self.modules.clear()
            self._func_stacks.clear()
            self.tasks.clear()
            self.engine.patch = None
            self.engine.target = PatchState.IDLE
            self.engine.retry_queued = False
            self.tainted = 0
            self.lifecycle = self._boot_lifecycle()
            self.ftrace.reset()
            self.kprobes.reset()
            self.log.clear()
            self.log.reset_dynamic_debug()
            self.changed.notify_all()

    # -- callbacks (core.h) --------------------------------------------------

    def pre_patch_callback(self, patch: Patch, obj: KlpObject) -> int:
        """klp_pre_patch_callback(): its return value; a success allows post_unpatch later."""
        ret = 0
        if obj.callbacks is not None and obj.callbacks.pre_patch is not None:
            self._run_callback(patch, obj, "pre_patch")
            wanted = obj.callbacks.pre_patch_ret
            value = patch.module.params.get(wanted, 0) if isinstance(wanted, str) else wanted
            if isinstance(value, tuple):  # the module file reader refuses this
                raise TypeError(f"pre_patch returns the array parameter {wanted!r}")
            ret = int(value)
        obj.post_unpatch_enabled = ret == 0
        return ret

    def post_patch_callback(self, patch: Patch, obj: KlpObject) -> None:
        self._run_callback(patch, obj, "post_patch")

    def pre_unpatch_callback(self, patch: Patch, obj: KlpObject) -> None:
        self._run_callback(patch, obj, "pre_unpatch")

    def post_unpatch_callback(self, patch: Patch, obj: KlpObject) -> None:
        """klp_post_unpatch_callback(): only after a successful pre_patch, and only once."""
        if obj.post_unpatch_enabled:
            self._run_callback(patch, obj, "post_unpatch")
        obj.post_unpatch_enabled = False

    def _run_callback(self, patch: Patch, obj: KlpObject, callback: str) -> None:
        lines = obj.callbacks.lines(callback) if obj.callbacks else None
        if lines is None:
            return
        target = self.modules.get(obj.name) if obj.is_module else None
        state = target.state.text if target else ""
        name = f"{callback}_callback"
        info = f"{name}: {obj.name} -> {state}" if target else f"{name}: {obj.name}"
        prev_states = self._prev_states()
        for line in lines:
            if line.applies(prev_states):
                self.loader.pr_module(
                    patch.module, line.text, object=obj.name, callback=name, state=state, info=info
                )

    def _prev_states(self) -> frozenset[int]:
        """The state ids klp_get_prev_state() finds: those of patches older than the transition."""
        ids: set[int] = set()
        for patch in self.patches:
            if patch is self.engine.patch:
                return frozenset(ids)
            ids.update(state.id for state in patch.states)
        return frozenset()

    # -- klp_enable_patch ----------------------------------------------------

    def klp_enable_patch_locked(self, module: Module) -> None:
        """klp_enable_patch() from the module's init, with the kernel's checks in order;
        past the checks every release makes, the lifecycle's."""
        definition = module.definition
        if not definition.objects:
            raise KernelError(errno.EINVAL)
        if not definition.livepatch:
            self.pr(KERN_ERR, f"module {module.name} is not marked as a livepatch module")
            raise KernelError(errno.EINVAL)
        self.lifecycle.enable_at_init(module)

    def init_patch_locked(self, patch: Patch) -> None:
        """klp_init_patch(): build objects and funcs (NOPs for replace), join klp_patches."""
        for obj_def in patch.module.definition.objects:
            if obj_def.name != VMLINUX and len(obj_def.name) >= MODULE_NAME_LEN:
                raise KernelError(errno.EINVAL)
            if not obj_def.name:
                raise KernelError(errno.EINVAL)  # kobject_add_internal(): no name
            if patch.find_object_dir(kobject_name(obj_def.name)):
                raise KernelError(errno.EEXIST)  # duplicate kobject name
            funcs: list[Func] = []
            for func_def in obj_def.funcs:
                if len(func_def.old_name) >= self.profile.ksym_name_len:
                    raise KernelError(errno.EINVAL)
                func = Func(
                    func_def.old_name,
                    func_def.new_name,
                    func_def.old_sympos,
                    fault=func_def.fault,
                    fault_errno=func_def.fault_errno,
                    output=func_def.output,
                )
                if any(other.dirname == func.dirname for other in funcs):
                    raise KernelError(errno.EEXIST)
                funcs.append(func)
            patch.objects.append(KlpObject(obj_def.name, funcs, callbacks=obj_def.callbacks))
        if patch.replace:
            self._add_nops(patch)
        for obj in patch.objects:
            if self.object_loaded(obj):
                self.init_object_loaded(obj)
        self.patches.append(patch)
        self.patches_generation += 1

    def init_object_loaded(self, obj: KlpObject) -> None:
        """klp_init_object_loaded(): find every old function and both sizes.

        Raises KernelError: EINVAL for a symbol that is missing, ambiguous or
        not at its position, ENOENT for a failed size lookup.
        """
        for func in obj.funcs:
            count = (
                self.symbols.count(func.old_name) if self.symbols and not obj.is_module else None
            )
            if func.fault == "symbol_not_found" or count == 0:
                self.pr(KERN_ERR, f"symbol '{func.old_name}' not found in symbol table")
                raise KernelError(errno.EINVAL)
            if func.fault == "symbol_ambiguous" or (count and count > 1 and not func.old_sympos):
                self.pr(
                    KERN_ERR,
                    f"unresolvable ambiguity for symbol '{func.old_name}' in object '{obj.name}'",
                )
                raise KernelError(errno.EINVAL)
            if func.fault == "bad_sympos" or (count and func.old_sympos > count):
                self.pr(
                    KERN_ERR,
                    f"symbol position {func.old_sympos} for symbol '{func.old_name}' "
                    f"in object '{obj.name}' not found",
                )
                raise KernelError(errno.EINVAL)
            if func.fault in ("kallsyms_size", "kallsyms_size_replacement"):
                which = " replacement" if func.fault == "kallsyms_size_replacement" else ""
                self.pr(KERN_ERR, f"kallsyms size lookup failed for '{func.old_name}'{which}")
                raise KernelError(errno.ENOENT)

    def _add_nops(self, patch: Patch) -> None:
        """klp_add_nops(): fall-through funcs for whatever older patches patch and this one not."""
        for old_patch in self.patches:
            for old_obj in old_patch.objects:
                obj = patch.find_object(old_obj.name)
                if obj is None:
                    obj = KlpObject(old_obj.name, [], dynamic=True)
                    patch.objects.append(obj)
                for old_func in old_obj.funcs:
                    if any(func.dirname == old_func.dirname for func in obj.funcs):
                        continue
                    obj.funcs.append(
                        Func(old_func.old_name, old_func.old_name, old_func.old_sympos, nop=True)
                    )

    def start_patching_locked(self, patch: Patch) -> None:
        """Announce, prepare every loaded object, start the transition and try it once.

        Raises KernelError with a failing pre_patch callback's errno, after
        cancelling the transition.
        """
        self.pr(KERN_NOTICE, f"enabling patch '{patch.name}'")
        self.engine.init(patch, PatchState.PATCHED)
        for obj in patch.objects:
            if not self.object_loaded(obj):
                continue
            ret = self.pre_patch_callback(patch, obj)
            if ret:
                self.pr(KERN_WARNING, f"pre-patch callback failed for object '{obj.name}'")
                self.pr(KERN_WARNING, f"failed to enable patch '{patch.name}'")
                self.engine.cancel()
                raise KernelError(abs(ret))
            ret = self.patch_object(obj)
            if ret:
                self.pr(KERN_WARNING, f"failed to patch object '{obj.name}'")
                self.pr(KERN_WARNING, f"failed to enable patch '{patch.name}'")
                self.engine.cancel()
                raise KernelError(abs(ret))
        self.engine.start()
        patch.enabled = True
        self.engine.try_complete()

    # -- sysfs stores --------------------------------------------------------

    def enabled_store(self, patch: Patch, enabled: bool) -> None:
        """enabled_store() after kstrtobool.

        Raises KernelError: EINVAL for the state the patch is already in.
        Writing the opposite value during the patch's own transition reverses
        it; otherwise the lifecycle's store decides (5.1 on: a disable, EBUSY
        during another patch's transition; 4.15-5.0: the stacking rules).
        """
        self.tasks.prefetch()  # the transition's first try, without holding the lock to scan
        with self.lock:
            self._check_alive(patch)
            if patch.enabled == enabled:
                raise KernelError(errno.EINVAL)  # already in requested state
            if patch is self.engine.patch:
                self.engine.reverse()
            else:
                self.lifecycle.enabled_store(patch, enabled)
            self.changed.notify_all()

    def force_store(self, patch: Patch, force: bool) -> None:
        """force_store() after kstrtobool: EINVAL unless the patch is in transition."""
        if not force:
            return
        with self.lock:
            self._check_alive(patch)
            if patch is not self.engine.patch:
                raise KernelError(errno.EINVAL)
            self.engine.force()
            self.changed.notify_all()

    def signal_store(self, patch: Patch, signal: bool) -> None:
        """signal_store() (4.16-5.0) after kstrtobool: EINVAL unless the patch is in transition."""
        if not signal:
            return
        with self.lock:
            self._check_alive(patch)
            if patch is not self.engine.patch:
                raise KernelError(errno.EINVAL)
            self.engine.send_signals()
            self.changed.notify_all()

    def _check_alive(self, patch: Patch) -> None:
        if patch.freed:
            raise KernelError(errno.ENODEV)

    def start_unpatching_locked(self, patch: Patch) -> None:
        """Run the pre_unpatch callbacks, start the unpatching transition and try it once."""
        self.engine.init(patch, PatchState.UNPATCHED)
        for obj in patch.objects:
            if obj.patched:
                self.pre_unpatch_callback(patch, obj)
        self.engine.start()
        patch.enabled = False
        self.engine.try_complete()

    # -- the retry work ------------------------------------------------------

    def transition_work(self) -> bool:
        """klp_transition_work_fn(): one retry; False if no transition was in progress."""
        self.tasks.prefetch()  # scanned without the lock, as every sysfs read takes it
        with self.lock:
            if self.engine.patch is None:
                return False
            self.engine.retry_queued = False
            self.engine.try_complete()
            self.changed.notify_all()
            return True

    def tick(self, count: int = 1) -> int:
        """Run up to ``count`` retries now; returns how many ran."""
        ran = 0
        while ran < count and self.transition_work():
            ran += 1
        return ran

    def run_retry_timer(self, interval: float, stop: threading.Event) -> None:
        """The delayed work: retry every ``interval`` seconds while a retry is queued."""
        while self._retry_due(interval, stop):
            self.changed.announce(self.transition_work)

    def _retry_due(self, interval: float, stop: threading.Event) -> bool:
        """Sleep, the lock released, until a retry has been queued ``interval`` seconds
        (True) or ``stop`` is set (False)."""
        with self.lock:
            due: float | None = None
            while not stop.is_set():
                if not self.engine.retry_queued:
                    due = None
                    self.changed.wait(0.5)
                    continue
                now = self.clock.monotonic()
                if due is None:
                    due = now + interval
                if now < due:
                    self.changed.wait(due - now)
                    continue
                return True
            return False

    # -- called by the transition engine (lock held) -------------------------

    def functions_to_check(self, patch: Patch, target: PatchState) -> frozenset[str]:
        """klp_check_stack_func(): the code no task may be in to switch towards ``target``.

        Patching: what each func replaces, i.e. the original function or the
        replacement of the patch below it on the func stack. Unpatching: the
        func's own replacement.
        """
        names = set()
        for obj in patch.objects:
            if not obj.patched:
                continue
            for func in obj.funcs:
                if target == PatchState.UNPATCHED:
                    names.add(func.replacement)
                    continue
                stack = self._func_stacks.get(self._func_key(obj, func), [])
                index = stack.index(func) if func in stack else 0
                names.add(stack[index - 1].replacement if index > 0 else func.old_name)
        return frozenset(names)

    @staticmethod
    def _func_key(obj: KlpObject, func: Func) -> tuple[str, str, int]:
        return (obj.name, func.old_name, func.old_sympos or 1)

    def patch_object(self, obj: KlpObject) -> int:
        """klp_patch_object(): put every func on top of its function's stack.

        Returns 0, or the negative errno of an injected ftrace failure, which
        only the first patch of a function can meet (later ones reuse its ops);
        the object is then left unpatched.
        """
        for func in obj.funcs:
            if func.patched:
                continue
            stack = self._func_stacks.setdefault(self._func_key(obj, func), [])
            ret = 0 if stack else self._klp_patch_func(obj, func)
            if ret:
                if not stack:
                    del self._func_stacks[self._func_key(obj, func)]
                self.unpatch_object(obj)
                return ret
            stack.append(func)
            func.patched = True
        obj.patched = True
        return 0

    @staticmethod
    def _symbol(obj: KlpObject, func: Func) -> str:
        """The function as kallsyms names it: ``name``, or ``module:name`` in a module."""
        return f"{obj.name}:{func.old_name}" if obj.is_module else func.old_name

    def _klp_patch_func(self, obj: KlpObject, func: Func) -> int:
        """klp_patch_func() for a function's first patch: its klp_ops on ftrace.

        Fails as the module file injects, or as register_ftrace_function()
        does: EBUSY with kernel.ftrace_enabled 0 (the ops is PERMANENT) or
        where another IPMODIFY ops, a kprobe's, holds the function.
        """
        if func.fault == "ftrace_location":
            self.pr(KERN_ERR, f"failed to find location for function '{func.old_name}'")
            return -errno.EINVAL
        if func.fault == "ftrace_filter":
            self.pr(
                KERN_ERR,
                f"failed to set ftrace filter for function '{func.old_name}' ({func.fault_errno})",
            )
            return func.fault_errno
        code = func.fault_errno if func.fault == "ftrace_register" else 0
        code = code or self.ftrace.claim_ipmodify(self._symbol(obj, func), LIVEPATCH, True)
        if code:
            self.pr(
                KERN_ERR,
                f"failed to register ftrace handler for function '{func.old_name}' ({code})",
            )
            return code
        return 0

    @property
    def ftrace_enabled(self) -> bool:
        return self.ftrace.enabled

    def set_ftrace_enabled(self, enabled: bool) -> None:
        """The kernel.ftrace_enabled sysctl, under a livepatch's PERMANENT ops or not."""
        with self.lock:
            self.ftrace.set_enabled(enabled, permanent_ops=bool(self._func_stacks))

    def running_func(self, function: str, pid: int, obj: str = VMLINUX) -> Func | None:
        """klp_ftrace_handler(): the func whose replacement task ``pid`` runs for a
        function of ``obj``, or None for the original code.

        A task the engine does not know runs what its tasks started the
        transition with.
        """
        with self.lock:
            stack = self._func_stacks.get((obj, function, 1))
            if not stack:
                return None
            index = len(stack) - 1
            if stack[index].transition:
                task = self.tasks.get(pid) if pid > 0 else None
                state = task.patch_state if task is not None else self.engine.initial_state
                if state == PatchState.UNPATCHED:
                    index -= 1
            if index < 0 or stack[index].nop:
                return None
            return stack[index]

    def call(self, function: str, pid: int, comm: str, obj: str = VMLINUX) -> Func | None:
        """A task's call of a show function from seq_read_iter(): the function tracer sees
        the original's entry and, where klp_ftrace_handler() redirects it, the
        replacement's. Returns the func that runs, as running_func()."""
        with self.lock:
            func = self.running_func(function, pid, obj)
            self.ftrace.call(function, SHOW_CALLER, comm, pid)
            if func is not None:
                self.ftrace.call(func.new_name, SHOW_CALLER, comm, pid)
            return func

    def available_functions(self) -> set[str]:
        """available_filter_functions: the functions lpfs knows that can be traced."""
        names = set(VMLINUX_SHOW.values())
        for module in self.modules.values():
            for obj in module.definition.objects:
                names.update(f.new_name for f in obj.funcs)
                names.update(f.old_name for f in obj.funcs if obj.name == VMLINUX)
            names.update(proc.show for proc in module.definition.procs)
            names.update(kprobe.symbol for kprobe in module.definition.kprobes)
        return names

    def kallsyms(self) -> list[str]:
        """/proc/kallsyms lines of what lpfs adds to the kernel: the kprobes' ftrace ops
        and the functions of loaded modules."""
        lines = [f"{0:016x} d {name}" for name in KPROBE_OPS_SYMBOLS]
        with self.lock:
            for module in self.modules.values():
                definition = module.definition
                own = [f.new_name for obj in definition.objects for f in obj.funcs]
                own += [proc.show for proc in definition.procs]
                lines += [f"{0:016x} t {name}\t[{module.name}]" for name in dict.fromkeys(own)]
        return lines

    def note_replacement_calls(self) -> None:
        """After tasks switched: the calls the modules' counting attributes wait for."""
        kobjects.note_replacement_calls(self)

    def unpatch_object(self, obj: KlpObject, nops_only: bool = False) -> None:
        """klp_unpatch_object(): take the funcs (or only the NOPs) off their stacks."""
        for func in obj.funcs:
            if func.patched and (func.nop or not nops_only):
                key = self._func_key(obj, func)
                stack = self._func_stacks[key]
                stack.remove(func)
                if not stack:
                    del self._func_stacks[key]
                    self.ftrace.release_ipmodify(self._symbol(obj, func), LIVEPATCH)
                func.patched = False
        if obj.dynamic or not nops_only:
            obj.patched = False

    def unpatch_objects(self, patch: Patch) -> None:
        for obj in patch.objects:
            if obj.patched:
                self.unpatch_object(obj)

    def unpatch_replaced_patches(self, new_patch: Patch) -> None:
        """klp_unpatch_replaced_patches(): older patches stop, without callbacks."""
        for old_patch in self.patches:
            if old_patch is new_patch:
                break
            old_patch.enabled = False
            self.unpatch_objects(old_patch)

    def discard_nops(self, patch: Patch) -> None:
        """klp_discard_nops(): drop the NOP funcs and dynamic objects once replaced."""
        for obj in patch.objects:
            if obj.patched:
                self.unpatch_object(obj, nops_only=True)
            obj.funcs = [func for func in obj.funcs if not func.nop]
            if obj.dynamic:
                obj.freed = True
        patch.objects = [obj for obj in patch.objects if not obj.dynamic]

    def free_patch(self, patch: Patch, put_module: bool = True) -> None:
        """klp_free_patch_async(), run at once: see the README's differences."""
        self._free_patch_start(patch)
        self._free_patch_finish(patch, put_module)

    def free_replaced_patches(self, new_patch: Patch) -> None:
        """klp_free_replaced_patches_async(): free every patch older than ``new_patch``."""
        for old_patch in list(self.patches):
            if old_patch is new_patch:
                return
            self.free_patch(old_patch)

    def _free_patch_start(self, patch: Patch) -> None:
        """klp_free_patch_start(): leave klp_patches and drop the objects."""
        if patch in self.patches:
            self.patches.remove(patch)
            self.patches_generation += 1
        for obj in patch.objects:
            if obj.patched:
                self.unpatch_object(obj)
            obj.freed = True

    def _free_patch_finish(self, patch: Patch, put_module: bool = True) -> None:
        """klp_free_patch_finish(): the directory goes, then the module reference."""
        patch.freed = True
        patch.module.patch = None
        if put_module and not patch.forced:
            patch.module.refcnt -= 1

    # -- views ---------------------------------------------------------------

    def find_patch(self, name: str) -> Patch | None:
        """The patch of the module ``name``: a module's patch is its until it is freed."""
        module = self.modules.get(name)
        return None if module is None else module.patch

    def object_loaded(self, obj: KlpObject) -> bool:
        """klp_is_object_loaded(): vmlinux always, a module while it is loaded and not going."""
        if not obj.is_module:
            return True
        module = self.modules.get(obj.name)
        return module is not None and module.state != ModuleState.GOING

    def stack_order(self, patch: Patch) -> int:
        """1-based position in klp_patches; past the end for an unlinked patch, as the kernel."""
        for position, each in enumerate(self.patches, start=1):
            if each is patch:
                return position
        return len(self.patches)

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block, with the lock released, until ``predicate`` holds; False on timeout."""
        with self.lock:
            return self.changed.wait_for(predicate, timeout)
