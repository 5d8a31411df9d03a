"""What `pip install` gives is the whole product: built as a wheel, installed
into a clean virtualenv outside the checkout, and used from another directory.

`lpfs ns` must run an unmodified command against the emulation with the
kernel's test modules found by name, mount(8)'s helper and the systemd unit
must install from the package, and the pytest plugin must work.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import require_fuse, require_tools

ROOT = Path(__file__).resolve().parents[2]

PLUGIN_TEST = """
def test_shipped_module_by_name(lpfs):
    lpfs.insmod("test_klp_livepatch")
    enabled = lpfs.livepatch_dir / "test_klp_livepatch" / "enabled"
    assert "1\\n" == enabled.read_text()
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv with lpfs installed from its wheel."""
    require_fuse()
    require_tools("unshare")
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = work.glob("lpfs-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    bin_dir = work / "venv" / "bin"
    subprocess.run(
        [str(bin_dir / "pip"), "install", "-q", str(wheel), "pytest"],
        check=True,
        capture_output=True,
    )
    return bin_dir


def run(bin_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """A command with the venv first on PATH and nothing of the checkout around."""
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_wheel_holds_no_checkout_path(installed: Path, tmp_path: Path) -> None:
    """lpfs is imported from the venv, not from the checkout."""
    result = run(installed, tmp_path, "python", "-c", "import lpfs; print(lpfs.__file__)")
    assert result.stdout.startswith(str(installed.parent)), result.stdout


def test_lpfs_ns_with_shipped_modules(installed: Path, tmp_path: Path) -> None:
    """modprobe finds a test module by name; insmod takes a packed .ko; the tools answer."""
    script = (
        "modprobe test_klp_livepatch && "
        "cat /sys/kernel/livepatch/test_klp_livepatch/enabled && "
        "cat /proc/cmdline && "
        "lpfs pack test_klp_callbacks_demo -o demo.ko && "
        "modinfo -F name demo.ko && "
        "/sbin/insmod demo.ko && "
        "lsmod | grep -c '^test_klp_'"
    )
    result = run(installed, tmp_path, "lpfs", "ns", "--", "sh", "-c", script)
    assert 0 == result.returncode, result.stderr
    assert [
        "1",
        "test_klp_livepatch: this has been live patched",
        "test_klp_callbacks_demo",
        "2",
    ] == result.stdout.splitlines()


def test_install_system_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """mount.lpfs and lpfs@.service install under a root and name this venv's lpfs."""
    root = tmp_path / "root"
    result = run(installed, tmp_path, "lpfs", "install-system", "--root", str(root))
    assert 0 == result.returncode, result.stderr
    helper = root / "sbin" / "mount.lpfs"
    unit = root / "etc" / "systemd" / "system" / "lpfs@.service"
    assert os.access(helper, os.X_OK)
    assert f"lpfs=${{LPFS:-{installed / 'lpfs'}}}" in helper.read_text()
    assert f"ExecStart={installed / 'lpfs'} mount %f" in unit.read_text()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = run(installed, tmp_path, str(helper), "none", str(mnt), "-o", "kernel=6.1")
    try:
        assert 0 == mounted.returncode, mounted.stderr
        assert (mnt / "kernel" / "livepatch").is_dir()
    finally:
        run(installed, tmp_path, "lpfs", "umount", str(mnt))


def test_pytest_plugin_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """The installed plugin's fixture mounts, loads a shipped module by name and unmounts."""
    (tmp_path / "test_user.py").write_text(PLUGIN_TEST)
    result = run(installed, tmp_path, "pytest", "-q", "-p", "no:cacheprovider", "test_user.py")
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "1 passed" in result.stdout
