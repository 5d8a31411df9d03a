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

# A patch's enabled and transition, with bash's own read: a TCG guest forks
# slowly. Errors go first to /dev/null: the patch may be gone by now.
_READ_STATE: Final = (
    "enabled=; transition=; "
    'read -r enabled 2>/dev/null < "$patch/enabled"; '
    'read -r transition 2>/dev/null < "$patch/transition";'
)


def settle(tries: int) -> str:
    """Waits until no patch is in transition and every disabled patch's
    directory is gone (the kernel frees a disabled patch from a work item,
    after the write has returned): ``tries`` tries 0.1 s apart; exits 1 if
    that never came."""
    return (
        f"for try in $(seq {tries}); do busy=; "
        'for patch in /sys/kernel/livepatch/*/; do [ -d "$patch" ] || continue; '
        f"{_READ_STATE} "
        '[ "$enabled$transition" = 10 ] || busy=1; '
        'done; [ -z "$busy" ] && exit 0; sleep 0.1; done; exit 1'
    )


# As the selftests' loop_until: 600 tries.
SETTLE: Final = settle(600)

# Every file and directory under /sys/kernel/livepatch: mode, path, and a
# file's value (`force` is write-only: reading it fails, on both sides).
SNAPSHOT: Final = (
    "cd /sys/kernel/livepatch && find . -mindepth 1 -printf '%M %p\\n' | LC_ALL=C sort -k2 | "
    "while read -r mode path; do "
    'if [ -d "$path" ]; then echo "$mode $path/"; '
    'elif read -r value 2>/dev/null < "$path"; then echo "$mode $path = $value"; '
    'else echo "$mode $path (unreadable)"; fi; done'
)

# Before each observation: until no disabled patch is left to free. The kernel
# frees one from a work item just after the transition completes, so without
# this wait a snapshot could catch its directory on the way out.
QUIESCE: Final = (
    "for try in $(seq 100); do freeing=; "
    'for patch in /sys/kernel/livepatch/*/; do [ -d "$patch" ] || continue; '
    f"{_READ_STATE} "
    '[ "$enabled$transition" = 00 ] && freeing=1; '
    'done; [ -z "$freeing" ] && break; sleep 0.05; done'
)

# Waits for the transition's fifteenth retry, which signals the tasks that
# still block it (klp_send_signals()): about 15 s after it started.
WAIT_SIGNAL: Final = (
    "for try in $(seq 600); do dmesg | grep -q 'livepatch: signaling remaining tasks' "
    "&& exit 0; sleep 0.1; done; exit 1"
)

TIMESTAMP: Final = re.compile(r"^\[[ 0-9.]*\] ")
# The lines compared, as the selftests' check_result keeps them (functions.sh):
# the livepatch core's and the test modules'. Other kernel lines, such as
# "random: crng init done", come when they come.
RELEVANT: Final = re.compile(r"livepatch:|test_klp")
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
    """Write ``value`` (and a newline, as echo does) to ``/sys/<path>``; with
    ``settle``, then wait as Settle does, in the same step: for a write whose
    transition completes at a later retry (a reversal, a force), an observation
    between the two would race with that retry."""

    path: str
    value: str
    settle: bool = False

    def command(self) -> str:
        write = f"echo {shlex.quote(self.value)} > {shlex.quote('/sys/' + self.path)}"
        return f"{write} && ({SETTLE})" if self.settle else write


@dataclass(frozen=True)
class Remove:
    """rmmod a module."""

    module: str

    def command(self) -> str:
        return shlex.join(["rmmod", self.module])


@dataclass(frozen=True)
class Settle:
    """Wait until every transition is over and every freed patch is gone, for
    at most ``tries`` tenths of a second."""

    tries: int = 600

    def command(self) -> str:
        return settle(self.tries)


@dataclass(frozen=True)
class Unblock:
    """Clear the bool parameter that keeps a module's work item asleep, wait
    until the work item has printed ``line`` on its way out (within 5 s), then
    settle: a transition the work item held completes at the next retry, within
    a second, and an observation before it would race with it."""

    module: str
    param: str
    line: str

    def command(self) -> str:
        path = shlex.quote(f"/sys/module/{self.module}/parameters/{self.param}")
        wait = f"dmesg | grep -qF -- {shlex.quote(self.line)}"
        loop = f"for try in $(seq 100); do {wait} && break; sleep 0.05; done && {wait}"
        return f"echo 0 > {path} && {loop} && ({SETTLE})"


@dataclass(frozen=True)
class WaitSignal:
    """Wait until the transition has signaled the tasks that block it."""

    def command(self) -> str:
        return WAIT_SIGNAL


@dataclass(frozen=True)
class Cleanup:
    """Leave the kernel as it was, whatever came before: let ``work_items``
    (module, parameter) go, disable every patch, newest first, each until it
    is gone (3 s at most), and remove ``modules`` in that order. Its output is
    dropped: what it did shows in the log and the snapshot."""

    work_items: tuple[tuple[str, str], ...]
    modules: tuple[str, ...]

    def command(self) -> str:
        release = " ".join(
            f"echo 0 > {shlex.quote(f'/sys/module/{module}/parameters/{param}')};"
            for module, param in self.work_items
        )
        disable = (
            "for patch in $(ls -r /sys/kernel/livepatch); do "
            'echo 0 > "/sys/kernel/livepatch/$patch/enabled"; '
            f"({settle(30)}); done"
        )
        remove = " ".join(f"rmmod {shlex.quote(module)};" for module in self.modules)
        return f"{{ {release} sleep 0.1; {disable}; {remove} }} >/dev/null 2>&1; true"


Step = Load | Write | Remove | Settle | Unblock | WaitSignal | Cleanup


def label(step: Step) -> str:
    """A step as a report names it: its command, with short names for the long loops."""
    match step:
        case Settle(tries=600):
            return "settle"
        case Settle():
            return f"settle ({step.tries / 10:g} s at most)"
        case WaitSignal():
            return "wait for the fake signal"
        case Unblock():
            return f"unblock {step.module} ({step.param}=0); settle"
        case Cleanup():
            return "clean up"
        case Write(settle=True):
            return f"echo {step.value} > /sys/{step.path}; settle"
    return step.command()


def refcounts(modules: list[str]) -> str:
    """``/sys/module/<m>/refcnt`` of each module, or that it is not loaded."""
    names = " ".join(shlex.quote(module) for module in modules)
    return (
        f"for module in {names}; do "
        'read -r refcnt 2>/dev/null < "/sys/module/$module/refcnt" || refcnt=absent; '
        'echo "$module refcnt $refcnt"; done'
    )


def kernel_log(dmesg: str) -> list[str]:
    """The log's livepatch lines without timestamps and without the taint lines."""
    return [
        TIMESTAMP.sub("", line)
        for line in dmesg.splitlines()
        if RELEVANT.search(line) and not TAINT.search(line)
    ]
