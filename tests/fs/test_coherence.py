"""The kernel's caches never show the old tree once a change can be known.

The kernel keeps lpfs's names, attributes and listings; lpfs invalidates
what each change made stale before the call that made it returns, and
before the kernel-log line of a change the retry timer made is readable.
Reader threads stat, open, O_PATH-open, statfs, list and watch (inotify)
the patches' paths while a writer loads, disables, forces and frees them:
every observation that started after a change could be known, and ended
before the next change began, must show the state after it.

``make stress`` runs it bigger (LPFS_STRESS, as test_concurrency.py).
"""

import ctypes
import errno
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import require_fuse

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.pytest_plugin import mounted

STRESS = float(os.environ.get("LPFS_STRESS", "1"))
ROUNDS = int(30 * STRESS)
READERS = 4
# Freed at the write's return, by the timer, and forced: a forced patch keeps its
# module (klp_force_transition()), so each forced round loads a patch of its own.
REUSED = ("coh_a", "coh_b")
FORCED = tuple(f"coh_f{i}" for i in range(ROUNDS // 3))
PATCHES = REUSED + FORCED
BLOCKER = 4242  # asleep (D) in the patch's new function: unpatching waits, unsignalled
LOG_WAIT = 10.0

# What a patch's paths show in each state: (patch directory, module directory).
SHOWN = {
    "absent": (False, False),
    "patched": (True, True),
    "unpatching": (True, True),
    "freed": (False, True),
}


def module_text(name: str) -> str:
    return (
        f'name = "{name}"\n[[object]]\nname = "vmlinux"\n[[object.func]]\n'
        f'old_name = "cmdline_proc_show"\nnew_name = "{name}_cmdline_proc_show"\n'
    )


@dataclass(frozen=True)
class Change:
    """A state a patch reaches: ``began`` the call that makes it, ``known`` once it could
    be known (the call returned, or the log line was read)."""

    patch: str
    state: str
    began: float
    known: float


@dataclass(frozen=True)
class Seen:
    patch: str
    how: str
    exists: bool
    began: float
    ended: float


# -- observations ----------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
IN_ALL_EVENTS = 0xFFF


def _exists(call: Callable[[], object]) -> bool:
    try:
        call()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return False
    return True


def _o_path(path: Path) -> None:
    os.close(os.open(path, os.O_PATH))


def _read(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    except OSError as exc:
        if exc.errno != errno.ENODEV:  # freed while open, as on sysfs
            raise
    finally:
        os.close(fd)


def _watch(path: Path) -> None:
    fd = _libc.inotify_init1(os.O_CLOEXEC)
    try:
        if _libc.inotify_add_watch(fd, os.fsencode(path), IN_ALL_EVENTS) < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def observations(mnt: Path, patch: str) -> dict[str, tuple[bool, Callable[[], bool]]]:
    """how -> (whether it looks at the patch directory, else the module's; the look)."""
    pdir, mdir = mnt / "kernel/livepatch" / patch, mnt / "module" / patch
    return {
        "stat": (True, lambda: _exists(lambda: os.stat(pdir))),
        "stat-file": (True, lambda: _exists(lambda: os.stat(pdir / "enabled"))),
        "open": (True, lambda: _exists(lambda: _read(pdir / "transition"))),
        "o-path": (True, lambda: _exists(lambda: _o_path(pdir))),
        "statfs": (True, lambda: _exists(lambda: os.statvfs(pdir / "enabled"))),
        "inotify": (True, lambda: _exists(lambda: _watch(pdir))),
        "readdir": (True, lambda: patch in os.listdir(mnt / "kernel/livepatch")),
        "access": (False, lambda: os.access(mdir / "refcnt", os.F_OK)),
        "readdir-module": (False, lambda: patch in os.listdir(mnt / "module")),
    }


def read_loop(mnt: Path, seed: int, stop: threading.Event, seen: list[Seen]) -> None:
    rng = random.Random(seed)
    looks = [(p, how, look) for p in PATCHES for how, look in observations(mnt, p).items()]
    while not stop.is_set():
        patch, how, (_, look) = rng.choice(looks)
        began = time.monotonic()
        exists = look()
        seen.append(Seen(patch, how, exists, began, time.monotonic()))


# -- the writer ------------------------------------------------------------------


class Writer:
    def __init__(self, mnt: Path, modules: Path, log: Path) -> None:
        self.mnt = mnt
        self.modules = modules
        self.log = log
        self.client = Client(socket_path(mnt))
        self.changes: list[Change] = []

    def call(self, patch: str, state: str, *command: tuple[str, dict]) -> None:
        began = time.monotonic()
        for cmd, args in command:
            reply = self.client.call(cmd, **args)
            assert reply["ok"], (cmd, patch, reply)
        self.changes.append(Change(patch, state, began, time.monotonic()))

    def echo(self, patch: str, state: str, attr: str, text: str) -> None:
        began = time.monotonic()
        (self.mnt / "kernel/livepatch" / patch / attr).write_text(text)
        self.changes.append(Change(patch, state, began, time.monotonic()))

    def round(self, index: int) -> None:
        """Load a patch, then free it: at the write's return, or by the timer once its
        blocking task exits or once forced (the kernel-log line tells when)."""
        way = ("write", "timer", "force")[index % 3]
        patch = FORCED[index // 3] if way == "force" else REUSED[index % 2]
        module = self.modules / f"{patch}.toml"
        self.call(patch, "patched", ("insmod", {"file": str(module), "text": module.read_text()}))
        if way == "write":
            self.echo(patch, "freed", "enabled", "0\n")
            self.call(patch, "absent", ("rmmod", {"name": patch}))
            return
        stack = [f"{patch}_cmdline_proc_show"]
        self.call(
            patch,
            "patched",
            ("task_add", {"pid": BLOCKER, "stack": stack, "state": "uninterruptible"}),
        )
        self.echo(patch, "unpatching", "enabled", "0\n")
        line = f"livepatch: '{patch}': unpatching complete"
        logged = self.log.read_text().count(line)
        began = time.monotonic()
        if way == "force":  # the tasks switch now, the transition ends at the next try
            (self.mnt / "kernel/livepatch" / patch / "force").write_text("1\n")
        else:
            self.client.call("task_exit", pid=BLOCKER)
        self.await_line(line, logged)
        self.changes.append(Change(patch, "freed", began, time.monotonic()))
        if way == "force":
            self.call(patch, "freed", ("task_exit", {"pid": BLOCKER}))
        else:
            self.call(patch, "absent", ("rmmod", {"name": patch}))

    def await_line(self, line: str, logged: int) -> None:
        """Until the kernel log file shows ``line`` more than ``logged`` times."""
        deadline = time.monotonic() + LOG_WAIT
        while self.log.read_text().count(line) <= logged:
            assert time.monotonic() < deadline, f"no {line!r} in the log"
            time.sleep(0.001)


# -- the run ---------------------------------------------------------------------


@dataclass
class Run:
    changes: list[Change]
    seen: list[Seen]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("coherence")
    modules = base / "modules"
    modules.mkdir()
    for patch in PATCHES:
        (modules / f"{patch}.toml").write_text(module_text(patch))
    mnt, log = base / "mnt", base / "kernel.log"
    require_fuse()
    stop = threading.Event()
    seen: list[Seen] = []
    readers = [
        threading.Thread(target=read_loop, args=(mnt, seed, stop, seen), daemon=True)
        for seed in range(READERS)
    ]
    with mounted(mnt, "--transition-interval", "0.005", "--kernel-log", str(log)):
        try:
            writer = Writer(mnt, modules, log)
            start = time.monotonic()
            for patch in PATCHES:
                writer.changes.append(Change(patch, "absent", start, start))
            for reader in readers:
                reader.start()
            for index in range(ROUNDS):
                writer.round(index)
            stop.set()
            for reader in readers:
                reader.join(30)
            yield Run(writer.changes, seen)
        finally:
            stop.set()


def expected(run: Run, seen: Seen) -> str | None:
    """The state an observation must show, or None if a change overlapped it."""
    state = None
    for change in (c for c in run.changes if c.patch == seen.patch):
        if change.began < seen.ended and change.known > seen.began:
            return None  # under way while looking: either answer is right
        if change.known <= seen.began:
            state = change.state
    return state


def test_readers_looked_often_and_both_ways(run: Run) -> None:
    shown = {(s.how, s.exists) for s in run.seen}
    assert {
        (how, exists) for how in observations(Path(), PATCHES[0]) for exists in (True, False)
    } <= shown


def test_no_observation_after_a_change_shows_the_state_before_it(run: Run) -> None:
    stale = []
    for seen in run.seen:
        state = expected(run, seen)
        if state is None:
            continue
        in_patch_dir = observations(Path(), seen.patch)[seen.how][0]
        if seen.exists != SHOWN[state][0 if in_patch_dir else 1]:
            stale.append(f"{seen.how} {seen.patch} showed exists={seen.exists} in state {state}")
    judged = sum(expected(run, s) is not None for s in run.seen)
    assert judged > 100
    assert [] == stale[:10], f"{len(stale)} stale of {judged} judged"
