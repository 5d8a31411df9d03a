"""Reads, writes and tree operations on a real mount, down to the errno.

docs/kernel.md §1.2 (seq_file reads, the sysfs write path, removed nodes), §2.1 (the
stores of enabled and force) and §3.2 (disable and auto-free).
"""

# STYLE.md asks for `assert expected == actual`, which SIM300 calls a Yoda condition.

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import MODULES, shipped

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_livepatch"
LP_DIR = f"kernel/livepatch/{LP}"
OTHER = "test_klp_syscall"
OTHER_DIR = f"kernel/livepatch/{OTHER}"

TREE_OPERATIONS: list[tuple[str, Callable[[Path], object]]] = [
    ("mkdir", lambda mnt: os.mkdir(mnt / "kernel/livepatch/new")),
    ("mkdir in patch", lambda mnt: os.mkdir(mnt / LP_DIR / "new")),
    ("rmdir", lambda mnt: os.rmdir(mnt / LP_DIR / "vmlinux/cmdline_proc_show,1")),
    ("unlink", lambda mnt: os.unlink(mnt / LP_DIR / "enabled")),
    ("rename", lambda mnt: os.rename(mnt / LP_DIR / "enabled", mnt / LP_DIR / "disabled")),
    ("rename dir", lambda mnt: os.rename(mnt / LP_DIR, mnt / "kernel/livepatch/other")),
    ("symlink", lambda mnt: os.symlink("enabled", mnt / LP_DIR / "link")),
    ("link", lambda mnt: os.link(mnt / LP_DIR / "enabled", mnt / LP_DIR / "link")),
]


@pytest.fixture
def blocked(mnt: LpfsMount) -> LpfsMount:
    """test_klp_syscall enabled, then test_klp_livepatch stuck in its patching transition."""
    mnt.insmod(shipped(OTHER))
    mnt.add_task(100, "task100", "uninterruptible", ["cmdline_proc_show"])
    mnt.insmod(shipped(LP))
    return mnt


@pytest.fixture
def enabled_fd(lp: LpfsMount) -> Iterator[int]:
    """A descriptor open O_RDWR on test_klp_livepatch's enabled."""
    fd = os.open(lp.mountpoint / LP_DIR / "enabled", os.O_RDWR)
    try:
        yield fd
    finally:
        os.close(fd)


def cat(mnt: LpfsMount, rel: str) -> str:
    return mnt.sh(f"cat '{rel}'", check=True).stdout


def os_error(call: Callable[[], object]) -> int:
    """The errno a call fails with."""
    with pytest.raises(OSError) as excinfo:
        call()
    return excinfo.value.errno


class TestEnabledStore:
    def test_echo_1_on_enabled_patch_is_invalid(self, lp: LpfsMount) -> None:
        """Asking for the state the patch is already in fails with EINVAL."""
        result = lp.sh(f"echo 1 > {LP_DIR}/enabled")
        assert (1, True) == (
            result.returncode,
            result.stderr.endswith("echo: write error: Invalid argument\n"),
        )

    def test_echo_1_leaves_the_patch_enabled(self, lp: LpfsMount) -> None:
        """The refused write changes nothing."""
        lp.sh(f"echo 1 > {LP_DIR}/enabled")
        assert "1\n" == cat(lp, f"{LP_DIR}/enabled")

    def test_echo_0_frees_the_patch_before_echo_returns(self, lp: LpfsMount) -> None:
        """The patch directory is gone as soon as the disabling write returns."""
        result = lp.sh(f"echo 0 > {LP_DIR}/enabled && ls -A kernel/livepatch")
        assert (0, "") == (result.returncode, result.stdout)

    def test_echo_0_drops_the_module_reference(self, lp: LpfsMount) -> None:
        """After the free the livepatch module's refcnt reads 0."""
        lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
        assert "0\n" == cat(lp, f"module/{LP}/refcnt")

    @pytest.mark.parametrize("value", [b"2", b" 1", b"\n", b"o", b"-1"])
    def test_value_kstrtobool_rejects_is_invalid(self, enabled_fd: int, value: bytes) -> None:
        """A value kstrtobool does not parse fails with EINVAL."""
        assert errno.EINVAL == os_error(lambda: os.write(enabled_fd, value))

    def test_write_longer_than_a_page_is_partial(self, lp: LpfsMount, enabled_fd: int) -> None:
        """5000 bytes are cut to PAGE_SIZE; the store parses them and 4096 is returned."""
        written = os.write(enabled_fd, b"0" + b"x" * 4999)
        assert (4096, []) == (written, lp.patches())

    def test_bytes_past_the_first_page_are_dropped(self, blocked: LpfsMount) -> None:
        """Only the first PAGE_SIZE bytes reach the store: one reversal, not two."""
        fd = os.open(blocked.mountpoint / LP_DIR / "enabled", os.O_WRONLY)
        try:
            written = os.write(fd, b"0" * 4096 + b"1" * 904)
        finally:
            os.close(fd)
        assert (4096, "0\n") == (written, cat(blocked, f"{LP_DIR}/enabled"))

    def test_write_offset_is_ignored(self, lp: LpfsMount, enabled_fd: int) -> None:
        """A write at a non-zero offset is parsed from its own first byte."""
        written = os.pwrite(enabled_fd, b"0\n", 100)
        assert (2, []) == (written, lp.patches())

    def test_zero_length_write_changes_nothing(self, lp: LpfsMount, enabled_fd: int) -> None:
        """An empty write returns 0 without calling the store."""
        written = os.write(enabled_fd, b"")
        assert (0, "1\n") == (written, cat(lp, f"{LP_DIR}/enabled"))

    def test_truncate_is_accepted_and_ignored(self, lp: LpfsMount) -> None:
        """truncate(2) of enabled succeeds and changes nothing."""
        os.truncate(lp.mountpoint / LP_DIR / "enabled", 0)
        assert "1\n" == cat(lp, f"{LP_DIR}/enabled")

    def test_opposite_value_reverses_own_transition(self, blocked: LpfsMount) -> None:
        """echo 0 on the patch in transition reverses it: enabled 0, still in transition."""
        blocked.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
        actual = (cat(blocked, f"{LP_DIR}/enabled"), cat(blocked, f"{LP_DIR}/transition"))
        assert ("0\n", "1\n") == actual


class TestRead:
    def test_read_returns_the_whole_text(self, enabled_fd: int) -> None:
        """A read at offset 0 renders the show text."""
        assert b"1\n" == os.read(enabled_fd, 4096)

    def test_pread_at_offset_1(self, enabled_fd: int) -> None:
        """pread at offset 1 of "1\\n" returns the newline."""
        assert b"\n" == os.pread(enabled_fd, 4096, 1)

    def test_second_read_is_eof(self, enabled_fd: int) -> None:
        """A second read on the same descriptor returns nothing."""
        os.read(enabled_fd, 4096)
        assert b"" == os.read(enabled_fd, 4096)

    def test_lseek_to_0_renders_the_new_state(self, mnt: LpfsMount) -> None:
        """After a change, lseek to 0 and read again shows the new value."""
        mnt.insmod(shipped(LP))
        mnt.insmod(shipped(OTHER))
        fd = os.open(mnt.mountpoint / OTHER_DIR / "stack_order", os.O_RDONLY)
        try:
            first = os.read(fd, 4096)
            mnt.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
            at_eof = os.read(fd, 4096)
            os.lseek(fd, 0, os.SEEK_SET)
            again = os.read(fd, 4096)
        finally:
            os.close(fd)
        assert (b"2\n", b"", b"1\n") == (first, at_eof, again)


class TestFreedNode:
    @pytest.mark.parametrize(
        "operation",
        [
            lambda fd: os.read(fd, 4096),
            lambda fd: os.pread(fd, 4096, 0),
            lambda fd: os.write(fd, b"1\n"),
        ],
        ids=["read", "pread", "write"],
    )
    def test_old_descriptor_answers_enodev(
        self, lp: LpfsMount, enabled_fd: int, operation: Callable[[int], object]
    ) -> None:
        """A descriptor opened before the patch was freed fails with ENODEV."""
        lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
        assert errno.ENODEV == os_error(lambda: operation(enabled_fd))

    def test_fresh_open_is_enoent(self, lp: LpfsMount, enabled_fd: int) -> None:
        """The path of a freed patch no longer opens."""
        os.write(enabled_fd, b"0\n")
        assert errno.ENOENT == os_error(
            lambda: os.open(lp.mountpoint / LP_DIR / "enabled", os.O_RDONLY)
        )


class TestBusy:
    def test_disable_during_another_transition_is_busy(self, blocked: LpfsMount) -> None:
        """echo 0 on a patch that is not in transition fails with EBUSY during one."""
        result = blocked.sh(f"echo 0 > {OTHER_DIR}/enabled")
        assert (1, True) == (
            result.returncode,
            result.stderr.endswith("echo: write error: Device or resource busy\n"),
        )

    def test_insmod_during_a_transition_is_busy(self, blocked: LpfsMount) -> None:
        """A second livepatch cannot load while a transition is in progress."""
        result = blocked.command("insmod", str(shipped("test_klp_atomic_replace")))
        file = MODULES / "test_klp_atomic_replace.toml"
        expected = f"insmod: ERROR: could not insert module {file}: Device or resource busy\n"
        assert (1, expected) == (result.returncode, result.stderr)

    def test_busy_insmod_leaves_nothing_behind(self, blocked: LpfsMount) -> None:
        """The refused livepatch has neither a patch nor a module directory."""
        blocked.command("insmod", str(shipped("test_klp_atomic_replace")))
        actual = (blocked.patches(), sorted(os.listdir(blocked.mountpoint / "module")))
        assert ([LP, OTHER], [LP, OTHER]) == actual

    def test_force_leaves_completion_to_the_next_retry(self, blocked: LpfsMount) -> None:
        """echo 1 > force switches the tasks; the transition is still there until a retry."""
        blocked.sh(f"echo 1 > {LP_DIR}/force", check=True)
        assert "1\n" == cat(blocked, f"{LP_DIR}/transition")

    def test_force_completes_after_one_tick(self, blocked: LpfsMount) -> None:
        """One retry after echo 1 > force completes the transition."""
        blocked.sh(f"echo 1 > {LP_DIR}/force", check=True)
        blocked.tick()
        assert "0\n" == cat(blocked, f"{LP_DIR}/transition")

    def test_force_outside_a_transition_is_invalid(self, lp: LpfsMount) -> None:
        """echo 1 > force on a patch not in transition fails with EINVAL."""
        result = lp.sh(f"echo 1 > {LP_DIR}/force")
        assert (1, True) == (
            result.returncode,
            result.stderr.endswith("echo: write error: Invalid argument\n"),
        )

    def test_force_false_is_a_no_op(self, lp: LpfsMount) -> None:
        """echo 0 > force succeeds even without a transition."""
        assert 0 == lp.sh(f"echo 0 > {LP_DIR}/force").returncode


class TestTreeOperations:
    @pytest.mark.parametrize("rel", ["kernel/livepatch", LP_DIR, f"{LP_DIR}/vmlinux"])
    def test_create_is_eacces(self, lp: LpfsMount, rel: str) -> None:
        """O_CREAT of a new name fails with EACCES."""
        path = lp.mountpoint / rel / "new"
        assert errno.EACCES == os_error(lambda: os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))

    @pytest.mark.parametrize(
        "operation", [op for _, op in TREE_OPERATIONS], ids=[name for name, _ in TREE_OPERATIONS]
    )
    def test_changing_the_tree_is_eperm(
        self, lp: LpfsMount, operation: Callable[[Path], object]
    ) -> None:
        """Only the kernel changes the tree: mkdir, rmdir, unlink, rename and links fail."""
        assert errno.EPERM == os_error(lambda: operation(lp.mountpoint))
