"""The kernel may cache some names, never state: what lpfs frees or changes shows at once.

The kernel keeps the names that exist as long as the mount; these tests walk
every name of a patch and its module first, as a tool would, then change the
model behind them and look again straight away.
"""

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from support import shipped

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_livepatch"
LP_DIR = f"kernel/livepatch/{LP}"


def warm(mnt: LpfsMount) -> None:
    """Walk every name of the patch and its module, as a tool reading them all would."""
    for top in (mnt.mountpoint / LP_DIR, mnt.mountpoint / "module" / LP):
        for path in (top, *top.rglob("*")):
            os.stat(path)


def errno_of(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def gone(path: Path) -> dict[str, int]:
    """The errno of each way a tool might look at a path (0: it answered)."""
    return {
        "stat": errno_of(lambda: os.stat(path)),
        "access": 0 if os.access(path, os.F_OK) else errno.ENOENT,
        "open": errno_of(lambda: os.close(os.open(path, os.O_RDONLY))),
        "enabled": errno_of((path / "enabled").read_text),
        "listdir": errno_of(lambda: os.listdir(path)),
    }


def test_a_freed_patch_is_enoent_at_once(lp: LpfsMount) -> None:
    warm(lp)
    lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
    assert dict.fromkeys(gone(lp.mountpoint), errno.ENOENT) == gone(lp.mountpoint / LP_DIR)


def test_a_reloaded_patch_is_the_new_one_at_once(lp: LpfsMount) -> None:
    warm(lp)
    lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
    lp.rmmod(LP)
    lp.insmod(shipped(LP))
    assert ("1\n", "0\n") == (lp.read(f"{LP_DIR}/enabled"), lp.read(f"{LP_DIR}/transition"))


def test_an_unloaded_module_is_enoent_at_once(lp: LpfsMount) -> None:
    warm(lp)
    lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
    lp.rmmod(LP)
    assert (errno.ENOENT, errno.ENOENT) == (
        errno_of(lambda: os.stat(lp.mountpoint / "module" / LP / "refcnt")),
        0 if os.access(lp.mountpoint / "module" / LP, os.F_OK) else errno.ENOENT,
    )


def test_a_chmod_shows_at_once(lp: LpfsMount) -> None:
    warm(lp)
    os.chmod(lp.mountpoint / LP_DIR / "enabled", 0o600)
    assert 0o600 == os.stat(lp.mountpoint / LP_DIR / "enabled").st_mode & 0o777


@pytest.mark.parametrize("call", ["mkdir", "rename"])
def test_namespace_calls_in_a_freed_directory_are_enoent(lp: LpfsMount, call: str) -> None:
    warm(lp)
    lp.sh(f"echo 0 > {LP_DIR}/enabled", check=True)
    target = lp.mountpoint / LP_DIR
    calls = {
        "mkdir": lambda: os.mkdir(target / "new"),
        "rename": lambda: os.rename(target / "enabled", target / "other"),
    }
    assert errno.ENOENT == errno_of(calls[call])
