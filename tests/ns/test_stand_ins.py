"""`lpfs ns` answers at the tools' absolute paths whether or not the host has them.

The test hides kmod in a private mount namespace of its own (a tmpfs over
/usr/sbin and /usr/bin with every other entry bound back, which works in
containers too), so it does not depend on what this machine has installed.
Inside, /usr/sbin has mounts below it, so `lpfs ns` must take its tmpfs
fallback rather than an overlay, which would hide them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import MODULES, require_fuse, require_tools

from lpfs.fuse import mounttable

ROOT = Path(__file__).resolve().parents[2]
LPFS_NS = ROOT / "mountpoint-scripts" / "lpfs-ns"

# Hide NAMES in DIR: a tmpfs over DIR with every other entry bound back,
# filled aside and moved into place (DIR holds the tools that fill it).
HIDE = r"""
hide() {
	local dir=$1 host new entry name
	shift
	host=$(mktemp -d) new=$(mktemp -d)
	mount --rbind "$dir" "$host"
	mount -t tmpfs -o mode=755 hidden "$new"
	for entry in "$host"/*; do
		name=${entry##*/}
		case " $* " in *" $name "*) continue ;; esac
		if [ -L "$entry" ]; then cp -P "$entry" "$new/$name"
		elif [ -d "$entry" ]; then mkdir "$new/$name"; mount --rbind "$entry" "$new/$name"
		else touch "$new/$name"; mount --bind "$entry" "$new/$name"
		fi
	done
	mount --move "$new" "$dir"
}
hide /usr/sbin insmod rmmod modprobe modinfo lsmod depmod
hide /usr/bin kmod lsmod
for tool in /usr/sbin/insmod /sbin/modprobe /usr/bin/kmod /usr/sbin/lsmod; do
	[ ! -e "$tool" ] || { echo "$tool is not hidden"; exit 99; }
done
"""

INSIDE = r"""
set -e
/sbin/insmod test_klp_livepatch.ko
echo "insmod=$?"
/usr/sbin/lsmod | grep -c '^test_klp_livepatch '
/sbin/modinfo -F livepatch test_klp_livepatch.ko
/usr/bin/kmod list | grep -c '^test_klp_livepatch '
/sbin/modprobe --dry-run test_klp_atomic_replace && echo "dry-run=0"
/usr/bin/dmesg | grep -c "'test_klp_livepatch': patching complete"
echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled
while [ -e /sys/kernel/livepatch/test_klp_livepatch ]; do sleep 0.05; done
/sbin/rmmod test_klp_livepatch
echo "rmmod=$?"
/usr/sbin/lsmod | grep -c '^test_klp_livepatch ' || true
/usr/sbin/depmod && echo "depmod=0"
uname -r
/usr/sbin/ldconfig -p >/dev/null && echo "other sbin programs run"
/usr/bin/env true && echo "other bin programs run"
"""


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    require_fuse()
    require_tools("unshare")
    subprocess.run(
        [sys.executable, "-m", "lpfs", "pack", str(MODULES / "test_klp_livepatch.toml")],
        cwd=tmp_path,
        check=True,
    )
    return tmp_path


def test_stand_ins_without_kmod(packed: Path) -> None:
    """With kmod hidden, every absolute path answers as the real tool would."""
    (packed / "inside.sh").write_text(INSIDE)
    script = f"{HIDE}\n{LPFS_NS} --kernel 6.1 -- bash inside.sh"
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        cwd=packed,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LPFS_PYTHON": sys.executable},
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    assert [
        "insmod=0",
        "1",
        "Y",
        "1",
        "dry-run=0",
        "1",
        "rmmod=0",
        "0",
        "depmod=0",
        "6.1.0",
        "other sbin programs run",
        "other bin programs run",
    ] == result.stdout.splitlines()


LAYERED = ("/usr", "/sbin", "/bin", "/lib")


def host_view() -> tuple[list[str], list[str]]:
    """/usr/sbin's names and the host's mounts at or below the directories lpfs ns layers."""
    mounts = [entry.path for entry in mounttable.mount_table() if entry.path.startswith(LAYERED)]
    return sorted(os.listdir("/usr/sbin")), mounts


def test_host_directories_never_change(packed: Path) -> None:
    """The layers exist only inside the namespace: the host's /usr/sbin is as it was."""
    before = host_view()
    result = subprocess.run(
        [str(LPFS_NS), "--", "bash", "-c", "ls -l /usr/sbin/insmod /usr/bin/dmesg"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LPFS_PYTHON": sys.executable},
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    assert result.stdout.count("lpfs-stand-in") == 2
    assert before == host_view()


def sys_mounts() -> list[str]:
    return [entry.path for entry in mounttable.mount_table() if entry.path.startswith("/sys")]


def test_the_inside_step_refuses_the_hosts_namespace(tmp_path: Path) -> None:
    """The script's binding half, run by hand in the host's namespace, binds nothing."""
    before = host_view(), sys_mounts()
    result = subprocess.run(
        ["bash", str(ROOT / "lpfs" / "tools" / "ns.sh"), "--inside", str(tmp_path), "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LPFS_PYTHON": sys.executable},
        check=False,
    )
    assert (1, "--inside runs only in the mount namespace") == (
        result.returncode,
        result.stderr.split(": ", 1)[1][:41],
    )
    assert before == (host_view(), sys_mounts())
