"""The kselftest runner's TAP output: where a script starts, its result, the verdict."""

import re
from dataclasses import dataclass, field
from typing import Final

PLAN: Final = re.compile(r"^1\.\.(\d+)$")
# runner.sh's header before each script: "# selftests: livepatch: test-state.sh"
START: Final = re.compile(r"^# selftests: \S+: (\S+)$")
# "ok 3 selftests: livepatch: test-shadow-vars.sh # SKIP", "not ok 7 ... # exit=1"
RESULT: Final = re.compile(r"^(not )?ok \d+ selftests: \S+: (\S+)(?: # (.*))?$")


@dataclass(frozen=True)
class Result:
    script: str
    ok: bool
    directive: str  # what follows " # ": SKIP, exit=1, TIMEOUT 45 seconds; or ""

    @property
    def passed(self) -> bool:
        return self.ok and not self.directive.startswith("SKIP")


def script_started(line: str) -> str | None:
    """The script a runner.sh header line announces."""
    match = START.match(line)
    return match[1] if match else None


def result(line: str) -> Result | None:
    match = RESULT.match(line)
    return Result(match[2], not match[1], match[3] or "") if match else None


@dataclass
class Summary:
    """One run's results, fed line by line."""

    planned: int | None = None
    results: list[Result] = field(default_factory=list)

    def feed(self, line: str) -> Result | None:
        if self.planned is None and (plan := PLAN.match(line)):
            self.planned = int(plan[1])
        if (found := result(line)) is not None:
            self.results.append(found)
        return found

    @property
    def passed(self) -> bool:
        """Every planned script ran and passed; a SKIP is no pass."""
        return (
            self.planned == len(self.results)
            and self.planned > 0
            and all(r.passed for r in self.results)
        )

    @classmethod
    def of(cls, output: str) -> "Summary":
        """The summary of a whole run's output, read after the fact."""
        summary = cls()
        for line in output.splitlines():
            summary.feed(line)
        return summary

    def describe(self) -> str:
        """``6 ok`` or ``5 ok, 1 failed (test-syscall.sh), 1 not run``."""
        if not self.planned:
            return "no tests ran"
        ok = [r for r in self.results if r.passed]
        failed = [r.script for r in self.results if not r.passed]
        parts = [f"{len(ok)} ok"]
        if failed:
            parts.append(f"{len(failed)} failed ({', '.join(failed)})")
        if self.planned > len(self.results):
            parts.append(f"{self.planned - len(self.results)} not run")
        return ", ".join(parts)
