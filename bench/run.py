"""lpfs bench: `make bench`, or `python bench/run.py [--smoke] [--out DIR]`.

Builds the C client and the C baseline filesystem, measures every section
against its same-run baseline, writes bench/results/<UTC timestamp>.json
(schema in bench/README.md) and prints the table. Every mount and process
it starts is gone when it exits, however it exits.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, Final

import config as bench_config
import engine
import hosttasks
import psutil
import report
import scale
import startup
import throughput
import toolchain
from procs import Reaper

import lpfs
from lpfs.daemon import livepatchfs

SCHEMA_VERSION: Final = 1
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    return parser.parse_args(argv)


def fuse_binding() -> str:
    """The binding lpfs serves with: its own session, or a libfuse binding and its version."""
    try:
        from lpfs.fuse import binding

        name = str(binding.NAME)
    except ImportError:  # an lpfs that knows only fusepy
        name = "fuse"
    if name == "lpfs.fuse.session":
        return "lpfs.fuse.session (no libfuse)"
    dist = {"fuse": "fusepy"}.get(name, name)
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def host_info() -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
        "memory_mb": psutil.virtual_memory().total // (1 << 20),
        "lpfs_version": lpfs.__version__,
        "fuse_binding": fuse_binding(),
    }


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def measure_all(reaper: Reaper, binaries: toolchain.Binaries, config: Any) -> dict[str, Any]:
    """Every section in turn; a failing section fails the run."""
    sections: dict[str, Any] = {}
    steps = (
        (
            "throughput",
            lambda: throughput.measure(reaper, binaries.client, binaries.baseline_fs, config),
        ),
        ("cycle", lambda: startup.measure_cycle(reaper, config)),
        ("startup", lambda: startup.measure_startup(reaper, binaries.baseline_fs, config)),
        ("many", lambda: startup.measure_many(reaper, config)),
        ("engine", lambda: engine.measure(config)),
        ("host_tasks", lambda: hosttasks.measure(reaper, binaries.client, config)),
        ("scale", lambda: scale.measure(reaper, binaries.client, config)),
    )
    for name, step in steps:
        start = time.perf_counter()
        print(f"bench: {name} ...", end="", flush=True)
        sections[name] = step()
        print(f" {time.perf_counter() - start:.0f} s", flush=True)
    return sections


def run(config: Any, out: Path) -> Path:
    """Build, measure, clean up, write the results; the results file."""
    started = datetime.now(UTC)
    binaries = toolchain.build()
    root = Path(tempfile.mkdtemp(prefix="lpfs-bench-"))
    reaper = Reaper(root)
    succeeded = False
    try:
        sections = measure_all(reaper, binaries, config)
        succeeded = True
    finally:
        cleaned = reaper.close(settle=0.0 if succeeded else 1.0)
        if not reaper.mounts():
            shutil.rmtree(root, ignore_errors=True)
    finished = datetime.now(UTC)
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "host": host_info(),
        "config": config.as_json(),
        "mount_options": livepatchfs.mount_options(),
        **sections,
        "cleanup": cleaned,
    }
    results["targets"] = [t for s in sections.values() for t in s.get("targets", [])]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.render(results))
    print(f"\nresults: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    run(bench_config.SMOKE if args.smoke else bench_config.FULL, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
