"""Module files: TOML definitions of livepatch and plain kernel modules.

The format is a public, versioned interface documented in the README
("Module files"). Every key is checked for type; an unknown key is an error
that names the file and the key. Limits that the kernel itself enforces at
``klp_enable_patch()`` time (name lengths, duplicates, a patch without
objects) are left to the core, so that loading fails with the kernel's errno.
"""

import os
import re
from pathlib import Path
from typing import Any, Final

from lpfs.errors import ModfileError
from lpfs.formats import elf
from lpfs.kernel.structs import (
    CALLBACK_NAMES,
    FAULTS,
    MODULE_NAME_LEN,
    AttrDef,
    Callbacks,
    FuncDef,
    KobjectDef,
    KprobeDef,
    Line,
    ModuleDef,
    ObjectDef,
    ParamDef,
    ParamText,
    PendingCallers,
    ProcDef,
    StateDef,
    TaskDef,
)
from lpfs.kernel.tasks import SchedState

FORMAT_VERSION: Final = 1
LPFS_SECTION: Final = ".lpfs.module"  # where `lpfs pack` keeps the module file in a .ko
_MODULE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_]+")


def module_name(raw: str) -> str:
    """The kernel's name for a module: kbuild turns '-' into '_'."""
    return raw.replace("-", "_")


def module_name_from_arg(arg: str) -> str:
    """The module an rmmod argument names: a name or a file path, as kmod accepts."""
    base = os.path.basename(arg)
    for suffix in (".ko", ".toml"):
        base = base.removesuffix(suffix)
    return module_name(base)


class _Reader:
    """Walks a parsed TOML document, checking keys and types with their paths."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, reason: str) -> ModfileError:
        return ModfileError(self.file, key, reason)

    def table(self, doc: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise self.fail(where, f"expected a table, got {_describe(doc)}")
        for key in doc:
            if key not in allowed:
                raise self.fail(_join(where, key), "unknown key")
        return doc

    def get(self, doc: dict[str, Any], where: str, key: str, kind: type, default: Any) -> Any:
        path = _join(where, key)
        if key not in doc:
            if default is _REQUIRED:
                raise self.fail(path, "missing")
            return default
        value = doc[key]
        # bool is an int in Python; TOML keeps them apart, so must we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(path, f"expected {_KIND_NAMES[kind]}, got {_describe(value)}")
        return value

    def array(self, doc: dict[str, Any], where: str, key: str) -> list[Any]:
        value: list[Any] = self.get(doc, where, key, list, [])
        return value

    def count(self, doc: dict[str, Any], where: str, key: str, default: Any) -> int:
        value: int = self.get(doc, where, key, int, default)
        if value < 0:
            raise self.fail(_join(where, key), f"must not be negative, got {value}")
        return value


_REQUIRED: Final = object()
_KIND_NAMES: Final = {str: "a string", bool: "a boolean", int: "an integer", list: "an array"}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_TEMPLATE_FIELDS: Final = {"module", "object", "callback", "state", "info"}
_PARAM_TYPES: Final = {"int": int, "bool": bool, "charp": str}


def parse(text: str, file: str, default_name: str = "") -> ModuleDef:
    """Parse a module file's text; ModfileError on any fault."""
    import tomllib  # here, not at the top: a mount without modules never parses one

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModfileError(file, "", f"not valid TOML: {exc}") from None
    rd = _Reader(file)
    top = rd.table(
        doc,
        "",
        {
            "format",
            "name",
            "livepatch",
            "replace",
            "object",
            "state",
            "param",
            "init",
            "exit",
            "task",
            "kobject",
            "kprobe",
            "proc",
        },
    )
    fmt = rd.get(top, "", "format", int, FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise rd.fail(
            "format", f"unsupported format {fmt}, this lpfs reads format {FORMAT_VERSION}"
        )
    name = module_name(rd.get(top, "", "name", str, default_name or _REQUIRED))
    if not _MODULE_NAME_RE.fullmatch(name):
        raise rd.fail("name", f"'{name}' is not a module name (letters, digits, '_' and '-')")
    if len(name) >= MODULE_NAME_LEN:
        raise rd.fail("name", f"longer than {MODULE_NAME_LEN - 1} characters")
    params = tuple(
        _parse_param(rd, raw, f"param[{i}]") for i, raw in enumerate(rd.array(top, "", "param"))
    )
    replace, replace_param = _parse_replace(rd, top, params)
    objects = tuple(
        _parse_object(rd, raw, f"object[{i}]", params)
        for i, raw in enumerate(rd.array(top, "", "object"))
    )
    definition = ModuleDef(
        name=name,
        livepatch=rd.get(top, "", "livepatch", bool, True),
        replace=replace,
        replace_param=replace_param,
        objects=objects,
        states=tuple(
            _parse_state(rd, raw, f"state[{i}]") for i, raw in enumerate(rd.array(top, "", "state"))
        ),
        params=params,
        init=_parse_texts(rd, top, "", "init"),
        exit=_parse_texts(rd, top, "", "exit"),
        tasks=tuple(
            _parse_task(rd, raw, f"task[{i}]", params)
            for i, raw in enumerate(rd.array(top, "", "task"))
        ),
        kobjects=_parse_kobjects(rd, top, params, objects),
        kprobes=tuple(
            _parse_kprobe(rd, raw, f"kprobe[{i}]", params)
            for i, raw in enumerate(rd.array(top, "", "kprobe"))
        ),
        procs=_parse_procs(rd, top),
        source=file,
    )
    return definition


def _declared(rd: _Reader, where: str, ref: str, params: tuple[ParamDef, ...]) -> ParamDef:
    param = next((p for p in params if p.name == ref), None)
    if param is None:
        raise rd.fail(where, f"no parameter '{ref}' is declared")
    return param


def _param_ref(
    rd: _Reader,
    where: str,
    ref: str,
    params: tuple[ParamDef, ...],
    types: tuple[str, ...],
    *,
    array: bool = False,
) -> str:
    """The name of a declared parameter of one of ``types``, an array or not as asked."""
    param = _declared(rd, where, ref, params)
    if param.type not in types or bool(param.array) != array:
        wanted = " or ".join(f"array of {t}" if array else t for t in types)
        have = f"array of {param.type}" if param.array else param.type
        raise rd.fail(where, f"parameter '{ref}' is {have}, not {wanted}")
    return ref


def _parse_replace(
    rd: _Reader, top: dict[str, Any], params: tuple[ParamDef, ...]
) -> tuple[bool, str | None]:
    raw = top.get("replace", False)
    if isinstance(raw, dict):
        ref = rd.table(raw, "replace", {"param"})
        name = rd.get(ref, "replace", "param", str, _REQUIRED)
        return False, _param_ref(rd, "replace.param", name, params, ("int", "bool"))
    return rd.get(top, "", "replace", bool, False), None


def _parse_mode(rd: _Reader, doc: dict[str, Any], where: str, default: int) -> int:
    mode = rd.count(doc, where, "mode", default)
    if mode & ~0o777 or mode & 0o002:
        raise rd.fail(f"{where}.mode", f"{oct(mode)} is not a sysfs mode (no world write)")
    return mode


def _parse_param(rd: _Reader, raw: Any, where: str) -> ParamDef:
    param = rd.table(raw, where, {"name", "type", "mode", "default", "array"})
    name = rd.get(param, where, "name", str, _REQUIRED)
    if not _MODULE_NAME_RE.fullmatch(name):
        raise rd.fail(f"{where}.name", f"'{name}' is not a parameter name")
    kind = rd.get(param, where, "type", str, _REQUIRED)
    if kind not in _PARAM_TYPES:
        raise rd.fail(f"{where}.type", f"expected int, bool or charp, got '{kind}'")
    mode = _parse_mode(rd, param, where, 0o644)
    array = rd.count(param, where, "array", 0)
    if not array:
        zero = {"int": 0, "bool": False, "charp": ""}[kind]
        default = rd.get(param, where, "default", _PARAM_TYPES[kind], zero)
        return ParamDef(name, kind, mode, default)
    elements = rd.get(param, where, "default", list, [])
    for i, element in enumerate(elements):
        if not isinstance(element, _PARAM_TYPES[kind]) or isinstance(element, bool) != (
            kind == "bool"
        ):
            raise rd.fail(f"{where}.default[{i}]", f"expected {kind}, got {_describe(element)}")
    if len(elements) > array:
        raise rd.fail(f"{where}.default", f"more than {array} elements")
    return ParamDef(name, kind, mode, tuple(elements), array)


def _parse_object(rd: _Reader, raw: Any, where: str, params: tuple[ParamDef, ...]) -> ObjectDef:
    obj = rd.table(raw, where, {"name", "func", "callbacks"})
    funcs = []
    for j, raw_func in enumerate(rd.array(obj, where, "func")):
        fwhere = f"{where}.func[{j}]"
        func = rd.table(
            raw_func,
            fwhere,
            {"old_name", "new_name", "old_sympos", "fault", "fault_errno", "output"},
        )
        fault = rd.get(func, fwhere, "fault", str, None)
        if fault is not None and fault not in FAULTS:
            raise rd.fail(f"{fwhere}.fault", f"'{fault}' is not one of {', '.join(FAULTS)}")
        default_errno = FAULTS.get(fault or "")
        fault_errno = rd.get(func, fwhere, "fault_errno", int, default_errno or 0)
        if "fault_errno" in func and default_errno is None:
            raise rd.fail(f"{fwhere}.fault_errno", "only ftrace faults take an errno")
        if default_errno is not None and not -4095 <= fault_errno < 0:
            raise rd.fail(f"{fwhere}.fault_errno", f"expected a negative errno, got {fault_errno}")
        funcs.append(
            FuncDef(
                old_name=rd.get(func, fwhere, "old_name", str, _REQUIRED),
                new_name=rd.get(func, fwhere, "new_name", str, _REQUIRED),
                old_sympos=rd.count(func, fwhere, "old_sympos", 0),
                fault=fault,
                fault_errno=fault_errno,
                output=rd.get(func, fwhere, "output", str, None),
            )
        )
    return ObjectDef(
        rd.get(obj, where, "name", str, "vmlinux"),
        tuple(funcs),
        _parse_callbacks(rd, obj, f"{where}.callbacks", params),
    )


def _parse_callbacks(
    rd: _Reader, obj: dict[str, Any], where: str, params: tuple[ParamDef, ...]
) -> Callbacks | None:
    raw = obj.get("callbacks")
    if raw is None or raw is False:
        return None
    if raw is True:  # the kernel test modules' callbacks: callback_info() each
        info = (Line("{info}"),)
        return Callbacks(info, info, info, info)
    table = rd.table(raw, where, {*CALLBACK_NAMES, "pre_patch_ret"})
    ret: int | str = 0
    if "pre_patch_ret" in table:
        value = table["pre_patch_ret"]
        if isinstance(value, dict):
            ref = rd.table(value, f"{where}.pre_patch_ret", {"param"})
            name = rd.get(ref, f"{where}.pre_patch_ret", "param", str, _REQUIRED)
            ret = _param_ref(rd, f"{where}.pre_patch_ret.param", name, params, ("int",))
        else:
            ret = rd.get(table, where, "pre_patch_ret", int, 0)
    lines = {
        name: _parse_lines(rd, table[name], f"{where}.{name}")
        for name in CALLBACK_NAMES
        if name in table
    }
    return Callbacks(**lines, pre_patch_ret=ret)


def _parse_lines(rd: _Reader, raw: Any, where: str) -> tuple[Line, ...]:
    if not isinstance(raw, list):
        raise rd.fail(where, f"expected an array of lines, got {_describe(raw)}")
    lines = []
    for i, item in enumerate(raw):
        lwhere = f"{where}[{i}]"
        if isinstance(item, str):
            line = Line(item)
        else:
            table = rd.table(item, lwhere, {"text", "if_prev_state", "unless_prev_state"})
            line = Line(
                rd.get(table, lwhere, "text", str, _REQUIRED),
                rd.get(table, lwhere, "if_prev_state", int, None),
                rd.get(table, lwhere, "unless_prev_state", int, None),
            )
        _check_template(rd, lwhere, line.text)
        lines.append(line)
    return tuple(lines)


def _check_template(rd: _Reader, where: str, text: str) -> None:
    try:
        text.format_map(dict.fromkeys(_TEMPLATE_FIELDS, ""))
    except KeyError as exc:
        raise rd.fail(where, f"unknown placeholder {{{exc.args[0]}}}") from None
    except (ValueError, IndexError) as exc:
        raise rd.fail(where, f"bad template: {exc}") from None


def _parse_texts(rd: _Reader, doc: dict[str, Any], where: str, key: str) -> tuple[str, ...]:
    texts = rd.array(doc, where, key)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise rd.fail(f"{_join(where, key)}[{i}]", f"expected a string, got {_describe(text)}")
        _check_template(rd, f"{_join(where, key)}[{i}]", text)
    return tuple(texts)


def _parse_state(rd: _Reader, raw: Any, where: str) -> StateDef:
    state = rd.table(raw, where, {"id", "version"})
    return StateDef(rd.count(state, where, "id", _REQUIRED), rd.count(state, where, "version", 0))


def _parse_task(rd: _Reader, raw: Any, where: str, params: tuple[ParamDef, ...]) -> TaskDef:
    task = rd.table(
        raw, where, {"comm", "stack", "state", "kthread", "start", "finish", "while_param"}
    )
    stack = _parse_texts(rd, task, where, "stack")
    state = rd.get(task, where, "state", str, "sleeping")
    if state not in set(SchedState):
        raise rd.fail(
            f"{where}.state", f"expected running, sleeping or uninterruptible, got '{state}'"
        )
    while_param = rd.get(task, where, "while_param", str, None)
    if while_param is not None:
        _param_ref(rd, f"{where}.while_param", while_param, params, ("bool",))
    return TaskDef(
        comm=rd.get(task, where, "comm", str, "kworker/0:1")[:15],
        stack=stack,
        state=SchedState(state),
        kthread=rd.get(task, where, "kthread", bool, True),
        start=_parse_texts(rd, task, where, "start"),
        finish=_parse_texts(rd, task, where, "finish"),
        while_param=while_param,
    )


def _parse_kprobe(rd: _Reader, raw: Any, where: str, params: tuple[ParamDef, ...]) -> KprobeDef:
    kprobe = rd.table(raw, where, {"symbol", "post_handler"})
    symbol = rd.get(kprobe, where, "symbol", str, _REQUIRED)
    raw_post = kprobe.get("post_handler", False)
    if isinstance(raw_post, dict):
        pwhere = f"{where}.post_handler"
        name = rd.get(rd.table(raw_post, pwhere, {"param"}), pwhere, "param", str, _REQUIRED)
        return KprobeDef(symbol, _param_ref(rd, f"{pwhere}.param", name, params, ("bool",)))
    return KprobeDef(symbol, rd.get(kprobe, where, "post_handler", bool, False))


def _parse_procs(rd: _Reader, top: dict[str, Any]) -> tuple[ProcDef, ...]:
    procs: list[ProcDef] = []
    for i, raw in enumerate(rd.array(top, "", "proc")):
        where = f"proc[{i}]"
        proc = rd.table(raw, where, {"name", "show", "output", "mode"})
        name = _sysfs_name(rd, proc, where)
        if any(p.name == name for p in procs):
            raise rd.fail(f"{where}.name", f"'{name}' is declared twice")
        output = rd.get(proc, where, "output", str, _REQUIRED)
        procs.append(
            ProcDef(
                name,
                rd.get(proc, where, "show", str, _REQUIRED),
                output if output.endswith("\n") else output + "\n",
                _parse_mode(rd, proc, where, 0o444),
            )
        )
    return tuple(procs)


_SYSFS_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.:-]+")


def _sysfs_name(rd: _Reader, doc: dict[str, Any], where: str) -> str:
    """A kobject's or an attribute's name: one path component sysfs can show."""
    name: str = rd.get(doc, where, "name", str, _REQUIRED)
    if not _SYSFS_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise rd.fail(f"{where}.name", f"'{name}' is not a sysfs name")
    return name


def _parse_kobjects(
    rd: _Reader,
    top: dict[str, Any],
    params: tuple[ParamDef, ...],
    objects: tuple[ObjectDef, ...],
) -> tuple[KobjectDef, ...]:
    kobjects: list[KobjectDef] = []
    for i, raw in enumerate(rd.array(top, "", "kobject")):
        where = f"kobject[{i}]"
        table = rd.table(raw, where, {"name", "attr"})
        name = _sysfs_name(rd, table, where)
        if any(k.name == name for k in kobjects):
            raise rd.fail(f"{where}.name", f"'{name}' is declared twice")
        attrs: list[AttrDef] = []
        for j, raw_attr in enumerate(rd.array(table, where, "attr")):
            awhere = f"{where}.attr[{j}]"
            attr = rd.table(raw_attr, awhere, {"name", "mode", "value"})
            attr_name = _sysfs_name(rd, attr, awhere)
            if any(a.name == attr_name for a in attrs):
                raise rd.fail(f"{awhere}.name", f"'{attr_name}' is declared twice")
            mode = _parse_mode(rd, attr, awhere, 0o444)
            value = _parse_attr_value(rd, attr, awhere, params, objects)
            attrs.append(AttrDef(attr_name, mode, value))
        kobjects.append(KobjectDef(name, tuple(attrs)))
    return tuple(kobjects)


def _parse_attr_value(
    rd: _Reader,
    attr: dict[str, Any],
    where: str,
    params: tuple[ParamDef, ...],
    objects: tuple[ObjectDef, ...],
) -> str | ParamText | PendingCallers:
    """A constant (string or integer), ``{ param }`` or ``{ pids, until_called }``."""
    where = f"{where}.value"
    raw = attr.get("value")
    if isinstance(raw, str):
        return raw if raw.endswith("\n") else raw + "\n"
    if isinstance(raw, int) and not isinstance(raw, bool):
        return f"{raw}\n"
    if not isinstance(raw, dict):
        if raw is None:
            raise rd.fail(where, "missing")
        raise rd.fail(where, f"expected a string, an integer or a table, got {_describe(raw)}")
    if "param" in raw:
        ref = rd.table(raw, where, {"param"})
        name = rd.get(ref, where, "param", str, _REQUIRED)
        return ParamText(_declared(rd, f"{where}.param", name, params).name)
    ref = rd.table(raw, where, {"pids", "until_called"})
    pids = rd.get(ref, where, "pids", str, _REQUIRED)
    _param_ref(rd, f"{where}.pids", pids, params, ("int",), array=True)
    function = rd.get(ref, where, "until_called", str, _REQUIRED)
    if not any(o.name == "vmlinux" and f.old_name == function for o in objects for f in o.funcs):
        raise rd.fail(f"{where}.until_called", f"the module does not patch vmlinux's {function}")
    return PendingCallers(pids, function)


def module_text(path: Path) -> tuple[str, str]:
    """A module file's text and the module name it defaults to, from a .toml or a packed .ko.

    A .ko is recognised by its ELF magic, as the kernel does, not by its name;
    its name comes from its .modinfo, where ``lpfs pack`` recorded it. OSError
    if the file cannot be read, UnicodeDecodeError if a text file is not UTF-8.
    """
    data = path.read_bytes()
    if not data.startswith(elf.MAGIC):
        return data.decode("utf-8"), path.name.split(".", 1)[0]
    try:
        found = elf.sections(data)
    except ValueError as exc:
        raise ModfileError(str(path), "", f"not an lpfs module: {exc}") from None
    if LPFS_SECTION not in found:
        raise ModfileError(str(path), "", f"not an lpfs module: no {LPFS_SECTION} section")
    modinfo = found.get(".modinfo", b"").split(b"\0")
    name = next((e[5:].decode(errors="replace") for e in modinfo if e.startswith(b"name=")), "")
    try:
        return found[LPFS_SECTION].decode("utf-8"), name
    except UnicodeDecodeError:
        raise ModfileError(str(path), LPFS_SECTION, "not UTF-8 text") from None


def load(path: str | Path) -> ModuleDef:
    """Read a module file, .toml or packed .ko, as insmod does (``module_text``)."""
    path = Path(path)
    try:
        text, name = module_text(path)
    except OSError as exc:
        raise ModfileError(str(path), "", exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise ModfileError(str(path), "", "not UTF-8 text") from None
    return parse(text, str(path), default_name=name)
