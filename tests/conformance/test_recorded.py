"""The shared scenarios on lpfs, compared with what Debian's real kernels did.

``make conformance`` runs the scenarios of ``conformance/scenarios.py`` on the
kernels in QEMU and keeps what each did in ``conformance/recorded``; here each
runs in ``lpfs ns --kernel <that release>`` and every step must agree: the
command's status and output, the kernel log's new lines, every file under
/sys/kernel/livepatch with its mode, and the modules' refcnt.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import missing, require_fuse, require_tools

from conformance import compare, recording
from conformance.lpfsns import LpfsNs
from conformance.scenarios import SCENARIOS, Scenario

RECORDINGS = {kept.release: kept for kept in recording.recordings()}
CASES = [(release, scenario) for release in RECORDINGS for scenario in SCENARIOS]


class Sides:
    """One ``lpfs ns`` at a time, for the release the test asks for."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.open: dict[str, compare.Side] = {}

    def get(self, release: str) -> compare.Side:
        for other in [name for name in self.open if name != release]:
            self.open.pop(other).stop()
        if release not in self.open:
            log = self.logs / f"{release}.log"
            self.open[release] = compare.Side(lambda: LpfsNs(release, log))
        return self.open[release]


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    require_fuse()
    require_tools("unshare")
    if os.geteuid() != 0:
        missing("root, for lpfs ns (a private mount namespace)")
    made = Sides(tmp_path_factory.mktemp("lpfs-ns"))
    try:
        yield made
    finally:
        for side in made.open.values():
            side.stop()


def test_every_scenario_is_recorded() -> None:
    """Both kernels' recordings hold every scenario (else: make conformance CONFORMANCE_ARGS=--record)."""
    assert {recording.series(release) for release in RECORDINGS} >= {"6.1", "6.12"}
    for release, kept in RECORDINGS.items():
        assert [s.name for s in SCENARIOS] == list(kept.scenarios), release


@pytest.mark.parametrize(
    ("release", "scenario"),
    CASES,
    ids=[f"{recording.series(release)}-{scenario.name}" for release, scenario in CASES],
)
def test_lpfs_does_as_the_kernel_did(sides: Sides, release: str, scenario: Scenario) -> None:
    recorded = RECORDINGS[release].scenarios.get(scenario.name)
    if recorded is None:
        pytest.fail(f"{scenario.name!r} is not recorded for {release}")
    observed = sides.get(release).observe(scenario)
    found = compare.disagreements(recorded, observed)
    report = [
        f"step {number} ({recorded[number - 1].step}): {field}\n{diff}"
        for number, field, diff in found
    ]
    assert not report, "\n".join(report)
