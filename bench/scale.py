"""lpfs with many patches loaded: per-op cost, RSS, and RSS growth over many operations.

Each patch count gets its own daemon, started with a scenario file that
loads that many generated module files (one function each). The per-op
costs are interleaved across the daemons; the 1-patch daemon is the
baseline. RSS growth runs `client -o mixed` (read, stat, write, readdir of
the last patch's directory, in turn, from RSS_CLIENTS processes) in equal
chunks after one chunk of warm-up, reading the daemon's RSS after each; the
slope is a least-squares fit in KB per 10k operations. The daemons run
their RSS series at the same time, each its own, to use both cores.
"""

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from client import run_client
from config import Config
from fusecounts import Counts, lpfs_reader, measured, per_op
from procs import LpfsDaemon, Reaper, mount_lpfs, rss_mb, umount_lpfs
from stats import ratio, slope, spread
from targets import target

RSS_LIMIT_MB: Final = 80.0
COST_LIMIT: Final = 2.0
# Below this a slope is noise whatever its error: RSS moves in pages and
# pymalloc arenas, and 16 KB per 10k operations is under 2 bytes an operation.
SLOPE_FLOOR_KB: Final = 16.0
SLOPE_SIGMAS: Final = 3.0
RSS_CLIENTS: Final = 4


def patch_name(index: int) -> str:
    return f"bench_patch_{index:04d}"


def module_text(index: int) -> str:
    return (
        f'name = "{patch_name(index)}"\n'
        "[[object]]\n"
        'name = "vmlinux"\n'
        "[[object.func]]\n"
        f'old_name = "bench_func_{index:04d}"\n'
        f'new_name = "livepatch_bench_func_{index:04d}"\n'
    )


def write_scenario(directory: Path, count: int) -> Path:
    """``count`` module files and a scenario that loads them all, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        file = directory / f"{patch_name(index)}.toml"
        file.write_text(module_text(index))
        files.append(f'"{file.name}"')
    scenario = directory / "scenario.toml"
    scenario.write_text(f"modules = [{', '.join(files)}]\n")
    return scenario


def last_patch_dir(daemon: LpfsDaemon, count: int) -> Path:
    return daemon.path / "kernel" / "livepatch" / patch_name(count - 1)


def per_op_costs(
    client: Path, daemons: dict[int, LpfsDaemon], config: Config
) -> tuple[dict[int, dict[str, list[float]]], dict[int, dict[str, dict[str, float] | None]]]:
    """Microseconds per listing of kernel/livepatch and per read of the last patch's
    enabled; and the FUSE requests per operation of each."""
    costs: dict[int, dict[str, list[float]]] = {n: {"list": [], "read": []} for n in daemons}
    requests: dict[int, dict[str, list[Counts | None]]] = {
        n: {"list": [], "read": []} for n in daemons
    }
    ops: dict[int, dict[str, int]] = {n: {"list": 0, "read": 0} for n in daemons}
    for _ in range(config.repetitions):
        for count, daemon in daemons.items():
            patch = last_patch_dir(daemon, count)
            # readdir lists the parent of its path: the patch directory's is kernel/livepatch.
            for name, op, path in (("list", "readdir", patch), ("read", "read", patch / "enabled")):
                one, counts = measured(
                    lpfs_reader(daemon.path),
                    functools.partial(run_client, client, op, path, seconds=config.scale_seconds),
                )
                costs[count][name].append(1e6 / one.ops_per_s)
                requests[count][name].append(counts)
                ops[count][name] += one.ops
    per_kind = {
        n: {name: per_op(requests[n][name], ops[n][name]) for name in ("list", "read")}
        for n in daemons
    }
    return costs, per_kind


def rss_growth(client: Path, daemon: LpfsDaemon, count: int, config: Config) -> dict[str, Any]:
    """RSS along ``config.rss_ops`` mixed operations, after one chunk of warm-up."""
    per_client = config.rss_ops // config.rss_samples // RSS_CLIENTS
    chunk = per_client * RSS_CLIENTS
    enabled = last_patch_dir(daemon, count) / "enabled"
    errors: dict[str, int] = {}
    ok = expected = 0
    xs, ys = [], []
    for step in range(config.rss_samples + 1):
        one = run_client(client, "mixed", enabled, procs=RSS_CLIENTS, count=per_client)
        ok, expected = ok + one.ok, expected + one.expected
        for name, n in one.errors.items():
            errors[name] = errors.get(name, 0) + n
        xs.append(step * chunk)
        ys.append(rss_mb(daemon.pid) * 1024)
    kb_per_op, stderr = slope(xs, ys)
    per_10k = kb_per_op * 10_000
    stderr_10k = stderr * 10_000
    return {
        "ops": chunk * config.rss_samples,
        "warmup_ops": chunk,
        "clients": RSS_CLIENTS,
        "rss_kb": ys,
        "slope_kb_per_10k_ops": per_10k,
        "slope_stderr_kb": stderr_10k,
        "noise_kb_per_10k_ops": max(SLOPE_FLOOR_KB, SLOPE_SIGMAS * stderr_10k),
        "ok": ok,
        "expected": expected,
        "errors": errors,
    }


def _summary(
    count: int, costs: dict[str, list[float]], base: dict[str, list[float]]
) -> dict[str, Any]:
    listing, reading = spread(costs["list"]), spread(costs["read"])
    return {
        "patches": count,
        "list_us": listing,
        "read_us": reading,
        "ratio_list": ratio(listing["median"], spread(base["list"])["median"]),
        "ratio_read": ratio(reading["median"], spread(base["read"])["median"]),
    }


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    top = rows[-1]
    count = top["patches"]
    found = [
        target(
            f"{count} patches: list kernel/livepatch vs 1 patch",
            top["ratio_list"],
            f"<= {COST_LIMIT}x",
            (top["ratio_list"] or 0) <= COST_LIMIT,
        ),
        target(
            f"{count} patches: read enabled vs 1 patch",
            top["ratio_read"],
            f"<= {COST_LIMIT}x",
            (top["ratio_read"] or 0) <= COST_LIMIT,
        ),
        target(
            f"{count} patches: daemon RSS (MB)",
            top["rss_mb"],
            f"<= {RSS_LIMIT_MB:.0f} MB",
            top["rss_mb"] <= RSS_LIMIT_MB,
        ),
    ]
    for row in rows:
        growth = row["rss_growth"]
        value = growth["slope_kb_per_10k_ops"]
        noise = growth["noise_kb_per_10k_ops"]
        found.append(
            target(
                f"{row['patches']} patches: RSS slope (KB per 10k ops)",
                value,
                f"<= noise ({noise:.0f})",
                value <= noise,
            )
        )
    return found


def measure(reaper: Reaper, client: Path, config: Config) -> dict[str, Any]:
    """One daemon per patch count, all mounted at once; then each unmounted."""
    daemons: dict[int, LpfsDaemon] = {}
    load_s: dict[int, float] = {}
    for count in config.scale_patches:
        scenario = write_scenario(reaper.root / "modules" / str(count), count)
        path = reaper.root / "scale" / str(count)
        daemons[count], load_s[count] = mount_lpfs(
            reaper, path, "--scenario", str(scenario), "--transition-interval", "0"
        )
    costs, requests = per_op_costs(client, daemons, config)
    base = costs[config.scale_patches[0]]
    rows = []
    for count, daemon in daemons.items():
        row = _summary(count, costs[count], base)
        row["requests_per_op"] = requests[count]
        row["mount_s"] = load_s[count]
        row["rss_mb"] = rss_mb(daemon.pid)
        rows.append(row)
    with ThreadPoolExecutor(max_workers=len(daemons)) as pool:
        series = [
            pool.submit(rss_growth, client, daemon, count, config)
            for count, daemon in daemons.items()
        ]
        for row, future in zip(rows, series, strict=True):
            row["rss_growth"] = future.result()
    for daemon in daemons.values():
        umount_lpfs(reaper, daemon)
    return {"rows": rows, "targets": _targets(rows)}
