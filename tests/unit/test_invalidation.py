"""lpfs's FUSE session telling a fake kernel what a change made stale.

An operations object with an ``invalidation`` lets the kernel keep names,
attributes and listings; after a change the session writes
FUSE_NOTIFY_INVAL_ENTRY for the topmost name that went away and
FUSE_NOTIFY_INVAL_INODE for what changed, laid out as
include/uapi/linux/fuse.h has them, and a write's reply only after them.
"""

import errno
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fake_kernel import ALL_FLAGS, FakeKernel, Reply, name

from lpfs.fuse.session import FuseOSError
from lpfs.fuse.wire import ENTRY_OUT, GETATTR, LOOKUP, OPEN, OPENDIR, READDIR, WRITE

SERVED_MINOR = 38
AUTO_INVAL_DATA, NO_OPENDIR_SUPPORT = 1 << 12, 1 << 24
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY = 2, 3
# sizeof(struct fuse_notify_inval_inode_out), sizeof(struct fuse_notify_inval_entry_out)
INVAL_INODE_OUT, INVAL_ENTRY_OUT = 24, 16
DAY = 86400


class State:
    """The invalidation protocol's other end: a generation the test bumps."""

    def __init__(self) -> None:
        self.generation = 0
        self.lock = threading.RLock()
        self.flush: Callable[[int, Callable[[], None]], None] | None = None
        self.released = 0  # changing() callables called

    def attach(self, flush: Callable[[int, Callable[[], None]], None] | None) -> None:
        self.flush = flush

    def consistent(self) -> threading.RLock:
        return self.lock

    def changing(self) -> Callable[[], None]:
        def release() -> None:
            self.released += 1

        return release

    def settle(self) -> None:
        assert self.flush is not None
        done = threading.Event()
        self.flush(self.generation, done.set)
        assert done.wait(5)


class Files:
    """Directories and files; writing ``/gone`` to ``/d/ctl`` removes ``/d/sub``."""

    use_ns = True

    def __init__(self) -> None:
        self.invalidation = State()
        self.dirs = {"/", "/d", "/d/sub"}
        self.files = {"/d/ctl": 0o644, "/d/sub/f": 0o444}

    def change(self, update: Callable[[], None]) -> None:
        with self.invalidation.lock:
            update()
            self.invalidation.generation += 1

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path in self.dirs:
            return {"st_mode": 0o40755, "st_nlink": 2, "st_mtime": 10**18}
        if path in self.files:
            return {"st_mode": 0o100000 | self.files[path], "st_size": 4096}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :] for p in [*self.dirs, *self.files] if p.startswith(prefix)}
        return [".", "..", *sorted(n for n in names if n and "/" not in n)]

    def open(self, path: str, flags: int) -> int:
        return 1

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if data == b"gone":
            self.change(self._remove_sub)
        return len(data)

    def _remove_sub(self) -> None:
        self.dirs.discard("/d/sub")
        self.files.pop("/d/sub/f", None)


@pytest.fixture
def files() -> Files:
    return Files()


def served(files: Files) -> FakeKernel:
    return FakeKernel(files, direct_io=True, entry_timeout=0, attr_timeout=0)


def node(reply: Reply) -> int:
    return int(struct.unpack_from("<Q", reply.body)[0])


def entry_timeouts(reply: Reply) -> tuple[int, int]:
    """(entry_valid, attr_valid) of a fuse_entry_out."""
    fields = ENTRY_OUT.unpack(struct.pack("<IiQ", 16 + len(reply.body), 0, 0) + reply.body)
    return fields[5], fields[6]


def notification(kernel: FakeKernel) -> tuple[int, bytes]:
    """(code, body) of the next message, which must be a notification (unique 0)."""
    message = kernel.reply()
    assert 0 == message.unique
    return message.error, message.body


def walk(kernel: FakeKernel, *path: str) -> list[int]:
    """The node ids of a path's names, looked up in turn from the root."""
    ids = [1]
    for part in path:
        ids.append(node(kernel.call(LOOKUP, name(part), nodeid=ids[-1])))
    return ids[1:]


@pytest.mark.parametrize(
    "minor, offered, cached",
    [
        (SERVED_MINOR, ALL_FLAGS, True),
        (29, NO_OPENDIR_SUPPORT | AUTO_INVAL_DATA, True),
        (28, ALL_FLAGS, False),  # before FUSE_NO_OPENDIR_SUPPORT
        (SERVED_MINOR, ALL_FLAGS & ~NO_OPENDIR_SUPPORT, False),
        (SERVED_MINOR, ALL_FLAGS & ~AUTO_INVAL_DATA, False),
    ],
)
def test_listings_are_left_to_the_kernel_only_when_init_offers_it(
    files: Files, minor: int, offered: int, cached: bool
) -> None:
    with served(files) as kernel:
        granted = struct.unpack_from("<IIII", kernel.init(minor, offered).body)[3]
        both = NO_OPENDIR_SUPPORT | AUTO_INVAL_DATA
        opendir = kernel.call(OPENDIR, bytes(8))
        assert (cached, -errno.ENOSYS if cached else 0) == (
            granted & both == both,
            opendir.error,
        )


def test_without_an_invalidation_nothing_more_is_cached_or_agreed(files: Files) -> None:
    del files.invalidation
    with served(files) as kernel:
        granted = struct.unpack_from("<IIII", kernel.init(SERVED_MINOR).body)[3]
        assert 0 == granted & (NO_OPENDIR_SUPPORT | AUTO_INVAL_DATA)
        assert (0, 0) == entry_timeouts(kernel.call(LOOKUP, name("d")))


def test_names_and_attributes_are_kept_for_a_day(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        assert (DAY, DAY) == entry_timeouts(kernel.call(LOOKUP, name("d")))


def test_a_removed_directory_is_one_entry_invalidation_of_its_name(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        d, _sub, _f = walk(kernel, "d", "sub", "f")
        files.change(files._remove_sub)
        settled = threading.Thread(target=files.invalidation.settle)
        settled.start()
        code, body = notification(kernel)
        settled.join(5)
        assert (NOTIFY_INVAL_ENTRY, INVAL_ENTRY_OUT + len(b"sub\0")) == (code, len(body))
        parent, namelen, flags = struct.unpack_from("<QII", body)
        assert (d, 3, 0, b"sub\0") == (parent, namelen, flags, body[INVAL_ENTRY_OUT:])
        assert kernel.silent()  # nothing for sub/f: the name's invalidation drops it


def test_a_changed_attribute_is_an_inode_invalidation_of_its_attributes(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        _d, ctl = walk(kernel, "d", "ctl")
        files.change(lambda: files.files.update({"/d/ctl": 0o600}))
        threading.Thread(target=files.invalidation.settle).start()
        code, body = notification(kernel)
        assert (NOTIFY_INVAL_INODE, INVAL_INODE_OUT) == (code, len(body))
        assert (ctl, -1, 0) == struct.unpack("<Qqq", body)  # off -1: attributes only


def test_a_changed_listing_drops_the_cached_pages_and_moves_the_mtime(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        (d,) = walk(kernel, "d")
        listed = kernel.call(READDIR, struct.pack("<QQI4xQI4x", 0, 0, 4096, 0, 0), d)
        assert [b".", b"..", b"ctl", b"sub"] == dirent_names_of(listed.body)
        files.change(files._remove_sub)
        threading.Thread(target=files.invalidation.settle).start()
        code, body = notification(kernel)
        assert (NOTIFY_INVAL_INODE, (d, 0, 0)) == (code, struct.unpack("<Qqq", body))
        assert kernel.silent()  # the kernel never looked sub up: no name to drop
        attr = kernel.call(GETATTR, bytes(16), d).body
        mtime = struct.unpack_from("<Q", attr, 16 + 32)[0]
        assert mtime > 10**9  # the listing's change time, not the directory's own


def test_a_write_that_changes_state_is_answered_after_its_invalidations(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        walk(kernel, "d", "sub")
        _d, ctl = walk(kernel, "d", "ctl")
        kernel.call(OPEN, bytes(8), ctl)
        unique = kernel.send(WRITE, struct.pack("<QQI4xQI4x", 1, 0, 4, 0, 0) + b"gone", ctl)
        first, second = kernel.reply(), kernel.reply()
        assert (0, NOTIFY_INVAL_ENTRY) == (first.unique, first.error)
        assert (unique, 0, 4) == (
            second.unique,
            second.error,
            struct.unpack("<I4x", second.body)[0],
        )
        assert 1 == files.invalidation.released


def test_a_write_that_changes_nothing_is_answered_at_once(files: Files) -> None:
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        _d, ctl = walk(kernel, "d", "ctl")
        unique = kernel.send(WRITE, struct.pack("<QQI4xQI4x", 1, 0, 2, 0, 0) + b"1\n", ctl)
        assert (unique, 1) == (kernel.reply().unique, files.invalidation.released)


def test_an_entry_read_across_a_change_is_not_kept(files: Files) -> None:
    getattr_then_change = files.getattr

    def racing(path: str, fh: int | None = None) -> dict[str, Any]:
        attrs = getattr_then_change(path, fh)
        if path == "/d":
            files.invalidation.generation += 1  # a change lands between read and reply
        return attrs

    files.getattr = racing  # type: ignore[method-assign]
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        assert (0, 0) == entry_timeouts(kernel.call(LOOKUP, name("d")))
        assert (DAY, DAY) == entry_timeouts(kernel.call(LOOKUP, name("ctl"), nodeid=2))


def test_a_cached_listing_resumes_by_its_serial_after_a_change(files: Files) -> None:
    files.files.update({f"/d/file{i:03}": 0o444 for i in range(200)})
    with served(files) as kernel:
        kernel.init(SERVED_MINOR)
        (d,) = walk(kernel, "d")
        first = kernel.call(READDIR, struct.pack("<QQI4xQI4x", 0, 0, 4096, 0, 0), d).body
        resume = struct.unpack_from("<Q", first, offset_of_last(first) + 8)[0]
        files.change(lambda: files.files.pop("/d/file000"))
        rest = kernel.call(READDIR, struct.pack("<QQI4xQI4x", 0, resume, 8192, 0, 0), d).body
        names = dirent_names_of(first) + dirent_names_of(rest)
        assert [b".", b"..", b"ctl", *(f"file{i:03}".encode() for i in range(200)), b"sub"] == names
        assert (
            b"" == kernel.call(READDIR, struct.pack("<QQI4xQI4x", 0, 7 << 32, 4096, 0, 0), d).body
        )


def dirent_names_of(listing: bytes) -> list[bytes]:
    """Names of fuse_dirent records whose d_off carry a serial: walked by record length."""
    names, offset = [], 0
    while offset < len(listing):
        _ino, _off, length, _kind = struct.unpack_from("<QQII", listing, offset)
        names.append(listing[offset + 24 : offset + 24 + length])
        offset += (24 + length + 7) // 8 * 8
    return names


def offset_of_last(listing: bytes) -> int:
    offset = last = 0
    while offset < len(listing):
        length = struct.unpack_from("<I", listing, offset + 16)[0]
        last, offset = offset, offset + (24 + length + 7) // 8 * 8
    return last
