"""The thin FUSE adapter: fusepy-API callbacks routed onto ``sysfs.Tree``.

Only the operations sysfs answers are defined, so libfuse replies ENOSYS to
the rest once and the kernel stops asking. A ``KernelError`` is an OSError,
which the bindings answer with its errno (mapped into the range a FUSE reply
carries); anything unexpected is logged and answered with EIO, so the daemon
keeps serving.
"""

import errno
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lpfs.daemon.coherence import Coherence
from lpfs.errors import KernelError
from lpfs.fuse import binding
from lpfs.fuse.binding import FuseOSError
from lpfs.fuse.stats import RequestCounts
from lpfs.fuse.wire import reply_errno
from lpfs.sysfs.tree import Handle, Tree

log = logging.getLogger(__name__)


def mount_options(allow_other: bool = False) -> dict[str, Any]:
    """Every FUSE mount option lpfs uses, in one place.

    direct_io: a pseudo-file reporting 4096 bytes must not be served from the
    page cache. Zero timeouts: a binding that cannot tell the kernel what a
    change made stale (libfuse's) must have it ask again every time, so a
    freed patch is ENOENT at once; lpfs's own session, told of every change
    (``LivepatchFS.invalidation``), lets the kernel keep names and attributes
    instead. default_permissions with allow_other: other users get the
    kernel's own mode checks, as on sysfs.
    """
    options: dict[str, Any] = {
        "fsname": "lpfs",
        "subtype": "lpfs",
        "direct_io": True,
        "entry_timeout": 0,
        "attr_timeout": 0,
        "negative_timeout": 0,
    }
    if allow_other:
        options["allow_other"] = True
        options["default_permissions"] = True
    return options


Op = TypeVar("Op", bound=Callable[..., Any])


def errno_boundary(method: Op) -> Op:
    """The one error policy of the FUSE adapters, whatever the binding.

    The emulated kernel's KernelError and the adapters' own FuseOSError are
    answered with their errno, mapped to one a FUSE reply can carry (a
    kernel-internal ENOTSUPP 524 would reach libfuse as it is, and the kernel
    drops such a reply: the caller would wait for ever). Anything else,
    OSErrors of lpfs's own included, is a bug: logged, and answered EIO.
    """

    @functools.wraps(method)
    def call(*args: Any) -> Any:
        try:
            return method(*args)
        except FuseOSError as exc:
            code = reply_errno(exc.errno)
            if code == exc.errno:
                raise
            raise FuseOSError(code) from exc
        except KernelError as exc:
            raise FuseOSError(reply_errno(exc.errno)) from exc
        except Exception:
            log.exception("unexpected failure in FUSE operation %s%r", method.__name__, args[1:])
            raise FuseOSError(errno.EIO) from None

    return call  # type: ignore[return-value]


class LivepatchFS:
    """fusepy operations object; state lives in attributes no FUSE op is named after."""

    use_ns = True
    # open() ignores O_TRUNC as kernfs ignores the size change `echo >` makes.
    atomic_o_trunc = True

    def __init__(
        self,
        tree: Tree,
        invalidation: Coherence | None = None,
        on_init: Callable[[], None] = lambda: None,
        request_counts: RequestCounts | None = None,
    ) -> None:
        self._tree = tree
        # Told of every state change: lpfs's own session lets the kernel cache
        # names, attributes and listings, and invalidates what a change made stale.
        self.invalidation = invalidation
        self.request_counts = request_counts  # lpfs's own session counts requests here
        self._on_init = on_init
        self._handles: dict[int, Handle] = {}
        self._fh_counter = itertools.count(1)

    def __call__(self, op: str, *args: Any) -> Any:
        # fusepy dispatches through here; mfusepy calls the methods directly.
        return getattr(self, op)(*args)

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FuseOSError(errno.EBADF) from None

    def _new_handle(self, handle: Handle) -> int:
        fh = next(self._fh_counter)
        self._handles[fh] = handle
        return fh

    # -- callbacks -----------------------------------------------------------

    @errno_boundary
    def init(self, path: str) -> None:
        self._on_init()

    @errno_boundary
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        node = self._handles[fh].node if fh in self._handles else self._tree.lookup(path)
        return self._tree.stat(node)

    @errno_boundary
    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._tree.lookup(path)
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return [".", "..", *self._tree.entries(node)]

    @errno_boundary
    def open(self, path: str, flags: int) -> int:
        return self._new_handle(self._tree.open(path, flags))

    @errno_boundary
    def create(self, path: str, mode: int) -> int:
        # kernfs directories have no create operation: O_CREAT of a new name.
        raise FuseOSError(errno.EACCES)

    @errno_boundary
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._tree.read(self._handle(fh), size, offset)

    @errno_boundary
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self._tree.write(self._handle(fh), data)

    @errno_boundary
    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        # kernfs accepts a size change and ignores it (echo > truncates first).
        if self._tree.lookup(path).is_dir:
            raise FuseOSError(errno.EISDIR)

    @errno_boundary
    def chmod(self, path: str, mode: int) -> None:
        self._tree.setattr(path, mode=mode & 0o7777)

    @errno_boundary
    def chown(self, path: str, uid: int, gid: int) -> None:
        # -1 leaves that id as it is.
        self._tree.setattr(path, uid=None if uid < 0 else uid, gid=None if gid < 0 else gid)

    @errno_boundary
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        atime, mtime = times if times is not None else (time.time_ns(),) * 2
        self._tree.setattr(path, atime=int(atime), mtime=int(mtime))

    @errno_boundary
    def release(self, path: str, fh: int) -> None:
        self._handles.pop(fh, None)

    @errno_boundary
    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def mkdir(self, path: str, mode: int) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def rmdir(self, path: str) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def unlink(self, path: str) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def rename(self, old: str, new: str) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def symlink(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)

    @errno_boundary
    def link(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)


def serve(
    tree: Tree,
    coherence: Coherence,
    mountpoint: str,
    on_init: Callable[[], None],
    *,
    request_counts: RequestCounts | None = None,
    allow_other: bool = False,
    threaded: bool = False,
) -> None:
    """Mount and serve until unmounted or signalled (SIGINT/SIGTERM unmount cleanly)."""
    binding.serve(
        LivepatchFS(tree, coherence, on_init, request_counts),
        os.fspath(mountpoint),
        threaded=threaded,
        **mount_options(allow_other),
    )
