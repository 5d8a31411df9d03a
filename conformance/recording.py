"""What a real kernel did in every scenario, kept in the repository.

``make conformance --record`` writes one file per kernel series
(``conformance/recorded/6.1.txt``, ``6.12.txt``); ``make test`` runs the same
scenarios on lpfs emulating that kernel and compares with the file, so the
kernel stays lpfs's oracle between its boots.

The format is text, one field a line and the field's lines indented by two
spaces, so that a change of the kernel's behaviour reads as a plain diff::

    release 6.1.0-57-amd64
    scenario basic function patching
    step modprobe test_klp_livepatch
    status 0
    output
    log
      livepatch: enabling patch 'test_klp_livepatch'
    sysfs
      drwxr-xr-x ./test_klp_livepatch/
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .compare import Observation

RECORDED: Final = Path(__file__).parent / "recorded"
_TEXT_FIELDS: Final = ("output", "log", "sysfs")


class RecordingError(Exception):
    """A recording that does not parse; the message names the file and line."""


@dataclass(frozen=True)
class Recording:
    """A kernel's release and its observations, by scenario name."""

    release: str
    scenarios: dict[str, list[Observation]]


def series(release: str) -> str:
    """The file a release's recording lives in: ``6.1.0-57-amd64`` -> ``6.1``."""
    return ".".join(release.split("-", maxsplit=1)[0].split(".")[:2])


def path_of(release: str, directory: Path = RECORDED) -> Path:
    return directory / f"{series(release)}.txt"


def dumps(recording: Recording) -> str:
    lines = [f"release {recording.release}"]
    for name, observations in recording.scenarios.items():
        lines.append(f"scenario {name}")
        for observation in observations:
            lines += [f"step {observation.step}", f"status {observation.status}"]
            for field in _TEXT_FIELDS:
                lines.append(field)
                text: str = getattr(observation, field)
                lines += [f"  {line}" for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def loads(text: str, source: str) -> Recording:
    """Parse what ``dumps`` wrote; RecordingError on anything else."""
    release = ""
    scenarios: dict[str, list[Observation]] = {}
    current: dict[str, str] = {}
    observations: list[Observation] | None = None
    field = ""

    def finish() -> None:
        if current and observations is not None:
            observations.append(_observation(current))

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("  ") and field:
            current[field] += line[2:] + "\n"
            continue
        key, _, value = line.partition(" ")
        if key == "release" and not release:
            release = value
        elif key == "scenario":
            finish()
            current, field = {}, ""
            observations = scenarios.setdefault(value, [])
        elif key == "step" and observations is not None:
            finish()
            current, field = {"step": value}, ""
        elif key == "status" and "step" in current:
            current["status"] = value
        elif key in _TEXT_FIELDS and not value and "status" in current:
            field = key
            current[field] = ""
        else:
            raise RecordingError(f"{source}:{number}: unexpected {line!r}")
    finish()
    if not release:
        raise RecordingError(f"{source}: no release line")
    return Recording(release, scenarios)


def _observation(raw: dict[str, str]) -> Observation:
    def text(name: str) -> str:
        return raw.get(name, "").removesuffix("\n")

    return Observation(raw["step"], int(raw["status"]), text("output"), text("log"), text("sysfs"))


def load(path: Path) -> Recording:
    return loads(path.read_text(), str(path))


def recordings(directory: Path = RECORDED) -> Iterator[Recording]:
    """Every recording kept, oldest kernel first."""
    for path in sorted(directory.glob("*.txt"), key=lambda p: [int(n) for n in p.stem.split(".")]):
        yield load(path)
