"""lpfs.sysfs.tree.Tree in process, on a clock the test owns: the kernfs rules without a mount.

The real-mount tests in tests/fs check the same rules through the kernel's
FUSE client; these pin down the Tree itself (docs/kernel.md §1.2, §1.3):
modes, EACCES at open, ENODEV through a handle whose node was freed, the
PAGE_SIZE cut of a write, and chmod's lifetime.
"""

import errno
import os
import stat

import pytest

from lpfs.errors import KernelError
from lpfs.kernel.clock import FakeClock
from lpfs.kernel.core import Core
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import FuncDef, ModuleDef, ObjectDef
from lpfs.kernel.tasks import SimulatedTasks
from lpfs.sysfs.tree import PAGE_SIZE, Tree

LP = "lp_a"
PATCH = f"/kernel/livepatch/{LP}"


@pytest.fixture
def tree() -> Tree:
    """A booted newest kernel with one livepatch loaded and its transition complete."""
    clock = FakeClock()
    core = Core(KernelLog(clock), SimulatedTasks(ncpus=2), Profile(), clock)
    funcs = (FuncDef("cmdline_proc_show", "livepatch_cmdline_proc_show"),)
    core.insmod(ModuleDef(LP, objects=(ObjectDef("vmlinux", funcs),)))
    return Tree(core)


def read(tree: Tree, path: str) -> bytes:
    return tree.read(tree.open(path, os.O_RDONLY), PAGE_SIZE, 0)


def errno_of(call: object, *args: object) -> int:
    with pytest.raises(KernelError) as raised:
        call(*args)  # type: ignore[operator]
    return raised.value.errno


class TestModes:
    @pytest.mark.parametrize(
        ("rel", "mode"),
        [("enabled", 0o644), ("transition", 0o444), ("force", 0o200), ("stack_order", 0o444)],
    )
    def test_patch_attributes(self, tree: Tree, rel: str, mode: int) -> None:
        info = tree.stat(tree.lookup(f"{PATCH}/{rel}"))
        assert (stat.S_IFREG | mode, PAGE_SIZE) == (info["st_mode"], info["st_size"])

    def test_directories(self, tree: Tree) -> None:
        assert stat.S_IFDIR | 0o755 == tree.stat(tree.lookup(f"{PATCH}/vmlinux"))["st_mode"]

    def test_unknown_name_is_enoent(self, tree: Tree) -> None:
        assert errno.ENOENT == errno_of(tree.lookup, f"{PATCH}/nothing")


class TestOpen:
    def test_a_write_only_file_refuses_a_reader_even_root(self, tree: Tree) -> None:
        assert errno.EACCES == errno_of(tree.open, f"{PATCH}/force", os.O_RDONLY)

    def test_a_read_only_file_refuses_a_writer(self, tree: Tree) -> None:
        assert errno.EACCES == errno_of(tree.open, f"{PATCH}/transition", os.O_WRONLY)

    def test_a_directory_opens_for_reading_only(self, tree: Tree) -> None:
        assert errno.EISDIR == errno_of(tree.open, PATCH, os.O_RDWR)


class TestReadWrite:
    def test_reads_render_afresh_at_offset_zero(self, tree: Tree) -> None:
        handle = tree.open(f"{PATCH}/enabled", os.O_RDWR)
        assert b"1\n" == tree.read(handle, PAGE_SIZE, 0)
        tree.write(handle, b"0")
        assert errno.ENODEV == errno_of(tree.read, handle, PAGE_SIZE, 0)

    def test_a_freed_patch_answers_enodev_through_a_held_handle(self, tree: Tree) -> None:
        held = tree.open(f"{PATCH}/enabled", os.O_WRONLY)
        tree.write(tree.open(f"{PATCH}/enabled", os.O_WRONLY), b"0")
        assert errno.ENOENT == errno_of(tree.lookup, PATCH)
        assert errno.ENODEV == errno_of(tree.write, held, b"1")

    def test_a_write_is_cut_at_page_size(self, tree: Tree) -> None:
        handle = tree.open(f"{PATCH}/enabled", os.O_WRONLY)
        # kstrtobool() reads the first character: PAGE_SIZE bytes reach the store.
        assert PAGE_SIZE == tree.write(handle, b"0" + b"x" * (2 * PAGE_SIZE))
        assert errno.ENOENT == errno_of(tree.lookup, PATCH)

    def test_an_empty_write_reaches_no_store(self, tree: Tree) -> None:
        assert 0 == tree.write(tree.open(f"{PATCH}/enabled", os.O_WRONLY), b"")
        assert b"1\n" == read(tree, f"{PATCH}/enabled")


class TestChmod:
    def test_a_mode_change_sticks_and_rules_open(self, tree: Tree) -> None:
        tree.setattr(f"{PATCH}/transition", mode=0o644)
        assert 0o644 == tree.mode(tree.lookup(f"{PATCH}/transition"))
        # Opens now, but transition has no store: the write is EIO (kobj_attr_store()).
        handle = tree.open(f"{PATCH}/transition", os.O_WRONLY)
        assert errno.EIO == errno_of(tree.write, handle, b"1")

    def test_a_mode_change_dies_with_its_node(self, tree: Tree) -> None:
        tree.setattr(f"/module/{LP}/refcnt", mode=0o400)
        assert 0o400 == tree.mode(tree.lookup(f"/module/{LP}/refcnt"))
        tree.write(tree.open(f"{PATCH}/enabled", os.O_WRONLY), b"0")
        tree.core.rmmod(LP)
        funcs = (FuncDef("cmdline_proc_show", "livepatch_cmdline_proc_show"),)
        tree.core.insmod(ModuleDef(LP, objects=(ObjectDef("vmlinux", funcs),)))
        assert 0o444 == tree.mode(tree.lookup(f"/module/{LP}/refcnt"))
