"""lpfs's own FUSE session, on a real mount of a small operations object.

What the session adds to the bare protocol: stable names the kernel may
cache while every other name is looked up afresh, listings served by offset,
O_TRUNC in open, node ids that follow unlinks, the errno of every failure,
and a session that keeps serving after an operation fails.
"""

import errno
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import require_fuse

from lpfs.fuse import mounttable, session
from lpfs.fuse.session import FuseOSError


class Files:
    """A tree of directories and text files, counting the calls it gets."""

    use_ns = False
    stable_entries = frozenset({"/d"})
    atomic_o_trunc = True

    def __init__(self) -> None:
        self.dirs = {"/", "/d", "/d/e"}
        self.files = {"/d/f": b"text\n", "/d/e/g": b""}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.open_flags: list[int] = []

    def _kind(self, path: str) -> str:
        if path in self.dirs:
            return "dir"
        if path in self.files:
            return "file"
        raise FuseOSError(errno.ENOENT)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self.calls["getattr", path] += 1
        if self._kind(path) == "dir":
            return {"st_mode": 0o40755, "st_nlink": 2}
        return {"st_mode": 0o100644, "st_nlink": 1, "st_size": len(self.files[path])}

    def readdir(self, path: str, fh: int) -> list[str]:
        self.calls["readdir", path] += 1
        if self._kind(path) != "dir":
            raise FuseOSError(errno.ENOTDIR)
        prefix = path.rstrip("/") + "/"
        children = {p[len(prefix) :].split("/")[0] for p in self.dirs | set(self.files)}
        return [".", "..", *sorted(c for c in children if c)]

    def open(self, path: str, flags: int) -> int:
        self._kind(path)
        self.open_flags.append(flags)
        return 7

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path == "/d/boom":
            raise ValueError("a bug in the operations object")
        return self.files[path][offset : offset + size]

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.files[path] = data
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self.calls["truncate", path] += 1

    def mkdir(self, path: str, mode: int) -> None:
        raise FuseOSError(errno.EPERM)

    def unlink(self, path: str) -> None:
        del self.files[path]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Files, Path]]:
    """Files mounted by a session in a thread; unmounted whatever happens."""
    require_fuse()
    files = Files()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    thread = threading.Thread(
        target=session.FUSE,
        args=(files, str(mnt)),
        kwargs={"direct_io": True, "entry_timeout": 0, "attr_timeout": 0},
        daemon=True,
    )
    thread.start()
    try:
        for _ in range(500):
            if mounttable.is_mounted(mnt):
                break
            thread.join(0.01)
        assert mounttable.is_mounted(mnt)
        yield files, mnt
    finally:
        mounttable.unmount(mnt, lazy=True)
        thread.join(10)
    assert not thread.is_alive()


def access_or_enoent(path: Path) -> None:
    if not os.access(path, os.F_OK):
        raise FileNotFoundError(errno.ENOENT, "access(F_OK) is false", str(path))


def errno_of(call: Any) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_a_stable_name_is_walked_through_and_any_other_is_looked_up_again(
    served: tuple[Files, Path],
) -> None:
    files, mnt = served
    os.stat(mnt / "d" / "f")
    before = files.calls.copy()
    os.stat(mnt / "d" / "f")
    os.stat(mnt / "d" / "f")
    assert (0, 4) == (  # each stat: f's lookup, then its getattr
        files.calls["getattr", "/d"] - before["getattr", "/d"],
        files.calls["getattr", "/d/f"] - before["getattr", "/d/f"],
    )


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("stat", lambda p: os.stat(p / "d" / "e")),
        ("stat child", lambda p: os.stat(p / "d" / "e" / "g")),
        ("open", lambda p: os.close(os.open(p / "d" / "e" / "g", os.O_RDONLY))),
        ("O_PATH open", lambda p: os.close(os.open(p / "d" / "e", os.O_PATH))),
        ("access", lambda p: access_or_enoent(p / "d" / "e")),
        ("chdir", lambda p: os.chdir(p / "d" / "e")),
        ("listdir", lambda p: os.listdir(p / "d" / "e")),
        ("listxattr", lambda p: os.listxattr(p / "d" / "e")),
        ("statvfs", lambda p: os.statvfs(p / "d" / "e")),
        ("mkdir inside", lambda p: os.mkdir(p / "d" / "e" / "new")),
    ],
)
def test_a_removed_name_is_enoent_at_once(served: tuple[Files, Path], name: str, call: Any) -> None:
    files, mnt = served
    os.stat(mnt / "d" / "e" / "g")  # the kernel has seen every name on the way
    files.dirs.discard("/d/e")
    del files.files["/d/e/g"]
    cwd = os.getcwd()
    try:
        assert errno.ENOENT == errno_of(lambda: call(mnt))
    finally:
        os.chdir(cwd)


def test_a_name_that_comes_back_is_seen_at_once(served: tuple[Files, Path]) -> None:
    files, mnt = served
    os.stat(mnt / "d" / "f")
    saved = files.files.pop("/d/f")
    assert errno.ENOENT == errno_of(lambda: os.stat(mnt / "d" / "f"))
    files.files["/d/f"] = saved + b"again\n"
    assert b"text\nagain\n" == (mnt / "d" / "f").read_bytes()


def test_a_name_unlinked_while_open_comes_back_as_a_new_node(
    served: tuple[Files, Path],
) -> None:
    files, mnt = served
    fd = os.open(mnt / "d" / "f", os.O_RDONLY)
    try:
        before = os.stat(mnt / "d" / "f").st_ino
        os.unlink(mnt / "d" / "f")
        files.files["/d/f"] = b"new\n"
        assert before != os.stat(mnt / "d" / "f").st_ino
    finally:
        os.close(fd)


def test_o_trunc_reaches_open_and_no_truncate_follows(served: tuple[Files, Path]) -> None:
    files, mnt = served
    fd = os.open(mnt / "d" / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)
    assert (os.O_TRUNC, 0) == (files.open_flags[-1] & os.O_TRUNC, files.calls["truncate", "/d/f"])
    os.truncate(mnt / "d" / "f", 0)  # a truncate of its own still arrives
    assert 1 == files.calls["truncate", "/d/f"]


def test_a_long_listing_comes_in_pieces_and_whole(served: tuple[Files, Path]) -> None:
    files, mnt = served
    names = [f"entry-{i:05d}-{'x' * (i % 40)}" for i in range(3000)]
    files.files.update({f"/d/{name}": b"" for name in names})
    assert sorted(["e", "f", *names]) == sorted(os.listdir(mnt / "d"))
    with os.scandir(mnt / "d") as first, os.scandir(mnt / "d") as second:
        assert sorted(e.name for e in first) == sorted(e.name for e in second)


def test_a_listing_that_changed_between_opens_is_read_afresh(
    served: tuple[Files, Path],
) -> None:
    files, mnt = served
    listings = [sorted(os.listdir(mnt / "d")) for _ in range(2)]
    files.files["/d/h"] = b""
    listings.append(sorted(os.listdir(mnt / "d")))
    del files.files["/d/f"]
    listings.append(sorted(os.listdir(mnt / "d")))
    assert [["e", "f"], ["e", "f"], ["e", "f", "h"], ["e", "h"]] == listings


def test_a_rewound_directory_is_listed_afresh(served: tuple[Files, Path]) -> None:
    files, mnt = served
    fd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # scandir() of a descriptor shares its offset and rewinds it when done.
        with os.scandir(fd) as entries:
            first = sorted(e.name for e in entries)
        files.files["/d/h"] = b""
        with os.scandir(fd) as entries:
            second = sorted(e.name for e in entries)
    finally:
        os.close(fd)
    assert (["e", "f"], ["e", "f", "h"]) == (first, second)


def test_xattrs_read_as_on_sysfs(served: tuple[Files, Path]) -> None:
    _, mnt = served
    assert ([], errno.ENODATA, errno.EOPNOTSUPP) == (
        os.listxattr(mnt / "d" / "f"),
        errno_of(lambda: os.getxattr(mnt / "d" / "f", "user.x")),
        errno_of(lambda: os.setxattr(mnt / "d" / "f", "user.x", b"1")),
    )


def test_failures_carry_their_errno_and_the_session_keeps_serving(
    served: tuple[Files, Path],
) -> None:
    files, mnt = served
    files.files["/d/boom"] = b""
    assert (errno.EIO, errno.EPERM, errno.ENOENT) == (
        errno_of((mnt / "d" / "boom").read_bytes),
        errno_of(lambda: os.mkdir(mnt / "d" / "new")),
        errno_of(lambda: os.stat(mnt / "nothing")),
    )
    assert b"text\n" == (mnt / "d" / "f").read_bytes()
