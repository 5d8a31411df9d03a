"""Reading sysfs while a transition over this machine's threads retries: `--tasks host`.

A helper process starts ``host_threads`` threads that sleep. Two daemons
run with `--tasks host` and the demo patch: one idle, one with a
transition kept open by a simulated task asleep in a patched function, so
that its retry timer scans /proc (every thread of the machine) every
``host_interval`` seconds. The C client reads `enabled` on each daemon in
turn, ``repetitions`` times; the ratio is the busy daemon's cost per read
over the idle one's, both with the same threads on the machine.
"""

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from client import run_client
from config import Config
from fusecounts import lpfs_reader, measured, per_op
from procs import LpfsDaemon, Reaper, lpfs, mount_lpfs, umount_lpfs
from startup import DEMO_ENABLED, DEMO_MODULE
from stats import ratio, spread
from targets import target

COST_LIMIT: Final = 2.0
# Beyond any pid_max, so never a host thread's pid; asleep in the demo's patched function,
# uninterruptibly, so that the fake signals of every 15th retry leave it blocking.
SLEEPER_PID: Final = 1 << 30
SLEEPER_STACK: Final = "cmdline_proc_show,seq_read_iter"
HELPER: Final = """
import sys, threading, time
wake = threading.Event()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=wake.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()  # until the bench closes it
"""


def start_threads(reaper: Reaper, count: int) -> "subprocess.Popen[bytes]":
    """A process with ``count`` sleeping threads, alive until its stdin closes."""
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    reaper.adopt_child(helper)
    assert helper.stdout is not None and helper.stdout.readline() == b"ready\n"
    return helper


def mount_host(reaper: Reaper, path: Path, interval: float) -> LpfsDaemon:
    daemon, _ = mount_lpfs(reaper, path, "--tasks", "host", "--transition-interval", str(interval))
    return daemon


def open_transition(daemon: LpfsDaemon) -> None:
    """Load the demo patch with a simulated task asleep in its function: it never completes."""
    mount = ("--mount", str(daemon.path))
    sleeper = ("--pid", str(SLEEPER_PID), "--state", "uninterruptible", "--stack", SLEEPER_STACK)
    lpfs("task", "add", *sleeper, *mount)
    lpfs("insmod", str(DEMO_MODULE), *mount)


def measure(reaper: Reaper, client: Path, config: Config) -> dict[str, Any]:
    helper = start_threads(reaper, config.host_threads)
    root = reaper.root / "host"
    daemons = {
        "idle": mount_host(reaper, root / "idle", config.host_interval),
        "transition": mount_host(reaper, root / "transition", config.host_interval),
    }
    lpfs("insmod", str(DEMO_MODULE), "--mount", str(daemons["idle"].path))
    open_transition(daemons["transition"])
    busy = ("--mount", str(daemons["transition"].path))
    tasks = len(json.loads(lpfs("tasks", "--json", *busy).stdout))
    costs: dict[str, list[float]] = {name: [] for name in daemons}
    requests: dict[str, list[Any]] = {name: [] for name in daemons}
    ops = dict.fromkeys(daemons, 0)
    for _ in range(config.repetitions):
        for name, daemon in daemons.items():
            read = functools.partial(
                run_client, client, "read", daemon.path / DEMO_ENABLED, seconds=config.host_seconds
            )
            one, counts = measured(lpfs_reader(daemon.path), read)
            costs[name].append(1e6 / one.ops_per_s)
            requests[name].append(counts)
            ops[name] += one.ops
    open_all_along = json.loads(lpfs("status", "--json", *busy).stdout)["transition"] is not None
    for daemon in daemons.values():
        umount_lpfs(reaper, daemon)
    assert helper.stdin is not None
    helper.stdin.close()
    helper.wait()
    idle, during = spread(costs["idle"]), spread(costs["transition"])
    ratios = [b / i for b, i in zip(costs["transition"], costs["idle"], strict=True)]
    value = ratio(during["median"], idle["median"])
    return {
        "threads": config.host_threads,
        "interval_s": config.host_interval,
        "tasks": tasks,
        "open_all_along": open_all_along,
        "idle_read_us": idle,
        "transition_read_us": during,
        "ratio": value,
        "ratio_runs": spread(ratios),
        "requests_per_op": {name: per_op(requests[name], ops[name]) for name in daemons},
        "targets": [
            target(
                f"read during a host-task transition ({config.host_threads}+ threads) vs idle",
                value,
                f"<= {COST_LIMIT}x",
                value is not None and value <= COST_LIMIT,
            )
        ],
    }
