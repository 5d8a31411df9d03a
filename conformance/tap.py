"""The top-level results of a kselftest run's TAP output."""

import re
from dataclasses import dataclass
from typing import Final

# "ok 3 selftests: livepatch: test-state.sh # SKIP": the runner's own lines
# start the line; a script's output is prefixed with "# ".
RESULT: Final = re.compile(r"^(ok|not ok) (\d+) (.*?)(?: # (SKIP|TODO)\b.*)?$", re.MULTILINE)


@dataclass(frozen=True)
class TestResult:
    number: int
    name: str
    passed: bool
    skipped: bool


@dataclass(frozen=True)
class Summary:
    results: tuple[TestResult, ...]

    @property
    def passed(self) -> int:
        return sum(result.passed and not result.skipped for result in self.results)

    @property
    def failed(self) -> list[TestResult]:
        return [result for result in self.results if not result.passed]

    @property
    def skipped(self) -> list[TestResult]:
        return [result for result in self.results if result.skipped]

    def line(self) -> str:
        """``6/6 passed``, with the failed and skipped counted after it."""
        text = f"{self.passed}/{len(self.results)} passed"
        if self.failed:
            text += f", {len(self.failed)} failed"
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return text


def parse(output: str) -> Summary:
    return Summary(
        tuple(
            TestResult(
                number=int(found[2]),
                name=found[3],
                passed=found[1] == "ok",
                skipped=found[4] == "SKIP",
            )
            for found in RESULT.finditer(output)
        )
    )
