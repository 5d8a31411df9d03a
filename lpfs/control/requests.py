"""The control protocol's requests as typed records, parsed before the daemon acts.

A request is one JSON object whose ``cmd`` names a record below and whose
other keys are that record's fields. ``parse`` checks every field's presence
and type against the record, so a handler gets exactly what it declares; a
request that does not fit is the client's fault (``RequestError``), while any
other failure in a handler is lpfs's own.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Union

from lpfs.errors import RequestError


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Insmod:
    file: str
    text: str
    name: str = ""  # the module's name when the file's does not say it (a packed .ko)
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rmmod:
    name: str


@dataclass(frozen=True)
class Lsmod:
    pass


@dataclass(frozen=True)
class Dmesg:
    clear: bool = False
    follow: bool = False


@dataclass(frozen=True)
class Kmsg:
    text: str


@dataclass(frozen=True)
class Call:
    function: str
    pid: int = 0
    comm: str = ""
    object: str = ""  # the function's object; empty for vmlinux


@dataclass(frozen=True)
class Tracing:
    file: str
    truncate: bool = False
    data: str | None = None


@dataclass(frozen=True)
class Kprobes:
    enabled: str | None = None


@dataclass(frozen=True)
class Kallsyms:
    pass


@dataclass(frozen=True)
class Sysctl:
    name: str
    value: int | None = None


@dataclass(frozen=True)
class Dyndbg:
    query: str | None = None


@dataclass(frozen=True)
class Tasks:
    blocking: bool = False


@dataclass(frozen=True)
class TaskAdd:
    pid: int
    comm: str | None = None
    state: str = "sleeping"
    stack: tuple[str, ...] = ()
    kthread: bool = False
    unreliable: bool = False
    parent: int | None = None


@dataclass(frozen=True)
class TaskSet:
    pid: int
    state: str | None = None
    stack: tuple[str, ...] | None = None
    comm: str | None = None
    kthread: bool | None = None
    unreliable: bool | None = None


@dataclass(frozen=True)
class TaskExit:
    pid: int


@dataclass(frozen=True)
class Tick:
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise RequestError(f"count must be a positive integer, not {self.count}")


@dataclass(frozen=True)
class Wait:
    patch: str
    mode: str
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("gone", "idle"):
            raise RequestError(f"mode must be 'gone' or 'idle', not {self.mode!r}")


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Stats:
    pass


Request = (
    Ping
    | Insmod
    | Rmmod
    | Lsmod
    | Dmesg
    | Kmsg
    | Call
    | Tracing
    | Kprobes
    | Kallsyms
    | Sysctl
    | Dyndbg
    | Tasks
    | TaskAdd
    | TaskSet
    | TaskExit
    | Tick
    | Wait
    | Reset
    | Status
    | Stats
)

COMMANDS: Final[dict[str, type[Request]]] = {
    "ping": Ping,
    "insmod": Insmod,
    "rmmod": Rmmod,
    "lsmod": Lsmod,
    "dmesg": Dmesg,
    "kmsg": Kmsg,
    "call": Call,
    "tracing": Tracing,
    "kprobes": Kprobes,
    "kallsyms": Kallsyms,
    "sysctl": Sysctl,
    "dyndbg": Dyndbg,
    "tasks": Tasks,
    "task_add": TaskAdd,
    "task_set": TaskSet,
    "task_exit": TaskExit,
    "tick": Tick,
    "wait": Wait,
    "reset": Reset,
    "status": Status,
    "stats": Stats,
}


def parse(request: dict[str, Any]) -> Request:
    """The record ``request`` stands for; RequestError if it does not fit one."""
    cmd = request.get("cmd")
    record = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if record is None:
        raise RequestError(f"unknown command {cmd!r}")
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    try:
        for field in dataclasses.fields(record):
            if field.name in request:
                fields[field.name] = _typed(request[field.name], hints[field.name], field.name)
            elif field.default is dataclasses.MISSING:
                raise RequestError(f"{field.name} is missing")
        return record(**fields)
    except RequestError as exc:
        raise RequestError(f"bad '{cmd}' request: {exc}") from None


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the field's type says, or RequestError; JSON lists become tuples."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [option for option in options if option is not type(None)]
    if typing.get_origin(hint) is tuple:  # tuple[str, ...], the one sequence fields use
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise RequestError(f"{name} must be a list of strings, not {value!r}")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise RequestError(f"{name} must be {hint.__name__}, not {value!r}")
