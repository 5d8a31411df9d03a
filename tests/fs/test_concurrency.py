"""Sixteen processes against one daemon: no crash, only the kernel's errnos, one transition at a time.

Each worker process does up to OPERATIONS mixed operations (reads of every
attribute, `echo 0`/`echo 1 > enabled`, `echo 1 > force`, writes to
read-only files, readdir walks, task add/set/exit and a few insmod/rmmod
through the CLI) against five patches, one of them an atomic-replace patch,
on a daemon retrying every 10 ms. Workers stop at WORK_SECONDS whatever
their count, and the whole run is bounded by HARD_TIMEOUT. The run happens
once per module; each test checks one property of it afterwards, mostly by
replaying the kernel log (docs/kernel.md §4: one transition at a time; §2.1: forced
patches keep their module reference; §8: the state table).

The CLI runs inside each worker through its own entry point (`lpfs.tools.cli.main`:
argparse, the control client, kmod's wording, exit codes), which sends the
daemon exactly what the `lpfs` command sends without an interpreter start
per call, so 16 000 operations fit in the time budget of a 2-core machine.
"""

# STYLE.md asks for `assert expected == actual`, which SIM300 calls a Yoda condition.

import contextlib
import errno
import io
import json
import multiprocessing
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import require_fuse

from lpfs.pytest_plugin import LpfsMount, mounted
from lpfs.tools import cli

# `make stress` scales the run: LPFS_STRESS=10 is ten times the work and the
# time, LPFS_STRESS=90 about an hour's soak.
STRESS = float(os.environ.get("LPFS_STRESS", "1"))
WORKERS = 16
OPERATIONS = int(1000 * STRESS)
WORK_SECONDS = 40.0 * STRESS
HARD_TIMEOUT = 120.0 * STRESS
DRAIN_SECONDS = 15.0
TASKS_PER_WORKER = 2
IDLE_STACKS = ["schedule", "do_nanosleep", "ep_poll", "pipe_read"]

# name -> (replace, [(old function, new function)])
PATCHES: dict[str, tuple[bool, list[tuple[str, str]]]] = {
    "conc_a": (False, [("cmdline_proc_show", "conc_a_cmdline_proc_show")]),
    "conc_b": (False, [("meminfo_proc_show", "conc_b_meminfo_proc_show")]),
    "conc_c": (
        False,
        [
            ("cmdline_proc_show", "conc_c_cmdline_proc_show"),
            ("version_proc_show", "conc_c_version_proc_show"),
        ],
    ),
    "conc_d": (False, [("__x64_sys_getpid", "conc_d_sys_getpid")]),
    "conc_r": (
        True,
        [
            ("meminfo_proc_show", "conc_r_meminfo_proc_show"),
            ("loadavg_proc_show", "conc_r_loadavg_proc_show"),
        ],
    ),
}
LOADED_FIRST = ["conc_a", "conc_b", "conc_c", "conc_d"]
REPLACE = {name for name, (replace, _) in PATCHES.items() if replace}
FUNCTIONS = sorted({name for _, funcs in PATCHES.values() for pair in funcs for name in pair})
PATCH_FILES = ["enabled", "transition", "replace", "stack_order", "vmlinux/patched"]
MODULE_FILES = ["refcnt", "coresize", "initstate", "taint"]

# Each operation and the outcomes the kernel can give it here. "open:X" is
# open(2) failing with errno X, "io:X" the read or write after it.
VANISHED = {"open:ENOENT", "io:ENODEV"}  # the patch was freed before or after open
ALLOWED: dict[str, set[str]] = {
    "read": {"ok"} | VANISHED,
    "read-force": {"open:EACCES", "open:ENOENT"},
    "walk": {"ok", "ENOENT"},
    # `>` opens with O_CREAT: a name gone since the lookup is a create, EACCES.
    "echo-0-enabled": {"ok", "open:EACCES", "io:EINVAL", "io:EBUSY"} | VANISHED,
    "echo-1-enabled": {"ok", "open:EACCES", "io:EINVAL"} | VANISHED,
    "echo-force": {"ok", "open:EACCES", "io:EINVAL"} | VANISHED,
    "echo-1-transition": {"open:EACCES", "open:ENOENT"},
    "task-add": {"ok"},
    "task-set": {"ok"},
    "task-exit": {"ok"},
    "insmod": {"ok", "File exists", "Device or resource busy"},
    "rmmod": {"ok", "is in use", "is not currently loaded"},
}
WEIGHTS: dict[str, int] = {
    "read": 30,
    "read-force": 3,
    "walk": 6,
    "echo-0-enabled": 8,
    "echo-1-enabled": 10,
    "echo-force": 8,
    "echo-1-transition": 3,
    "task-add": 7,
    "task-set": 7,
    "task-exit": 4,
    "insmod": 3,
    "rmmod": 3,
}

STARTING = re.compile(r"^livepatch: '(\w+)': starting (patching|unpatching) transition$")
COMPLETE = re.compile(r"^livepatch: '(\w+)': (patching|unpatching) complete$")
REVERSING = re.compile(r"^livepatch: '(\w+)': reversing transition from ")
ENABLING = re.compile(r"^livepatch: enabling patch '(\w+)'$")
FORCING = "livepatch: forcing remaining tasks to the patched state"


def module_text(name: str) -> str:
    replace, funcs = PATCHES[name]
    lines = [f'name = "{name}"', f"replace = {str(replace).lower()}", "[[object]]"]
    lines.append('name = "vmlinux"')
    for old, new in funcs:
        lines += ["[[object.func]]", f'old_name = "{old}"', f'new_name = "{new}"']
    return "\n".join(lines) + "\n"


# -- the worker processes -------------------------------------------------------


def run_cli(mount: Path, *args: str) -> tuple[int, str]:
    """`lpfs ARGS --mount MOUNT` through the CLI's entry point: exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            cli.main([*args, "--mount", str(mount)])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue().strip()


def cli_outcome(code: int, message: str, known: set[str]) -> str:
    if code == 0:
        return "ok"
    return next((text for text in known if message.endswith(text)), f"exit {code}: {message}")


def io_outcome(path: Path, flags: int, data: bytes | None) -> str:
    """Open, then read (data None) or write: "ok", or where it failed and with which errno."""
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        return f"open:{errno.errorcode[exc.errno]}"
    try:
        if data is None:
            os.read(fd, 4096)
        else:
            os.write(fd, data)
    except OSError as exc:
        return f"io:{errno.errorcode[exc.errno]}"
    finally:
        os.close(fd)
    return "ok"


def walk_outcome(root: Path) -> str:
    """Walk the tree, stat'ing every file: "ok" or the first errno."""

    def fail(exc: OSError) -> None:
        raise exc

    try:
        for top, _dirs, files in os.walk(root, onerror=fail):
            for name in files:
                os.stat(os.path.join(top, name))
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"


class Worker:
    """One process's share of the load: random operations on a seeded generator."""

    def __init__(self, index: int, mount: Path, modules: Path) -> None:
        self.rng = random.Random(index)
        self.mount = mount
        self.modules = modules
        self.pids = [1000 + 100 * index + k for k in range(TASKS_PER_WORKER)]
        self.live: set[int] = set()
        self.outcomes: Counter[str] = Counter()

    def patch_file(self, name: str) -> Path:
        return self.mount / "kernel/livepatch" / self.rng.choice(list(PATCHES)) / name

    def run(self, deadline: float) -> dict[str, Any]:
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        done = 0
        while done < OPERATIONS and time.monotonic() < deadline:
            kind = self.rng.choices(kinds, weights)[0]
            self.outcomes[f"{kind} {getattr(self, kind.replace('-', '_'))()}"] += 1
            done += 1
        for pid in sorted(self.live):
            self.outcomes[f"task-exit {self.task_exit_pid(pid)}"] += 1
        return {"operations": done, "outcomes": dict(self.outcomes)}

    def read(self) -> str:
        if self.rng.random() < 0.7:
            path = self.patch_file(self.rng.choice(PATCH_FILES))
        else:
            module = self.rng.choice(list(PATCHES))
            path = self.mount / "module" / module / self.rng.choice(MODULE_FILES)
        return io_outcome(path, os.O_RDONLY, None)

    def read_force(self) -> str:
        return io_outcome(self.patch_file("force"), os.O_RDONLY, None)

    def walk(self) -> str:
        return walk_outcome(self.mount / self.rng.choice(["kernel/livepatch", "module"]))

    def echo(self, name: str, data: bytes) -> str:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return io_outcome(self.patch_file(name), flags, data)

    def echo_0_enabled(self) -> str:
        return self.echo("enabled", b"0\n")

    def echo_1_enabled(self) -> str:
        return self.echo("enabled", b"1\n")

    def echo_force(self) -> str:
        """`echo 1 > force`, mostly on plain patches that are patching, which marks none forced.

        Forcing an unpatching patch, or a replace patch, pins modules for good
        (docs/kernel.md §2.1); doing that every time would soon leave nothing to reload,
        so on a patch that reads enabled 0 the value is usually 0, a no-op.
        """
        name, value = self.rng.choice(list(PATCHES)), b"1\n"
        if self.rng.random() < 0.99:
            name = self.rng.choice([n for n in PATCHES if n not in REPLACE])
            with contextlib.suppress(OSError):
                if (self.mount / "kernel/livepatch" / name / "enabled").read_text() == "0\n":
                    value = b"0\n"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return io_outcome(self.mount / "kernel/livepatch" / name / "force", flags, value)

    def echo_1_transition(self) -> str:
        return self.echo("transition", b"1\n")

    def stack(self) -> str:
        """Mostly a stack in no patched function; a quarter of the time one in some patch's."""
        frames = [self.rng.choice(IDLE_STACKS)]
        if self.rng.random() < 0.25:
            frames.insert(0, self.rng.choice(FUNCTIONS))
        return ",".join(frames)

    def state(self) -> str:
        return self.rng.choice(["sleeping", "uninterruptible", "running"])

    def task_add(self) -> str:
        free = [pid for pid in self.pids if pid not in self.live]
        if not free:
            return self.task_set()
        pid = self.rng.choice(free)
        args = ["task", "add", "--pid", str(pid), "--state", self.state(), "--stack", self.stack()]
        outcome = cli_outcome(*run_cli(self.mount, *args), set())
        if outcome == "ok":
            self.live.add(pid)
        return outcome

    def task_set(self) -> str:
        if not self.live:
            return self.task_add()
        pid = self.rng.choice(sorted(self.live))
        args = ["task", "set", str(pid), "--state", self.state(), "--stack", self.stack()]
        return cli_outcome(*run_cli(self.mount, *args), set())

    def task_exit(self) -> str:
        if not self.live:
            return self.task_add()
        return self.task_exit_pid(self.rng.choice(sorted(self.live)))

    def task_exit_pid(self, pid: int) -> str:
        outcome = cli_outcome(*run_cli(self.mount, "task", "exit", str(pid)), set())
        if outcome == "ok":
            self.live.discard(pid)
        return outcome

    def module_refcnts(self) -> dict[str, str]:
        """The refcnt of every module loaded now (a racy view, as any tool's)."""
        refcnts = {}
        for name in PATCHES:
            with contextlib.suppress(OSError):
                refcnts[name] = (self.mount / "module" / name / "refcnt").read_text()
        return refcnts

    def insmod(self) -> str:
        """Load a module that looks unloaded (another worker may beat us to it)."""
        unloaded = sorted(set(PATCHES) - set(self.module_refcnts())) or list(PATCHES)
        path = self.modules / f"{self.rng.choice(unloaded)}.toml"
        return cli_outcome(*run_cli(self.mount, "insmod", str(path)), ALLOWED["insmod"])

    def rmmod(self) -> str:
        """Unload a module whose patch looks gone (another worker may beat us to it)."""
        unused = sorted(name for name, refcnt in self.module_refcnts().items() if refcnt == "0\n")
        name = self.rng.choice(unused or list(PATCHES))
        return cli_outcome(*run_cli(self.mount, "rmmod", name), ALLOWED["rmmod"])


def work(index: int, mount: Path, modules: Path, deadline: float, result: Path) -> None:
    """A worker process's body: run, then leave its counts (or its failure) in ``result``."""
    try:
        report = Worker(index, mount, modules).run(deadline)
    except BaseException as exc:  # report everything; the parent asserts on it
        report = {"error": repr(exc)}
    result.write_text(json.dumps(report))


# -- the run, once per module ----------------------------------------------------


@dataclass
class Run:
    """What the stress run left behind."""

    reports: list[dict[str, Any]]
    seconds: float
    status: dict[str, Any]
    records: list[dict[str, Any]]
    lsmod: list[dict[str, Any]]
    patch_dirs: list[str]
    patch_files: dict[str, dict[str, str]]
    module_dirs: list[str]
    refcnt_files: dict[str, str]
    listing_ok: bool


def drain(mount: LpfsMount) -> None:
    """End every simulated task and wait until no transition is left."""
    tasks = json.loads(mount.run("tasks", "--json"))
    for task in tasks:
        if not task["idle"]:
            mount.command("task", "exit", str(task["pid"]))
    deadline = time.monotonic() + DRAIN_SECONDS
    while mount.status()["transition"] is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def observe(mount: LpfsMount, reports: list[dict[str, Any]], seconds: float) -> Run:
    klp, module = mount.mountpoint / "kernel/livepatch", mount.mountpoint / "module"
    patch_dirs = sorted(os.listdir(klp))
    module_dirs = sorted(os.listdir(module))
    return Run(
        reports=reports,
        seconds=seconds,
        status=mount.status(),
        records=[json.loads(line) for line in mount.run("dmesg", "--json").splitlines()],
        lsmod=json.loads(mount.run("lsmod", "--json")),
        patch_dirs=patch_dirs,
        patch_files={
            name: {
                f: (klp / name / f).read_text() for f in ("enabled", "transition", "stack_order")
            }
            for name in patch_dirs
        },
        module_dirs=module_dirs,
        refcnt_files={name: (module / name / "refcnt").read_text() for name in module_dirs},
        listing_ok=sorted(os.listdir(mount.mountpoint)) == ["kernel", "module"],
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Sixteen workers against a daemon retrying every 10 ms; the state they leave behind."""
    base = tmp_path_factory.mktemp("concurrency")
    modules = base / "modules"
    modules.mkdir()
    for name in PATCHES:
        (modules / f"{name}.toml").write_text(module_text(name))
    require_fuse()
    with mounted(base / "mnt", "--transition-interval", "0.01") as mount:
        for name in LOADED_FIRST:
            mount.run("insmod", str(modules / f"{name}.toml"))
        yield stress(mount, modules, base)


def stress(mount: LpfsMount, modules: Path, base: Path) -> Run:
    started = time.monotonic()
    deadline = started + WORK_SECONDS
    context = multiprocessing.get_context("fork")
    results = [base / f"worker{i}.json" for i in range(WORKERS)]
    processes = [
        context.Process(target=work, args=(i, mount.mountpoint, modules, deadline, results[i]))
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(max(0.0, started + HARD_TIMEOUT - time.monotonic()))
    stuck = [process.pid for process in processes if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [] == stuck, f"workers still running after {HARD_TIMEOUT} s"
    reports = [
        json.loads(result.read_text()) if result.exists() else {"error": "no report"}
        for result in results
    ]
    seconds = time.monotonic() - started
    drain(mount)
    return observe(mount, reports, seconds)


# -- replaying the kernel log ----------------------------------------------------


@dataclass
class Replay:
    """klp_patches, the forced patches and any overlap, as the kernel log tells them."""

    patches: list[str]
    forced: set[str]
    problems: list[str]
    open_transition: str | None


def replay(lines: list[str]) -> Replay:
    patches: list[str] = []
    forced: set[str] = set()
    problems: list[str] = []
    current: tuple[str, str] | None = None
    reversing: str | None = None
    for number, line in enumerate(lines):
        where = f"line {number}: {line}"
        if m := ENABLING.match(line):
            patches.append(m[1])
        elif m := REVERSING.match(line):
            reversing = m[1]
        elif m := STARTING.match(line):
            if current is not None and (current[0] != m[1] or reversing != m[1]):
                problems.append(f"{where} while '{current[0]}' is {current[1]}")
            current, reversing = (m[1], m[2]), None
        elif m := COMPLETE.match(line):
            if current != (m[1], m[2]):
                problems.append(f"{where} but the transition is {current}")
            if m[2] == "unpatching" and m[1] in patches:
                patches.remove(m[1])
            elif m[1] in REPLACE and m[1] in patches:
                del patches[: patches.index(m[1])]
            current = None
        elif line == FORCING:
            if current is None:
                problems.append(f"{where} outside a transition")
            elif current[1] == "unpatching":
                forced.add(current[0])
            elif current[0] in REPLACE:
                forced.update(p for p in patches if p != current[0])
    return Replay(patches, forced, problems, current and current[0])


@pytest.fixture(scope="module")
def log(run: Run) -> Replay:
    return replay([record["text"] for record in run.records])


# -- the checks --------------------------------------------------------------------


def test_run_is_bounded_in_time(run: Run) -> None:
    """The sixteen workers finish within the work period plus the slowest operation."""
    assert run.seconds < WORK_SECONDS + 20, run.seconds


def test_every_worker_reports(run: Run) -> None:
    """No worker died: each one reports its counts, none an exception."""
    assert [] == [report["error"] for report in run.reports if "error" in report]


def test_every_worker_did_its_share(run: Run) -> None:
    """Each worker got through at least a fifth of its operations before the deadline."""
    counts = [report.get("operations", 0) for report in run.reports]
    assert [] == [count for count in counts if count < OPERATIONS // 5], counts


def test_daemon_still_answers(run: Run) -> None:
    """After the run the control socket answers and the mount lists its two directories."""
    assert ("7.3.0", True) == (run.status["kernel"], run.listing_ok)


def test_every_outcome_is_the_kernels(run: Run) -> None:
    """Each operation only ever failed with an errno the kernel gives that operation."""
    seen: Counter[str] = Counter()
    for report in run.reports:
        seen.update(report.get("outcomes", {}))
    unexpected = {
        outcome: count
        for outcome, count in seen.items()
        if outcome.split(" ", 1)[1] not in ALLOWED[outcome.split(" ", 1)[0]]
    }
    assert {} == unexpected, sorted(seen.items())


def test_log_is_complete(run: Run) -> None:
    """The ring kept every line of the run, so the log replay below sees it all."""
    assert 0 == run.records[0]["seq"]


def test_one_transition_at_a_time(log: Replay) -> None:
    """No patch starts a transition while another is in one; only a reversal restarts one."""
    assert [] == log.problems


def test_no_transition_left_after_drain(run: Run, log: Replay) -> None:
    """Once the tasks are gone every transition completes, in the log and in status."""
    assert (None, None) == (log.open_transition, run.status["transition"])


def test_transitions_happened(log: Replay, run: Run) -> None:
    """The run did exercise the engine: transitions completed and some were reversed."""
    texts = [record["text"] for record in run.records]
    completed = sum(1 for text in texts if COMPLETE.match(text))
    reversed_ = sum(1 for text in texts if REVERSING.match(text))
    assert (True, True) == (completed > 10, reversed_ > 0), (completed, reversed_)


def test_status_patches_follow_the_log(run: Run, log: Replay) -> None:
    """klp_patches in status, in stack order, is the list the log's enables and frees leave."""
    names = [p["name"] for p in sorted(run.status["patches"], key=lambda p: p["stack_order"])]
    assert log.patches == names


def test_stack_order_is_1_to_n(run: Run) -> None:
    """stack_order numbers the patches 1..N without gaps."""
    orders = sorted(p["stack_order"] for p in run.status["patches"])
    assert list(range(1, len(orders) + 1)) == orders


def test_patch_dirs_match_status(run: Run) -> None:
    """kernel/livepatch lists exactly the patches status reports."""
    assert sorted(p["name"] for p in run.status["patches"]) == run.patch_dirs


def test_patch_files_match_status(run: Run) -> None:
    """Every patch's enabled, transition and stack_order read what status reports."""
    from_status = {
        p["name"]: {
            "enabled": f"{int(p['enabled'])}\n",
            "transition": f"{int(p['transition'])}\n",
            "stack_order": f"{p['stack_order']}\n",
        }
        for p in run.status["patches"]
    }
    assert from_status == run.patch_files


def test_idle_patches_are_enabled(run: Run) -> None:
    """With no transition left, every patch listed is enabled (docs/kernel.md §8: ENABLED)."""
    assert [] == [p["name"] for p in run.status["patches"] if not p["enabled"]]


def test_refcnt_matches_presence(run: Run, log: Replay) -> None:
    """A livepatch module holds a reference while its patch exists, or for good once forced."""
    present = {p["name"] for p in run.status["patches"]}
    expected = {
        name: f"{int(name in present or name in log.forced)}\n" for name in run.refcnt_files
    }
    assert expected == run.refcnt_files


def test_forced_flags_follow_the_log(run: Run, log: Replay) -> None:
    """status marks forced exactly the listed patches the log's force writes marked."""
    flagged = {p["name"] for p in run.status["patches"] if p["forced"]}
    present = {p["name"] for p in run.status["patches"]}
    assert log.forced & present == flagged


def test_lsmod_matches_module_dir(run: Run) -> None:
    """lsmod lists exactly the directories under module/, with the same refcnt."""
    from_lsmod = {m["name"]: f"{m['refcnt']}\n" for m in run.lsmod}
    assert from_lsmod == run.refcnt_files


def test_replay_catches_an_overlap() -> None:
    """The checker itself: a second patch starting inside a transition is reported."""
    lines = [
        "livepatch: enabling patch 'conc_a'",
        "livepatch: 'conc_a': starting patching transition",
        "livepatch: enabling patch 'conc_b'",
        "livepatch: 'conc_b': starting patching transition",
    ]
    assert 1 == len(replay(lines).problems)


def test_replay_accepts_a_reversal() -> None:
    """The checker itself: a patch restarting its own transition after reversing is fine."""
    lines = [
        "livepatch: enabling patch 'conc_a'",
        "livepatch: 'conc_a': starting patching transition",
        "livepatch: 'conc_a': reversing transition from patching to unpatching",
        "livepatch: 'conc_a': starting unpatching transition",
        "livepatch: 'conc_a': unpatching complete",
    ]
    assert ([], [], None) == (
        replay(lines).problems,
        replay(lines).patches,
        replay(lines).open_transition,
    )
