"""Run scenarios on a shell, observe after every step, and diff two sides."""

import difflib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Final, Protocol

from .console import Result
from .scenarios import Scenario
from .steps import QUIESCE, SNAPSHOT, kernel_log, label, refcounts

LOG_MARK: Final = "@@LOG"
SYSFS_MARK: Final = "@@SYSFS"
# A step's own limit: Settle tries for 60 s; a busy host slows TCG down.
STEP_TIMEOUT: Final = 180.0


class LeftoverError(Exception):
    """A scenario left a patch or a module behind: the next one would not
    start from the state it was written for."""


class Shell(Protocol):
    def run(self, command: str, timeout: float) -> Result: ...


@dataclass(frozen=True)
class Observation:
    """What one step did: its command's status and output, the kernel log's
    new lines, and /sys/kernel/livepatch with the modules' refcnt. Texts have
    no trailing newline."""

    step: str
    status: int
    output: str
    log: str
    sysfs: str


def _run(shell: Shell, command: str) -> str:
    return shell.run(command, STEP_TIMEOUT).output.rstrip("\n")


def observe(shell: Shell, scenario: Scenario) -> list[Observation]:
    """Run ``scenario``'s steps, observing after each; LeftoverError if it
    does not leave the kernel as it found it (one that forces may: its side is
    replaced after it)."""
    _run(shell, "dmesg -C")
    # One command, as every command costs a bash: wait for frees, then the
    # log's new lines, then the snapshot.
    observation = (
        f"{QUIESCE}; echo {LOG_MARK}; dmesg -c; echo {SYSFS_MARK}; "
        f"({SNAPSHOT}); {refcounts(scenario.modules)}"
    )
    observations = []
    for step in scenario.steps:
        result = shell.run(step.command(), STEP_TIMEOUT)
        seen = _run(shell, observation)
        dmesg, _, sysfs = seen.removeprefix(f"{LOG_MARK}\n").partition(f"{SYSFS_MARK}\n")
        log = "\n".join(kernel_log(dmesg))
        output = result.output.rstrip("\n")
        observations.append(Observation(label(step), result.status, output, log, sysfs))
    if scenario.forces:
        return observations
    # Clean means: nothing under /sys/kernel/livepatch, none of its modules loaded.
    left = [
        line for line in observations[-1].sysfs.splitlines() if not line.endswith(" refcnt absent")
    ]
    if left:
        raise LeftoverError(f"scenario {scenario.name!r} left behind: {'; '.join(left)}")
    return observations


class Side:
    """A kernel or lpfs, started on first use and again after a scenario that
    forces (a forced transition may pin its module until the next boot) or
    fails (it may have left state behind)."""

    def __init__(self, start: Callable[[], AbstractContextManager[Shell]]) -> None:
        self.start = start
        self.running: AbstractContextManager[Shell] | None = None
        self.shell: Shell | None = None

    def observe(self, scenario: Scenario) -> list[Observation]:
        if self.running is None:
            self.running = self.start()
            self.shell = self.running.__enter__()
        assert self.shell is not None
        try:
            return observe(self.shell, scenario)
        except BaseException:
            self.stop()
            raise
        finally:
            if scenario.forces:
                self.stop()

    def stop(self) -> None:
        if self.running is not None:
            running, self.running, self.shell = self.running, None, None
            running.__exit__(None, None, None)


def observe_all(
    start: Callable[[], AbstractContextManager[Shell]], scenarios: Iterable[Scenario]
) -> list[list[Observation]]:
    """Every scenario's observations, on one Side that ``start`` makes."""
    side = Side(start)
    try:
        return [side.observe(scenario) for scenario in scenarios]
    finally:
        side.stop()


def disagreements(kernel: list[Observation], lpfs: list[Observation]) -> list[tuple[int, str, str]]:
    """(step number, field, unified diff from the kernel to lpfs) per difference."""
    found = []
    for number, (real, emulated) in enumerate(zip(kernel, lpfs, strict=True), start=1):
        for field in fields(Observation):
            expected, actual = getattr(real, field.name), getattr(emulated, field.name)
            if expected != actual:
                diff = difflib.unified_diff(
                    str(expected).splitlines(),
                    str(actual).splitlines(),
                    "kernel",
                    "lpfs",
                    lineterm="",
                )
                found.append((number, field.name, "\n".join(diff)))
    return found
