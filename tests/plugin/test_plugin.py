"""The pytest plugin (lpfs.testing.plugin), run as a user's test session would run it."""

from pathlib import Path

import pytest
from support import MODULES, require_fuse

from lpfs.fuse import mounttable

pytest_plugins = ["pytester"]

INNER = """
import os
import signal
import time

import pytest

from lpfs.pytest_plugin import LpfsCommandError

MODULE = {module!r}
PATCH = "test_klp_livepatch"


def test_transition_driven_by_tasks_and_ticks(lpfs):
    lpfs.add_task(100, "cat", "uninterruptible", ["cmdline_proc_show", "seq_read_iter"])
    lpfs.insmod(MODULE)
    transition = lpfs.livepatch_dir / PATCH / "transition"
    assert "1\\n" == transition.read_text()
    lpfs.set_task(100, stack=["schedule"], kthread=False)
    assert 1 == lpfs.tick()
    lpfs.wait_idle(PATCH, timeout=5)
    assert "0\\n" == transition.read_text()
    (lpfs.livepatch_dir / PATCH / "enabled").write_text("0")
    lpfs.wait_gone(PATCH, timeout=5)
    lpfs.rmmod(PATCH)
    lpfs.exit_task(100)
    assert "livepatch: '%s': unpatching complete" % PATCH in lpfs.dmesg()


def test_errors_carry_the_cli_stderr(lpfs):
    with pytest.raises(LpfsCommandError, match="rmmod: ERROR: Module nothing is not currently loaded"):
        lpfs.rmmod("nothing")


def test_a_failing_test_is_still_unmounted(lpfs):
    lpfs.insmod(MODULE)
    assert False, "fails on purpose"


def test_a_dead_daemon_is_still_unmounted(lpfs):
    os.kill(lpfs.status()["pid"], signal.SIGKILL)
    time.sleep(0.2)


def test_factory_mounts_each_with_its_options(lpfs_factory):
    old, new = lpfs_factory("--kernel", "4.19"), lpfs_factory()
    old.insmod(MODULE)
    assert ("4.19.0", [PATCH], [], "1\\n") == (
        old.status()["kernel"],
        old.patches(),
        new.patches(),
        old.read(f"kernel/livepatch/{{PATCH}}/enabled"),
    )
    busy = old.command("rmmod", PATCH)
    assert (1, f"rmmod: ERROR: Module {{PATCH}} is in use\\n") == (busy.returncode, busy.stderr)
    listing = new.sh("ls kernel")
    assert (0, "livepatch\\n") == (listing.returncode, listing.stdout)


def test_shared_first(lpfs_shared):
    lpfs_shared.insmod(MODULE)
    assert [PATCH] == [p["name"] for p in lpfs_shared.status()["patches"]]


def test_shared_second_starts_reset(lpfs_shared):
    assert ([], []) == (lpfs_shared.status()["patches"], lpfs_shared.dmesg())
"""


def mounts_under(path: Path) -> list[str]:
    top = f"{mounttable.table_path(path)}/"
    return [entry.path for entry in mounttable.mount_table() if entry.path.startswith(top)]


def test_fixtures_mount_drive_and_unmount(pytester: pytest.Pytester) -> None:
    """An inner session using the fixtures passes, and leaves no mount behind, even after failures."""
    require_fuse()
    pytester.makepyfile(test_inner=INNER.format(module=str(MODULES / "test_klp_livepatch.toml")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*fails on purpose*"])
    assert [] == mounts_under(pytester.path)
