"""Module files: TOML definitions of livepatch and plain kernel modules.

The format is a public, versioned interface documented in the README
("Module files"). Every key is checked for type; an unknown key is an error
that names the file and the key. Limits that the kernel itself enforces at
``klp_enable_patch()`` time (name lengths, duplicates, a patch without
objects) are left to the core, so that loading fails with the kernel's errno.
"""

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .errors import ModfileError

FORMAT_VERSION: Final = 1
MODULE_NAME_LEN: Final = 56  # including the terminating NUL, as in the kernel
_MODULE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class FuncDef:
    """``[[object.func]]``: one function to redirect."""

    old_name: str
    new_name: str
    old_sympos: int = 0


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """``[[object]]``: vmlinux or a module, and its functions."""

    name: str
    funcs: tuple[FuncDef, ...] = ()


@dataclass(frozen=True, slots=True)
class StateDef:
    """``[[state]]``: a system state the patch sets up (struct klp_state)."""

    id: int
    version: int = 0


@dataclass(frozen=True, slots=True)
class ModuleDef:
    """A module as its file defines it."""

    name: str
    livepatch: bool = True
    replace: bool = False
    objects: tuple[ObjectDef, ...] = ()
    states: tuple[StateDef, ...] = ()
    source: str = ""

    @property
    def calls_klp_enable_patch(self) -> bool:
        """A livepatch module, or any module that declares objects to patch."""
        return self.livepatch or bool(self.objects)


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
        value = self.get(doc, where, key, list, [])
        return value

    def count(self, doc: dict[str, Any], where: str, key: str, default: Any) -> int:
        value = self.get(doc, where, key, int, default)
        if value < 0:
            raise self.fail(_join(where, key), f"must not be negative, got {value}")
        return value


_REQUIRED: Final = object()
_KIND_NAMES: Final = {str: "a string", bool: "a boolean", int: "an integer", list: "an array"}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse(text: str, file: str, default_name: str = "") -> ModuleDef:
    """Parse a module file's text; ModfileError on any fault."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModfileError(file, "", f"not valid TOML: {exc}") from None
    rd = _Reader(file)
    top = rd.table(doc, "", {"format", "name", "livepatch", "replace", "object", "state"})
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
    objects = []
    for i, raw in enumerate(rd.array(top, "", "object")):
        where = f"object[{i}]"
        obj = rd.table(raw, where, {"name", "func"})
        funcs = []
        for j, raw_func in enumerate(rd.array(obj, where, "func")):
            fwhere = f"{where}.func[{j}]"
            func = rd.table(raw_func, fwhere, {"old_name", "new_name", "old_sympos"})
            funcs.append(
                FuncDef(
                    old_name=rd.get(func, fwhere, "old_name", str, _REQUIRED),
                    new_name=rd.get(func, fwhere, "new_name", str, _REQUIRED),
                    old_sympos=rd.count(func, fwhere, "old_sympos", 0),
                )
            )
        objects.append(ObjectDef(rd.get(obj, where, "name", str, "vmlinux"), tuple(funcs)))
    states = []
    for i, raw in enumerate(rd.array(top, "", "state")):
        where = f"state[{i}]"
        state = rd.table(raw, where, {"id", "version"})
        states.append(
            StateDef(rd.count(state, where, "id", _REQUIRED), rd.count(state, where, "version", 0))
        )
    return ModuleDef(
        name=name,
        livepatch=rd.get(top, "", "livepatch", bool, True),
        replace=rd.get(top, "", "replace", bool, False),
        objects=tuple(objects),
        states=tuple(states),
        source=file,
    )


def load(path: str | Path) -> ModuleDef:
    """Read a module file; the module name defaults to the file's stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModfileError(str(path), "", exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise ModfileError(str(path), "", "not UTF-8 text") from None
    return parse(text, str(path), default_name=path.name.split(".", 1)[0])
