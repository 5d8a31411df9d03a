"""Throughput of read, stat, write, echo-style write and readdir, stack beside stack.

Stacks: a real sysfs attribute of this machine (read, stat, readdir only),
the C libfuse2 baseline single-threaded and multithreaded, and lpfs with the
demo patch enabled and idle. Every (op, clients) cell runs every stack once
per repetition, in an order rotated each repetition, so drift hits all alike.
"""

import functools
import glob
from collections import defaultdict
from pathlib import Path
from typing import Any, Final

from client import OPS, ClientRun, run_client
from config import Config
from fusecounts import Counts, Reader, baseline_reader, lpfs_reader, measured, per_op
from procs import Reaper, mount_baseline, mount_lpfs, umount_baseline, umount_lpfs
from stats import ratio, spread
from targets import target

PATCH_FILE: Final = Path("kernel/livepatch/livepatch_demo/enabled")
SYSFS_CANDIDATES: Final = (
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/transparent_hugepage/defrag",
    *sorted(glob.glob("/sys/module/*/refcnt")),
)
SYSFS_OPS: Final = ("read", "stat", "readdir")
C_STACKS: Final = ("c_single", "c_multi")
TARGET_RATIO: Final = 0.75


def find_sysfs_attribute() -> Path | None:
    """The first candidate attribute that exists and reads, or None."""
    for candidate in SYSFS_CANDIDATES:
        try:
            with open(candidate, "rb") as f:
                f.read()
        except OSError:
            continue
        return Path(candidate)
    return None


def _stacks_for(op: str, paths: dict[str, Path]) -> list[str]:
    return [s for s in paths if s != "sysfs" or op in SYSFS_OPS]


def _rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def _merge_errors(runs: list[ClientRun]) -> dict[str, int]:
    errors: dict[str, int] = defaultdict(int)
    for one in runs:
        for name, count in one.errors.items():
            errors[name] += count
    return dict(errors)


def _stack_summary(runs: list[ClientRun], requests: list[Counts | None]) -> dict[str, Any]:
    ops = sum(one.ops for one in runs)
    summary = {
        "ops_per_s": spread([one.ops_per_s for one in runs]),
        "ops": ops,
        "ok": sum(one.ok for one in runs),
        "expected": sum(one.expected for one in runs),
        "errors": _merge_errors(runs),
    }
    if requests:
        summary["requests_per_op"] = per_op(requests, ops)
    return summary


def _cell(
    op: str,
    clients: int,
    runs: dict[str, list[ClientRun]],
    requests: dict[str, list[Counts | None]],
) -> dict[str, Any]:
    stacks = {
        name: _stack_summary(stack_runs, requests.get(name, []))
        for name, stack_runs in runs.items()
    }
    best = max(C_STACKS, key=lambda s: stacks[s]["ops_per_s"]["median"])
    lpfs = stacks["lpfs"]["ops_per_s"]["median"]
    sysfs = stacks.get("sysfs")
    return {
        "op": op,
        "clients": clients,
        "stacks": stacks,
        "c_best": best,
        "ratio_lpfs_c": ratio(lpfs, stacks[best]["ops_per_s"]["median"]),
        "ratio_lpfs_sysfs": ratio(lpfs, sysfs["ops_per_s"]["median"]) if sysfs else None,
        "lpfs_errors": sum(stacks["lpfs"]["errors"].values()),
    }


def measure_cells(
    client: Path, paths: dict[str, Path], counters: dict[str, Reader | None], config: Config
) -> list[dict[str, Any]]:
    """Every (op, clients) cell, every stack, interleaved over the repetitions; with the
    requests of every run on a stack that counts them (``counters``)."""
    runs: dict[tuple[str, int], dict[str, list[ClientRun]]] = defaultdict(lambda: defaultdict(list))
    requests: dict[tuple[str, int], dict[str, list[Counts | None]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for rep in range(config.repetitions):
        for op in OPS:
            for clients in config.clients:
                for stack in _rotated(_stacks_for(op, paths), rep):
                    one_run = functools.partial(
                        run_client, client, op, paths[stack], procs=clients, seconds=config.seconds
                    )
                    if stack in counters:
                        one, counts = measured(counters[stack], one_run)
                        requests[op, clients][stack].append(counts)
                    else:
                        one = one_run()
                    runs[op, clients][stack].append(one)
    return [
        _cell(op, clients, runs[op, clients], requests[op, clients])
        for op in OPS
        for clients in config.clients
    ]


def cell_targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lpfs >= 0.75x the faster C loop per cell, and 4 clients >= 1 client per op."""
    found = []
    by_key = {(c["op"], c["clients"]): c for c in cells}
    for cell in cells:
        value = cell["ratio_lpfs_c"]
        passed = value is not None and value >= TARGET_RATIO and cell["lpfs_errors"] == 0
        name = f"lpfs {cell['op']} at {cell['clients']} client(s) vs C"
        found.append(target(name, value, f">= {TARGET_RATIO}x", passed))
    clients = sorted({c["clients"] for c in cells})
    for op in OPS:
        one, many = by_key[op, clients[0]], by_key[op, clients[-1]]
        value = ratio(
            many["stacks"]["lpfs"]["ops_per_s"]["median"],
            one["stacks"]["lpfs"]["ops_per_s"]["median"],
        )
        name = f"lpfs {op} at {clients[-1]} clients vs {clients[0]}"
        found.append(target(name, value, ">= 1.0x", value is not None and value >= 1.0))
    return found


def measure(reaper: Reaper, client: Path, baseline: Path, config: Config) -> dict[str, Any]:
    """Mount the C baseline single- and multithreaded and lpfs, measure every cell, unmount."""
    root = reaper.root / "throughput"
    single, _ = mount_baseline(reaper, baseline, root / "c_single", threaded=False)
    multi, _ = mount_baseline(reaper, baseline, root / "c_multi", threaded=True)
    daemon, _ = mount_lpfs(reaper, root / "lpfs", "--demo", "--transition-interval", "0")
    paths = {
        "c_single": single.path / PATCH_FILE,
        "c_multi": multi.path / PATCH_FILE,
        "lpfs": daemon.path / PATCH_FILE,
    }
    counters = {
        "c_single": baseline_reader(single.path),
        "c_multi": baseline_reader(multi.path),
        "lpfs": lpfs_reader(daemon.path),
    }
    sysfs = find_sysfs_attribute()
    if sysfs is not None:
        paths = {"sysfs": sysfs, **paths}
    cells = measure_cells(client, paths, counters, config)
    umount_lpfs(reaper, daemon)
    warnings = []
    for mounted in (multi, single):
        try:
            umount_baseline(reaper, mounted)
        except RuntimeError as exc:  # not a measurement: note it, the reaper has cleaned up
            warnings.append(str(exc))
    return {
        "sysfs_path": str(sysfs) if sysfs else None,
        "file": str(PATCH_FILE),
        "seconds_per_run": config.seconds,
        "repetitions": config.repetitions,
        "cells": cells,
        "targets": cell_targets(cells),
        "warnings": warnings,
    }
