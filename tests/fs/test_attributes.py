"""The sysfs tree as `ls`, `stat` and `cat` see it: layout, metadata and read texts.

docs/kernel.md §1.1 (layout and modes of the newest profile), §1.2 (stat, open checks)
and §1.3 (what each read returns), on a real mount.
"""

# STYLE.md asks for `assert expected == actual`, which SIM300 calls a Yoda condition.

import errno
import os

import pytest
from support import shipped

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_livepatch"
LP_DIR = f"kernel/livepatch/{LP}"
DEMO = "test_klp_callbacks_demo"
MOD = "test_klp_callbacks_mod"
MOD_OBJECT = f"kernel/livepatch/{DEMO}/{MOD}"
REPLACE = "test_klp_atomic_replace"
STACK = [LP, "test_klp_syscall", "test_klp_atomic_replace"]  # the last with replace=false

PATCH_MODES = [
    ("", "drwxr-xr-x"),
    ("enabled", "-rw-r--r--"),
    ("transition", "-r--r--r--"),
    ("force", "--w-------"),
    ("replace", "-r--r--r--"),
    ("stack_order", "-r--r--r--"),
    ("vmlinux", "drwxr-xr-x"),
    ("vmlinux/patched", "-r--r--r--"),
    ("vmlinux/cmdline_proc_show,1", "drwxr-xr-x"),
]
MODULE_MODES = [
    ("", "drwxr-xr-x"),
    ("refcnt", "-r--r--r--"),
    ("initstate", "-r--r--r--"),
    ("taint", "-r--r--r--"),
    ("holders", "drwxr-xr-x"),
]
ATTRIBUTES = [
    f"{LP_DIR}/enabled",
    f"{LP_DIR}/transition",
    f"{LP_DIR}/force",
    f"{LP_DIR}/replace",
    f"{LP_DIR}/stack_order",
    f"{LP_DIR}/vmlinux/patched",
    f"module/{LP}/refcnt",
    f"module/{LP}/initstate",
    f"module/{LP}/taint",
]
DIRECTORIES_NLINK = [
    ("kernel/livepatch", 3),
    (LP_DIR, 3),
    (f"{LP_DIR}/vmlinux", 3),
    (f"{LP_DIR}/vmlinux/cmdline_proc_show,1", 2),
    (f"module/{LP}", 3),
    (f"module/{LP}/holders", 2),
]
LISTINGS = [
    (LP_DIR, "enabled force replace stack_order transition vmlinux"),
    (f"{LP_DIR}/vmlinux", "cmdline_proc_show,1 patched"),
    (f"{LP_DIR}/vmlinux/cmdline_proc_show,1", ""),
]
READ_ONLY = [
    f"{LP_DIR}/transition",
    f"{LP_DIR}/replace",
    f"{LP_DIR}/stack_order",
    f"{LP_DIR}/vmlinux/patched",
    f"module/{LP}/refcnt",
]


@pytest.fixture
def demo(mnt: LpfsMount) -> LpfsMount:
    """test_klp_callbacks_demo loaded; its object test_klp_callbacks_mod is not."""
    mnt.insmod(shipped(DEMO))
    return mnt


@pytest.fixture
def replacing(mnt: LpfsMount) -> LpfsMount:
    """A replace patch stuck in transition over test_klp_callbacks_demo and test_klp_livepatch.

    The task sleeps in test_klp_livepatch's new function, which the replace
    patch's NOP for cmdline_proc_show must check.
    """
    mnt.add_task(100, "task100", "uninterruptible", ["livepatch_cmdline_proc_show"])
    mnt.insmod(shipped(DEMO))
    mnt.insmod(shipped(LP))
    mnt.insmod(shipped(REPLACE), "replace=1")
    return mnt


def find(mnt: LpfsMount, rel: str) -> list[str]:
    """Every path below a directory, relative to it, as `find` lists them."""
    return sorted(mnt.sh(f"cd '{rel}' && find . -mindepth 1", check=True).stdout.split())


def cat(mnt: LpfsMount, rel: str) -> str:
    """What `cat` prints for a path under the mount."""
    return mnt.sh(f"cat '{rel}'", check=True).stdout


def ls(mnt: LpfsMount, rel: str) -> str:
    """`ls -A` of a path under the mount, as one line."""
    return " ".join(mnt.sh(f"ls -A '{rel}'", check=True).stdout.split())


def rights(mnt: LpfsMount, rel: str) -> str:
    """`stat --format %A`, as check_sysfs_rights() runs it."""
    return mnt.sh(f"stat --format %A '{rel}'", check=True).stdout.strip()


class TestLayout:
    def test_fresh_mount_has_an_empty_livepatch_directory(self, mnt: LpfsMount) -> None:
        """kernel/livepatch exists and is empty before any livepatch is loaded."""
        assert ("drwxr-xr-x", "") == (rights(mnt, "kernel/livepatch"), ls(mnt, "kernel/livepatch"))

    @pytest.mark.parametrize(("rel", "expected"), LISTINGS)
    def test_listing(self, lp: LpfsMount, rel: str, expected: str) -> None:
        """A patch holds its attributes and objects, an object `patched` and its func dirs."""
        assert expected == ls(lp, rel)

    def test_every_object_has_a_directory_loaded_or_not(self, demo: LpfsMount) -> None:
        """Objects appear whether or not their module is loaded or has funcs."""
        expected = (
            "enabled force replace stack_order test_klp_callbacks_busy "
            "test_klp_callbacks_mod transition vmlinux"
        )
        assert expected == ls(demo, f"kernel/livepatch/{DEMO}")

    def test_replace_transition_shows_dynamic_objects_and_nops(self, replacing: LpfsMount) -> None:
        """While replacing, the patch also holds NOP funcs and dynamic objects of older patches."""
        expected = [
            "./enabled",
            "./force",
            "./replace",
            "./stack_order",
            "./test_klp_callbacks_busy",
            "./test_klp_callbacks_busy/busymod_work_func,1",
            "./test_klp_callbacks_busy/patched",
            "./test_klp_callbacks_mod",
            "./test_klp_callbacks_mod/patched",
            "./transition",
            "./vmlinux",
            "./vmlinux/cmdline_proc_show,1",
            "./vmlinux/meminfo_proc_show,1",
            "./vmlinux/patched",
        ]
        assert expected == find(replacing, f"kernel/livepatch/{REPLACE}")

    def test_completed_replace_drops_dynamic_objects_and_nops(self, replacing: LpfsMount) -> None:
        """Once the replace transition completes only the patch's own objects and funcs remain."""
        replacing.sh(f"echo 1 > kernel/livepatch/{REPLACE}/force", check=True)
        replacing.tick()
        expected = [
            "./enabled",
            "./force",
            "./replace",
            "./stack_order",
            "./transition",
            "./vmlinux",
            "./vmlinux/meminfo_proc_show,1",
            "./vmlinux/patched",
        ]
        assert expected == find(replacing, f"kernel/livepatch/{REPLACE}")

    def test_module_directory_has_the_files_tools_read(self, lp: LpfsMount) -> None:
        """module/<mod>/ has refcnt, initstate, taint and holders/."""
        required = {"refcnt", "initstate", "taint", "holders"}
        assert required == required & set(ls(lp, f"module/{LP}").split())


class TestModes:
    @pytest.mark.parametrize(("rel", "expected"), PATCH_MODES)
    def test_patch_tree_mode(self, lp: LpfsMount, rel: str, expected: str) -> None:
        """Each path under a patch has the mode its attribute macro gives it."""
        assert expected == rights(lp, f"{LP_DIR}/{rel}".rstrip("/"))

    @pytest.mark.parametrize(("rel", "expected"), MODULE_MODES)
    def test_module_tree_mode(self, lp: LpfsMount, rel: str, expected: str) -> None:
        """module/<mod>/ is a directory of read-only attributes and holders/."""
        assert expected == rights(lp, f"module/{LP}/{rel}".rstrip("/"))


class TestStat:
    @pytest.mark.parametrize("rel", ATTRIBUTES)
    def test_attribute_size_is_page_size(self, lp: LpfsMount, rel: str) -> None:
        """Every attribute, write-only force included, reports PAGE_SIZE."""
        assert 4096 == os.stat(lp.mountpoint / rel).st_size

    @pytest.mark.parametrize("rel", ATTRIBUTES)
    def test_attribute_nlink_is_one(self, lp: LpfsMount, rel: str) -> None:
        """Attribute files have one link."""
        assert 1 == os.stat(lp.mountpoint / rel).st_nlink

    @pytest.mark.parametrize("rel", [rel for rel, _ in DIRECTORIES_NLINK])
    def test_directory_size_is_zero(self, lp: LpfsMount, rel: str) -> None:
        """Directories report size 0."""
        assert 0 == os.stat(lp.mountpoint / rel).st_size

    @pytest.mark.parametrize(("rel", "nlink"), DIRECTORIES_NLINK)
    def test_directory_nlink_counts_subdirectories(
        self, lp: LpfsMount, rel: str, nlink: int
    ) -> None:
        """A directory's nlink is 2 plus its number of subdirectories."""
        assert nlink == os.stat(lp.mountpoint / rel).st_nlink

    @pytest.mark.parametrize("rel", [LP_DIR, f"{LP_DIR}/enabled", f"module/{LP}/refcnt"])
    def test_owner_is_the_daemon_user(self, lp: LpfsMount, rel: str) -> None:
        """Files belong to the daemon's user: root:root as root (docs/kernel.md §10)."""
        info = os.stat(lp.mountpoint / rel)
        assert (os.getuid(), os.getgid()) == (info.st_uid, info.st_gid)

    def test_fresh_livepatch_directory_nlink_is_two(self, mnt: LpfsMount) -> None:
        """kernel/livepatch without patches has no subdirectories."""
        assert 2 == os.stat(mnt.livepatch_dir).st_nlink


class TestOpenPermissions:
    def test_cat_force_is_denied(self, lp: LpfsMount) -> None:
        """`cat force` fails with Permission denied, even for root."""
        result = lp.sh(f"cat {LP_DIR}/force")
        assert (1, True) == (
            result.returncode,
            result.stderr.endswith(f"{LP_DIR}/force: Permission denied\n"),
        )

    def test_echo_to_transition_is_denied(self, lp: LpfsMount) -> None:
        """`echo 1 > transition` fails at the redirection with Permission denied."""
        result = lp.sh(f"echo 1 > {LP_DIR}/transition")
        assert (1, True) == (
            result.returncode,
            result.stderr.endswith(f"{LP_DIR}/transition: Permission denied\n"),
        )

    @pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR], ids=["O_RDONLY", "O_RDWR"])
    def test_open_force_for_read_is_eacces(self, lp: LpfsMount, flags: int) -> None:
        """Opening the write-only force for reading fails with EACCES."""
        with pytest.raises(OSError) as excinfo:
            os.open(lp.mountpoint / LP_DIR / "force", flags)
        assert errno.EACCES == excinfo.value.errno

    @pytest.mark.parametrize("rel", READ_ONLY)
    @pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR], ids=["O_WRONLY", "O_RDWR"])
    def test_open_for_write_without_write_bit_is_eacces(
        self, lp: LpfsMount, rel: str, flags: int
    ) -> None:
        """Opening a read-only attribute for writing fails with EACCES."""
        with pytest.raises(OSError) as excinfo:
            os.open(lp.mountpoint / rel, flags)
        assert errno.EACCES == excinfo.value.errno

    def test_enabled_opens_read_write(self, lp: LpfsMount) -> None:
        """Root may open enabled O_RDWR and read it."""
        fd = os.open(lp.mountpoint / LP_DIR / "enabled", os.O_RDWR)
        try:
            assert b"1\n" == os.read(fd, 4096)
        finally:
            os.close(fd)


class TestReads:
    def test_enabled_reads_1_once_loaded(self, lp: LpfsMount) -> None:
        """A loaded patch is enabled."""
        assert "1\n" == cat(lp, f"{LP_DIR}/enabled")

    def test_transition_reads_0_once_complete(self, lp: LpfsMount) -> None:
        """No transition is left once the patching transition completed."""
        assert "0\n" == cat(lp, f"{LP_DIR}/transition")

    def test_transition_reads_1_while_blocked(self, blocked: LpfsMount) -> None:
        """The patch in transition reads transition 1."""
        assert "1\n" == cat(blocked, f"{LP_DIR}/transition")

    def test_object_reads_patched_while_patching(self, blocked: LpfsMount) -> None:
        """An object is patched before the patching transition starts."""
        assert "1\n" == cat(blocked, f"{LP_DIR}/vmlinux/patched")

    def test_enabled_reads_target_state_while_patching(self, blocked: LpfsMount) -> None:
        """enabled is 1 while the patching transition is still running."""
        assert "1\n" == cat(blocked, f"{LP_DIR}/enabled")

    def test_enabled_reads_0_while_unpatching(self, mnt: LpfsMount) -> None:
        """enabled turns 0 as soon as the disable is requested, before it completes."""
        mnt.add_task(100, "task100", "uninterruptible", ["livepatch_cmdline_proc_show"])
        mnt.insmod(shipped(LP))
        mnt.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
        assert ("0\n", "1\n") == (cat(mnt, f"{LP_DIR}/enabled"), cat(mnt, f"{LP_DIR}/transition"))

    @pytest.mark.parametrize(
        ("module", "params", "patch", "expected"),
        [
            (LP, (), LP, "0\n"),
            (REPLACE, ("replace=1",), REPLACE, "1\n"),
        ],
        ids=["replace=false", "replace=true"],
    )
    def test_replace_reads_the_flag(
        self, mnt: LpfsMount, module: str, params: tuple[str, ...], patch: str, expected: str
    ) -> None:
        """replace shows the patch's atomic-replace flag."""
        mnt.insmod(shipped(module), *params)
        assert expected == cat(mnt, f"kernel/livepatch/{patch}/replace")

    def test_stack_order_follows_load_order(self, mnt: LpfsMount) -> None:
        """Patches loaded A, B, C read stack_order 1, 2, 3."""
        for patch in STACK:
            mnt.insmod(shipped(patch))
        orders = [cat(mnt, f"kernel/livepatch/{patch}/stack_order") for patch in STACK]
        assert ["1\n", "2\n", "3\n"] == orders

    def test_stack_order_closes_the_gap(self, mnt: LpfsMount) -> None:
        """After B of A, B, C is disabled and removed, A reads 1 and C reads 2."""
        for patch in STACK:
            mnt.insmod(shipped(patch))
        mnt.sh(f"echo 0 > kernel/livepatch/{STACK[1]}/enabled", check=True)
        mnt.rmmod(STACK[1])
        orders = [cat(mnt, f"kernel/livepatch/{patch}/stack_order") for patch in STACK[::2]]
        assert ["1\n", "2\n"] == orders

    def test_vmlinux_object_reads_patched(self, lp: LpfsMount) -> None:
        """vmlinux is always loaded, so its object is patched."""
        assert "1\n" == cat(lp, f"{LP_DIR}/vmlinux/patched")

    def test_object_of_missing_module_reads_unpatched(self, demo: LpfsMount) -> None:
        """An object whose module is not loaded reads patched 0."""
        assert "0\n" == cat(demo, f"{MOD_OBJECT}/patched")

    def test_object_is_patched_when_its_module_loads(self, demo: LpfsMount) -> None:
        """Loading the target module patches the object."""
        demo.insmod(shipped(MOD))
        assert "1\n" == cat(demo, f"{MOD_OBJECT}/patched")

    def test_object_is_unpatched_when_its_module_unloads(self, demo: LpfsMount) -> None:
        """Removing the target module unpatches the object again."""
        demo.insmod(shipped(MOD))
        demo.rmmod(MOD)
        assert "0\n" == cat(demo, f"{MOD_OBJECT}/patched")

    @pytest.mark.parametrize(
        ("module", "attr", "expected"),
        [
            (LP, "refcnt", "1\n"),
            (LP, "initstate", "live\n"),
            (LP, "taint", "K\n"),
            (MOD, "refcnt", "0\n"),
            (MOD, "initstate", "live\n"),
            (MOD, "taint", "\n"),
        ],
    )
    def test_module_attribute(self, mnt: LpfsMount, module: str, attr: str, expected: str) -> None:
        """A livepatch module is referenced by its patch and tainted K; a plain one is neither."""
        mnt.insmod(shipped(module))
        assert expected == cat(mnt, f"module/{module}/{attr}")
