"""Portable steps: what a scenario does, as one line of bash that means the
same on the real kernel and inside ``lpfs ns``, and what is observed after it.

Both sides run the same commands: kmod's ``modprobe`` and ``rmmod`` (on the
real kernel they find the test modules through ``depmod``'s index, in lpfs
its stand-ins find its module files by name), ``echo`` into sysfs, ``dmesg``.
"""

import re
import shlex
from dataclasses import dataclass
from typing import Final

# Waits until no patch is in transition and every disabled patch's directory
# is gone (the kernel frees a disabled patch from a work item, after the write
# has returned): 600 tries 0.1 s apart, as the selftests' loop_until.
SETTLE: Final = (
    "for try in $(seq 600); do busy=; "
    'for patch in /sys/kernel/livepatch/*/; do [ -d "$patch" ] || continue; '
    '[ "$(cat "$patch/transition")" = 0 ] && [ "$(cat "$patch/enabled")" = 1 ] || busy=1; '
    'done; [ -z "$busy" ] && exit 0; sleep 0.1; done; exit 1'
)

# Every file and directory under /sys/kernel/livepatch: mode, path, and a
# file's value (`force` is write-only: reading it fails, on both sides).
SNAPSHOT: Final = (
    "cd /sys/kernel/livepatch && find . -mindepth 1 | LC_ALL=C sort | "
    'while read -r path; do mode=$(stat -c %A "$path"); '
    'if [ -d "$path" ]; then echo "$mode $path/"; '
    'elif value=$(cat "$path" 2>/dev/null); then echo "$mode $path = $value"; '
    'else echo "$mode $path (unreadable)"; fi; done'
)

TIMESTAMP: Final = re.compile(r"^\[[ 0-9.]*\] ")
# The once-per-boot lines of the first out-of-tree and unsigned module: the
# selftests drop them the same way (functions.sh, check_result).
TAINT: Final = re.compile(r"(tainting|taints) kernel")


@dataclass(frozen=True)
class Load:
    """modprobe a module with parameters."""

    module: str
    params: tuple[str, ...] = ()

    def command(self) -> str:
        return shlex.join(["modprobe", self.module, *self.params])


@dataclass(frozen=True)
class Write:
    """Write ``value`` (and a newline, as echo does) to ``/sys/<path>``."""

    path: str
    value: str

    def command(self) -> str:
        return f"echo {shlex.quote(self.value)} > {shlex.quote('/sys/' + self.path)}"


@dataclass(frozen=True)
class Remove:
    """rmmod a module."""

    module: str

    def command(self) -> str:
        return shlex.join(["rmmod", self.module])


@dataclass(frozen=True)
class Settle:
    """Wait until every transition is over and every freed patch is gone."""

    def command(self) -> str:
        return SETTLE


Step = Load | Write | Remove | Settle


def label(step: Step) -> str:
    """A step as a report names it: its command, but "settle" for that long loop."""
    return "settle" if isinstance(step, Settle) else step.command()


def refcounts(modules: list[str]) -> str:
    """``/sys/module/<m>/refcnt`` of each module, or that it is not loaded."""
    names = " ".join(shlex.quote(module) for module in modules)
    return (
        f"for module in {names}; do "
        'echo "$module refcnt $(cat /sys/module/$module/refcnt 2>/dev/null || echo absent)"; done'
    )


def kernel_log(dmesg: str) -> list[str]:
    """The log's lines without timestamps and without the taint lines."""
    return [TIMESTAMP.sub("", line) for line in dmesg.splitlines() if not TAINT.search(line)]
