"""Tree walks by ordinary tools terminate and show the kernel's tree."""

from support import shipped

from lpfs.pytest_plugin import LpfsMount


def test_find_lists_every_node(mnt: LpfsMount) -> None:
    """find walks the whole tree: patch, object and func directories and every attribute."""
    mnt.insmod(shipped("test_klp_callbacks_demo"))
    result = mnt.sh("find . | sort")
    assert 0 == result.returncode
    listed = set(result.stdout.split())
    assert {
        "./kernel/livepatch/test_klp_callbacks_demo/enabled",
        "./kernel/livepatch/test_klp_callbacks_demo/test_klp_callbacks_busy/busymod_work_func,1",
        "./kernel/livepatch/test_klp_callbacks_demo/test_klp_callbacks_mod/patched",
        "./module/test_klp_callbacks_demo/parameters/pre_patch_ret",
        "./module/test_klp_callbacks_demo/holders",
    } <= listed


def test_ls_recursive_terminates(mnt: LpfsMount) -> None:
    """ls -R lists every directory once and ends."""
    mnt.insmod(shipped("test_klp_livepatch"))
    result = mnt.sh("ls -R .")
    assert 0 == result.returncode
    assert 1 == result.stdout.count("./kernel/livepatch/test_klp_livepatch/vmlinux:")


def test_grep_recursive_reads_what_is_readable(mnt: LpfsMount) -> None:
    """grep -r reads every readable attribute and reports the write-only ones as sysfs does."""
    mnt.insmod(shipped("test_klp_livepatch"))
    result = mnt.sh("grep -r . kernel")
    assert "kernel/livepatch/test_klp_livepatch/enabled:1" in result.stdout.splitlines()
    assert "kernel/livepatch/test_klp_livepatch/force: Permission denied" in result.stderr
