"""How much each section of the bench measures: the full run and the smoke run."""

from dataclasses import asdict, dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Config:
    """Durations, repetitions and sizes; every field is written to the results file."""

    mode: str
    repetitions: int  # of every interleaved measurement
    seconds: float  # of one throughput run of the C client
    clients: tuple[int, ...]  # concurrent client processes
    cycle_seconds: float  # of one disable+reload run
    daemons: int  # mounted at once
    engine_tasks: tuple[int, ...]  # simulated tasks per try
    stack_depth: int
    patch_funcs: int
    sleeping_fraction: float  # of tasks asleep in a patched function
    scale_patches: tuple[int, ...]  # loaded patches
    scale_seconds: float  # of one listing or read run
    rss_ops: int  # mixed operations over which RSS growth is measured
    rss_samples: int  # RSS readings along them (after a warm-up of one sample's ops)
    host_threads: int  # sleeping threads started for the `--tasks host` section
    host_interval: float  # seconds between that section's transition retries
    host_seconds: float  # of one read run there

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


FULL: Final = Config(
    mode="full",
    repetitions=5,
    seconds=0.5,
    clients=(1, 4),
    cycle_seconds=1.0,
    daemons=20,
    engine_tasks=(1_000, 10_000, 100_000),
    stack_depth=16,
    patch_funcs=10,
    sleeping_fraction=0.01,
    scale_patches=(1, 100, 1_000),
    scale_seconds=0.5,
    rss_ops=100_000,
    rss_samples=10,
    host_threads=1_000,
    host_interval=0.1,
    host_seconds=1.0,
)

SMOKE: Final = Config(
    mode="smoke",
    repetitions=1,
    seconds=0.05,
    clients=(1, 4),
    cycle_seconds=0.2,
    daemons=2,
    engine_tasks=(100, 1_000),
    stack_depth=16,
    patch_funcs=10,
    sleeping_fraction=0.01,
    scale_patches=(1, 10),
    scale_seconds=0.05,
    rss_ops=400,
    rss_samples=4,
    host_threads=100,
    host_interval=0.1,
    host_seconds=0.1,
)
