"""Start-up and shut-down as a test fixture sees them, memory at rest, many daemons at once.

Also the disable+reload cycle a tool repeats: `echo 0 > enabled`, `lpfs
rmmod`, `lpfs insmod`. Baselines come from the same run: `python -I -c
pass` with the same interpreter, and the C baseline's mount and unmount.
"""

import time
from pathlib import Path
from typing import Any, Final

from config import Config
from procs import (
    LpfsDaemon,
    Reaper,
    alive,
    answers,
    daemon_pid,
    fusermount_lpfs,
    lpfs,
    mount_baseline,
    mount_lpfs,
    python_startup,
    rss_mb,
    start_lpfs_mount,
    start_lpfs_umount,
    umount_baseline,
    umount_lpfs,
    wait_until,
)
from stats import ratio, spread
from targets import target

from lpfs.fuse.mounttable import is_mounted

PLAIN: Final = ("--transition-interval", "0")
DEMO_MODULE: Final = (
    Path(__file__).resolve().parent.parent / "lpfs" / "demo" / "livepatch_demo.toml"
)
DEMO_ENABLED: Final = Path("kernel/livepatch/livepatch_demo/enabled")
SETTLE: Final = 0.2  # seconds an idle daemon is left before its RSS is read


def _one_round(reaper: Reaper, baseline: Path, root: Path) -> dict[str, float]:
    """One repetition of every start-up measurement, in a fixed order."""
    sample = {"python": python_startup()}
    daemon, sample["lpfs_mount"] = mount_lpfs(reaper, root / "lpfs", *PLAIN)
    time.sleep(SETTLE)
    sample["lpfs_rss_mb"] = rss_mb(daemon.pid)
    sample["lpfs_umount"] = umount_lpfs(reaper, daemon)
    daemon, _ = mount_lpfs(reaper, root / "lpfs", *PLAIN)
    sample["lpfs_fusermount"] = fusermount_lpfs(reaper, daemon)
    fs, sample["c_mount"] = mount_baseline(reaper, baseline, root / "c", threaded=False)
    sample["c_umount"] = umount_baseline(reaper, fs)
    return sample


def measure_startup(reaper: Reaper, baseline: Path, config: Config) -> dict[str, Any]:
    root = reaper.root / "startup"
    rounds = [_one_round(reaper, baseline, root) for _ in range(config.repetitions)]
    result = {key: spread([r[key] for r in rounds]) for key in rounds[0]}
    med = {key: value["median"] for key, value in result.items()}
    result["ratio_mount_python"] = ratio(med["lpfs_mount"], med["python"])
    result["ratio_mount_c"] = ratio(med["lpfs_mount"], med["c_mount"])
    result["ratio_umount_c"] = ratio(med["lpfs_umount"], med["c_umount"])
    result["ratio_fusermount_c"] = ratio(med["lpfs_fusermount"], med["c_umount"])
    result["targets"] = [
        target(
            "lpfs mount-to-ready vs python -I -c pass",
            result["ratio_mount_python"],
            "<= 5x",
            (result["ratio_mount_python"] or 0) <= 5,
        ),
        target(
            "lpfs unmount vs C baseline unmount",
            result["ratio_umount_c"],
            "<= 2x",
            (result["ratio_umount_c"] or 0) <= 2,
        ),
        target("idle daemon RSS (MB)", med["lpfs_rss_mb"], "<= 30 MB", med["lpfs_rss_mb"] <= 30),
    ]
    return result


def _mount_many(reaper: Reaper, paths: list[Path]) -> tuple[list[str], float]:
    """Start every `lpfs mount --daemon` at once; the failures and the seconds until all return."""
    start = time.perf_counter()
    procs = [start_lpfs_mount(path, *PLAIN) for path in paths]
    failures = []
    for path, proc in zip(paths, procs, strict=True):
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failures.append(f"{path.name}: {stderr.decode().strip()}")
    return failures, time.perf_counter() - start


def _umount_many(paths: list[Path]) -> float:
    """`lpfs umount` of every path at once, until every mount is gone."""
    start = time.perf_counter()
    procs = [start_lpfs_umount(path) for path in paths]
    for proc in procs:
        proc.wait(timeout=120)
    wait_until(lambda: not any(is_mounted(p) for p in paths), "every daemon to unmount")
    return time.perf_counter() - start


def measure_many(reaper: Reaper, config: Config) -> dict[str, Any]:
    """``config.daemons`` daemons mounted at once: all answer, then all unmount and exit."""
    paths = [reaper.root / "many" / f"mnt{i:02d}" for i in range(config.daemons)]
    failures, mount_s = _mount_many(reaper, paths)
    answered = [p for p in paths if answers(p)]
    pids = [daemon_pid(p) for p in answered]
    for pid in pids:
        reaper.adopt(pid)
    rss = [rss_mb(pid) for pid in pids]
    umount_s = _umount_many(paths)
    gone = not any(alive(pid) for pid in pids)
    for pid in pids:
        reaper.forget(pid)
    works = len(answered) == config.daemons and gone and not failures
    return {
        "daemons": config.daemons,
        "answered": len(answered),
        "failures": failures,
        "mount_all_s": mount_s,
        "umount_all_s": umount_s,
        "all_gone": gone,
        "rss_total_mb": sum(rss),
        "rss_max_mb": max(rss, default=0.0),
        "targets": [
            target(f"{config.daemons} daemons at once", works, "all answer, all gone", works)
        ],
    }


def _cycle_once(daemon: LpfsDaemon) -> dict[str, float]:
    """echo 0 > enabled; lpfs rmmod; lpfs insmod: the seconds of each step."""
    mount = ("--mount", str(daemon.path))
    times = {}
    start = time.perf_counter()
    with open(daemon.path / DEMO_ENABLED, "w") as f:
        f.write("0\n")
    times["disable"] = time.perf_counter() - start
    lpfs("rmmod", "livepatch_demo", *mount)
    times["rmmod"] = time.perf_counter() - start - times["disable"]
    lpfs("insmod", str(DEMO_MODULE), *mount)
    times["cycle"] = time.perf_counter() - start
    times["insmod"] = times["cycle"] - times["disable"] - times["rmmod"]
    return times


def _cycle_round(daemon: LpfsDaemon, seconds: float) -> list[dict[str, float]]:
    cycles = []
    deadline = time.perf_counter() + seconds
    while not cycles or time.perf_counter() < deadline:
        cycles.append(_cycle_once(daemon))
    return cycles


def measure_cycle(reaper: Reaper, config: Config) -> dict[str, Any]:
    """Disable+reload cycles per second on lpfs, beside two interpreter starts per round."""
    daemon, _ = mount_lpfs(reaper, reaper.root / "cycle", "--demo", *PLAIN)
    rates, steps, python = [], [], []
    for _ in range(config.repetitions):
        cycles = _cycle_round(daemon, config.cycle_seconds)
        rates.append(len(cycles) / sum(c["cycle"] for c in cycles))
        steps.extend(cycles)
        python.append(python_startup())
    umount_lpfs(reaper, daemon)
    medians = {k: spread([c[k] for c in steps])["median"] for k in steps[0]}
    floor = 2 * spread(python)["median"]
    return {
        "cycles_per_s": spread(rates),
        "cycles": len(steps),
        "step_s": medians,
        "python": spread(python),
        "ratio_cycle_two_pythons": ratio(medians["cycle"], floor),
    }
