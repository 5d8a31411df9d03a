"""Bad input everywhere user space can send it: exact errnos, and nothing changed by a refusal.

Attributes follow docs/kernel.md §1.2-1.4 (kernfs open checks, the sysfs write path,
kstrtobool) and §2.1 (enabled_store, force_store); `signal` is the 4.16-5.0
store of §2.2; module parameters are kernel/params.c over lib/kstrtox.c (int:
kstrtoint(s, 0) on the NUL-terminated buffer; bool: kstrtobool). Tree
operations are kernfs's and the VFS's, checked against a real 6.18 sysfs
where the two could differ: a long name component is looked up, not refused
(ENOENT; only a path over PATH_MAX is ENAMETOOLONG), and after chmod the open
check follows the new mode while a missing show or store answers EIO.

State is read through the control socket with the same request `lpfs status
--json` sends, so the hundreds of table cases stay cheap.
"""

# STYLE.md asks for `assert expected == actual`, which SIM300 calls a Yoda condition.

import errno
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import MODULES, require_fuse

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.pytest_plugin import LpfsMount, mounted

PAGE_SIZE = 4096
MIB = 1 << 20
PATH_MAX = 4096
NEWEST = (7, 3)  # the default daemon's release
LEGACY = (4, 19)

LP = "test_klp_livepatch"
LP_DIR = f"kernel/livepatch/{LP}"
DEMO = "test_klp_callbacks_demo"
BUSY = "test_klp_callbacks_busy"
PRE_PATCH_RET = f"module/{DEMO}/parameters/pre_patch_ret"
BLOCK_TRANSITION = f"module/{BUSY}/parameters/block_transition"
DISABLE_LINES = [
    f"livepatch: '{LP}': initializing unpatching transition",
    f"livepatch: '{LP}': starting unpatching transition",
    f"livepatch: '{LP}': completing unpatching transition",
    f"livepatch: '{LP}': unpatching complete",
]


# -- the daemon, driven through its socket ------------------------------------


def call(mount: LpfsMount, cmd: str, **args: Any) -> Any:
    """One control request; its data, or an AssertionError with the daemon's message."""
    reply = Client(socket_path(mount.mountpoint)).call(cmd, **args)
    assert reply.get("ok"), f"{cmd}: {reply}"
    return reply.get("data")


def load(mount: LpfsMount, name: str, *params: str) -> None:
    path = MODULES / f"{name}.toml"
    call(mount, "insmod", file=str(path), text=path.read_text(), params=list(params))


def read_tree(root: Path) -> dict[str, str]:
    """What a read of every readable attribute under the mount gives (text or errno name)."""
    texts = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if path.stat().st_mode & 0o444:
                texts[str(path.relative_to(root))] = read_or_errno(path)
    return texts


def read_or_errno(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        return errno.errorcode[exc.errno]


def snapshot(mount: LpfsMount) -> dict[str, Any]:
    """What user space can see: `lpfs status --json`, every file's text, the kernel log."""
    return {
        "status": call(mount, "status"),
        "files": read_tree(mount.mountpoint),
        "log": log_texts(mount),
    }


def log_texts(mount: LpfsMount) -> list[str]:
    return [record["text"] for record in call(mount, "dmesg")]


def errno_name(call: Callable[[], object]) -> str:
    """The errno a call fails with, by name."""
    with pytest.raises(OSError) as excinfo:
        call()
    return errno.errorcode[excinfo.value.errno]


# The full snapshot of a prepared state, taken once per daemon: every table
# case starts from the same state, and a full walk costs a few hundred FUSE
# requests. Each test still compares the cheap parts (status and log) afresh.
PREPARED: dict[Path, dict[str, Any]] = {}


def prepared_snapshot(mount: LpfsMount) -> dict[str, Any]:
    """The snapshot of the state a fixture has just prepared."""
    if mount.mountpoint not in PREPARED:
        PREPARED[mount.mountpoint] = snapshot(mount)
    full = PREPARED[mount.mountpoint]
    assert (full["status"], full["log"]) == (call(mount, "status"), log_texts(mount))
    return full


@pytest.fixture
def kernel(lpfs_session: LpfsMount) -> LpfsMount:
    """A fresh daemon: the busy module, the callbacks demo, then test_klp_livepatch, all idle."""
    call(lpfs_session, "reset")
    for name in (BUSY, DEMO, LP):
        load(lpfs_session, name)
    return lpfs_session


@pytest.fixture(scope="module")
def legacy_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LpfsMount]:
    require_fuse()
    with mounted(tmp_path_factory.mktemp("legacy") / "mnt", "--kernel", "4.19") as mount:
        yield mount


@pytest.fixture
def legacy(legacy_session: LpfsMount) -> LpfsMount:
    """A 4.19 daemon with test_klp_livepatch registered and enabled."""
    call(legacy_session, "reset")
    load(legacy_session, LP)
    return legacy_session


# -- attribute writes: one table of inputs, one of attributes ------------------


@dataclass(frozen=True)
class Input:
    """One input: how the attribute is opened and what goes through it.

    ``as_bool`` is what kstrtobool makes of the bytes (None: EINVAL) from
    kernel ``since`` on; ``as_int`` what kstrtoint(s, 0) makes of them, or
    its errno by name.
    """

    id: str
    data: bytes = b""
    how: str = "write"  # write, pwrite (at offset 100), append, rdwr, read
    as_bool: bool | None = None
    as_int: int | str = "EINVAL"
    since: tuple[int, int] = (0, 0)


def spelling(text: str, value: bool, since: tuple[int, int] = (0, 0)) -> Input:
    """A kstrtobool spelling as `echo` writes it, with its newline."""
    as_int: int | str = int(text) if text.isdigit() else "EINVAL"
    return Input(text, f"{text}\n".encode(), as_bool=value, as_int=as_int, since=since)


T_F, E_D = (5, 19), (6, 16)
INPUTS = [
    spelling("y", True),
    spelling("Y", True),
    spelling("1", True),
    spelling("n", False),
    spelling("N", False),
    spelling("0", False),
    spelling("on", True),
    spelling("off", False),
    spelling("t", True, T_F),
    spelling("T", True, T_F),
    spelling("f", False, T_F),
    spelling("F", False, T_F),
    spelling("e", True, E_D),
    spelling("E", True, E_D),
    spelling("d", False, E_D),
    spelling("D", False, E_D),
    spelling("enable", True, E_D),
    spelling("disable", False, E_D),
    Input("o-alone", b"o\n"),
    Input("empty-write", b""),
    Input("lone-newline", b"\n"),
    Input("leading-blank", b" 1\n"),
    Input("2", b"2\n", as_int=2),
    Input("-1", b"-1\n", as_int=-1),
    Input("0x1", b"0x1\n", as_bool=False, as_int=1),
    Input("4096-bytes", b"0" * PAGE_SIZE, as_bool=False, as_int=0),
    Input("4097-bytes", b"0" * PAGE_SIZE + b"x", as_bool=False, as_int=0),
    Input("1MiB", b"0" * PAGE_SIZE + b"x" * (MIB - PAGE_SIZE), as_bool=False, as_int=0),
    Input("nul-alone", b"\x00"),
    Input("nul-after-digit", b"1\x00junk", as_bool=True, as_int=1),
    Input("invalid-utf8", b"1\xff\n", as_bool=True),
    Input("int-max", b"2147483647\n", as_int=2**31 - 1),
    Input("int-max-plus-1", b"2147483648\n", as_int="ERANGE"),
    Input("int-min", b"-2147483648\n", as_int=-(2**31)),
    Input("int-min-minus-1", b"-2147483649\n", as_int="ERANGE"),
    Input("u64-overflow", b"99999999999999999999\n", as_int="ERANGE"),
    Input("octal", b"010\n", as_bool=False, as_int=8),
    Input("bad-octal-digit", b"08\n", as_bool=False),
    Input("hex-upper", b"0X1A\n", as_bool=False, as_int=26),
    Input("plus-sign", b"+5\n", as_int=5),
    Input("two-newlines", b"1\n\n", as_bool=True),
    Input("trailing-blank", b"1 \n", as_bool=True),
    Input("pwrite-at-100", b"0\n", how="pwrite", as_bool=False, as_int=0),
    Input("O_APPEND", b"0\n", how="append", as_bool=False, as_int=0),
    Input("O_RDWR", b"0\n", how="rdwr", as_bool=False, as_int=0),
    Input("read", how="read"),
]


@dataclass(frozen=True)
class Target:
    """An attribute in the prepared state: its mode, what its store does, what a read gives."""

    id: str
    path: str
    mode: int
    kind: str  # enabled, force (force and signal), int, bool, read-only
    text: str = ""


TARGETS = [
    Target("enabled", f"{LP_DIR}/enabled", 0o644, "enabled", "1\n"),
    Target("force", f"{LP_DIR}/force", 0o200, "force"),
    Target("transition", f"{LP_DIR}/transition", 0o444, "read-only", "0\n"),
    Target("replace", f"{LP_DIR}/replace", 0o444, "read-only", "0\n"),
    Target("stack_order", f"{LP_DIR}/stack_order", 0o444, "read-only", "2\n"),
    Target("object-patched", f"{LP_DIR}/vmlinux/patched", 0o444, "read-only", "1\n"),
    Target("module-refcnt", f"module/{LP}/refcnt", 0o444, "read-only", "1\n"),
    Target("param-int-pre_patch_ret", PRE_PATCH_RET, 0o644, "int", "0\n"),
    Target("param-bool-block_transition", BLOCK_TRANSITION, 0o644, "bool", "N\n"),
]
SIGNAL = Target("signal", f"{LP_DIR}/signal", 0o200, "force")

UNCHANGED = "unchanged"
DISABLED = "disabled"


def expected(target: Target, case: Input, version: tuple[int, int]) -> tuple[Any, str]:
    """The kernel's answer to ``case`` on ``target``, and its effect: unchanged, disabled or a text."""
    readable, writable = target.mode & 0o444, target.mode & 0o222
    if case.how == "read":
        return (target.text.encode(), UNCHANGED) if readable else ("EACCES", UNCHANGED)
    if not writable or (case.how == "rdwr" and not readable):
        return "EACCES", UNCHANGED  # kernfs_fop_open, even for root
    if not case.data:
        return 0, UNCHANGED  # sysfs_kf_write does not call store
    count = min(len(case.data), PAGE_SIZE)
    if target.kind == "int":
        if isinstance(case.as_int, str):
            return case.as_int, UNCHANGED
        return count, f"{case.as_int}\n"
    value = case.as_bool if version >= case.since else None
    if value is None:
        return "EINVAL", UNCHANGED  # kstrtobool
    if target.kind == "bool":
        return count, "Y\n" if value else "N\n"
    if value:
        return "EINVAL", UNCHANGED  # already enabled; not in transition
    return count, DISABLED if target.kind == "enabled" else UNCHANGED


def attempt(path: Path, case: Input) -> Any:
    """Open ``path`` as the case says and read or write: the bytes or count, else the errno name."""
    flags = {"read": os.O_RDONLY, "rdwr": os.O_RDWR, "append": os.O_WRONLY | os.O_APPEND}
    try:
        fd = os.open(path, flags.get(case.how, os.O_WRONLY))
        try:
            if case.how == "read":
                return os.read(fd, PAGE_SIZE)
            if case.how == "pwrite":
                return os.pwrite(fd, case.data, 100)
            return os.write(fd, case.data)
        finally:
            os.close(fd)
    except OSError as exc:
        return errno.errorcode[exc.errno]


def after_effect(before: dict[str, Any], target: Target, effect: str) -> dict[str, Any]:
    """The snapshot ``before`` as the effect leaves it."""
    after = json.loads(json.dumps(before))
    if effect == DISABLED:
        status = after["status"]
        status["patches"] = [p for p in status["patches"] if p["name"] != LP]
        for module in status["modules"]:
            if module["name"] == LP:
                module["refcnt"] = 0
        after["files"] = {k: v for k, v in after["files"].items() if not k.startswith(LP_DIR)}
        after["files"][f"module/{LP}/refcnt"] = "0\n"
        after["log"] += DISABLE_LINES
    elif effect != UNCHANGED:
        after["files"][target.path] = effect
    return after


@pytest.mark.parametrize("case", INPUTS, ids=[case.id for case in INPUTS])
@pytest.mark.parametrize("target", TARGETS, ids=[target.id for target in TARGETS])
def test_attribute_input(kernel: LpfsMount, target: Target, case: Input) -> None:
    """The kernel's errno or byte count, and exactly the store's effect (none for a refusal)."""
    before = prepared_snapshot(kernel)
    result = attempt(kernel.mountpoint / target.path, case)
    answer, effect = expected(target, case, NEWEST)
    assert (answer, after_effect(before, target, effect)) == (result, snapshot(kernel))


@pytest.mark.parametrize("case", INPUTS, ids=[case.id for case in INPUTS])
def test_signal_input_on_4_19(legacy: LpfsMount, case: Input) -> None:
    """signal (0200) on 4.19: kstrtobool without t/f and e/d, EINVAL outside a transition."""
    before = prepared_snapshot(legacy)
    result = attempt(legacy.mountpoint / SIGNAL.path, case)
    answer, effect = expected(SIGNAL, case, LEGACY)
    assert (answer, after_effect(before, SIGNAL, effect)) == (result, snapshot(legacy))


# -- tree operations -----------------------------------------------------------

LONG_NAME = "a" * 256

EPERM_OPERATIONS: list[tuple[str, Callable[[Path], object]]] = [
    ("mkdir", lambda mnt: os.mkdir(mnt / LP_DIR / "new")),
    ("rmdir-func", lambda mnt: os.rmdir(mnt / LP_DIR / "vmlinux/cmdline_proc_show,1")),
    ("rmdir-patch", lambda mnt: os.rmdir(mnt / LP_DIR)),
    ("unlink", lambda mnt: os.unlink(mnt / LP_DIR / "enabled")),
    ("unlink-param", lambda mnt: os.unlink(mnt / PRE_PATCH_RET)),
    ("rename", lambda mnt: os.rename(mnt / LP_DIR / "enabled", mnt / LP_DIR / "on")),
    ("rename-over", lambda mnt: os.rename(mnt / LP_DIR / "enabled", mnt / LP_DIR / "replace")),
    ("rename-dir", lambda mnt: os.rename(mnt / LP_DIR, mnt / "kernel/livepatch/other")),
    ("symlink", lambda mnt: os.symlink("enabled", mnt / LP_DIR / "link")),
    ("link", lambda mnt: os.link(mnt / LP_DIR / "enabled", mnt / LP_DIR / "link")),
    ("mkfifo", lambda mnt: os.mkfifo(mnt / LP_DIR / "fifo")),
]
CREATE_OPERATIONS: list[tuple[str, Callable[[Path], object]]] = [
    ("O_CREAT", lambda mnt: os.open(mnt / LP_DIR / "new", os.O_CREAT | os.O_WRONLY, 0o644)),
    ("O_CREAT-in-root", lambda mnt: os.open(mnt / "new", os.O_CREAT | os.O_WRONLY, 0o644)),
    ("mknod-regular", lambda mnt: os.mknod(mnt / LP_DIR / "new", stat.S_IFREG | 0o644)),
    ("O_CREAT-long-name", lambda mnt: os.open(mnt / LP_DIR / LONG_NAME, os.O_CREAT | os.O_WRONLY)),
]
EXCL_TARGETS = ["enabled", "transition", "force", "vmlinux"]
DOTDOT_PATHS: list[tuple[str, str]] = [
    (f"{LP_DIR}/../{LP}/enabled", "1\n"),
    (f"{LP_DIR}/vmlinux/../../../../module/{LP}/refcnt", "1\n"),
    (f"kernel/../{LP_DIR}/transition", "0\n"),
    (f"{LP_DIR}/vmlinux/cmdline_proc_show,1/../patched", "1\n"),
    (f"kernel/livepatch/no_such_patch/../{LP}/enabled", "ENOENT"),
    (f"{LP_DIR}/enabled/../enabled", "ENOTDIR"),
    (f"{LP_DIR}/force/..", "ENOTDIR"),
]
ALL_ATTRIBUTES = [target.path for target in TARGETS]


class TestTreeOperations:
    @pytest.mark.parametrize(
        "operation", [op for _, op in EPERM_OPERATIONS], ids=[n for n, _ in EPERM_OPERATIONS]
    )
    def test_changing_the_tree_is_eperm(
        self, kernel: LpfsMount, operation: Callable[[Path], object]
    ) -> None:
        """mkdir, rmdir, unlink, rename, symlink, link and mknod of a FIFO fail with EPERM."""
        before = prepared_snapshot(kernel)
        assert ("EPERM", before) == (
            errno_name(lambda: operation(kernel.mountpoint)),
            snapshot(kernel),
        )

    @pytest.mark.parametrize(
        "operation", [op for _, op in CREATE_OPERATIONS], ids=[n for n, _ in CREATE_OPERATIONS]
    )
    def test_creating_a_name_is_eacces(
        self, kernel: LpfsMount, operation: Callable[[Path], object]
    ) -> None:
        """kernfs directories have no create operation: a new name fails with EACCES."""
        before = prepared_snapshot(kernel)
        assert ("EACCES", before) == (
            errno_name(lambda: operation(kernel.mountpoint)),
            snapshot(kernel),
        )

    @pytest.mark.parametrize("name", EXCL_TARGETS)
    def test_o_excl_on_an_existing_name_is_eexist(self, kernel: LpfsMount, name: str) -> None:
        """O_CREAT|O_EXCL of a name that exists fails with EEXIST, whatever its mode."""
        path = kernel.mountpoint / LP_DIR / name
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        assert "EEXIST" == errno_name(lambda: os.open(path, flags, 0o644))

    def test_o_creat_of_an_existing_attribute_opens_it(self, kernel: LpfsMount) -> None:
        """O_CREAT without O_EXCL opens the existing attribute, as `echo >` needs."""
        fd = os.open(kernel.mountpoint / LP_DIR / "enabled", os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        try:
            written = os.write(fd, b"0\n")
        finally:
            os.close(fd)
        assert (2, [DEMO]) == (written, kernel.patches())

    @pytest.mark.parametrize("rel", ALL_ATTRIBUTES)
    def test_truncate_succeeds_and_changes_nothing(self, kernel: LpfsMount, rel: str) -> None:
        """truncate(2) of any attribute, even a read-only one, succeeds and changes nothing."""
        before = prepared_snapshot(kernel)
        os.truncate(kernel.mountpoint / rel, 0)
        assert before == snapshot(kernel)

    def test_ftruncate_of_an_open_attribute_succeeds(self, kernel: LpfsMount) -> None:
        """ftruncate(2) on a descriptor open for writing succeeds and changes nothing."""
        before = prepared_snapshot(kernel)
        fd = os.open(kernel.mountpoint / LP_DIR / "enabled", os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        assert before == snapshot(kernel)

    def test_truncate_of_a_directory_is_eisdir(self, kernel: LpfsMount) -> None:
        """truncate(2) of a directory fails with EISDIR."""
        assert "EISDIR" == errno_name(lambda: os.truncate(kernel.mountpoint / LP_DIR, 0))

    def test_opening_a_directory_for_writing_is_eisdir(self, kernel: LpfsMount) -> None:
        """open(O_WRONLY) of a directory fails with EISDIR."""
        assert "EISDIR" == errno_name(lambda: os.open(kernel.mountpoint / LP_DIR, os.O_WRONLY))

    @pytest.mark.parametrize("rel,answer", DOTDOT_PATHS, ids=[rel for rel, _ in DOTDOT_PATHS])
    def test_dotdot_resolves_as_the_vfs_does(
        self, kernel: LpfsMount, rel: str, answer: str
    ) -> None:
        """`..` steps to the parent of what the previous components resolved to, or fails there."""
        assert answer == read_or_errno(kernel.mountpoint / rel)

    def test_dotdot_above_the_mount_root_leaves_the_mount(self, kernel: LpfsMount) -> None:
        """`..` of the mount root is the directory the mountpoint is in."""
        rel = f"../{kernel.mountpoint.name}/module/{LP}/refcnt"
        assert "1\n" == read_or_errno(kernel.mountpoint / rel)

    def test_long_name_component_is_not_found(self, kernel: LpfsMount) -> None:
        """kernfs looks up a 256-byte component like any other name: ENOENT."""
        assert "ENOENT" == errno_name(lambda: os.stat(kernel.mountpoint / LP_DIR / LONG_NAME))

    def test_path_over_path_max_is_enametoolong(self, kernel: LpfsMount) -> None:
        """A path longer than PATH_MAX fails with ENAMETOOLONG before any lookup."""
        rel = "kernel/" * (PATH_MAX // len("kernel/") + 1)
        assert "ENAMETOOLONG" == errno_name(lambda: os.stat(kernel.mountpoint / rel))


# -- chmod, chown and utime (kernfs_iop_setattr) --------------------------------

CHMOD_PATHS = [f"{LP_DIR}/enabled", f"{LP_DIR}/force", f"{LP_DIR}/vmlinux", PRE_PATCH_RET]
# (path, new mode, how it is opened afterwards, what the open and I/O give)
OPEN_AFTER_CHMOD: list[tuple[str, int, int, Any]] = [
    (f"{LP_DIR}/enabled", 0o444, os.O_WRONLY, "EACCES"),
    (f"{LP_DIR}/replace", 0o400, os.O_WRONLY, "EACCES"),
    (f"{LP_DIR}/force", 0o600, os.O_RDONLY, "EIO"),
    (f"{LP_DIR}/transition", 0o644, os.O_WRONLY, "EIO"),
    (f"{LP_DIR}/stack_order", 0o000, os.O_RDONLY, "EACCES"),
]


def open_and_use(path: Path, flags: int) -> Any:
    """Open, then read or write "0\\n": the bytes or count, else the errno name."""
    try:
        fd = os.open(path, flags)
        try:
            return os.read(fd, PAGE_SIZE) if flags == os.O_RDONLY else os.write(fd, b"0\n")
        finally:
            os.close(fd)
    except OSError as exc:
        return errno.errorcode[exc.errno]


def reload_lp(mount: LpfsMount) -> None:
    """Disable, unload and load test_klp_livepatch again: every node of it is new."""
    (mount.mountpoint / LP_DIR / "enabled").write_text("0\n")
    call(mount, "rmmod", name=LP)
    load(mount, LP)


class TestSetattr:
    @pytest.mark.parametrize("rel", CHMOD_PATHS)
    def test_chmod_sticks(self, kernel: LpfsMount, rel: str) -> None:
        """chmod by the owner succeeds and stat shows the new permission bits."""
        os.chmod(kernel.mountpoint / rel, 0o640)
        assert 0o640 == stat.S_IMODE(os.stat(kernel.mountpoint / rel).st_mode)

    @pytest.mark.parametrize("rel", CHMOD_PATHS)
    def test_chown_to_the_owner_sticks(self, kernel: LpfsMount, rel: str) -> None:
        """chown to the owner's own uid and gid succeeds and stat shows them."""
        os.chown(kernel.mountpoint / rel, os.getuid(), os.getgid())
        info = os.stat(kernel.mountpoint / rel)
        assert (os.getuid(), os.getgid()) == (info.st_uid, info.st_gid)

    @pytest.mark.parametrize("rel", CHMOD_PATHS)
    def test_utime_sticks(self, kernel: LpfsMount, rel: str) -> None:
        """utime sets atime and mtime, and stat shows them."""
        os.utime(kernel.mountpoint / rel, (1_000_000_000, 1_500_000_000))
        info = os.stat(kernel.mountpoint / rel)
        assert (1_000_000_000, 1_500_000_000) == (info.st_atime, info.st_mtime)

    def test_utime_keeps_nanoseconds(self, kernel: LpfsMount) -> None:
        """kernfs keeps the full timespec64: nanoseconds survive."""
        times = (1_700_000_000_123_456_789, 1_700_000_001_987_654_321)
        os.utime(kernel.mountpoint / LP_DIR / "enabled", ns=times)
        info = os.stat(kernel.mountpoint / LP_DIR / "enabled")
        assert times == (info.st_atime_ns, info.st_mtime_ns)

    def test_chmod_outlives_state_changes(self, kernel: LpfsMount) -> None:
        """The mode stays while the node exists, whatever the patch does."""
        os.chmod(kernel.mountpoint / f"{LP_DIR}/stack_order", 0o600)
        (kernel.mountpoint / "kernel/livepatch" / DEMO / "enabled").write_text("0\n")
        info = os.stat(kernel.mountpoint / f"{LP_DIR}/stack_order")
        assert (0o600, "1\n") == (
            stat.S_IMODE(info.st_mode),
            (kernel.mountpoint / f"{LP_DIR}/stack_order").read_text(),
        )

    @pytest.mark.parametrize("rel", [f"{LP_DIR}/enabled", f"{LP_DIR}/vmlinux"])
    def test_mode_is_reset_when_the_node_is_freed(self, kernel: LpfsMount, rel: str) -> None:
        """A patch loaded again has new nodes with the attribute macros' modes."""
        default = stat.S_IMODE(os.stat(kernel.mountpoint / rel).st_mode)
        os.chmod(kernel.mountpoint / rel, 0o600)
        reload_lp(kernel)
        assert default == stat.S_IMODE(os.stat(kernel.mountpoint / rel).st_mode)

    def test_times_are_reset_when_the_node_is_freed(self, kernel: LpfsMount) -> None:
        """A patch loaded again has new nodes with fresh times."""
        os.utime(kernel.mountpoint / LP_DIR / "enabled", (1_000_000_000, 1_000_000_000))
        reload_lp(kernel)
        assert 1_000_000_000 < os.stat(kernel.mountpoint / LP_DIR / "enabled").st_mtime

    def test_param_mode_is_reset_when_the_module_is_reloaded(self, kernel: LpfsMount) -> None:
        """A parameter file of a module loaded again has its declared mode."""
        os.chmod(kernel.mountpoint / BLOCK_TRANSITION, 0o600)
        call(kernel, "rmmod", name=BUSY)
        load(kernel, BUSY)
        assert 0o644 == stat.S_IMODE(os.stat(kernel.mountpoint / BLOCK_TRANSITION).st_mode)

    @pytest.mark.parametrize(
        "rel,mode,flags,answer",
        OPEN_AFTER_CHMOD,
        ids=[f"{rel.rsplit('/', 1)[1]}-{mode:o}" for rel, mode, _, _ in OPEN_AFTER_CHMOD],
    )
    def test_open_check_follows_the_new_mode(
        self, kernel: LpfsMount, rel: str, mode: int, flags: int, answer: Any
    ) -> None:
        """The open check uses the chmod'ed mode; an opened file without show or store gives EIO."""
        os.chmod(kernel.mountpoint / rel, mode)
        assert answer == open_and_use(kernel.mountpoint / rel, flags)


# -- the control socket ------------------------------------------------------------


def exchange(sock: str, payload: bytes) -> list[dict[str, Any]]:
    """Send raw bytes, end the request, and collect every reply line until the daemon closes."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    received = b""
    try:
        conn.connect(sock)  # blocking: a full listen backlog makes it wait, not fail
        conn.settimeout(30)
        try:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading; its reply is still readable
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        conn.close()
    return [json.loads(line) for line in received.splitlines()]


def reply_shape(replies: list[dict[str, Any]]) -> list[tuple[bool, bool]]:
    """Each reply as (ok, has an error message)."""
    return [(reply.get("ok"), bool(reply.get("error"))) for reply in replies]


BAD_REQUESTS: list[tuple[str, bytes]] = [
    ("truncated-json", b'{"cmd": "status"\n'),
    ("json-array", b'["status"]\n'),
    ("json-string", b'"status"\n'),
    ("empty-line", b"\n"),
    ("no-cmd", b"{}\n"),
    ("cmd-not-a-string", b'{"cmd": 5}\n'),
    ("not-utf8", b"\xff\xfe{}\n"),
    ("deeply-nested", b"[" * 100_000 + b"\n"),
    ("unknown-command", b'{"cmd": "format_disk"}\n'),
    ("insmod-text-int", b'{"cmd": "insmod", "file": "x.toml", "text": 5}\n'),
    ("insmod-file-missing", b'{"cmd": "insmod", "text": "name = \\"x\\""}\n'),
    ("insmod-params-string", b'{"cmd": "insmod", "file": "x.toml", "text": "", "params": "a"}\n'),
    ("rmmod-name-missing", b'{"cmd": "rmmod"}\n'),
    ("tick-count-string", b'{"cmd": "tick", "count": "x"}\n'),
    ("tick-count-zero", b'{"cmd": "tick", "count": 0}\n'),
    ("tick-count-float", b'{"cmd": "tick", "count": 1.5}\n'),
    ("tick-count-bool", b'{"cmd": "tick", "count": true}\n'),
    ("task-add-negative-pid", b'{"cmd": "task_add", "pid": -1}\n'),
    ("task-add-pid-string", b'{"cmd": "task_add", "pid": "7"}\n'),
    ("task-add-pid-bool", b'{"cmd": "task_add", "pid": true}\n'),
    ("task-add-stack-string", b'{"cmd": "task_add", "pid": 7, "stack": "a,b"}\n'),
    ("task-add-bad-state", b'{"cmd": "task_add", "pid": 7, "state": "zombie"}\n'),
    ("task-exit-pid-list", b'{"cmd": "task_exit", "pid": [1]}\n'),
    ("wait-bad-mode", b'{"cmd": "wait", "patch": "x", "mode": "soon"}\n'),
    ("kmsg-text-int", b'{"cmd": "kmsg", "text": 5}\n'),
    ("5MiB", b'{"cmd": "kmsg", "text": "' + b"a" * (5 * MIB) + b'"}\n'),
]


@pytest.fixture
def sock(kernel: LpfsMount) -> str:
    """The daemon's control socket, as `lpfs status --json` names it."""
    return kernel.status()["socket"]


class TestControlSocket:
    @pytest.mark.parametrize(
        "payload", [p for _, p in BAD_REQUESTS], ids=[n for n, _ in BAD_REQUESTS]
    )
    def test_bad_request_gets_one_error_reply(self, sock: str, payload: bytes) -> None:
        """A malformed request is answered with exactly one JSON error reply, the client's fault."""
        replies = exchange(sock, payload)
        assert [(False, True)] == reply_shape(replies)
        assert "internal" != replies[0].get("kind"), replies

    @pytest.mark.parametrize(
        "payload", [p for _, p in BAD_REQUESTS], ids=[n for n, _ in BAD_REQUESTS]
    )
    def test_bad_request_changes_nothing(
        self, kernel: LpfsMount, sock: str, payload: bytes
    ) -> None:
        """After a malformed request the daemon serves `lpfs status` and its state is as before."""
        before = prepared_snapshot(kernel)
        exchange(sock, payload)
        result = kernel.command("status")
        assert (0, before) == (result.returncode, snapshot(kernel))

    def test_half_a_line_does_not_block_other_clients(self, kernel: LpfsMount, sock: str) -> None:
        """While a client has sent half a request and hangs, `lpfs status` still answers."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock)
        try:
            conn.sendall(b'{"cmd": "sta')
            during = kernel.command("status").returncode
            time.sleep(1.0)
        finally:
            conn.close()
        after = kernel.command("status").returncode
        assert (0, 0) == (during, after)

    def test_many_hanging_clients_do_not_block_others(self, kernel: LpfsMount, sock: str) -> None:
        """Twenty clients stuck mid-request do not keep a twenty-first from being served."""
        conns = []
        try:
            for _ in range(20):
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(sock)
                conn.sendall(b'{"cmd": ')
                conns.append(conn)
            during = kernel.command("status").returncode
        finally:
            for conn in conns:
                conn.close()
        assert 0 == during

    def test_client_vanishing_mid_reply_does_not_stop_the_daemon(
        self, kernel: LpfsMount, sock: str
    ) -> None:
        """A client that hangs up before reading a long reply leaves the daemon serving."""
        for _ in range(3):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(sock)
            conn.sendall(b'{"cmd": "dmesg", "follow": true}\n')
            conn.close()
        assert 0 == kernel.command("status").returncode

    def test_concurrent_bad_requests_leave_the_daemon_serving(
        self, kernel: LpfsMount, sock: str
    ) -> None:
        """Bad requests sent all at once from threads are answered as each is alone."""
        alone = {name: reply_shape(exchange(sock, payload)) for name, payload in BAD_REQUESTS}
        together: dict[str, list[tuple[bool, bool]]] = {}

        def send(name: str, payload: bytes) -> None:
            together[name] = reply_shape(exchange(sock, payload))

        threads = [
            threading.Thread(target=send, args=(name, payload)) for name, payload in BAD_REQUESTS
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        status = kernel.command("status").returncode
        assert (alone, 0) == (together, status)


# -- malformed module files through `lpfs insmod` ------------------------------------


@dataclass(frozen=True)
class BadModule:
    """A module file `lpfs insmod` refuses, and the start of the one line it prints."""

    id: str
    content: bytes | None  # None: no such file
    message: str  # after "insmod: ERROR: "; {file} is the path given


BAD_MODULES = [
    BadModule("toml-syntax", b'name = "a\n', "{file}: not valid TOML"),
    BadModule("unknown-key", b'name = "bad"\nbogus = 1\n', "{file}: bogus: unknown key"),
    BadModule("name-not-a-string", b"name = 5\n", "{file}: name: expected a string"),
    BadModule("bad-name", b'name = "bad name!"\n', "{file}: name: "),
    BadModule("name-too-long", f'name = "{"a" * 56}"\n'.encode(), "{file}: name: "),
    BadModule("format-2", b"format = 2\n", "{file}: format: "),
    BadModule("object-not-array", b"object = 5\n", "{file}: object: expected an array"),
    BadModule(
        "func-without-old-name",
        b'[[object]]\nname = "vmlinux"\n[[object.func]]\nnew_name = "x"\n',
        "{file}: object[0].func[0].old_name: missing",
    ),
    BadModule(
        "negative-sympos",
        b'[[object]]\n[[object.func]]\nold_name = "a"\nnew_name = "b"\nold_sympos = -1\n',
        "{file}: object[0].func[0].old_sympos: ",
    ),
    BadModule(
        "bad-fault",
        b'[[object]]\n[[object.func]]\nold_name = "a"\nnew_name = "b"\nfault = "x"\n',
        "{file}: object[0].func[0].fault: ",
    ),
    BadModule("param-type", b'[[param]]\nname = "x"\ntype = "float"\n', "{file}: param[0].type: "),
    BadModule(
        "param-default",
        b'[[param]]\nname = "x"\ntype = "int"\ndefault = "s"\n',
        "{file}: param[0].default: ",
    ),
    BadModule(
        "state-without-id",
        b"[[state]]\nversion = 1\n",
        "{file}: state[0].id: missing",
    ),
    BadModule(
        "invalid-utf8",
        b'name = "\xff\xfe"\n',
        "could not insert module {file}: Invalid module format",
    ),
    BadModule("missing-file", None, "could not load module {file}: No such file or directory"),
]


@pytest.mark.parametrize("bad", BAD_MODULES, ids=[bad.id for bad in BAD_MODULES])
def test_malformed_module_file_is_one_line_and_exit_1(
    kernel: LpfsMount, tmp_path: Path, bad: BadModule
) -> None:
    """insmod of a malformed module file prints one `insmod: ERROR:` line, exits 1, loads nothing."""
    path = tmp_path / "bad.toml"
    if bad.content is not None:
        path.write_bytes(bad.content)
    before = prepared_snapshot(kernel)
    result = kernel.command("insmod", str(path))
    lines = result.stderr.splitlines()
    prefix = "insmod: ERROR: " + bad.message.format(file=path)
    assert (1, "", 1, True, before) == (
        result.returncode,
        result.stdout,
        len(lines),
        bool(lines) and lines[0].startswith(prefix),
        snapshot(kernel),
    )


def test_directory_as_module_file_is_one_line_and_exit_1(kernel: LpfsMount, tmp_path: Path) -> None:
    """insmod of a directory prints one line naming it and exits 1."""
    result = kernel.command("insmod", str(tmp_path))
    expected = f"insmod: ERROR: could not load module {tmp_path}: Is a directory\n"
    assert (1, expected) == (result.returncode, result.stderr)


def test_daemon_survives_every_bad_input_in_a_row(kernel: LpfsMount) -> None:
    """After all of the above in one go, the daemon still answers and the mount still reads."""
    sock = kernel.status()["socket"]
    for _, payload in BAD_REQUESTS:
        exchange(sock, payload)
    for target in TARGETS:
        for case in INPUTS[:8]:
            attempt(kernel.mountpoint / target.path, case)
    code = kernel.command("status").returncode
    assert (0, ["kernel", "module"]) == (code, sorted(os.listdir(kernel.mountpoint)))
