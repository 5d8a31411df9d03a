"""The daemon under signals, kills, busy mountpoints and other users."""

import errno
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from support import MODULES, missing, require_fuse, shipped

from lpfs.fuse import mounttable
from lpfs.pytest_plugin import LpfsMount, lpfs_command, mounted

OTHER_USER = "lpfs-test"


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.02)


@pytest.fixture
def foreground(tmp_path: Path):
    """Start `lpfs mount` in the foreground; stopped and unmounted at teardown."""
    require_fuse()
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(*options: str) -> tuple[subprocess.Popen, Path]:
        mnt = tmp_path / "mnt"
        mnt.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "lpfs", "mount", str(mnt), "--demo", *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, mnt))
        wait_for((mnt / "kernel").exists, "the mount answers")
        return proc, mnt

    yield start
    for proc, mnt in started:
        if proc.poll() is None:
            proc.terminate()  # a clean exit, which also removes the daemon's socket
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if mounttable.is_mounted(mnt):
            mounttable.unmount(mnt, lazy=True)


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_clean_exit(self, foreground, tmp_path, signum) -> None:
        """SIGTERM and SIGINT unmount, remove the socket, keep the log file, and exit 0."""
        klog = tmp_path / "kernel.log"
        proc, mnt = foreground("--kernel-log", str(klog))
        sock = Path(LpfsMount(mnt).status()["socket"])
        proc.send_signal(signum)
        assert 0 == proc.wait(timeout=10)
        assert (False, False) == (mounttable.is_mounted(mnt), sock.exists())
        assert "livepatch: 'livepatch_demo': patching complete" in klog.read_text()

    def test_kernel_log_file_is_not_world_writable(self, foreground, tmp_path) -> None:
        """What the daemon writes is readable, never writable, by others."""
        klog = tmp_path / "kernel.log"
        foreground("--kernel-log", str(klog))
        assert 0 == klog.stat().st_mode & 0o002


class TestKill:
    def test_sigkill_leaves_a_mount_that_umount_clears(self, lpfs_factory) -> None:
        """After SIGKILL the mount is stale; lpfs umount clears it and exits 0."""
        mnt = lpfs_factory()
        os.kill(mnt.status()["pid"], signal.SIGKILL)
        wait_for(lambda: _stale(mnt.mountpoint), "a stale mount")
        assert 0 == lpfs_command("umount", str(mnt.mountpoint)).returncode
        assert not mounttable.is_mounted(mnt.mountpoint)

    def test_mount_recovers_a_stale_mountpoint(self, lpfs_factory) -> None:
        """lpfs mount on a stale mountpoint clears it and serves again."""
        mnt = lpfs_factory()
        os.kill(mnt.status()["pid"], signal.SIGKILL)
        wait_for(lambda: _stale(mnt.mountpoint), "a stale mount")
        assert 0 == lpfs_command("mount", str(mnt.mountpoint), "--daemon", "--demo").returncode
        assert "1\n" == mnt.read("kernel/livepatch/livepatch_demo/enabled")


def _stale(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


class TestBusy:
    def test_busy_mountpoint(self, lpfs_factory) -> None:
        """A busy mount is refused with a hint; --lazy detaches it and the daemon leaves."""
        mnt = lpfs_factory()
        pid = mnt.status()["pid"]
        holder = subprocess.Popen(["sleep", "30"], cwd=mnt.mountpoint)
        try:
            result = lpfs_command("umount", str(mnt.mountpoint))
            assert 1 == result.returncode
            assert "--lazy" in result.stderr
            assert 0 == lpfs_command("umount", "--lazy", str(mnt.mountpoint)).returncode
            assert not mounttable.is_mounted(mnt.mountpoint)
        finally:
            holder.kill()
            holder.wait()
        wait_for(lambda: not psutil.pid_exists(pid) or _zombie(pid), "the daemon exits")


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class TestLeak:
    def test_open_read_close_hammer_keeps_memory_flat(self, mnt: LpfsMount) -> None:
        """20k parallel open/read/close of one file leave the daemon's RSS where it was."""
        mnt.insmod(shipped("test_klp_livepatch"))
        path = str(mnt.livepatch_dir / "test_klp_livepatch" / "enabled")
        daemon = psutil.Process(mnt.status()["pid"])
        _hammer(path, 2_000)
        before = daemon.memory_info().rss
        _hammer(path, 20_000)
        growth_mb = (daemon.memory_info().rss - before) / 2**20
        assert growth_mb < 16, f"RSS grew by {growth_mb:.1f} MB"


def _hammer(path: str, count: int) -> None:
    script = (
        "import os, sys\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    fd = os.open(sys.argv[1], os.O_RDONLY); os.read(fd, 4096); os.close(fd)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, path, str(count // 4)]) for _ in range(4)
    ]
    assert [0, 0, 0, 0] == [proc.wait(timeout=120) for proc in procs]


@pytest.fixture(scope="module")
def other_user() -> pwd.struct_passwd:
    """A real second user (created once; needs root)."""
    if os.getuid() != 0:
        missing("root, to create a second user")
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
        )
        return pwd.getpwnam(OTHER_USER)


@pytest.fixture
def public_mount():
    """An --allow-other mount where other users can reach it (not under pytest's 0700 tmp)."""
    path = Path(tempfile.mkdtemp(prefix="lpfs-public-"))
    path.chmod(0o755)
    mnt = path / "mnt"
    require_fuse()
    try:
        with mounted(mnt, "--demo", "--allow-other") as mount:
            yield mount
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: pwd.struct_passwd, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class TestAccess:
    def test_other_user_is_locked_out_without_allow_other(self, lpfs_factory, other_user) -> None:
        """Without --allow-other another user cannot even list the mount."""
        mnt = lpfs_factory("--demo")
        result = as_user(other_user, "ls", str(mnt.mountpoint))
        assert 0 != result.returncode
        assert "Permission denied" in result.stderr

    def test_allow_other_reads_like_sysfs(self, public_mount: LpfsMount, other_user) -> None:
        """With --allow-other another user reads and lists, and gets EACCES writing, as on sysfs."""
        mnt = public_mount
        patch = mnt.livepatch_dir / "livepatch_demo"
        assert ("1\n", 0) == _as_user_cat(other_user, patch / "enabled")
        listing = as_user(other_user, "ls", str(mnt.livepatch_dir))
        assert "livepatch_demo\n" == listing.stdout
        for attr in ("enabled", "force"):
            result = as_user(other_user, "bash", "-c", f"echo 0 > {patch / attr}")
            assert result.stderr.rstrip().endswith("Permission denied")
        assert "1\n" == mnt.read("kernel/livepatch/livepatch_demo/enabled")

    def test_control_socket_refuses_other_users(self, lpfs_factory, other_user) -> None:
        """The daemon answers another uid with a permission error, even if it reaches the socket."""
        mnt = lpfs_factory()
        sock = Path(mnt.status()["socket"])
        # A second name for the socket in a directory the other user may enter: the
        # daemons' own directory keeps its mode, whatever other daemons do meanwhile.
        with tempfile.TemporaryDirectory(dir=sock.parent.parent) as public:
            Path(public).chmod(0o711)
            link = Path(public) / "sock"
            os.link(sock, link)
            sock.chmod(0o666)
            try:
                script = (
                    "import socket, sys\n"
                    "s = socket.socket(socket.AF_UNIX)\n"
                    "s.connect(sys.argv[1])\n"
                    # The daemon may answer and hang up before the request is sent.
                    "try:\n"
                    '    s.sendall(b\'{"cmd": "status"}\\n\')\n'
                    "except BrokenPipeError:\n"
                    "    pass\n"
                    "print(s.makefile().readline())\n"
                )
                result = as_user(other_user, sys.executable, "-c", script, str(link))
            finally:
                sock.chmod(0o600)
        reply = json.loads(result.stdout)
        assert (False, "permission") == (reply["ok"], reply["kind"])
        assert str(other_user.pw_uid) in reply["error"]

    def test_runtime_dir_and_socket_modes(self, lpfs_factory) -> None:
        """The socket is 0600 in a directory only its owner can enter."""
        sock = Path(lpfs_factory().status()["socket"])
        assert (0o700, 0o600) == (sock.parent.stat().st_mode & 0o777, sock.stat().st_mode & 0o777)


def _as_user_cat(user: pwd.struct_passwd, path: Path) -> tuple[str, int]:
    result = as_user(user, "cat", str(path))
    return result.stdout, result.returncode


def test_module_files_read_from_the_given_path_only(mnt: LpfsMount, tmp_path) -> None:
    """insmod sends the file it was given; the daemon opens no path of its own."""
    copy = tmp_path / "test_klp_livepatch.toml"
    copy.write_text((MODULES / "test_klp_livepatch.toml").read_text())
    mnt.insmod(str(copy))
    copy.unlink()
    assert ["test_klp_livepatch"] == mnt.patches()


def test_a_client_that_hangs_up_mid_request(mnt: LpfsMount) -> None:
    """A client that sends half a request and goes away leaves the daemon serving."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(mnt.status()["socket"])
    sock.sendall(b'{"cmd": "sta')
    sock.close()
    assert mnt.status()["transition"] is None


def test_scenario_loads_packed_and_toml_modules(lpfs_factory, tmp_path) -> None:
    """--scenario reads modules as insmod does: a packed .ko and a .toml alike."""
    assert 0 == lpfs_command("pack", "test_klp_livepatch", "-o", str(tmp_path / "lp.ko")).returncode
    (tmp_path / "mod.toml").write_text((MODULES / "test_klp_callbacks_mod.toml").read_text())
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'modules = ["mod.toml", "lp.ko"]\n[[task]]\npid = 100\ncomm = "cat"\nstack = ["schedule"]\n'
    )
    mnt = lpfs_factory("--scenario", str(plan))
    loaded = [module["name"] for module in mnt.status()["modules"]]
    assert ["test_klp_callbacks_mod", "test_klp_livepatch"] == sorted(loaded)
    assert "1\n" == mnt.read("kernel/livepatch/test_klp_livepatch/enabled")
