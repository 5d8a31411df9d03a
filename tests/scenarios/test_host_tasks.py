"""`--tasks host`: the transition engine over this machine's real threads.

Each test runs in its own PID namespace (unshare --pid --mount-proc), so the
threads it sees are the ones it starts, and every kernel stack is readable.
"""

import subprocess
import sys

import pytest
from support import MODULES, require_fuse, require_tools

SCRIPT = r"""
set -eu
lpfs() { "$PYTHON" -m lpfs "$@"; }
M=$(mktemp -d)
lpfs mount "$M" --daemon --tasks host --transition-interval 0
trap 'lpfs umount "$M"; rmdir "$M"' EXIT
export LPFS_MOUNT="$M"
sleep 300 &
SLEEP=$!
until grep -q hrtimer_nanosleep /proc/$SLEEP/stack; do sleep 0.01; done
lpfs insmod "$MODULES/test_klp_nanosleep.toml"
echo "after_insmod=$(cat "$M/kernel/livepatch/test_klp_nanosleep/transition")"
echo "sleep_state=$(lpfs tasks --json | "$PYTHON" -c "
import json, sys
print(next(t['patch_state'] for t in json.load(sys.stdin) if t['pid'] == $SLEEP))")"
echo "blocking=$(lpfs tasks --blocking | grep -c "sleeping on function hrtimer_nanosleep")"
lpfs tick 14
echo "after_15_tries=$(cat "$M/kernel/livepatch/test_klp_nanosleep/transition")"
echo "signals_before=$(lpfs dmesg | grep -c 'signaling remaining tasks' || true)"
lpfs tick 1
echo "signals_after=$(lpfs dmesg | grep -c 'signaling remaining tasks')"
lpfs tick 1
echo "after_signal=$(cat "$M/kernel/livepatch/test_klp_nanosleep/transition")"
lpfs insmod "$MODULES/test_klp_livepatch.toml"
echo "nobody_sleeps=$(cat "$M/kernel/livepatch/test_klp_livepatch/transition")"
kill $SLEEP
"""


@pytest.fixture
def run_in_pid_namespace():
    require_fuse()
    require_tools("unshare")

    def run(script: str) -> dict[str, str]:
        result = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHON": sys.executable, "MODULES": str(MODULES), "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert 0 == result.returncode, result.stderr
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    return run


def test_real_sleeper_blocks_until_the_fake_signal(run_in_pid_namespace) -> None:
    """A real `sleep` in hrtimer_nanosleep holds the transition for 15 tries; the fake
    signal of the 16th switches it; a patch of a function nobody is in completes at once."""
    seen = run_in_pid_namespace(SCRIPT)
    assert {
        "after_insmod": "1",
        "sleep_state": "0",
        "blocking": "1",
        "after_15_tries": "1",
        "signals_before": "0",
        "signals_after": "1",
        "after_signal": "0",
        "nobody_sleeps": "0",
    } == seen
