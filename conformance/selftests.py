"""The kernel's own livepatch selftests, unmodified, on the booted kernel."""

import time
from dataclasses import dataclass
from typing import Final

from kselftest.tap import Summary

from .initramfs import KSELFTEST_DIR
from .vm import Vm

# 6.1's six scripts took 38 s and 6.12's seven about 70 s under TCG on an idle
# host; the limit allows for a host busy with other work.
TIMEOUT: Final = 1200.0


@dataclass(frozen=True)
class SelftestRun:
    summary: Summary
    output: str
    status: int
    seconds: float


def run(vm: Vm) -> SelftestRun:
    """``run_kselftest.sh`` as kernel CI runs it, from the installed tree."""
    started = time.monotonic()
    result = vm.run(f"cd /{KSELFTEST_DIR} && ./run_kselftest.sh", TIMEOUT)
    return SelftestRun(
        Summary.of(result.output), result.output, result.status, time.monotonic() - started
    )
