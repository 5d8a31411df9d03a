"""lpfs's FUSE session against a fake kernel: every protocol minor, every reply's size.

Struct sizes are those of include/uapi/linux/fuse.h; a reply the kernel
would refuse (a wrong size, an errno of 512 or more) leaves its caller
waiting for ever, so each is checked here byte for byte.
"""

import errno
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_kernel import ALL_FLAGS, FakeKernel, dirent_names, init_out, name
from support import missing

from lpfs.daemon import livepatchfs
from lpfs.errors import KernelError, UnsupportedKernel
from lpfs.fuse import session
from lpfs.fuse.session import FuseOSError
from lpfs.fuse.wire import (
    BATCH_FORGET,
    CREATE,
    DESTROY,
    FOPEN_DIRECT_IO,
    FOPEN_PARALLEL_DIRECT_WRITES,
    FORGET,
    GETATTR,
    INTERRUPT,
    LINK,
    LISTXATTR,
    LOOKUP,
    MKDIR,
    MKNOD,
    OPEN,
    OPENDIR,
    READ,
    READDIR,
    READLINK,
    RELEASE,
    RELEASEDIR,
    RENAME,
    RENAME2,
    RMDIR,
    ROOT_ID,
    SETATTR,
    STATFS,
    SYMLINK,
    UNLINK,
    WRITE,
    reply_errno,
)

# sizeof() of the reply structs in include/uapi/linux/fuse.h (7.9 and newer).
FUSE_ENTRY_OUT, FUSE_ATTR_OUT, FUSE_OPEN_OUT, FUSE_WRITE_OUT = 128, 104, 16, 8
FUSE_STATFS_OUT, FUSE_GETXATTR_OUT = 80, 8
FUSE_INIT_OUT, FUSE_COMPAT_22_INIT_OUT_SIZE = 64, 24
NEWEST_MINOR = 45  # Linux 6.18
SERVED_MINOR = 38


class Tree:
    """Directories, files and symlinks in dicts, with every operation the session maps."""

    def __init__(self) -> None:
        self.dirs = {"/", "/d"}
        self.files: dict[str, bytes] = {"/d/f": b"text\n"}
        self.links: dict[str, str] = {}
        self.fail: BaseException | None = None  # what getattr raises, when set
        self.attrs: dict[str, Any] = {}  # extra fields getattr returns
        self.listing: list[str] | None = None  # what readdir returns, when set
        self.looked_up: list[str] = []

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self.looked_up.append(path)
        if self.fail is not None:
            raise self.fail
        if path in self.dirs:
            return {"st_mode": 0o40755, "st_nlink": 2, **self.attrs}
        if path in self.files:
            return {"st_mode": 0o100644, "st_size": len(self.files[path]), **self.attrs}
        if path in self.links:
            return {"st_mode": 0o120777, **self.attrs}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if self.listing is not None:
            return self.listing
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :] for p in [*self.dirs, *self.files, *self.links]}
        return [".", "..", *sorted(n for n in names if n and "/" not in n)]

    def open(self, path: str, flags: int) -> int:
        return 3

    def create(self, path: str, mode: int) -> int:
        self.files[path] = b""
        return 4

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.files[path][offset : offset + size]

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.files[path] = data
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self.files[path] = self.files[path][:length]

    def chmod(self, path: str, mode: int) -> None:
        pass

    def release(self, path: str, fh: int) -> None:
        pass

    def mknod(self, path: str, mode: int, dev: int) -> None:
        self.files[path] = b""

    def mkdir(self, path: str, mode: int) -> None:
        self.dirs.add(path)

    def symlink(self, target: str, source: str) -> None:
        self.links[target] = source

    def readlink(self, path: str) -> str:
        return self.links[path]

    def link(self, target: str, source: str) -> None:
        self.files[target] = self.files[source]

    def unlink(self, path: str) -> None:
        self.files.pop(path, None) or self.links.pop(path)

    def rmdir(self, path: str) -> None:
        self.dirs.remove(path)

    def rename(self, old: str, new: str) -> None:
        self.files[new] = self.files.pop(old)

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_namemax": 255}


@pytest.fixture
def tree() -> Tree:
    return Tree()


def served(tree: Tree, **options: Any) -> FakeKernel:
    return FakeKernel(tree, direct_io=True, entry_timeout=0, attr_timeout=0, **options)


# -- INIT ----------------------------------------------------------------------


@pytest.mark.parametrize("major, minor", [(7, 5), (7, 8), (7, 11), (6, 30)])
def test_a_kernel_older_than_7_12_is_refused_with_one_clear_error(
    tree: Tree, major: int, minor: int
) -> None:
    with served(tree) as kernel:
        reply = kernel.init(minor, major=major)
        kernel.thread.join(5)
        assert (-errno.EPROTO, b"", False) == (reply.error, reply.body, kernel.thread.is_alive())
    assert isinstance(kernel.failure, UnsupportedKernel)
    assert (
        f"the kernel speaks FUSE {major}.{minor}; lpfs needs 7.12 or newer (Linux 2.6.31)"
        == str(kernel.failure)
    )


@pytest.mark.parametrize(
    "minor, size",
    [
        (12, FUSE_COMPAT_22_INIT_OUT_SIZE),
        (22, FUSE_COMPAT_22_INIT_OUT_SIZE),
        (23, FUSE_INIT_OUT),
        (26, FUSE_INIT_OUT),
        (31, FUSE_INIT_OUT),
        (36, FUSE_INIT_OUT),
        (38, FUSE_INIT_OUT),
        (NEWEST_MINOR, FUSE_INIT_OUT),
    ],
)
@pytest.mark.parametrize("offered", [ALL_FLAGS, 0, 1 << 0 | 1 << 18])
def test_init_is_answered_in_the_kernels_minor(
    tree: Tree, minor: int, size: int, offered: int
) -> None:
    with served(tree) as kernel:
        reply = kernel.init(minor, offered)
        major, agreed, granted = init_out(reply.body)
        assert (0, size, 7, min(minor, SERVED_MINOR)) == (
            reply.error,
            len(reply.body),
            major,
            agreed,
        )
        assert granted & ~offered == 0
        assert 0 == kernel.call(GETATTR, bytes(16)).error  # and serves on


def test_a_newer_major_gets_lpfs_version_and_the_next_init_is_served(tree: Tree) -> None:
    with served(tree) as kernel:
        first = kernel.init(40, major=8)
        assert (0, FUSE_INIT_OUT, (7, SERVED_MINOR, 0)) == (
            first.error,
            len(first.body),
            init_out(first.body),
        )
        second = kernel.init(NEWEST_MINOR)
        assert (0, (7, SERVED_MINOR)) == (second.error, init_out(second.body)[:2])


@pytest.mark.parametrize(
    "minor, flags",
    [(31, FOPEN_DIRECT_IO), (38, FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES)],
)
def test_open_flags_are_those_of_the_agreed_minor(tree: Tree, minor: int, flags: int) -> None:
    with served(tree) as kernel:
        kernel.init(minor)
        f = struct.unpack_from("<Q", kernel.call(LOOKUP, name("d")).body)[0]
        f = struct.unpack_from("<Q", kernel.call(LOOKUP, name("f"), nodeid=f).body)[0]
        _fh, open_flags, _ = struct.unpack("<QII", kernel.call(OPEN, bytes(8), nodeid=f).body)
        assert flags == open_flags


# -- every reply's size ---------------------------------------------------------


@pytest.mark.parametrize("minor", [12, 23, SERVED_MINOR, NEWEST_MINOR])
def test_each_reply_has_the_size_of_its_struct(tree: Tree, minor: int) -> None:
    def node(reply: Any) -> int:
        return int(struct.unpack_from("<Q", reply.body)[0])

    with served(tree) as kernel:
        kernel.init(minor)
        sizes: dict[str, tuple[int, int]] = {}

        def call(label: str, opcode: int, body: bytes = b"", nodeid: int = ROOT_ID) -> Any:
            reply = kernel.call(opcode, body, nodeid)
            sizes[label] = (reply.error, len(reply.body))
            return reply

        d = node(call("lookup", LOOKUP, name("d")))
        f = node(kernel.call(LOOKUP, name("f"), nodeid=d))
        call("getattr", GETATTR, bytes(16), f)
        call("setattr", SETATTR, struct.pack("<I84x", 1), f)  # fuse_setattr_in: FATTR_MODE
        call("open", OPEN, bytes(8), f)
        call("read", READ, struct.pack("<QQI4xQI4x", 3, 0, 4096, 0, 0), f)
        call("write", WRITE, struct.pack("<QQI4xQI4x", 3, 0, 2, 0, 0) + b"hi", f)
        call("release", RELEASE, bytes(24), f)
        call("statfs", STATFS)
        call("listxattr", LISTXATTR, bytes(8), f)
        dir_fh = struct.unpack_from("<Q", call("opendir", OPENDIR, bytes(8), d).body)[0]
        call("readdir", READDIR, struct.pack("<QQI4xQI4x", dir_fh, 0, 4096, 0, 0), d)
        call("releasedir", RELEASEDIR, struct.pack("<Q16x", dir_fh), d)
        call("create", CREATE, struct.pack("<II8x", os.O_WRONLY, 0o100644) + name("c"), d)
        call("mknod", MKNOD, struct.pack("<II8x", 0o100644, 0) + name("n"), d)
        call("mkdir", MKDIR, struct.pack("<I4x", 0o755) + name("e"), d)
        link = call("symlink", SYMLINK, name("s") + name("f"), d)
        call("readlink", READLINK, b"", node(link))
        call("link", LINK, struct.pack("<Q", f) + name("h"), d)
        call("rename", RENAME, struct.pack("<Q", d) + name("h") + name("i"), d)
        call("rename2", RENAME2, struct.pack("<QI4x", d, 0) + name("i") + name("j"), d)
        call("unlink", UNLINK, name("j"), d)
        call("rmdir", RMDIR, name("e"), d)
        call("destroy", DESTROY)
    assert {
        "lookup": (0, FUSE_ENTRY_OUT),
        "getattr": (0, FUSE_ATTR_OUT),
        "setattr": (0, FUSE_ATTR_OUT),
        "open": (0, FUSE_OPEN_OUT),
        "read": (0, len(b"text\n")),
        "write": (0, FUSE_WRITE_OUT),
        "release": (0, 0),
        "statfs": (0, FUSE_STATFS_OUT),
        "listxattr": (0, FUSE_GETXATTR_OUT),
        "opendir": (0, FUSE_OPEN_OUT),
        "readdir": (0, 3 * 32),  # ".", ".." and "f": a 24-byte fuse_dirent, 8-byte aligned
        "releasedir": (0, 0),
        "create": (0, FUSE_ENTRY_OUT + FUSE_OPEN_OUT),
        "mknod": (0, FUSE_ENTRY_OUT),
        "mkdir": (0, FUSE_ENTRY_OUT),
        "symlink": (0, FUSE_ENTRY_OUT),
        "readlink": (0, len(b"f")),
        "link": (0, FUSE_ENTRY_OUT),
        "rename": (0, 0),
        "rename2": (0, 0),
        "unlink": (0, 0),
        "rmdir": (0, 0),
        "destroy": (0, 0),
    } == sizes


def test_an_unknown_opcode_is_enosys(tree: Tree) -> None:
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
        reply = kernel.call(50)  # FUSE_SYNCFS
        assert (-errno.ENOSYS, b"") == (reply.error, reply.body)


@pytest.mark.parametrize("opcode, body", [(FORGET, struct.pack("<Q", 1)),
                                          (BATCH_FORGET, struct.pack("<I4xQQ", 1, 5, 1)),
                                          (INTERRUPT, struct.pack("<Q", 2))])  # fmt: skip
def test_forget_and_interrupt_get_no_reply(tree: Tree, opcode: int, body: bytes) -> None:
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
        kernel.send(opcode, body, nodeid=5)
        assert kernel.silent()
        unique = kernel.send(GETATTR, bytes(16))
        assert unique == kernel.reply().unique  # the next reply is the next request's


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure, code",
    [
        (OSError(0, "no errno"), errno.EIO),
        (OSError(None, "None"), errno.EIO),
        (OSError(-5, "negative"), errno.EIO),
        (OSError(1, "EPERM"), errno.EPERM),
        (OSError(511, "the last errno"), 511),
        (OSError(512, "ERESTARTSYS"), errno.EINTR),
        (OSError(516, "ERESTART_RESTARTBLOCK"), errno.EINTR),
        (OSError(524, "ENOTSUPP"), errno.EOPNOTSUPP),
        (OSError(1000, "out of range"), errno.EIO),
        (ValueError("a bug"), errno.EIO),
    ],
)
def test_every_error_reply_carries_an_errno_the_kernel_takes(
    tree: Tree, failure: BaseException, code: int
) -> None:
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
        tree.fail = failure
        reply = kernel.call(GETATTR, bytes(16))
        assert (-code, b"") == (reply.error, reply.body)


ERRNOS = [1, 511, 512, 513, 514, 515, 516, 524, 1000]


@pytest.mark.parametrize("failure", [KernelError, livepatchfs.FuseOSError])
@pytest.mark.parametrize("code", ERRNOS)
def test_the_adapters_answer_the_kernels_errno_as_the_session_does(
    failure: type[Exception], code: int
) -> None:
    """On every binding: a KernelError or FuseOSError is its errno, mapped into 1..511."""

    @livepatchfs.errno_boundary
    def getattr(self: object, path: str) -> None:
        raise failure(code)

    with pytest.raises(OSError) as raised:
        getattr(None, "/")
    assert reply_errno(code) == raised.value.errno
    assert 0 < raised.value.errno < 512


@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, "lpfs's own log file"), ValueError("a bug")]
)
def test_the_adapters_answer_eio_for_lpfs_own_failures(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """An OSError of lpfs's own never passes for the kernel's answer: EIO, and a traceback."""

    @livepatchfs.errno_boundary
    def write(self: object, path: str) -> None:
        raise failure

    with pytest.raises(OSError) as raised:
        write(None, "/kernel/livepatch/p/enabled")
    assert errno.EIO == raised.value.errno
    assert "unexpected failure in FUSE operation write" in caplog.text


def test_a_refused_reply_is_followed_by_eio(tree: Tree) -> None:
    # A reply longer than the socket takes is refused (EMSGSIZE), as the device
    # refuses one it cannot take: the request must still be answered.
    tree.files["/d/big"] = bytes(64 * 1024)
    with served(tree, sndbuf=4096) as kernel:
        kernel.init(SERVED_MINOR)
        d = struct.unpack_from("<Q", kernel.call(LOOKUP, name("d")).body)[0]
        big = struct.unpack_from("<Q", kernel.call(LOOKUP, name("big"), nodeid=d).body)[0]
        reply = kernel.call(READ, struct.pack("<QQI4xQI4x", 3, 0, 64 * 1024, 0, 0), big)
        assert (-errno.EIO, b"") == (reply.error, reply.body)


# -- nodes and names ---------------------------------------------------------------


def test_a_lookup_whose_reply_cannot_be_packed_leaves_no_node(tree: Tree) -> None:
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
        tree.attrs = {"st_size": -1}  # fuse_attr.size is unsigned
        assert -errno.EIO == kernel.call(LOOKUP, name("d")).error
        tree.attrs = {}
        d = struct.unpack_from("<Q", kernel.call(LOOKUP, name("d")).body)[0]
        assert {ROOT_ID: 0, d: 1} == {i: n.lookups for i, n in kernel.session.nodes.items()}
        kernel.send(FORGET, struct.pack("<Q", 1), nodeid=d)
        kernel.call(GETATTR, bytes(16))  # answered after the FORGET: requests go in turn
        assert [ROOT_ID] == [*kernel.session.nodes]


def test_a_listing_leaves_out_names_the_kernel_rejects(tree: Tree) -> None:
    tree.listing = [".", "..", "", "a/b", "x" * 1025, "nul\0", "y" * 1024, "ok"]
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
        fh = struct.unpack_from("<Q", kernel.call(OPENDIR, bytes(8)).body)[0]
        reply = kernel.call(READDIR, struct.pack("<QQI4xQI4x", fh, 0, 8192, 0, 0))
        assert [b".", b"..", b"y" * 1024, b"ok"] == dirent_names(reply.body)


def test_lookup_and_listings_decode_names_alike_in_any_locale(tmp_path: Path) -> None:
    # Under the C locale without UTF-8 mode, the filesystem encoding is ASCII:
    # a listed non-ASCII name must come back through LOOKUP as the same str.
    script = """
import sys, struct
from fake_kernel import FakeKernel
from lpfs.fuse.wire import LOOKUP, OPENDIR, READDIR
print(sys.getfilesystemencoding())
if sys.getfilesystemencoding() != "ascii":
    sys.exit()

class Listed:
    def __init__(self): self.names = set(); self.asked = []
    def getattr(self, path, fh=None):
        self.asked.append(path)
        if path == "/" or path[1:] in self.names: return {"st_mode": 0o40755}
        raise OSError(2, "ENOENT")
    def readdir(self, path, fh):
        self.names = {b"caf\\xc3\\xa9".decode(sys.getfilesystemencoding(), "surrogateescape")}
        return [".", "..", *self.names]

ops = Listed()
with FakeKernel(ops) as kernel:
    kernel.init(38)
    fh = struct.unpack_from("<Q", kernel.call(OPENDIR, bytes(8)).body)[0]
    listed = kernel.call(READDIR, struct.pack("<QQI4xQI4x", fh, 0, 4096, 0, 0)).body
    assert b"caf\\xc3\\xa9" in listed
    print(kernel.call(LOOKUP, b"caf\\xc3\\xa9\\0").error)
"""
    env = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if not result.stdout.startswith("ascii\n"):
        missing(f"an ASCII filesystem encoding under LC_ALL=C: {result.stdout}{result.stderr}")
    assert ("ascii\n0\n", "") == (result.stdout, result.stderr)


# -- the end of a connection, and options --------------------------------------------


def test_the_session_ends_cleanly_when_its_connection_closes(tree: Tree) -> None:
    with served(tree) as kernel:
        kernel.init(SERVED_MINOR)
    assert (None, True) == (kernel.failure, kernel.session.connection_ended)


@pytest.mark.parametrize(
    "option", [{"ro": True}, {"negative_timeout": 1}, {"nothreads": False}, {"foreground": False}]
)
def test_fuse_refuses_options_it_does_not_implement(tmp_path: Path, option: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        session.FUSE(Tree(), str(tmp_path), **option)
