"""make kselftest's own parts: the TAP verdict, and the time bound on each script,
against a runner that starts scripts as the kernel's runner.sh does."""

import os
import stat
import sys
import time
from pathlib import Path

# The checkout's top directory, where the kselftest package lives.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kselftest import sources, tap, watchdog

# runner.sh's way of running each script, reduced to what the bound relies on.
RUNNER = """#!/bin/bash
echo "TAP version 13"
echo "1..$#"
n=0
for t in "$@"; do
	n=$((n + 1))
	echo "# selftests: livepatch: $t"
	/usr/bin/timeout --foreground 0 /usr/bin/timeout 0 ./$t 2>&1 | sed 's/^/# /'
	rc=${PIPESTATUS[0]}
	if [ $rc -eq 0 ]; then
		echo "ok $n selftests: livepatch: $t"
	elif [ $rc -eq 124 ]; then
		echo "not ok $n selftests: livepatch: $t # TIMEOUT 0 seconds"
	else
		echo "not ok $n selftests: livepatch: $t # exit=$rc"
	fi
done
"""


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_script_past_its_bound_is_stopped_and_the_next_one_runs(tmp_path, monkeypatch):
    write_script(tmp_path / "runner.sh", RUNNER)
    write_script(tmp_path / "test-hang.sh", "#!/bin/bash\nsleep 600\n")
    write_script(tmp_path / "test-fine.sh", "#!/bin/bash\necho fine\n")
    shown: list[str] = []
    started = time.monotonic()
    monkeypatch.chdir(tmp_path)
    summary = watchdog.run(
        ["./runner.sh", "test-hang.sh", "test-fine.sh"], dict(os.environ), 1.0, shown.append
    )
    assert time.monotonic() - started < 10
    assert [
        "TAP version 13",
        "1..2",
        "# selftests: livepatch: test-hang.sh",
        "# lpfs kselftest: test-hang.sh ran 1 s, stopping it",
        "not ok 1 selftests: livepatch: test-hang.sh # TIMEOUT 0 seconds",
        "# selftests: livepatch: test-fine.sh",
        "# fine",
        "ok 2 selftests: livepatch: test-fine.sh",
    ] == shown
    assert "1 ok, 1 failed (test-hang.sh)" == summary.describe()
    assert not summary.passed


def feed(*lines: str) -> tap.Summary:
    summary = tap.Summary()
    for line in lines:
        summary.feed(line)
    return summary


def test_every_planned_script_ok_passes():
    summary = feed(
        "TAP version 13",
        "1..2",
        "ok 1 selftests: livepatch: a.sh",
        "ok 2 selftests: livepatch: b.sh",
    )
    assert summary.passed
    assert "2 ok" == summary.describe()


def test_a_skip_is_no_pass():
    summary = feed("1..1", "ok 1 selftests: livepatch: test-shadow-vars.sh # SKIP")
    assert not summary.passed
    assert "0 ok, 1 failed (test-shadow-vars.sh)" == summary.describe()


def test_scripts_that_never_reported_are_no_pass():
    summary = feed("1..3", "ok 1 selftests: livepatch: a.sh")
    assert not summary.passed
    assert "1 ok, 2 not run" == summary.describe()


def test_no_plan_is_no_pass():
    assert not feed().passed
    assert "no tests ran" == feed().describe()


def test_the_private_suite_uses_the_machines_debian_mirror():
    """7.3's private apt configuration names the Debian archive the machine's apt sources
    use, read from apt itself (deb822 or one-line sources alike)."""
    mirror = sources.debian_mirror()
    uris = [
        line.split()[0]
        for line in os.popen("apt-get indextargets --format '$(REPO_URI)'").read().splitlines()
    ]
    assert mirror in uris and mirror.endswith("/")
