"""Scenario files: the tasks and modules a daemon starts with.

modules = ["test_klp_livepatch.toml"]   # loaded in order, paths relative to this file
[[task]]
pid = 100
comm = "cat"
state = "sleeping"                      # running | sleeping | uninterruptible (R/S/D)
stack = ["cmdline_proc_show", "seq_read"]
kthread = false
unreliable = false
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from lpfs.errors import ModfileError
from lpfs.kernel.tasks import SchedState, Task

_TASK_KEYS = {"pid", "comm", "state", "stack", "kthread", "unreliable", "parent"}


@dataclass(frozen=True, slots=True)
class Scenario:
    tasks: tuple[tuple[Task, int | None], ...]
    modules: tuple[Path, ...]


def load(path: str | Path) -> Scenario:
    """Read a scenario file; ModfileError (file, key, reason) on any fault."""
    path = Path(path)
    file = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModfileError(file, "", exc.strerror or str(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModfileError(file, "", f"not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("task", "modules"):
            raise ModfileError(file, key, "unknown key")
    modules = doc.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ModfileError(file, "modules", "expected an array of file names")
    tasks = []
    for i, raw in enumerate(doc.get("task", [])):
        where = f"task[{i}]"
        if not isinstance(raw, dict):
            raise ModfileError(file, where, "expected a table")
        for key in raw:
            if key not in _TASK_KEYS:
                raise ModfileError(file, f"{where}.{key}", "unknown key")
        try:
            task = task_from_fields(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModfileError(file, where, str(exc)) from None
        parent = raw.get("parent")
        tasks.append((task, parent if isinstance(parent, int) else None))
    return Scenario(tuple(tasks), tuple(path.parent / m for m in modules))


def task_from_fields(fields: dict[str, object]) -> Task:
    """A simulated task from request or file fields; KeyError/TypeError/ValueError if bad."""
    pid = fields["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"pid must be a positive integer, got {pid!r}")
    comm = fields.get("comm", f"task{pid}")
    stack = fields.get("stack", [])
    if not isinstance(comm, str):
        raise TypeError(f"comm must be a string, got {comm!r}")
    if not isinstance(stack, list) or not all(isinstance(f, str) for f in stack):
        raise TypeError(f"stack must be a list of function names, got {stack!r}")
    kthread = fields.get("kthread", False)
    unreliable = fields.get("unreliable", False)
    if not isinstance(kthread, bool) or not isinstance(unreliable, bool):
        raise TypeError("kthread and unreliable must be booleans")
    return Task(
        pid=pid,
        comm=comm[:15],  # TASK_COMM_LEN
        state=SchedState.parse(str(fields.get("state", "sleeping"))),
        stack=tuple(stack),
        kthread=kthread,
        unreliable=unreliable,
    )
