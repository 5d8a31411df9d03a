"""Compile lpfs module files into real kernel modules, in C, for the oracle.

A set of module files in a portable subset becomes one C file each, so the
same scenario loads the same modules on a real kernel and on lpfs. The subset
is what both sides do the same way:

- a patch's objects are vmlinux (only ``cmdline_proc_show`` and
  ``meminfo_proc_show``, whose signature and output are known) or a plain
  module of the same set, whose functions this compiler generates: every
  function a patch of the set names, and the work item's function;
- generated functions are ``noinline __attribute__((noipa))``: plain
  ``noinline`` still lets GCC emit ``.constprop`` clones, and the patch would
  then not find the symbol;
- a patch module never references a target's symbols (modpost would add a
  dependency, changing load order and reference counts): klp_func names them;
- callbacks print the module file's lines and return a constant or a
  parameter; klp states, atomic replace and scalar parameters are kept;
- the one work item is "sleeps in F while P is set", as the selftests'
  test_klp_callbacks_busy: the work function prints the start lines, signals
  init, calls F (which sleeps in 20 ms steps while P is set) and prints the
  finish lines. Init waits for the start lines, and for the finish lines too
  when P is clear, so the log's order does not depend on the scheduler. A
  work item started while a patch replaces F runs the replacement, which
  returns at once: lpfs's task sleeps in F all the same, so a scenario loads
  such a target before the patch.

Faults, kprobes, kobjects, /proc entries, array parameters and task fields
beyond that work item are not portable: ``NotPortable`` names the key.
"""

import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lpfs.formats import modfile
from lpfs.kernel.structs import (
    CALLBACK_NAMES,
    VMLINUX,
    Callbacks,
    Line,
    ModuleDef,
    ObjectDef,
    ParamDef,
    TaskDef,
)

# The module files the scenarios load beside the kernel's own test modules.
MODULES: Final = Path(__file__).parent / "modules"
# vmlinux functions a portable patch may replace: both are seq_file show functions.
SHOW_FUNCTIONS: Final = frozenset({"cmdline_proc_show", "meminfo_proc_show"})
WORKER_STACK: Final = ("process_one_work", "worker_thread", "kthread")
# The kernel selftests' callback demo modules name module states this way.
MODULE_STATE_TEXT: Final = {
    "MODULE_STATE_LIVE": "[MODULE_STATE_LIVE] Normal state",
    "MODULE_STATE_COMING": "[MODULE_STATE_COMING] Full formed, running module_init",
    "MODULE_STATE_GOING": "[MODULE_STATE_GOING] Going away",
    "MODULE_STATE_UNFORMED": "[MODULE_STATE_UNFORMED] Still setting up",
}


class NotPortable(Exception):
    """A module file uses what only lpfs can do; the message names the module and key."""

    def __init__(self, module: str, key: str, reason: str) -> None:
        super().__init__(f"{module}: {key}: {reason}")


@dataclass(frozen=True)
class WorkItem:
    """A target's work item: sleeps in ``function`` while ``param`` is set."""

    function: str
    param: str
    start: tuple[str, ...]
    finish: tuple[str, ...]


def work_item(definition: ModuleDef, index: int, task: TaskDef) -> WorkItem:
    """The portable reading of a ``[[task]]``, or NotPortable."""
    where = f"task[{index}]"
    stack = task.stack
    if len(stack) != 5 or stack[0] != "msleep" or stack[2:] != WORKER_STACK:
        shape = ", ".join(("msleep", "F", *WORKER_STACK))
        raise NotPortable(definition.name, f"{where}.stack", f"not a work item's [{shape}]")
    if task.while_param is None or not task.kthread or task.state != "uninterruptible":
        raise NotPortable(
            definition.name, where, "a work item is an uninterruptible kthread with while_param"
        )
    if not task.start or not task.finish:
        raise NotPortable(
            definition.name, where, "a work item prints start and finish lines (the log's order)"
        )
    return WorkItem(stack[1], task.while_param, task.start, task.finish)


def _c_string(text: str) -> str:
    """A C string literal of ``text``: printable characters and newlines."""
    if any((ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F for ch in text):
        raise ValueError(f"control character in {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True)
class Runtime:
    """A field known only when the line prints: a printf piece and its arguments."""

    fmt: str
    args: tuple[str, ...]


# A target module's state, as its callbacks see it.
OBJECT_STATE: Final = Runtime("%s", ("object_state(obj)",))


def _pr_info(module: str, text: str, fields: dict[str, str | Runtime]) -> str:
    """A module file's line template as a pr_info() call: a field is a text known
    now, or a Runtime piece; a field not given is empty, as lpfs prints it."""
    if "\n" in text:
        raise NotPortable(module, text, "a line is one line")
    fmt, args = "", list[str]()
    for literal, field, spec, conversion in string.Formatter().parse(text):
        fmt += literal.replace("%", "%%")
        if field is None:
            continue
        if spec or conversion:
            raise NotPortable(module, text, "format specs in a line are not portable")
        value = fields.get(field, "")
        if isinstance(value, Runtime):
            fmt += value.fmt
            args.extend(value.args)
        else:
            fmt += value.replace("%", "%%")
    literal = _c_string(fmt + "\n")
    return f"pr_info({', '.join((literal, *args))});"


class _Set:
    """The module files being compiled together, and what each target must define."""

    def __init__(self, definitions: Iterable[ModuleDef]) -> None:
        self.modules = {definition.name: definition for definition in definitions}
        self.work: dict[str, list[WorkItem]] = {}
        # target -> the functions it defines, each ``void F(void)``
        self.functions: dict[str, set[str]] = defaultdict(set)
        for definition in self.modules.values():
            self._check(definition)
            items = [work_item(definition, i, task) for i, task in enumerate(definition.tasks)]
            self.work[definition.name] = items
            self.functions[definition.name].update(item.function for item in items)
        for definition in self.modules.values():
            for i, obj in enumerate(definition.objects):
                self._check_object(definition, i, obj)

    def _check(self, definition: ModuleDef) -> None:
        name = definition.name
        for key in ("kobjects", "kprobes", "procs"):
            if getattr(definition, key):
                raise NotPortable(name, key.rstrip("s"), "lpfs only")
        for param in definition.params:
            if param.array:
                raise NotPortable(name, f"param {param.name}", "array parameters are lpfs only")
        if definition.livepatch and definition.tasks:
            raise NotPortable(name, "task", "work items belong to plain target modules")
        if not definition.livepatch and definition.objects:
            raise NotPortable(name, "object", "only a livepatch module patches")

    def _check_object(self, definition: ModuleDef, index: int, obj: ObjectDef) -> None:
        where = f"object[{index}]"
        for j, func in enumerate(obj.funcs):
            fwhere = f"{where}.func[{j}]"
            if func.fault is not None:
                raise NotPortable(definition.name, f"{fwhere}.fault", "faults are lpfs only")
            if obj.name == VMLINUX:
                if func.old_name not in SHOW_FUNCTIONS:
                    known = " or ".join(sorted(SHOW_FUNCTIONS))
                    raise NotPortable(definition.name, fwhere, f"of vmlinux only {known}")
                if func.output is None:
                    raise NotPortable(definition.name, f"{fwhere}.output", "a show needs output")
                continue
            target = self.modules.get(obj.name)
            if target is None or target.livepatch:
                raise NotPortable(
                    definition.name, where, f"'{obj.name}' is not a plain module of this set"
                )
            if func.output is not None:
                raise NotPortable(definition.name, f"{fwhere}.output", "not shown anywhere")
            self.functions[obj.name].add(func.old_name)


def compile_set(definitions: Iterable[ModuleDef]) -> dict[str, str]:
    """Each module's C source, by module name; NotPortable if any is not portable."""
    modules = _Set(definitions)
    return {
        name: _Source(modules, definition).text() for name, definition in modules.modules.items()
    }


def compile_directory(directory: Path = MODULES) -> dict[str, str]:
    """compile_set() of every module file in ``directory``."""
    return compile_set(modfile.load(path) for path in sorted(directory.glob("*.toml")))


def write_kbuild(sources: dict[str, str], directory: Path) -> None:
    """The C files and the Kbuild that builds them, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (directory / f"{name}.c").write_text(text)
    objects = " ".join(f"{name}.o" for name in sorted(sources))
    (directory / "Kbuild").write_text(f"obj-m += {objects}\n")


class _Source:
    """One module's C source."""

    def __init__(self, modules: _Set, definition: ModuleDef) -> None:
        self.modules = modules
        self.definition = definition
        self.name = definition.name
        self.lines: list[str] = []

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def text(self) -> str:
        definition = self.definition
        self.emit(
            f"// {self.name}: made from {Path(definition.source).name} by conformance/modcc.py",
            '#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt',
            "",
            "#include <linux/module.h>",
            "#include <linux/kernel.h>",
            "#include <linux/delay.h>",
            "#include <linux/completion.h>",
            "#include <linux/workqueue.h>",
            "#include <linux/seq_file.h>",
        )
        if definition.livepatch:
            self.emit("#include <linux/livepatch.h>")
        self.emit("")
        for param in definition.params:
            self._param(param)
        if definition.livepatch:
            self._patch()
        else:
            self._target()
        self._init_exit()
        self.emit("", 'MODULE_LICENSE("GPL");')
        if definition.livepatch:
            self.emit('MODULE_INFO(livepatch, "Y");')
        return "\n".join(self.lines) + "\n"

    def _param(self, param: ParamDef) -> None:
        if param.type == "charp":
            self.emit(f"static char *{param.name} = {_c_string(str(param.default))};")
        elif param.type == "bool":
            self.emit(f"static bool {param.name} = {'true' if param.default else 'false'};")
        else:
            assert isinstance(param.default, int)  # the reader checked it; arrays are refused
            self.emit(f"static int {param.name} = {param.default};")
        self.emit(f"module_param({param.name}, {param.type}, 0{param.mode:o});", "")

    def _print(self, text: str, **fields: str | Runtime) -> str:
        return _pr_info(self.name, text, {"module": self.name, **fields})

    # -- plain target modules -------------------------------------------------

    def _target(self) -> None:
        items = self.modules.work[self.name]
        sleeps = {item.function: item.param for item in items}
        for function in sorted(self.modules.functions[self.name]):
            body = (
                f"while (READ_ONCE({sleeps[function]}))\n\t\tmsleep(20);"
                if function in sleeps
                else "barrier();"
            )
            self.emit(
                f"void {function}(void);",  # global, so that GCC keeps it when unused
                f"noinline __attribute__((noipa)) void {function}(void)",
                "{",
                f"\t{body}",
                "}",
                "",
            )
        for number, item in enumerate(items):
            # F only sleeps; the work function around it prints and signals,
            # so a patch of F never leaves init waiting for a start line.
            self.emit(
                f"static DECLARE_COMPLETION(work{number}_started);",
                "",
                f"static void work{number}_func(struct work_struct *work)",
                "{",
                *(f"\t{self._print(text)}" for text in item.start),
                f"\tcomplete(&work{number}_started);",
                f"\t{item.function}();",
                *(f"\t{self._print(text)}" for text in item.finish),
                "}",
                "",
                f"static DECLARE_WORK(work{number}, work{number}_func);",
                "",
            )

    # -- livepatch modules ----------------------------------------------------

    def _patch(self) -> None:
        definition = self.definition
        if any(obj.callbacks and obj.name != VMLINUX for obj in definition.objects):
            self._state_names()
        for i, obj in enumerate(definition.objects):
            for func in obj.funcs:
                self._replacement(obj, func.new_name, func.output)
            if obj.callbacks is not None:
                self._callbacks(i, obj, obj.callbacks)
            self.emit(f"static struct klp_func funcs{i}[] = {{")
            for func in obj.funcs:
                sympos = f" .old_sympos = {func.old_sympos}," if func.old_sympos else ""
                self.emit(
                    f"\t{{ .old_name = {_c_string(func.old_name)}, "
                    f".new_func = {func.new_name},{sympos} }},"
                )
            self.emit("\t{ }", "};", "")
        self.emit("static struct klp_object objs[] = {")
        for i, obj in enumerate(definition.objects):
            name = "NULL" if obj.name == VMLINUX else _c_string(obj.name)
            self.emit("\t{", f"\t\t.name = {name},", f"\t\t.funcs = funcs{i},")
            if obj.callbacks is not None:
                self.emit("\t\t.callbacks = {")
                for callback in CALLBACK_NAMES:
                    if obj.callbacks.lines(callback) is not None:
                        self.emit(f"\t\t\t.{callback} = obj{i}_{callback},")
                self.emit("\t\t},")
            self.emit("\t},")
        self.emit("\t{ }", "};", "")
        if definition.states:
            self.emit("static struct klp_state states[] = {")
            for state in definition.states:
                self.emit(f"\t{{ .id = {state.id}, .version = {state.version} }},")
            self.emit("\t{ }", "};", "")
        self.emit("static struct klp_patch patch = {", "\t.mod = THIS_MODULE,", "\t.objs = objs,")
        if definition.states:
            self.emit("\t.states = states,")
        if definition.replace:
            self.emit("\t.replace = true,")
        self.emit("};", "")

    def _state_names(self) -> None:
        self.emit("static const char *const module_state_text[] = {")
        for state, text in MODULE_STATE_TEXT.items():
            self.emit(f"\t[{state}] = {_c_string(text)},")
        self.emit(
            "};",
            "",
            "static const char *object_state(struct klp_object *obj)",
            "{",
            '\treturn obj->mod ? module_state_text[obj->mod->state] : "";',
            "}",
            "",
        )

    def _replacement(self, obj: ObjectDef, new: str, output: str | None) -> None:
        if obj.name == VMLINUX:
            self.emit(
                f"static int {new}(struct seq_file *m, void *v)",
                "{",
                f'\tseq_printf(m, "%s\\n", {_c_string(output or "")});',
                "\treturn 0;",
                "}",
                "",
            )
        else:
            self.emit(f"static void {new}(void)", "{", "}", "")

    def _callbacks(self, index: int, obj: ObjectDef, callbacks: Callbacks) -> None:
        for callback in CALLBACK_NAMES:
            lines = callbacks.lines(callback)
            if lines is None:
                continue
            name = f"{callback}_callback"
            fields: dict[str, str | Runtime] = {"object": obj.name, "callback": name}
            if obj.name == VMLINUX:
                fields["info"] = f"{name}: {VMLINUX}"
            else:
                fields["state"] = OBJECT_STATE
                fields["info"] = Runtime(f"{name}: {obj.name} -> %s", OBJECT_STATE.args)
            returns = "int" if callback == "pre_patch" else "void"
            self.emit(f"static {returns} obj{index}_{callback}(struct klp_object *obj)", "{")
            for line in lines:
                self._callback_line(line, self._print(line.text, **fields))
            if callback == "pre_patch":
                self.emit(f"\treturn {callbacks.pre_patch_ret};")
            self.emit("}", "")

    def _callback_line(self, line: Line, call: str) -> None:
        if line.if_prev_state is not None:
            self.emit(f"\tif (klp_get_prev_state({line.if_prev_state}))", f"\t\t{call}")
        elif line.unless_prev_state is not None:
            self.emit(f"\tif (!klp_get_prev_state({line.unless_prev_state}))", f"\t\t{call}")
        else:
            self.emit(f"\t{call}")

    # -- init and exit ----------------------------------------------------------

    def _init_exit(self) -> None:
        definition = self.definition
        items = self.modules.work[self.name]
        self.emit("static int __init module_start(void)", "{")
        self.emit(*(f"\t{self._print(text)}" for text in definition.init))
        for number, item in enumerate(items):
            self.emit(
                f"\tschedule_work(&work{number});",
                f"\twait_for_completion(&work{number}_started);",
                f"\tif (!READ_ONCE({item.param}))",
                f"\t\tflush_work(&work{number});",
            )
        if definition.livepatch:
            if definition.replace_param is not None:
                self.emit(f"\tpatch.replace = !!{definition.replace_param};")
            self.emit("\treturn klp_enable_patch(&patch);")
        else:
            self.emit("\treturn 0;")
        self.emit("}", "", "static void __exit module_stop(void)", "{")
        for number, item in enumerate(items):
            self.emit(f"\tWRITE_ONCE({item.param}, false);", f"\tflush_work(&work{number});")
        self.emit(*(f"\t{self._print(text)}" for text in definition.exit))
        self.emit("}", "", "module_init(module_start);", "module_exit(module_stop);")
