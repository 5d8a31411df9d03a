"""lpfs-ns: unmodified shell tooling against the emulation, as the selftests use a kernel.

Each test runs a functions.sh-style script inside `lpfs-ns`, with the test
modules packed as .ko files by `lpfs pack`.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from support import GETPID_LOOP, MODULES, require_fuse, require_tools

from lpfs.fuse import mounttable

ROOT = Path(__file__).resolve().parents[2]
LPFS_NS = ROOT / "mountpoint-scripts" / "lpfs-ns"
HARNESS = Path(__file__).with_name("harness.sh")


@pytest.fixture
def test_modules(tmp_path: Path) -> Path:
    """A directory with test_modules/<mod>.ko for every module file of the tests."""
    require_fuse()
    require_tools("unshare")
    out = tmp_path / "test_modules"
    out.mkdir()
    for source in MODULES.glob("*.toml"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lpfs",
                "pack",
                str(source),
                "-o",
                str(out / f"{source.stem}.ko"),
            ],
            check=True,
        )
    return tmp_path


def run_ns(
    workdir: Path, script: str, *options: str, pid_namespace: bool = False
) -> subprocess.CompletedProcess:
    """The script inside lpfs-ns, after the harness; in a PID namespace of its own if asked,
    so that with --tasks host the only tasks are the ones it starts, and every process it
    starts dies with it, even on a timeout."""
    body = f"cd {workdir}\nsource {HARNESS}\nset_dynamic_debug\n{script}"
    prefix = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if pid_namespace else []
    return subprocess.run(
        [*prefix, str(LPFS_NS), *options, "--", "bash", "-c", body],
        capture_output=True,
        text=True,
        timeout=180,
        env={"LPFS_PYTHON": sys.executable, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )


def test_basic_function_patching(test_modules: Path) -> None:
    """test-livepatch.sh's first case, /proc/cmdline checks included."""
    result = run_ns(
        test_modules,
        """
        MOD=test_klp_livepatch
        start_test "basic function patching"
        load_lp $MOD
        [ "$(cat /proc/cmdline)" = "$MOD: this has been live patched" ] || die "not patched"
        disable_lp $MOD
        unload_lp() { unload_mod "$@"; }
        unload_lp $MOD
        grep -q 'live patched' /proc/cmdline && die "still patched"
        check_result "% insmod test_modules/$MOD.ko
livepatch: enabling patch '$MOD'
livepatch: '$MOD': initializing patching transition
livepatch: '$MOD': starting patching transition
livepatch: '$MOD': completing patching transition
livepatch: '$MOD': patching complete
% echo 0 > /sys/kernel/livepatch/$MOD/enabled
livepatch: '$MOD': initializing unpatching transition
livepatch: '$MOD': starting unpatching transition
livepatch: '$MOD': completing unpatching transition
livepatch: '$MOD': unpatching complete
% rmmod $MOD"
    """,
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def test_multiple_livepatches(test_modules: Path) -> None:
    """test-livepatch.sh's second case: each reader sees the patched /proc files."""
    result = run_ns(
        test_modules,
        """
        LP=test_klp_livepatch
        RP=test_klp_atomic_replace
        greps() { grep 'live patched' /proc/cmdline > /dev/kmsg; grep 'live patched' /proc/meminfo > /dev/kmsg; }
        start_test "multiple livepatches"
        load_lp $LP
        greps
        load_lp $RP replace=0
        greps
        disable_lp $RP
        unload_mod $RP
        greps
        disable_lp $LP
        unload_mod $LP
        greps
        check_result "% insmod test_modules/$LP.ko
livepatch: enabling patch '$LP'
livepatch: '$LP': initializing patching transition
livepatch: '$LP': starting patching transition
livepatch: '$LP': completing patching transition
livepatch: '$LP': patching complete
$LP: this has been live patched
% insmod test_modules/$RP.ko replace=0
livepatch: enabling patch '$RP'
livepatch: '$RP': initializing patching transition
livepatch: '$RP': starting patching transition
livepatch: '$RP': completing patching transition
livepatch: '$RP': patching complete
$LP: this has been live patched
$RP: this has been live patched
% echo 0 > /sys/kernel/livepatch/$RP/enabled
livepatch: '$RP': initializing unpatching transition
livepatch: '$RP': starting unpatching transition
livepatch: '$RP': completing unpatching transition
livepatch: '$RP': unpatching complete
% rmmod $RP
$LP: this has been live patched
% echo 0 > /sys/kernel/livepatch/$LP/enabled
livepatch: '$LP': initializing unpatching transition
livepatch: '$LP': starting unpatching transition
livepatch: '$LP': completing unpatching transition
livepatch: '$LP': unpatching complete
% rmmod $LP"
    """,
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def test_callbacks_and_failing_load(test_modules: Path) -> None:
    """test-callbacks.sh's pre-patch -ENODEV case, with insmod's own error line logged."""
    result = run_ns(
        test_modules,
        """
        LP=test_klp_callbacks_demo
        T=test_klp_callbacks_mod
        start_test "pre-patch callback -ENODEV"
        load_mod $T
        load_failing_mod $LP pre_patch_ret=-19
        unload_mod $T
        check_result "% insmod test_modules/$T.ko
$T: ${T}_init
% insmod test_modules/$LP.ko pre_patch_ret=-19
livepatch: enabling patch '$LP'
livepatch: '$LP': initializing patching transition
$LP: pre_patch_callback: vmlinux
livepatch: pre-patch callback failed for object 'vmlinux'
livepatch: failed to enable patch '$LP'
livepatch: '$LP': canceling patching transition, going to unpatch
livepatch: '$LP': completing unpatching transition
livepatch: '$LP': unpatching complete
insmod: ERROR: could not insert module test_modules/$LP.ko: No such device
% rmmod $T
$T: ${T}_exit"
    """,
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def host_has_ftrace_sysctl() -> None:
    """Skip where the host kernel has no ftrace: a feature nothing can install, so this
    stays a skip even under LPFS_STRICT (the README names it)."""
    if not Path("/proc/sys/kernel/ftrace_enabled").exists():
        pytest.skip("this kernel has no /proc/sys/kernel/ftrace_enabled to lay over")


def test_ftrace_enabled_sysctl(test_modules: Path) -> None:
    """test-ftrace.sh's first case through the real sysctl(8), on the last release whose
    kernel.ftrace_enabled can be turned off."""
    host_has_ftrace_sysctl()
    result = run_ns(
        test_modules,
        """
        MOD=test_klp_livepatch
        start_test "livepatch interaction with ftrace_enabled sysctl"
        sysctl -q kernel.ftrace_enabled=0 && log "livepatch: kernel.ftrace_enabled = 0"
        load_failing_mod $MOD
        sysctl -q kernel.ftrace_enabled=1 && log "livepatch: kernel.ftrace_enabled = 1"
        load_lp $MOD
        err=$(sysctl -q kernel.ftrace_enabled=0 2>&1)
        log "livepatch: ${err//\\/proc\\/sys\\/kernel\\//kernel.}"
        disable_lp $MOD
        unload_mod $MOD
        check_result "livepatch: kernel.ftrace_enabled = 0
% insmod test_modules/$MOD.ko
livepatch: enabling patch '$MOD'
livepatch: '$MOD': initializing patching transition
livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)
livepatch: failed to patch object 'vmlinux'
livepatch: failed to enable patch '$MOD'
livepatch: '$MOD': canceling patching transition, going to unpatch
livepatch: '$MOD': completing unpatching transition
livepatch: '$MOD': unpatching complete
insmod: ERROR: could not insert module test_modules/$MOD.ko: Device or resource busy
livepatch: kernel.ftrace_enabled = 1
% insmod test_modules/$MOD.ko
livepatch: enabling patch '$MOD'
livepatch: '$MOD': initializing patching transition
livepatch: '$MOD': starting patching transition
livepatch: '$MOD': completing patching transition
livepatch: '$MOD': patching complete
livepatch: sysctl: setting key \\"kernel.ftrace_enabled\\": Device or resource busy
% echo 0 > /sys/kernel/livepatch/$MOD/enabled
livepatch: '$MOD': initializing unpatching transition
livepatch: '$MOD': starting unpatching transition
livepatch: '$MOD': completing unpatching transition
livepatch: '$MOD': unpatching complete
% rmmod $MOD"
    """,
        "--kernel",
        "7.2",
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def test_ftrace_enabled_refuses_disable(test_modules: Path) -> None:
    """7.3's test-ftrace.sh: ftrace_disable_supported() finds the knob deprecated, and
    set_ftrace_enabled --fail 0 logs the refusal; the value stays 1."""
    host_has_ftrace_sysctl()
    result = run_ns(
        test_modules,
        """
        start_test "livepatch interaction with ftrace_enabled sysctl"
        sysctl -q kernel.ftrace_enabled=0 &>/dev/null
        [[ $(sysctl --values kernel.ftrace_enabled) == 1 ]] || die "ftrace_enabled turned off"
        err=$(sysctl -q kernel.ftrace_enabled=0 2>&1)
        log "livepatch: ${err//\\/proc\\/sys\\/kernel\\//kernel.}"
        check_result "livepatch: sysctl: setting key \\"kernel.ftrace_enabled\\": \\
Operation not supported"
    """,
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def test_tools_at_their_absolute_paths(test_modules: Path) -> None:
    """The stand-ins answer at /sbin/insmod, /usr/bin/dmesg and uname -r; nothing leaks out."""
    result = run_ns(
        test_modules,
        """
        /sbin/insmod test_modules/test_klp_livepatch.ko
        /usr/bin/dmesg | grep -c "patching complete"
        uname -r
        /usr/sbin/lsmod | grep -c '^test_klp_livepatch '
        cat /proc/sys/kernel/tainted
        /sbin/modprobe --dry-run test_klp_syscall && echo found
        /sbin/modprobe no_such_module; echo "modprobe=$?"
    """,
        "--kernel",
        "6.1",
    )
    assert 0 == result.returncode, result.stderr
    lines = result.stdout.split("\n")
    assert ["1", "6.1.0", "1"] == lines[:3]
    assert int(lines[3]) & (1 << 15)
    assert ["found", "modprobe=1"] == lines[4:6]
    assert (
        "modprobe: FATAL: Module no_such_module not found in directory /lib/modules/6.1.0"
        in result.stderr
    )
    leaked = [
        entry.path for entry in mounttable.mount_table() if "/sys/kernel/livepatch" in entry.path
    ]
    assert [] == leaked


@pytest.mark.parametrize("options", [(), ("--tasks", "host")], ids=["simulated", "host"])
def test_syscall(test_modules: Path, options: tuple[str, ...]) -> None:
    """test-syscall.sh's case: real processes call getpid in a loop and count down npids,
    whether the daemon adopts them (simulated tasks) or sees them as its own (host)."""
    program = test_modules / "test_klp-call_getpid"
    program.write_text(f"#!{sys.executable}\n{GETPID_LOOP}")
    program.chmod(0o755)
    result = run_ns(
        test_modules,
        """
        MOD_SYSCALL=test_klp_syscall
        start_test "patch getpid syscall while being heavily hammered"
        NPROC=$(getconf _NPROCESSORS_ONLN)
        MAXPROC=4  # 128 in the script; each one keeps a CPU busy
        for i in $(seq 1 $((NPROC < MAXPROC ? NPROC : MAXPROC))); do
            ./test_klp-call_getpid &
            pids[$i]="$!"
        done
        pid_list=$(echo ${pids[@]} | tr ' ' ',')
        load_lp $MOD_SYSCALL klp_pids=$pid_list
        loop_until 'grep -q '^0$' /sys/kernel/test_klp_syscall/npids' || die "npids stays up"
        pending_pids=$(cat /sys/kernel/test_klp_syscall/npids)
        log "$MOD_SYSCALL: Remaining not livepatched processes: $pending_pids"
        for pid in ${pids[@]}; do
            kill $pid || true
        done
        disable_lp $MOD_SYSCALL
        unload_mod $MOD_SYSCALL
        [ ! -e /sys/kernel/test_klp_syscall ] || die "npids outlives the module"
        check_result "% insmod test_modules/$MOD_SYSCALL.ko klp_pids=$pid_list
livepatch: enabling patch '$MOD_SYSCALL'
livepatch: '$MOD_SYSCALL': initializing patching transition
livepatch: '$MOD_SYSCALL': starting patching transition
livepatch: '$MOD_SYSCALL': completing patching transition
livepatch: '$MOD_SYSCALL': patching complete
$MOD_SYSCALL: Remaining not livepatched processes: 0
% echo 0 > /sys/kernel/livepatch/$MOD_SYSCALL/enabled
livepatch: '$MOD_SYSCALL': initializing unpatching transition
livepatch: '$MOD_SYSCALL': starting unpatching transition
livepatch: '$MOD_SYSCALL': completing unpatching transition
livepatch: '$MOD_SYSCALL': unpatching complete
% rmmod $MOD_SYSCALL"
    """,
        *options,
        pid_namespace=True,  # the getpid loops die with it, whatever happens
    )
    assert (0, "ok\n") == (result.returncode, result.stdout), result.stderr


def test_tracing_and_kprobes_are_the_namespaces(test_modules: Path) -> None:
    """push_config()/pop_config()'s files are lpfs's, the same at /sys/kernel/tracing and
    /sys/kernel/debug/tracing, and /proc/kallsyms shows kprobe_ftrace_ops; the host's
    tracing is not touched."""
    host = Path("/sys/kernel/tracing/tracing_on")
    before = host.read_text() if host.exists() else None
    result = run_ns(
        test_modules,
        """
        T=/sys/kernel/tracing D=/sys/kernel/debug/tracing
        echo 0 > $T/tracing_on
        echo function > $D/current_tracer
        echo cmdline_proc_show > $T/set_ftrace_filter
        echo "$(cat $D/tracing_on) $(cat $T/current_tracer) $(cat $D/set_ftrace_filter)"
        echo 0 > /sys/kernel/debug/kprobes/enabled
        cat /sys/kernel/debug/kprobes/enabled
        grep -c 'kprobe_ftrace_ops$' /proc/kallsyms
        stat -c %a $T/tracing_on /sys/kernel/debug/kprobes/enabled
    """,
    )
    assert (0, "0 function cmdline_proc_show\n0\n1\n640\n600\n") == (
        result.returncode,
        result.stdout,
    ), result.stderr
    assert before == (host.read_text() if host.exists() else None)


def test_proc_entries_of_modules_and_real_proc(test_modules: Path) -> None:
    """A module's proc_create_single() entry exists while it is loaded, and the rest of
    /proc is the real procfs: magic links, /proc/self, pids, sysctl's paths."""
    result = run_ns(
        test_modules,
        """
        modprobe test_klp_mod_target
        cat /proc/test_klp_mod_target
        modprobe test_klp_mod_patch
        cat /proc/test_klp_mod_target
        echo 0 > /sys/kernel/livepatch/test_klp_mod_patch/enabled
        rmmod test_klp_mod_patch test_klp_mod_target
        [[ -e /proc/test_klp_mod_target ]] && echo "still there"
        exec 3</etc/hostname
        [[ $(cat /proc/self/fd/3) == $(cat /etc/hostname) ]] && echo "magic link"
        [[ $(readlink /proc/self/fd/3) == /etc/hostname ]] && echo "its target"
        [[ $(readlink /proc/$$/exe) == "$(realpath "$BASH")" ]] && echo "exe"
        read -r pid _ </proc/self/stat
        [[ $pid == "$BASHPID" && $(readlink /proc/self) =~ ^[0-9]+$ ]] && echo "self"
        sleep 30 & ls -d /proc/$! >/dev/null && echo "a new pid"; kill $!
        sysctl -n kernel.tainted >/dev/null && echo "sysctl"
    """,
    )
    expected = [
        "test_klp_mod_target: original output",
        "test_klp_mod_patch: this has been live patched",
        "magic link",
        "its target",
        "exe",
        "self",
        "a new pid",
        "sysctl",
    ]
    assert (0, expected) == (result.returncode, result.stdout.splitlines()), result.stderr
