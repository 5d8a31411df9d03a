"""Run the kselftest runner with a time bound on each script.

The livepatch selftests' ``settings`` say ``timeout=0``, so runner.sh lets a
script run forever. runner.sh starts each script as
``timeout --foreground T timeout T ./SCRIPT``; when a script has run for the
bound without a result, the inner ``timeout`` gets the SIGALRM its own timer
would have sent: it stops the script's process group and exits 124, and
runner.sh reports ``not ok … # TIMEOUT``. If even that brings no result, or
the run stalls between scripts, the whole run is stopped.
"""

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final

from . import tap

# How long a script stopped with SIGALRM has to report before the run is stopped.
GRACE: Final = 15.0


def _processes() -> Iterator[tuple[int, int, list[str]]]:
    """(pid, parent pid, argv) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        yield int(entry.name), ppid, [a.decode(errors="replace") for a in argv if a]


def _script_timeouts(root: int, script: str) -> list[int]:
    """The inner ``timeout`` processes runner.sh started for ``script``, below ``root``."""
    procs = list(_processes())
    below = {root}
    grew = True
    while grew:
        new = {pid for pid, ppid, _ in procs if ppid in below} - below
        below |= new
        grew = bool(new)
    return [
        pid
        for pid, _, argv in procs
        if pid in below
        and argv
        and os.path.basename(argv[0]) == "timeout"
        and "--foreground" not in argv
        and argv[-1] == f"./{script}"
    ]


def _lines(stream: IO[str], into: "queue.Queue[str | None]") -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the whole run: its session gets SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    command: list[str], env: dict[str, str], bound: float, show: Callable[[str], None]
) -> tap.Summary:
    """Run ``command`` (runner.sh, directly or through ``lpfs ns``), show each line
    of its output, and stop any script that runs longer than ``bound`` seconds."""
    summary = tap.Summary()
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    assert proc.stdout is not None
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    script, stopped, deadline = None, False, time.monotonic() + bound
    finished = False
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                timeouts: list[int] = []
                if script and not stopped:
                    timeouts = _script_timeouts(proc.pid, script)
                if not timeouts:
                    show(f"# lpfs kselftest: no progress for {bound:g} s, stopping the run")
                    break
                show(f"# lpfs kselftest: {script} ran {bound:g} s, stopping it")
                for pid in timeouts:
                    os.kill(pid, signal.SIGALRM)
                stopped, deadline = True, time.monotonic() + GRACE
                continue
            if line is None:
                finished = True
                break
            show(line)
            if (started := tap.script_started(line)) is not None:
                script, stopped = started, False
                deadline = time.monotonic() + bound
            elif summary.feed(line) is not None:
                script, deadline = None, time.monotonic() + bound
    finally:
        # At the end of its output the run still cleans up (lpfs ns unmounts).
        try:
            proc.wait(bound if finished else 0)
        except subprocess.TimeoutExpired:
            _stop(proc)
    return summary
