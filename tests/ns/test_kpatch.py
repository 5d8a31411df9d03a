"""kpatch's patch management, step by step, against lpfs-ns.

The kpatch user tool (dynup/kpatch, ``kpatch/kpatch``) manages livepatch
modules with nothing but files and commands: ``list`` reads
``/sys/kernel/livepatch/*/enabled`` and ``transition`` (and, during a
transition, ``/proc/<tid>/patch_state`` of every thread); ``load x.ko`` reads
the module name with ``readelf -p .gnu.linkonce.this_module``, quietly
``rmmod``s a leftover of that name, ``insmod``s with ``LC_ALL=C`` (retrying
five times while insmod says "Device or resource busy"), then polls
``transition`` once a second: 15 polls, then ``echo 1 > signal`` where that
file exists, then 60 more polls, and disables and removes the patch if it
never completes; ``unload x`` writes 0 to ``enabled`` through
``sh -c "echo 0 > …"`` (retrying on "Device or resource busy"), waits for the
transition and for ``/sys/module/<m>/refcnt`` to reach 0, and ``rmmod``s.

The shell functions below do the same file operations and run the same
commands in the same order (this project's code, not kpatch's), with kpatch's
counts and a twentieth of its sleeps, and print what kpatch would see at each
step; the tests compare that with what kpatch expects of a kernel.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from support import MODULES, require_fuse, require_tools

ROOT = Path(__file__).resolve().parents[2]
LPFS_NS = ROOT / "mountpoint-scripts" / "lpfs-ns"
RETRY = "0.2"

# kpatch's sequence as shell functions. ENABLE_WAIT, SIGNAL_WAIT, REF_WAIT and
# LOAD_ATTEMPTS are kpatch's counts; POLL stands for its one-second sleeps. The
# daemons retry every RETRY seconds, four polls apart, so that kpatch's 15 polls
# run out before the 16th retry sends the fake signal, the order kpatch meets
# on a kernel (15 s against about 16).
KPATCH_STEPS = r"""
set -u
SYSFS=/sys/kernel/livepatch
POLL=0.05 ENABLE_WAIT=15 SIGNAL_WAIT=60 REF_WAIT=15 LOAD_ATTEMPTS=5

# The name kpatch takes from the module file: the string in the module struct.
ko_name() {
	readelf -p .gnu.linkonce.this_module "$1" | awk '/\[ *[0-9a-f]+\]/ { print $3 }'
}

busy() { [[ "$(cat "$SYSFS/$1/transition" 2>/dev/null)" == 1 ]]; }

# kpatch list: one line per patch directory, then the stalled threads.
kp_list() {
	local dir name state tid stalled=0 enabled pstate
	for dir in "$SYSFS"/*; do
		[[ -e "$dir" ]] || continue
		name=${dir##*/}
		if [[ "$(cat "$dir/enabled" 2>/dev/null)" -eq 1 ]]; then
			busy "$name" && state="enabling..." || state="enabled"
		else
			busy "$name" && state="disabling..." || state="disabled"
		fi
		echo "list: $name [$state]"
		busy "$name" || continue
		for tid in /proc/[0-9]*/task/[0-9]*; do
			tid=${tid##*/}
			enabled=$(cat "$dir/enabled" 2>/dev/null)
			pstate=$(cat "/proc/$tid/patch_state" 2>/dev/null)
			[[ -n "$pstate" && "$pstate" != -1 && "$pstate" != "$enabled" ]] && stalled=$((stalled + 1))
		done
		echo "list: stalled threads: $stalled"
	done
}

# Poll the transition as kpatch does after enabling or disabling.
kp_wait() {
	local name=$1 i
	busy "$name" || { echo "wait: $name not in transition"; return 0; }
	for ((i = 0; i < ENABLE_WAIT; i++)); do
		busy "$name" || { echo "wait: $name complete"; return 0; }
		sleep "$POLL"
	done
	echo "wait: $name stalled"
	if [[ -e "$SYSFS/$name/signal" ]]; then
		echo 1 > "$SYSFS/$name/signal" && echo "wait: signalled $name"
	else
		echo "wait: no signal file"
	fi
	for ((i = 0; i < SIGNAL_WAIT; i++)); do
		busy "$name" || { echo "wait: $name complete after signal"; return 0; }
		sleep "$POLL"
	done
	echo "wait: $name still in transition"
	return 1
}

# Wait for /sys/module/<m>/refcnt to reach 0, then rmmod (errors ignored).
kp_remove() {
	local name=$1 i out
	if [[ ! -d /sys/kernel/kpatch ]]; then
		for ((i = 0; i < REF_WAIT; i++)); do
			[[ "$(cat "/sys/module/$name/refcnt" 2>/dev/null)" -gt 0 ]] || break
			sleep "$POLL"
		done
		[[ "$(cat "/sys/module/$name/refcnt" 2>/dev/null)" -gt 0 ]] && { echo "remove: $name refcnt"; return 1; }
	fi
	out=$(rmmod "$name" 2>&1) && echo "remove: rmmod $name" || echo "remove: rmmod $name failed: $out"
}

# Write 0 to enabled through sh, retrying while the kernel says EBUSY.
kp_disable() {
	local name=$1 enabled=$SYSFS/$1/enabled tries=0 out
	if [[ ! -e "$enabled" ]]; then
		[[ -d "/sys/module/$name" ]] && { echo "disable: $name loaded, already disabled"; return 0; }
		echo "disable: $name not loaded"
		return 1
	fi
	[[ "$(cat "$enabled")" -eq 1 ]] || { echo "disable: $name already disabled"; return 0; }
	while out=$(export LC_ALL=C; sh -c "echo 0 > $enabled" 2>&1); [[ -n "$out" ]]; do
		echo "disable: sh: $out"
		[[ "$out" == *"Device or resource busy"* ]] || return 1
		((++tries < LOAD_ATTEMPTS)) || return 1
		sleep "$POLL"
	done
	echo "disable: $name written"
}

kp_unload() {
	local name=${1//-/_}
	name=${name%.ko}
	kp_disable "$name" || return 1
	kp_wait "$name" || return 1
	kp_remove "$name"
}

kp_load() {
	local ko=$1 name tries=0 out
	[[ -f "$ko" ]] || { echo "load: no file $ko"; return 1; }
	[[ -d /sys/kernel/kpatch || -d "$SYSFS" ]] || { echo "load: no livepatch core"; return 1; }
	name=$(ko_name "$ko")
	echo "load: name $name"
	if [[ -d "$SYSFS/$name" ]]; then
		if [[ "$(cat "$SYSFS/$name/enabled")" -eq 0 ]]; then
			readelf -p .kpatch.checksum "$ko" 2>&1 | grep -q '\[' && echo "load: has a checksum"
			[[ -e "$SYSFS/$name/checksum" ]] && echo "load: sysfs has a checksum"
			echo 1 > "$SYSFS/$name/enabled" && echo "load: re-enabled $name"
			kp_wait "$name"
			return
		fi
		echo "load: $name already loaded and enabled"
		return 0
	fi
	kp_remove "$name" quiet
	while out=$(LC_ALL=C insmod "$ko" 2>&1); [[ -n "$out" ]]; do
		echo "load: insmod: $out"
		[[ "$out" == *"Device or resource busy"* ]] || return 1
		((++tries < LOAD_ATTEMPTS)) || { echo "load: gave up"; return 1; }
		sleep "$POLL"
	done
	echo "load: inserted $name"
	if ! kp_wait "$name"; then
		kp_list
		kp_unload "$name"
		echo "load: $name did not complete its transition"
		return 1
	fi
}
"""


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    """A directory holding <mod>.ko for every module file of the tests."""
    require_fuse()
    require_tools("unshare", "readelf")  # kpatch reads module names with readelf
    for source in MODULES.glob("*.toml"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lpfs",
                "pack",
                str(source),
                "-o",
                str(tmp_path / f"{source.stem}.ko"),
            ],
            check=True,
        )
    return tmp_path


def kpatch_ns(workdir: Path, script: str, *options: str) -> list[str]:
    """Run script after kpatch's steps inside lpfs-ns; its output lines."""
    result = subprocess.run(
        [
            str(LPFS_NS),
            "--transition-interval",
            RETRY,
            *options,
            "--",
            "bash",
            "-c",
            f"cd {workdir}\n{KPATCH_STEPS}\n{script}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={"LPFS_PYTHON": sys.executable, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_list_load_unload(modules: Path) -> None:
    """A patch that completes at once: kpatch list, load, load again, unload."""
    lines = kpatch_ns(
        modules,
        """
        kp_list; echo "list: end"
        kp_load test_klp_livepatch.ko
        kp_list
        cat /proc/cmdline
        kp_load test_klp_livepatch.ko
        kp_unload test_klp_livepatch
        kp_list; echo "list: end"
        [[ -e /sys/module/test_klp_livepatch ]] && echo "module still there"
        grep -c 'live patched' /proc/cmdline
        dmesg | grep -c -e "'test_klp_livepatch': patching complete" -e "'test_klp_livepatch': unpatching complete"
        """,
    )
    assert [
        "list: end",
        "load: name test_klp_livepatch",
        # the quiet cleanup before insmod: nothing of that name is loaded
        "remove: rmmod test_klp_livepatch failed: rmmod: ERROR: Module test_klp_livepatch is not currently loaded",
        "load: inserted test_klp_livepatch",
        "wait: test_klp_livepatch not in transition",
        "list: test_klp_livepatch [enabled]",
        "test_klp_livepatch: this has been live patched",
        "load: name test_klp_livepatch",
        "load: test_klp_livepatch already loaded and enabled",
        "disable: test_klp_livepatch written",
        # the patch is freed before the write returns: its transition file is gone
        "wait: test_klp_livepatch not in transition",
        "remove: rmmod test_klp_livepatch",
        "list: end",
        "0",
        "2",
    ] == lines


def test_load_waits_out_a_stalled_transition(modules: Path) -> None:
    """A task asleep in the patched function: kpatch waits, finds no signal file, the kernel's fake signal ends it."""
    lines = kpatch_ns(
        modules,
        """
        lpfs task add --pid 4242 --comm cat --state sleeping --stack cmdline_proc_show,seq_read_iter >/dev/null
        LC_ALL=C insmod test_klp_livepatch.ko && kp_list
        kp_wait test_klp_livepatch
        kp_list
        dmesg | grep -c 'livepatch: signaling remaining tasks'
        """,
    )
    assert [
        "list: test_klp_livepatch [enabling...]",
        # /proc/<tid>/patch_state is not emulated: kpatch names no thread
        "list: stalled threads: 0",
        "wait: test_klp_livepatch stalled",
        "wait: no signal file",
        "wait: test_klp_livepatch complete after signal",
        "list: test_klp_livepatch [enabled]",
        "1",
    ] == lines


def test_load_signals_where_the_signal_file_exists(modules: Path) -> None:
    """4.16 to 5.0: no automatic fake signal; kpatch's write to signal switches the sleeping task."""
    lines = kpatch_ns(
        modules,
        """
        lpfs task add --pid 4242 --comm cat --state sleeping --stack cmdline_proc_show,seq_read_iter >/dev/null
        kp_load test_klp_livepatch.ko
        stat -c '%A' "$SYSFS/test_klp_livepatch/signal"
        kp_unload test_klp_livepatch
        dmesg | grep -c 'livepatch: signaling remaining tasks'
        """,
        "--kernel",
        "5.0",
    )
    assert [
        "load: name test_klp_livepatch",
        "remove: rmmod test_klp_livepatch failed: rmmod: ERROR: Module test_klp_livepatch is not currently loaded",
        "load: inserted test_klp_livepatch",
        "wait: test_klp_livepatch stalled",
        "wait: signalled test_klp_livepatch",
        "wait: test_klp_livepatch complete after signal",
        "--w-------",
        "disable: test_klp_livepatch written",
        "wait: test_klp_livepatch not in transition",
        "remove: rmmod test_klp_livepatch",
        "1",
    ] == lines


def test_busy_kernel_and_a_transition_that_never_ends(modules: Path) -> None:
    """EBUSY from insmod and from enabled while a transition is stuck; kpatch then backs the stuck patch out."""
    lines = kpatch_ns(
        modules,
        """
        kp_load test_klp_atomic_replace.ko >/dev/null
        lpfs task add --pid 4242 --comm cat --state uninterruptible --stack cmdline_proc_show,seq_read_iter >/dev/null
        kp_load test_klp_livepatch.ko > load.log &
        loader=$!
        until busy test_klp_livepatch; do sleep 0.05; done
        kp_load test_klp_callbacks_demo.ko
        kp_unload test_klp_atomic_replace
        # what sh reports depends on the shell: bash names the errno, dash says "I/O error"
        bash -c "echo 0 > $SYSFS/test_klp_atomic_replace/enabled" 2>&1 | sed 's/^[^:]*: line [0-9]*: /bash: /'
        wait $loader; echo "load: exit $?"
        cat load.log
        kp_list
        lsmod | awk '/^test_klp/ { print "lsmod: " $1 }'
        """,
    )
    busy = (
        "insmod: ERROR: could not insert module test_klp_callbacks_demo.ko: Device or resource busy"
    )
    assert [
        "load: name test_klp_callbacks_demo",
        "remove: rmmod test_klp_callbacks_demo failed: rmmod: ERROR: Module test_klp_callbacks_demo is not currently loaded",
        *[f"load: insmod: {busy}"] * 5,
        "load: gave up",
    ] == lines[:8]
    assert lines[8].startswith("disable: sh: "), lines
    assert "bash: echo: write error: Device or resource busy" in lines
    expected = [
        "load: exit 1",
        "load: name test_klp_livepatch",
        "remove: rmmod test_klp_livepatch failed: rmmod: ERROR: Module test_klp_livepatch is not currently loaded",
        "load: inserted test_klp_livepatch",
        "wait: test_klp_livepatch stalled",
        "wait: no signal file",
        "wait: test_klp_livepatch still in transition",
        "list: test_klp_atomic_replace [enabled]",
        "list: test_klp_livepatch [enabling...]",
        "list: stalled threads: 0",
        # disabling reverses the transition: the task never left the old code, so
        # the next retry completes it
        "disable: test_klp_livepatch written",
        "wait: test_klp_livepatch complete",
        "remove: rmmod test_klp_livepatch",
        "load: test_klp_livepatch did not complete its transition",
        "list: test_klp_atomic_replace [enabled]",
        "lsmod: test_klp_atomic_replace",
    ]
    assert expected == lines[-len(expected) :]


def test_legacy_reenable_and_unload_of_a_missing_patch(modules: Path) -> None:
    """4.15 keeps a disabled patch registered: kpatch load re-enables it; unload of nothing fails."""
    lines = kpatch_ns(
        modules,
        """
        kp_load test_klp_livepatch.ko >/dev/null
        echo 0 > "$SYSFS/test_klp_livepatch/enabled"
        kp_list
        kp_load test_klp_livepatch.ko
        kp_list
        kp_unload test_klp_livepatch
        ls "$SYSFS"
        kp_unload test_klp_livepatch || echo "unload: failed"
        """,
        "--kernel",
        "4.15",
    )
    assert [
        "list: test_klp_livepatch [disabled]",
        "load: name test_klp_livepatch",
        "load: re-enabled test_klp_livepatch",
        "wait: test_klp_livepatch not in transition",
        "list: test_klp_livepatch [enabled]",
        "disable: test_klp_livepatch written",
        "wait: test_klp_livepatch not in transition",
        "remove: rmmod test_klp_livepatch",
        "disable: test_klp_livepatch not loaded",
        "unload: failed",
    ] == lines
