"""Kobjects a module adds to /sys/kernel: there while it is loaded, with its modes and values.

kobject_create_and_add(name, kernel_kobj) and sysfs_create_file() in a
module's init, as test_klp_syscall makes /sys/kernel/test_klp_syscall/npids,
on a real mount.
"""

import errno
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import getpid_loops, shipped

from lpfs.pytest_plugin import LpfsMount

COUNTER = """
name = "lpfs_counter"

[[object]]
[[object.func]]
old_name = "__x64_sys_getpid"
new_name = "lp_sys_getpid"

[[param]]
name = "pids"
type = "int"
array = 8
mode = 0o444

[[param]]
name = "level"
type = "int"
default = 3

[[kobject]]
name = "lpfs_counter"

[[kobject.attr]]
name = "npids"
value = { pids = "pids", until_called = "__x64_sys_getpid" }

[[kobject.attr]]
name = "level"
mode = 0o644
value = { param = "level" }

[[kobject.attr]]
name = "greeting"
value = "hello"

[[kobject.attr]]
name = "secret"
mode = 0o400
value = 42
"""
DIR = "kernel/lpfs_counter"
SYSCALL = "test_klp_syscall"


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    path = tmp_path / "lpfs_counter.toml"
    path.write_text(COUNTER)
    return path


@pytest.fixture
def getpid_loop() -> Iterator[subprocess.Popen]:
    with getpid_loops(1) as loops:
        yield loops[0]


def tasks(mnt: LpfsMount) -> list[dict]:
    return json.loads(mnt.run("tasks", "--json"))


def os_errno(call) -> int | None:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


def nonexistent_pid() -> int:
    """A pid no process can have: one past pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def unload(mnt: LpfsMount, name: str) -> None:
    mnt.sh(f"echo 0 > kernel/livepatch/{name}/enabled", check=True)
    mnt.rmmod(name)


def npids(mnt: LpfsMount, name: str = "lpfs_counter") -> str:
    return mnt.read(f"kernel/{name}/npids")


class TestLifetime:
    """The directory exists from the module's init to its exit."""

    def test_appears_at_load(self, mnt: LpfsMount, counter: Path) -> None:
        """kernel/ lists it beside livepatch once the module is loaded, not before."""
        before = (sorted(os.listdir(mnt.mountpoint / "kernel")), (mnt.mountpoint / DIR).exists())
        mnt.insmod(str(counter))

        after = (sorted(os.listdir(mnt.mountpoint / "kernel")), (mnt.mountpoint / DIR).is_dir())
        assert ((["livepatch"], False), (["livepatch", "lpfs_counter"], True)) == (before, after)

    def test_listing(self, mnt: LpfsMount, counter: Path) -> None:
        """The directory lists its attributes, in the order the module adds them."""
        mnt.insmod(str(counter))

        assert ["npids", "level", "greeting", "secret"] == os.listdir(mnt.mountpoint / DIR)

    def test_gone_at_unload(self, mnt: LpfsMount, counter: Path) -> None:
        """After rmmod the directory and its files are ENOENT."""
        mnt.insmod(str(counter))
        unload(mnt, "lpfs_counter")

        missing = [
            os_errno(lambda p=p: os.stat(mnt.mountpoint / p)) for p in (DIR, f"{DIR}/greeting")
        ]
        assert ([errno.ENOENT, errno.ENOENT], ["livepatch"]) == (
            missing,
            os.listdir(mnt.mountpoint / "kernel"),
        )

    def test_open_file_after_unload(self, mnt: LpfsMount, counter: Path) -> None:
        """A descriptor opened while the module lived reads ENODEV once it is gone."""
        mnt.insmod(str(counter))
        fd = os.open(mnt.mountpoint / DIR / "greeting", os.O_RDONLY)
        try:
            unload(mnt, "lpfs_counter")
            assert errno.ENODEV == os_errno(lambda: os.pread(fd, 4096, 0))
        finally:
            os.close(fd)

    def test_failed_load_leaves_nothing(self, mnt: LpfsMount, counter: Path) -> None:
        """A module whose init fails after adding its kobject leaves no directory behind."""
        mnt.add_task(100, "task100", "uninterruptible", ["cmdline_proc_show"])
        mnt.insmod(shipped("test_klp_livepatch"))  # stuck patching: the next enable is EBUSY

        result = mnt.command("insmod", str(counter))
        assert (1, ["livepatch"]) == (result.returncode, os.listdir(mnt.mountpoint / "kernel"))

    def test_name_taken(self, mnt: LpfsMount, counter: Path, tmp_path: Path) -> None:
        """A second module adding the same kobject fails its init with ENOMEM, as
        kobject_create_and_add() returning NULL makes the kernel's test modules do."""
        mnt.insmod(str(counter))
        other = tmp_path / "other.toml"
        other.write_text('livepatch = false\n[[kobject]]\nname = "lpfs_counter"\n')

        result = mnt.command("insmod", str(other))
        assert (
            f"insmod: ERROR: could not insert module {other}: Cannot allocate memory",
            [
                "sysfs: cannot create duplicate filename '/kernel/lpfs_counter'",
                "kobject: kobject_add_internal failed for lpfs_counter with -EEXIST, don't try "
                "to register things with the same name in the same directory.",
            ],
            ["lpfs_counter"],
        ) == (
            result.stderr.strip(),
            mnt.dmesg()[-2:],
            [m["name"] for m in mnt.status()["modules"]],
        )

    @pytest.mark.parametrize("name", ["livepatch", "mm", "tracing"])
    def test_the_kernels_own_names_are_taken(self, mnt: LpfsMount, tmp_path: Path, name) -> None:
        """kernel/livepatch and the kernel's other /sys/kernel entries: no module can add them."""
        clash = tmp_path / "clash.toml"
        clash.write_text(f'livepatch = false\n[[kobject]]\nname = "{name}"\n')

        assert 1 == mnt.command("insmod", str(clash)).returncode
        assert "clash" not in [m["name"] for m in mnt.status()["modules"]]


class TestAttributes:
    """Modes, values and writes."""

    @pytest.mark.parametrize(
        ("rel", "mode"),
        [
            ("", 0o755),
            ("npids", 0o444),
            ("level", 0o644),
            ("greeting", 0o444),
            ("secret", 0o400),
        ],
    )
    def test_mode(self, mnt: LpfsMount, counter: Path, rel: str, mode: int) -> None:
        """Each file has the mode its module gave it; the directory 0755."""
        mnt.insmod(str(counter))

        assert mode == stat.S_IMODE(os.stat(mnt.mountpoint / DIR / rel).st_mode)

    def test_values(self, mnt: LpfsMount, counter: Path) -> None:
        """A constant, a parameter, and the count of listed pids."""
        mnt.insmod(str(counter), f"pids={nonexistent_pid()},{nonexistent_pid()}", "level=0x10")

        values = [mnt.read(f"{DIR}/{name}") for name in ("greeting", "secret", "level", "npids")]
        assert ["hello\n", "42\n", "16\n", "2\n"] == values

    def test_array_parameter(self, mnt: LpfsMount, counter: Path) -> None:
        """An int array shows as param_array_get() prints it: commas, or nothing when empty."""
        mnt.insmod(str(counter), "pids=0,-0x10,-3")  # no process has these pids
        shown = mnt.read("module/lpfs_counter/parameters/pids")
        unload(mnt, "lpfs_counter")
        mnt.insmod(str(counter))

        assert ("0,-16,-3\n", "") == (shown, mnt.read("module/lpfs_counter/parameters/pids"))

    @pytest.mark.parametrize("value", ["1,x", "1,,2", "1,2,3,4,5,6,7,8,9"])
    def test_bad_array(self, mnt: LpfsMount, counter: Path, value: str) -> None:
        """An element that is no int, or one element too many, fails the load with EINVAL."""
        result = mnt.command("insmod", str(counter), f"pids={value}")

        assert (
            f"insmod: ERROR: could not insert module {counter}: Invalid parameters",
            f"lpfs_counter: '{value}' invalid for parameter 'pids'",
        ) == (result.stderr.strip(), mnt.dmesg()[-1])

    def test_parameter_write(self, mnt: LpfsMount, counter: Path) -> None:
        """A writable attribute showing a parameter stores into it, as parameters/ would."""
        mnt.insmod(str(counter))
        mnt.sh(f"echo 7 > {DIR}/level", check=True)

        assert ("7\n", "7\n") == (
            mnt.read(f"{DIR}/level"),
            mnt.read("module/lpfs_counter/parameters/level"),
        )

    def test_read_only_write(self, mnt: LpfsMount, counter: Path) -> None:
        """Writing a 0444 attribute is EACCES at open, even for root; one chmod'ed writable
        has no store, so the write is EIO."""
        mnt.insmod(str(counter))
        refused = os_errno(lambda: os.open(mnt.mountpoint / DIR / "greeting", os.O_WRONLY))
        os.chmod(mnt.mountpoint / DIR / "greeting", 0o644)
        fd = os.open(mnt.mountpoint / DIR / "greeting", os.O_WRONLY)
        try:
            assert (errno.EACCES, errno.EIO) == (refused, os_errno(lambda: os.write(fd, b"x")))
        finally:
            os.close(fd)


class TestCountdown:
    """A listed task leaves the count when it calls the module's replacement getpid."""

    def test_running_switched_task_counts(self, mnt: LpfsMount, counter: Path) -> None:
        """A running task counts once switched; a sleeping one when it runs; an unknown pid
        never; a task not listed changes nothing."""
        mnt.add_task(300, "task300", "running", [])
        mnt.add_task(301, "task301", "sleeping", [])
        mnt.add_task(302, "task302", "running", [])
        mnt.insmod(str(counter), f"pids=300,301,{nonexistent_pid()}")
        after_load = npids(mnt)
        mnt.run("task", "set", "301", "--state", "running")

        assert ("2\n", "1\n") == (after_load, npids(mnt))

    def test_counts_during_the_transition(self, mnt: LpfsMount, counter: Path) -> None:
        """A listed task that has switched calls the replacement while others still block
        the transition; one that has not switched calls the original."""
        mnt.add_task(400, "task400", "uninterruptible", ["__x64_sys_getpid"])
        mnt.add_task(300, "task300", "running", [])
        mnt.add_task(301, "task301", "running", ["__x64_sys_getpid"])
        mnt.insmod(str(counter), "pids=300,301")

        assert ("1\n", "1\n") == (mnt.read("kernel/livepatch/lpfs_counter/transition"), npids(mnt))

    def test_not_after_unpatching(self, mnt: LpfsMount, counter: Path) -> None:
        """Once the patch is disabled, getpid is the original again: nothing counts."""
        mnt.add_task(301, "task301", "sleeping", [])
        mnt.insmod(str(counter), "pids=301")
        mnt.sh("echo 0 > kernel/livepatch/lpfs_counter/enabled", check=True)
        mnt.run("task", "set", "301", "--state", "running")

        assert "1\n" == npids(mnt)

    def test_real_process(self, mnt: LpfsMount, getpid_loop: subprocess.Popen) -> None:
        """A process of this machine named in klp_pids is adopted as a task: it switches at
        its next syscall exit and its next getpid counts; it leaves when it exits."""
        pid = getpid_loop.pid
        mnt.insmod(shipped(SYSCALL), f"klp_pids={pid}")
        adopted = [t["state"] for t in tasks(mnt) if t["pid"] == pid]
        counted = npids(mnt, SYSCALL)
        getpid_loop.kill()
        getpid_loop.wait()

        assert (["running"], "0\n", []) == (
            adopted,
            counted,
            [t for t in tasks(mnt) if t["pid"] == pid],
        )
