"""kselftest.tap read after the fact, as make conformance reads a guest's output."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kselftest.tap import Summary

GUEST = """\
TAP version 13
1..3
# selftests: livepatch: test-livepatch.sh
# TEST: basic function patching ... ok
ok 1 selftests: livepatch: test-livepatch.sh
# selftests: livepatch: test-shadow-vars.sh
ok 2 selftests: livepatch: test-shadow-vars.sh # SKIP
"""


def test_a_skip_and_a_script_not_run_are_no_pass() -> None:
    summary = Summary.of(GUEST)
    assert (False, "1 ok, 1 failed (test-shadow-vars.sh), 1 not run") == (
        summary.passed,
        summary.describe(),
    )


def test_every_planned_script_passing_is_a_pass() -> None:
    summary = Summary.of(GUEST.replace("1..3", "1..2").replace(" # SKIP", ""))
    assert (True, "2 ok") == (summary.passed, summary.describe())
