"""Run scenarios on a shell, observe after every step, and diff two sides."""

import difflib
from dataclasses import dataclass, fields
from typing import Final, Protocol

from .console import Result
from .scenarios import Scenario
from .steps import SNAPSHOT, kernel_log, label, refcounts

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
    new lines, and /sys/kernel/livepatch with the modules' refcnt."""

    step: str
    status: int
    output: str
    log: str
    sysfs: str


def _run(shell: Shell, command: str) -> str:
    return shell.run(command, STEP_TIMEOUT).output


def observe(shell: Shell, scenario: Scenario) -> list[Observation]:
    _run(shell, "dmesg -C")
    observations = []
    for step in scenario.steps:
        result = shell.run(step.command(), STEP_TIMEOUT)
        log = "\n".join(kernel_log(_run(shell, "dmesg -c")))
        sysfs = _run(shell, f"({SNAPSHOT}); {refcounts(scenario.modules)}")
        observations.append(Observation(label(step), result.status, result.output, log, sysfs))
    # Clean means: nothing under /sys/kernel/livepatch, none of its modules loaded.
    left = [
        line for line in observations[-1].sysfs.splitlines() if not line.endswith(" refcnt absent")
    ]
    if left:
        raise LeftoverError(f"scenario {scenario.name!r} left behind: {'; '.join(left)}")
    return observations


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
