"""lpfs/tools/system/mount.lpfs, run as mount(8) runs it: `mount.lpfs none DIR -o OPTIONS`.

It runs this checkout's lpfs (through $LPFS), so nothing needs installing.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import MODULES, missing, require_fuse, require_tools

from lpfs.fuse import mounttable
from lpfs.pytest_plugin import LpfsMount, umount

ROOT = Path(__file__).parents[2]
HELPER = ROOT / "lpfs" / "tools" / "system" / "mount.lpfs"
LPFS = Path(sys.executable).with_name("lpfs")  # the venv's console script


def helper(*args: str) -> subprocess.CompletedProcess:
    if not LPFS.exists():
        missing(f"{LPFS} is missing: install lpfs in this interpreter's venv")
    return subprocess.run(
        [str(HELPER), *args],
        env={**os.environ, "LPFS": str(LPFS)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    require_fuse()
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    umount(path)


def test_options_become_lpfs_flags(mountpoint: Path) -> None:
    """kernel= takes effect (4.19 has `signal`), and mount(8)'s own options are ignored."""
    options = "rw,kernel=4.19,transition_interval=0,noauto,nofail,_netdev,x-systemd.automount"
    result = helper("none", str(mountpoint), "-o", options)
    assert (0, "") == (result.returncode, result.stderr)
    mnt = LpfsMount(mountpoint)
    mnt.insmod(str(MODULES / "test_klp_livepatch.toml"))
    assert ("4.19.0", True) == (
        mnt.status()["kernel"],
        (mnt.livepatch_dir / "test_klp_livepatch" / "signal").exists(),
    )


def test_unknown_option_mounts_nothing(mountpoint: Path) -> None:
    """An option lpfs does not know is a usage error (1), reported with the helper's name."""
    result = helper("none", str(mountpoint), "-o", "rw,bogus")
    expected = (1, "mount.lpfs: unknown option 'bogus'\n", False)
    assert expected == (result.returncode, result.stderr, mounttable.is_mounted(mountpoint))


def test_fake_mount_does_nothing(mountpoint: Path) -> None:
    """mount -f: the options are checked, nothing is mounted."""
    result = helper("none", str(mountpoint), "-f", "-o", "kernel=5.4")
    assert (0, False) == (result.returncode, mounttable.is_mounted(mountpoint))


def test_missing_lpfs_is_a_mount_failure(tmp_path: Path) -> None:
    """Without lpfs at $LPFS the mount fails (32) and says where it looked."""
    result = subprocess.run(
        [str(HELPER), "none", str(tmp_path)],
        env={**os.environ, "LPFS": str(tmp_path / "lpfs")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (32, True) == (
        result.returncode,
        f"{tmp_path / 'lpfs'} is not installed" in result.stderr,
    )


SHELL_SCRIPTS = sorted(
    [HELPER, ROOT / "lpfs" / "tools" / "ns.sh", *(ROOT / "mountpoint-scripts").iterdir()]
)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[s.name for s in SHELL_SCRIPTS])
def test_shellcheck_clean(script: Path) -> None:
    """Every shell script lpfs ships passes shellcheck."""
    require_tools("shellcheck")
    result = subprocess.run(
        ["shellcheck", str(script)], capture_output=True, text=True, check=False
    )
    assert (0, "") == (result.returncode, result.stdout)
