"""ftrace as livepatch and its neighbours meet it: each function's IPMODIFY slot,
the kernel.ftrace_enabled sysctl, and the function tracer.

A livepatch and a kprobe with a post handler both change the instruction
pointer of the function they hook, and ftrace lets one ftrace_ops do that
per function (__ftrace_hash_update_ipmodify(), kernel/trace/ftrace.c): the
second one is refused with EBUSY. The function tracer records each call of
a function its filter names (kernel/trace/trace_functions.c); the calls lpfs
knows of are the show functions its /proc files run, the original and, on
a patched task, the replacement klp_ftrace_handler() sends it to.
"""

import errno
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from lpfs.errors import KernelError
from lpfs.kernel.clock import Clock
from lpfs.kernel.klog import KERN_WARNING, KernelLog
from lpfs.kernel.profiles import Profile

TRACERS: Final = ("function", "nop")  # available_tracers
# What set_ftrace_filter shows when it is empty: every function is traced.
ALL_FUNCTIONS: Final = "#### all functions enabled ####\n"
TRACE_HEADER: Final = (
    "#                                _-----=> irqs-off/BH-disabled\n"
    "#                               / _----=> need-resched\n"
    "#                              | / _---=> hardirq/softirq\n"
    "#                              || / _--=> preempt-depth\n"
    "#                              ||| / _-=> migrate-disable\n"
    "#                              |||| /     delay\n"
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
    "#              | |         |   |||||     |         |\n"
)
# The slot owner a livepatch's klp_ops registers as.
LIVEPATCH: Final = "livepatch"


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One function-tracer event: who called what, from where."""

    comm: str
    pid: int
    usecs: int
    function: str
    parent: str

    def line(self) -> str:
        """trace_print_context() and print_fn_trace(): ``cat-42 [000] ..... 1.5: f <-p``."""
        secs, usecs = divmod(self.usecs, 1_000_000)
        return (
            f"{self.comm[:15]:>16}-{self.pid:<7} [000] ..... {secs:5d}.{usecs:06d}: "
            f"{self.function} <-{self.parent}\n"
        )


@dataclass
class Ftrace:
    """The ftrace state one kernel has."""

    log: KernelLog
    profile: Profile
    clock: Clock
    # available_filter_functions: the names set_ftrace_filter accepts.
    known: Callable[[], set[str]]
    enabled: bool = True  # the kernel.ftrace_enabled sysctl
    tracing_on: bool = True
    tracer: str = "nop"
    filter: list[str] = field(default_factory=list)
    buffer: list[TraceEntry] = field(default_factory=list)
    written: int = 0  # entries ever recorded since the last reset
    _ipmodify: dict[str, str] = field(default_factory=dict)
    _warned_deprecated: bool = False

    def __post_init__(self) -> None:
        self._boot = self.clock.monotonic()

    def reset(self) -> None:
        """A freshly booted kernel's ftrace: on, nothing traced, no slot taken."""
        self.enabled, self.tracing_on, self.tracer = True, True, "nop"
        self.filter.clear()
        self.buffer.clear()
        self.written = 0
        self._ipmodify.clear()
        self._warned_deprecated = False

    # -- IPMODIFY ------------------------------------------------------------

    def claim_ipmodify(self, function: str, owner: str, permanent: bool = False) -> int:
        """register_ftrace_function() of an IPMODIFY ops on ``function``: 0 or -EBUSY.

        A PERMANENT ops (a livepatch's) cannot register while
        kernel.ftrace_enabled is 0 (__register_ftrace_function()); any
        IPMODIFY ops is refused where another one sits.
        """
        if permanent and not self.enabled:
            return -errno.EBUSY
        holder = self._ipmodify.get(function)
        if holder is not None and holder != owner:
            return -errno.EBUSY
        self._ipmodify[function] = owner
        return 0

    def release_ipmodify(self, function: str, owner: str) -> None:
        """unregister_ftrace_function(): the slot is free again."""
        if self._ipmodify.get(function) == owner:
            del self._ipmodify[function]

    # -- kernel.ftrace_enabled -----------------------------------------------

    def set_enabled(self, enabled: bool, permanent_ops: bool) -> None:
        """ftrace_enable_sysctl(). Raises KernelError.

        Turning it off: EBUSY while a PERMANENT ops (a livepatch's) is
        registered; from 7.3 always EOPNOTSUPP, with a warning once.
        """
        if not enabled and self.profile.ftrace_enabled_refuses_disable:
            if not self._warned_deprecated:
                self.log.printk(
                    KERN_WARNING,
                    "The ftrace_enabled file is deprecated and no longer disables ftrace",
                )
                self._warned_deprecated = True
            raise KernelError(errno.EOPNOTSUPP)
        if not enabled and permanent_ops:
            raise KernelError(errno.EBUSY)
        self.enabled = enabled

    # -- the function tracer -------------------------------------------------

    def traces(self, function: str) -> bool:
        """Whether a call of ``function`` lands in the trace buffer now."""
        if not (self.enabled and self.tracing_on and self.tracer == "function"):
            return False
        return not self.filter or function in self.filter

    def call(self, function: str, parent: str, comm: str, pid: int) -> None:
        """function_trace_call(): record the call if the tracer wants it."""
        if not self.traces(function):
            return
        usecs = round((self.clock.monotonic() - self._boot) * 1_000_000)
        self.buffer.append(TraceEntry(comm, pid, usecs, function, parent))
        self.written += 1

    def show(self, name: str) -> str:
        """What a read of tracing/<name> shows. Raises KernelError(ENOENT)."""
        if name == "tracing_on":
            return f"{int(self.tracing_on)}\n"
        if name == "current_tracer":
            return f"{self.tracer}\n"
        if name == "available_tracers":
            return " ".join(TRACERS) + "\n"
        if name == "available_filter_functions":
            return "".join(f"{f}\n" for f in sorted(self.known()))
        if name == "set_ftrace_filter":
            return "".join(f"{f}\n" for f in self.filter) or ALL_FUNCTIONS
        if name == "trace":
            return self._trace_text()
        raise KernelError(errno.ENOENT)

    def _trace_text(self) -> str:
        """tracing_open()'s seq_file: the header (print_func_help_header_irq()), then events."""
        entries = len(self.buffer)
        header = (
            f"# tracer: {self.tracer}\n#\n"
            f"# entries-in-buffer/entries-written: {entries}/{self.written}   #P:1\n#\n"
        )
        return header + TRACE_HEADER + "".join(e.line() for e in self.buffer)

    def truncate(self, name: str) -> None:
        """An open with O_TRUNC: set_ftrace_filter forgets its functions, trace its events."""
        if name == "set_ftrace_filter":
            self.filter.clear()
        elif name == "trace":
            self.buffer.clear()
            self.written = 0

    def store(self, name: str, text: str) -> None:
        """A write to tracing/<name>. Raises KernelError (EINVAL for what the file rejects)."""
        if name == "tracing_on":
            value = text.strip()
            if not value.isdigit():  # kstrtoul_from_user(), base 10
                raise KernelError(errno.EINVAL)
            self.tracing_on = int(value) != 0
        elif name == "current_tracer":
            self._set_tracer(text.strip())
        elif name == "set_ftrace_filter":
            self._add_filters(text.split())
        elif name != "trace":  # a write to trace is taken and dropped (tracing_write_stub())
            raise KernelError(errno.EACCES)

    def _set_tracer(self, tracer: str) -> None:
        """tracing_set_tracer(): a known tracer; changing it empties the buffer."""
        if tracer not in TRACERS:
            raise KernelError(errno.EINVAL)
        if tracer != self.tracer:
            self.tracer = tracer
            self.truncate("trace")

    def _add_filters(self, words: list[str]) -> None:
        """ftrace_regex_write(): each word a glob to add, or ``!glob`` to remove."""
        known = self.known()
        for word in words:
            remove = word.startswith("!")
            matched = sorted(fnmatch.filter(known, word.removeprefix("!")))
            if not matched and not remove:
                raise KernelError(errno.EINVAL)
            for function in matched:
                if remove and function in self.filter:
                    self.filter.remove(function)
                elif not remove and function not in self.filter:
                    self.filter.append(function)
