"""The kernel's structs: modules as their files define them, and the live objects built from them.

First the definitions: struct klp_patch, klp_object, klp_func and klp_state
as a module declares them before klp_enable_patch(), and the module's other
parts (parameters, kobjects, work items, kprobes, /proc files). ``formats``
reads files into these; the kernel model never reads a file. Then the live
objects: struct module, klp_patch, klp_object and klp_func as the kernel
keeps them once loaded, which every part of the kernel model shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from lpfs.kernel.tasks import SchedState

MODULE_NAME_LEN: Final = 56  # including the terminating NUL, as in the kernel
VMLINUX: Final = "vmlinux"


# Failures a func can inject, and the errno each reports (None: the kernel's own).
FAULTS: Final[dict[str, int | None]] = {
    "symbol_not_found": None,
    "symbol_ambiguous": None,
    "bad_sympos": None,
    "kallsyms_size": None,
    "kallsyms_size_replacement": None,
    "ftrace_location": None,
    "ftrace_filter": -22,
    "ftrace_register": -16,
}


@dataclass(frozen=True, slots=True)
class FuncDef:
    """``[[object.func]]``: one function to redirect, and a failure to inject, if any."""

    old_name: str
    new_name: str
    old_sympos: int = 0
    fault: str | None = None
    fault_errno: int = 0
    output: str | None = None  # what the replacement prints where the kernel shows it


@dataclass(frozen=True, slots=True)
class Line:
    """A log line a callback or the module prints, possibly only with(out) a previous state.

    ``text`` is a template: ``{module}``, ``{object}``, ``{callback}``,
    ``{state}`` (the target module's state string) and ``{info}`` (the
    kernel test modules' callback_info() text).
    """

    text: str
    if_prev_state: int | None = None
    unless_prev_state: int | None = None

    def applies(self, prev_states: frozenset[int]) -> bool:
        """klp_get_prev_state(): whether a patch being replaced has set up the state."""
        if self.if_prev_state is not None and self.if_prev_state not in prev_states:
            return False
        return self.unless_prev_state is None or self.unless_prev_state not in prev_states


CALLBACK_NAMES: Final = ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")


@dataclass(frozen=True, slots=True)
class Callbacks:
    """``[object.callbacks]``: which callbacks exist, what each prints, what pre_patch returns."""

    pre_patch: tuple[Line, ...] | None = None
    post_patch: tuple[Line, ...] | None = None
    pre_unpatch: tuple[Line, ...] | None = None
    post_unpatch: tuple[Line, ...] | None = None
    pre_patch_ret: int | str = 0  # a constant, or the name of an int parameter

    def lines(self, callback: str) -> tuple[Line, ...] | None:
        return getattr(self, callback)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """``[[object]]``: vmlinux or a module, its functions and callbacks."""

    name: str
    funcs: tuple[FuncDef, ...] = ()
    callbacks: Callbacks | None = None


@dataclass(frozen=True, slots=True)
class StateDef:
    """``[[state]]``: a system state the patch sets up (struct klp_state)."""

    id: int
    version: int = 0


@dataclass(frozen=True, slots=True)
class ParamDef:
    """``[[param]]``: a module parameter (module_param(), or module_param_array())."""

    name: str
    type: str  # int, bool or charp; of each element for an array
    mode: int = 0o644
    default: int | bool | str | tuple[int | bool | str, ...] = 0
    array: int = 0  # module_param_array()'s element count; 0 for a single value


@dataclass(frozen=True, slots=True)
class ParamText:
    """An attribute that shows a module parameter's value, as parameters/<name> does."""

    param: str


@dataclass(frozen=True, slots=True)
class PendingCallers:
    """An attribute that counts the pids of an int array parameter that have not yet
    called the module's replacement of ``function`` (test_klp_syscall's npids)."""

    param: str
    function: str


@dataclass(frozen=True, slots=True)
class AttrDef:
    """``[[kobject.attr]]``: a file sysfs_create_file() adds, and what its show prints."""

    name: str
    mode: int
    value: str | ParamText | PendingCallers


@dataclass(frozen=True, slots=True)
class KobjectDef:
    """``[[kobject]]``: kobject_create_and_add(name, kernel_kobj), /sys/kernel/<name>."""

    name: str
    attrs: tuple[AttrDef, ...]

    def attr(self, name: str) -> AttrDef | None:
        return next((a for a in self.attrs if a.name == name), None)


@dataclass(frozen=True, slots=True)
class TaskDef:
    """``[[task]]``: a kernel work item the module starts at init, like test_klp_callbacks_busy's.

    It prints ``start`` and then sleeps in ``stack`` while the bool parameter
    ``while_param`` is set; clearing it, or unloading the module, ends it
    (printing ``finish``) before the module's exit lines.
    """

    comm: str
    stack: tuple[str, ...]
    state: SchedState = SchedState.SLEEPING
    kthread: bool = True
    start: tuple[str, ...] = ()
    finish: tuple[str, ...] = ()
    while_param: str | None = None


@dataclass(frozen=True, slots=True)
class KprobeDef:
    """``[[kprobe]]``: register_kprobe() on a function's entry in the module's init."""

    symbol: str
    post_handler: bool | str = False  # a constant, or the name of a bool parameter


@dataclass(frozen=True, slots=True)
class ProcDef:
    """``[[proc]]``: proc_create_single(name, 0, NULL, show) in the module's init, /proc/<name>.

    A read runs the module's function ``show``, which prints ``output``
    unless a livepatch redirects it.
    """

    name: str
    show: str
    output: str
    mode: int = 0o444


@dataclass(frozen=True, slots=True)
class ModuleDef:
    """A module as its file defines it."""

    name: str
    livepatch: bool = True
    replace: bool = False
    objects: tuple[ObjectDef, ...] = ()
    states: tuple[StateDef, ...] = ()
    source: str = ""
    replace_param: str | None = None  # replace comes from this parameter at load time
    params: tuple[ParamDef, ...] = ()
    init: tuple[str, ...] = ()
    exit: tuple[str, ...] = ()
    tasks: tuple[TaskDef, ...] = ()
    kobjects: tuple[KobjectDef, ...] = ()
    kprobes: tuple[KprobeDef, ...] = ()
    procs: tuple[ProcDef, ...] = ()

    @property
    def calls_klp_enable_patch(self) -> bool:
        """A livepatch module, or any module that declares objects to patch."""
        return self.livepatch or bool(self.objects)

    def param(self, name: str) -> ParamDef | None:
        return next((p for p in self.params if p.name == name), None)


# The live objects the kernel builds from those definitions.

ParamScalar = int | bool | str
ParamValue = ParamScalar | tuple[ParamScalar, ...]


class ModuleState(StrEnum):
    """struct module's state (enum module_state), named as initstate shows it."""

    COMING = "coming"
    LIVE = "live"
    GOING = "going"

    @property
    def text(self) -> str:
        """The callback demo modules' name for it (module_state[] in their source)."""
        return {
            ModuleState.LIVE: "[MODULE_STATE_LIVE] Normal state",
            ModuleState.COMING: "[MODULE_STATE_COMING] Full formed, running module_init",
            ModuleState.GOING: "[MODULE_STATE_GOING] Going away",
        }[self]


@dataclass(eq=False)
class Module:
    """A loaded kernel module (struct module), livepatch or plain."""

    definition: ModuleDef
    created: float
    refcnt: int = 0
    state: ModuleState = ModuleState.COMING
    loaded: bool = True
    patch: Patch | None = None
    params: dict[str, ParamValue] = field(default_factory=dict)
    tasks: dict[int, TaskDef] = field(default_factory=dict)  # running work, by pid
    # The pids each counting attribute still waits for (test_klp_syscall's klp_pids).
    pending_callers: dict[PendingCallers, list[int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def taint(self) -> str:
        return "K" if self.definition.livepatch else ""

    @property
    def size(self) -> int:
        """Core size in bytes, as lsmod shows it: whole pages, growing with the funcs."""
        funcs = sum(len(obj.funcs) for obj in self.definition.objects)
        return 4096 * (3 + (funcs + 7) // 8)


def kobject_name(name: str) -> str:
    """A name as its sysfs directory shows it: kobject_set_name_vargs() turns '/' into '!'."""
    return name.replace("/", "!")


@dataclass(eq=False)
class Func:
    """struct klp_func: one redirected function, or a NOP of an atomic-replace patch."""

    old_name: str
    new_name: str
    old_sympos: int
    nop: bool = False
    patched: bool = False
    transition: bool = False
    fault: str | None = None  # a failure the module file injects
    fault_errno: int = 0
    output: str | None = None  # what the replacement shows in /proc

    @property
    def dirname(self) -> str:
        """The sysfs directory name; sympos 0 (unique) is shown as 1."""
        return kobject_name(f"{self.old_name},{self.old_sympos or 1}")

    @property
    def replacement(self) -> str:
        """The code this func makes tasks run; a NOP falls through to the original."""
        return self.old_name if self.nop else self.new_name


@dataclass(eq=False)
class KlpObject:
    """struct klp_object: vmlinux or one module, with its funcs and callbacks."""

    name: str
    funcs: list[Func]
    dynamic: bool = False
    patched: bool = False
    freed: bool = False
    callbacks: Callbacks | None = None
    post_unpatch_enabled: bool = False

    @property
    def is_module(self) -> bool:
        return self.name != VMLINUX

    @property
    def dirname(self) -> str:
        return kobject_name(self.name)


@dataclass(eq=False)
class Patch:
    """struct klp_patch: one livepatch module's patch."""

    module: Module
    replace: bool
    states: tuple[StateDef, ...]
    objects: list[KlpObject] = field(default_factory=list)
    enabled: bool = False
    forced: bool = False
    freed: bool = False

    @property
    def name(self) -> str:
        return self.module.name

    def funcs(self) -> Iterator[Func]:
        for obj in self.objects:
            yield from obj.funcs

    def find_object(self, name: str) -> KlpObject | None:
        return next((obj for obj in self.objects if obj.name == name), None)

    def find_object_dir(self, dirname: str) -> KlpObject | None:
        return next((obj for obj in self.objects if obj.dirname == dirname), None)
