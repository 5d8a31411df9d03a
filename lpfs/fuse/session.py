"""The FUSE kernel protocol, spoken directly over /dev/fuse.

A binding with fusepy's interface (``FUSE``, ``FuseOSError``,
``fuse_get_context``) that serves the same path-based operations object
without libfuse: each request is one read of the device into a reused
buffer, a struct unpack, a call into the operations object and one write.
Through libfuse and ctypes every request also crosses a C-to-Python callback
and the binding's generic wrappers, which cost more than lpfs's own work;
here the kernel talks to Python directly. ``wire`` holds the layouts,
``mount`` the mount.

It behaves as libfuse 2's high-level API does for the operations lpfs uses:
node ids stand for paths (``st_ino`` is the node id), a missing operation is
ENOSYS (so the kernel stops sending flush and access requests), a directory
is listed once per open (and again on a rewind) and served by offset,
SIGINT/SIGTERM/SIGHUP unmount. Extended attributes read as on sysfs: none.
Single-threaded: requests are answered in order, and between them the session
waits awake for a moment before it sleeps.

Every request gets an answer the kernel takes: an errno in 1..511, a name
it accepts in a listing, replies sized for the protocol minor agreed at INIT
(7.12 and newer; an older kernel is refused and the session ends).

Names are cached only where that cannot show a stale state. An operations
object with an ``invalidation`` (see ``invalidation``) is told of every state
change: the kernel keeps every name, attribute and (with
FUSE_NO_OPENDIR_SUPPORT) listing, and the session invalidates what each
change made stale before the change can be seen. Otherwise the paths it
lists in ``stable_entries`` exist as long as the mount, so they are answered
with a long entry timeout and a path walk through them asks nothing, and
every other name and every attribute follows the mount's timeouts.

``invalidation`` is a ``invalidation.State``. An operations object's
``request_counts`` (a ``stats.RequestCounts``) is where the session
counts the requests it reads, one increment each.
"""

import bisect
import contextlib
import errno
import logging
import os
import select
import signal
import stat
import struct
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

from lpfs.errors import UnsupportedKernel
from lpfs.fuse.invalidation import Invalidator, State
from lpfs.fuse.mount import FuseMount
from lpfs.fuse.stats import RequestCounts
from lpfs.fuse.wire import (
    ABORT_ERROR,
    ASYNC_READ,
    ATOMIC_O_TRUNC,
    ATTR_OUT,
    AUTO_INVAL_DATA,
    BATCH_FORGET,
    BATCH_FORGET_IN,
    BIG_WRITES,
    CREATE,
    CREATE_IN,
    DESTROY,
    DIRENT,
    ENTRY_OUT,
    FATTR_ATIME,
    FATTR_ATIME_NOW,
    FATTR_FH,
    FATTR_GID,
    FATTR_MODE,
    FATTR_MTIME,
    FATTR_MTIME_NOW,
    FATTR_SIZE,
    FATTR_UID,
    FOPEN_DIRECT_IO,
    FOPEN_PARALLEL_DIRECT_WRITES,
    FORGET,
    FORGET_IN,
    FORGET_ONE,
    GETATTR,
    GETATTR_FH,
    GETATTR_IN,
    GETXATTR,
    GETXATTR_IN,
    GETXATTR_OUT,
    IN_HEADER,
    INIT,
    INIT_IN,
    INIT_OUT,
    INIT_OUT_22_SIZE,
    INIT_OUT_23_MINOR,
    INTERRUPT,
    KERNEL_VERSION,
    LINK,
    LINK_IN,
    LISTXATTR,
    LOOKUP,
    MINOR_VERSION,
    MKDIR,
    MKDIR_IN,
    MKNOD,
    MKNOD_IN,
    NO_OPENDIR_MINOR,
    NO_OPENDIR_SUPPORT,
    OLDEST_MINOR,
    OPCODES,
    OPEN,
    OPEN_IN,
    OPEN_OUT,
    OPENDIR,
    OUT_HEADER,
    PARALLEL_DIRECT_WRITES_MINOR,
    PARALLEL_DIROPS,
    READ,
    READDIR,
    READLINK,
    RELEASE,
    RELEASE_IN,
    RELEASEDIR,
    REMOVEXATTR,
    RENAME,
    RENAME2,
    RENAME2_IN,
    RENAME_IN,
    RMDIR,
    ROOT_ID,
    RW_IN,
    SETATTR,
    SETATTR_IN,
    SETXATTR,
    STATFS,
    STATFS_OUT,
    SYMLINK,
    UNLINK,
    WRITE,
    WRITE_IN_SIZE,
    WRITE_OUT,
    error_reply,
    reply_errno,
    sendable_name,
)

log = logging.getLogger(__name__)


class FuseOSError(OSError):
    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


# (uid, gid, pid) of the request being answered: one slot, as requests are answered in turn.
_context: list[tuple[int, int, int]] = [(0, 0, 0)]


def fuse_get_context() -> tuple[int, int, int]:
    """(uid, gid, pid) of the process whose request is being answered."""
    return _context[0]


MAX_WRITE: Final = 128 * 1024
BUFFER_SIZE: Final = MAX_WRITE + 4096  # a write request's header and data
UNKNOWN_INO: Final = 0xFFFFFFFF  # what libfuse puts in d_ino without use_ino
NSEC: Final = 1_000_000_000
MAX_LISTINGS: Final = 256  # packed directory listings kept for reuse
SPIN_SECONDS: Final = 50e-6  # awake after a reply, waiting for the next request
# entry_valid of a name that exists as long as the mount, and the timeouts of
# every name and attribute the session invalidates when it changes.
STABLE_TIMEOUT: Final = (86400, 0)
NO_TIMEOUT: Final = (0, 0)
SERIAL_SHIFT: Final = 32  # a cached listing's d_off: its serial, then the byte offset
READLINK_MAX: Final = 4095  # the kernel reads a link target into one page, NUL included
OLDEST_KERNEL: Final = "2.6.31"  # the first Linux release with FUSE 7.12
# What FUSE() takes, and the values the session implements where it implements only some.
OPTIONS: Final = {
    "fsname": None,
    "subtype": None,
    "direct_io": None,
    "entry_timeout": None,
    "attr_timeout": None,
    "allow_other": None,
    "default_permissions": None,
    "negative_timeout": {0},  # ENOENT is never cached: no negative entries are sent
    "foreground": {True},
    "nothreads": {True},  # one thread answers every request
}


class _Stop(Exception):
    """Raised by the signal handler to leave a read of the device."""


def _names(request: memoryview, start: int) -> list[str]:
    """The NUL-terminated names of a request body, decoded as listings encode them."""
    return [os.fsdecode(name) for name in bytes(request[start:]).split(b"\0")[:-1]]


class _Node:
    """A node the kernel holds, and what it may keep of it (with invalidations)."""

    __slots__ = ("attrs", "listing", "lookups", "mtime", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.lookups = 0
        self.attrs: tuple[int, ...] | None = None  # fuse_attr fields last sent with a timeout
        self.listing: _Listing | None = None  # what the last READDIR from offset 0 served
        # (mtime the operations object showed, mtime shown, listing): see listing_changed().
        self.mtime: tuple[Any, Any, tuple[tuple[str, int], ...]] | None = None


class _Listing:
    """A directory's names as fuse_dirent records, and where each record ends.

    A listing the kernel may cache has a serial in its offsets' upper bits:
    with no OPENDIR there is no handle to keep it by, and the kernel resumes
    a listing with an offset from it (from its cache, or after a change).
    """

    __slots__ = ("ends", "entries", "key", "serial")

    def __init__(self, entries: tuple[tuple[str, int], ...], serial: int = 0) -> None:
        self.key: tuple[tuple[str, int], ...] | None = entries
        self.serial = serial
        base = serial << SERIAL_SHIFT
        records = []
        self.ends = [0]
        for text, kind in entries:
            name = os.fsencode(text)
            if not sendable_name(name):  # one such name would fail the whole listing
                log.warning("a directory lists %r, which no kernel takes as a name", text)
                continue
            padded = (DIRENT.size + len(name) + 7) // 8 * 8
            self.ends.append(self.ends[-1] + padded)
            record = DIRENT.pack(UNKNOWN_INO, base + self.ends[-1], len(name), kind) + name
            records.append(record.ljust(padded, b"\0"))
        self.entries = b"".join(records)


_NO_LISTING: Final = _Listing(())  # what an offset into a forgotten listing resumes
# What a READDIR answered across a change leaves recorded: it matches no state.
_UNKNOWN_LISTING: Final = _Listing(())
_UNKNOWN_LISTING.key = None


class _Dir:
    """An open directory: its listing, taken at opendir and again at each rewind."""

    __slots__ = ("listing", "path", "started")

    def __init__(self, path: str, listing: _Listing) -> None:
        self.path = path
        self.listing = listing
        self.started = False  # a read at offset 0 after the first is a rewinddir()


class Session:
    """One connection: the device, the node table, and the request loop."""

    def __init__(self, operations: Any, options: dict[str, Any]) -> None:
        self.ops = operations
        self.options = options
        self.use_ns = bool(getattr(operations, "use_ns", False))
        self.entry_timeout = _seconds(options.get("entry_timeout", 1.0))
        self.attr_timeout = _seconds(options.get("attr_timeout", 1.0))
        self.stable = frozenset(getattr(operations, "stable_entries", ()))
        self.state: State | None = getattr(operations, "invalidation", None)
        self.invalidator: Invalidator | None = None  # once INIT is answered, with a state
        self.cached_listings = False  # FUSE_NO_OPENDIR_SUPPORT agreed: the kernel keeps listings
        self.listings: dict[tuple[Any, ...], _Listing] = {}
        self.listing_serials: dict[int, _Listing] = {}
        # An operations object that takes O_TRUNC in open() spares the kernel a setattr.
        # ABORT_ERROR tells an abort (ECONNABORTED) from an unmount (ENODEV) at a read.
        self.init_flags = ASYNC_READ | BIG_WRITES | PARALLEL_DIROPS | ABORT_ERROR
        if getattr(operations, "atomic_o_trunc", False):
            self.init_flags |= ATOMIC_O_TRUNC
        self.minor = 0  # the protocol minor agreed at INIT
        self.open_flags = 0  # FOPEN flags of every open, once the minor is known
        self.nodes: dict[int, _Node] = {ROOT_ID: _Node("/")}
        self.node_ids: dict[str, int] = {"/": ROOT_ID}
        self.next_node_id = ROOT_ID + 1
        self.dirs: dict[int, _Dir] = {}
        self.next_dir = 1
        self.fd = -1
        self.poller = select.poll()
        self.wakeup: tuple[int, int] | None = None  # the signal wakeup pipe
        self.previous_wakeup = -1
        self.stopping = False
        self.idle = False
        self.connection_ended = False  # unmounted or aborted: nothing is left to take down
        self.refusal: str | None = None  # why the kernel's protocol cannot be served
        self.handlers: list[Callable[[int, int, memoryview], bytes | None] | None] = [
            None
        ] * OPCODES
        counts = getattr(operations, "request_counts", None)
        self.request_counts = counts if isinstance(counts, RequestCounts) else RequestCounts()
        self.request_counts.counting = True
        for opcode, handler in self._table().items():
            self.handlers[opcode] = handler

    def _table(self) -> dict[int, Callable[[int, int, memoryview], bytes | None]]:
        return {
            INIT: self._init,
            DESTROY: self._destroy,
            LOOKUP: self._lookup,
            FORGET: self._forget,
            BATCH_FORGET: self._batch_forget,
            GETATTR: self._getattr,
            SETATTR: self._setattr,
            GETXATTR: self._getxattr,
            LISTXATTR: self._listxattr,
            SETXATTR: self._no_xattrs,
            REMOVEXATTR: self._no_xattrs,
            OPEN: self._open,
            READ: self._read,
            WRITE: self._write,
            RELEASE: self._release,
            OPENDIR: self._opendir,
            READDIR: self._readdir,
            RELEASEDIR: self._releasedir,
            STATFS: self._statfs,
            READLINK: self._readlink,
            CREATE: self._create,
            MKNOD: self._mknod,
            MKDIR: self._mkdir,
            UNLINK: self._unlink,
            RMDIR: self._rmdir,
            RENAME: self._rename,
            RENAME2: self._rename2,
            SYMLINK: self._symlink,
            LINK: self._link,
            INTERRUPT: _ignore,
        }

    # -- serving -------------------------------------------------------------

    def serve_at(self, mountpoint: str) -> None:
        """Mount, answer requests until unmounted or signalled, unmount what is lpfs's."""
        mount = FuseMount(mountpoint, self.options)
        previous = self._catch_signals()
        try:
            self.serve(mount.mount())
        finally:
            mount.close(self.connection_ended)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._release_wakeup()
        if hasattr(self.ops, "destroy"):
            self.ops.destroy("/")

    def serve(self, fd: int) -> None:
        """Answer the requests read from ``fd``, the device, until the connection ends.

        Raises UnsupportedKernel once the kernel's INIT has been refused.
        """
        self.fd = fd
        self.poller.register(fd, select.POLLIN)
        try:
            with contextlib.suppress(_Stop):
                self._loop()
        finally:
            if self.state is not None and self.invalidator is not None:
                self.state.attach(None)
                self.invalidator.stop()
        if self.refusal is not None:
            raise UnsupportedKernel(self.refusal)

    def _catch_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                    previous[signum] = signal.signal(signum, self._on_signal)
            previous[signal.SIGPIPE] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        except ValueError:  # not the main thread: the caller handles signals
            return previous
        # A signal that lands just before poll() starts would wait for the next
        # request; one written to this pipe wakes poll() however it lands.
        self.wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.previous_wakeup = signal.set_wakeup_fd(self.wakeup[1], warn_on_full_buffer=False)
        self.poller.register(self.wakeup[0], select.POLLIN)
        return previous

    def _release_wakeup(self) -> None:
        if self.wakeup is None:
            return
        signal.set_wakeup_fd(self.previous_wakeup)
        for fd in self.wakeup:
            os.close(fd)
        self.wakeup = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.idle:  # blocked reading the device: leave the read now
            raise _Stop

    def _loop(self) -> None:
        fd = self.fd
        # One buffer for every request: a fresh 132 KiB bytes object per read
        # would be an mmap, page faults and an munmap each time.
        buffer = bytearray(BUFFER_SIZE)
        view = memoryview(buffer)
        readv, write = os.readv, os.write
        unpack = IN_HEADER.unpack_from
        handlers = self.handlers
        requests = self.request_counts.by_opcode
        answer = self._answer
        os.set_blocking(fd, False)
        while not self.stopping:
            try:
                try:
                    length = readv(fd, (buffer,))
                except BlockingIOError:
                    length = self._await_request(buffer)
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ECONNABORTED):  # unmounted, or aborted
                    self._ended(exc)
                    return
                if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):  # interrupted
                    continue
                raise
            if length == 0:  # only a socket standing in for the device reads so: closed
                self.connection_ended = True
                return
            _length, opcode, unique, nodeid, uid, gid, pid = unpack(buffer)
            request = view[:length]
            _context[0] = (uid, gid, pid)
            if opcode < OPCODES:
                requests[opcode] += 1
                handler = handlers[opcode]
            else:
                handler = None
            if handler is None:
                reply: bytes | None = error_reply(unique, errno.ENOSYS)
            else:
                reply = answer(handler, opcode, unique, nodeid, request)
            if reply is None:
                continue
            try:
                write(fd, reply)
            except OSError as exc:
                self._refused(unique, exc)

    @staticmethod
    def _answer(
        handler: Callable[[int, int, memoryview], bytes | None],
        opcode: int,
        unique: int,
        nodeid: int,
        request: memoryview,
    ) -> bytes | None:
        """The handler's reply, or the error reply its failure calls for."""
        try:
            return handler(unique, nodeid, request)
        except OSError as exc:
            return error_reply(unique, reply_errno(exc.errno))
        except Exception:
            log.exception("unexpected failure answering FUSE opcode %d", opcode)
            return error_reply(unique, errno.EIO)

    def _send(self, unique: int, reply: bytes) -> bool:
        """Write one reply; False if the kernel did not take it."""
        try:
            os.write(self.fd, reply)
        except OSError as exc:
            self._refused(unique, exc)
            return False
        return True

    def _refused(self, unique: int, exc: OSError) -> None:
        """A reply the kernel refused: fail the request with EIO, so its caller never
        waits for an answer that will not come (fuse_dev_do_write() checks the header
        before it looks the request up)."""
        if exc.errno in (errno.ENODEV, errno.ECONNABORTED):
            self._ended(exc)
            return
        if exc.errno == errno.ENOENT:  # no such request pending: nothing waits for it
            return
        log.error("the kernel refused the reply to request %d: %s", unique, exc.strerror)
        try:
            os.write(self.fd, error_reply(unique, errno.EIO))
        except OSError as again:
            if again.errno in (errno.ENODEV, errno.ECONNABORTED):
                self._ended(again)

    def _ended(self, exc: OSError) -> None:
        if exc.errno == errno.ECONNABORTED:
            log.warning("the FUSE connection was aborted")
        self.connection_ended = True
        self.stopping = True

    def _await_request(self, buffer: bytearray) -> int:
        """Poll briefly for the next request, then sleep until one comes.

        A client's next request usually follows its reply within microseconds;
        waiting for it awake spares a sleep and a wakeup per request, which on
        a small VM cost more than the request itself.
        """
        deadline = time.monotonic() + SPIN_SECONDS
        while time.monotonic() < deadline and not self.stopping:
            try:
                return os.readv(self.fd, (buffer,))
            except BlockingIOError:
                pass
        self.idle = True
        try:
            if not self.stopping:
                self.poller.poll()
        finally:
            self.idle = False
        if self.wakeup is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wakeup[0], 512)  # the bytes only woke poll()
        return os.readv(self.fd, (buffer,))

    # -- nodes ---------------------------------------------------------------

    def _path(self, nodeid: int) -> str:
        try:
            return self.nodes[nodeid].path
        except KeyError:
            raise FuseOSError(errno.ENOENT) from None

    def _child(self, parent: int, name: str) -> str:
        return _join(self._path(parent), name)

    def _remember(self, path: str, nodeid: int) -> None:
        """Count a lookup of ``path``, as node ``nodeid`` (a new one if it is the next id)."""
        if nodeid == self.next_node_id:
            self.next_node_id += 1
            self.node_ids[path] = nodeid
            self.nodes[nodeid] = _Node(path)
        self.nodes[nodeid].lookups += 1

    def _drop(self, nodeid: int, count: int) -> None:
        node = self.nodes.get(nodeid)
        if node is None or nodeid == ROOT_ID:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self.nodes[nodeid]
            if self.node_ids.get(node.path) == nodeid:
                del self.node_ids[node.path]

    def _attr(self, nodeid: int, attrs: dict[str, Any]) -> tuple[int, ...]:
        """fuse_attr fields from a fusepy-style stat dict."""
        get = attrs.get
        atime, atime_ns = self._time(get("st_atime", 0))
        mtime, mtime_ns = self._time(get("st_mtime", 0))
        ctime, ctime_ns = self._time(get("st_ctime", 0))
        size = get("st_size", 0)
        return (
            nodeid, size, get("st_blocks", (size + 511) // 512),
            atime, mtime, ctime, atime_ns, mtime_ns, ctime_ns,
            get("st_mode", 0), get("st_nlink", 1), get("st_uid", 0), get("st_gid", 0),
            get("st_rdev", 0), get("st_blksize", 0), 0,
        )  # fmt: skip

    def _time(self, value: float) -> tuple[int, int]:
        if self.use_ns:
            return divmod(int(value), NSEC)
        seconds, fraction = divmod(value, 1)  # floors: before 1970 too
        return int(seconds), int(fraction * NSEC)

    def _entry(self, unique: int, path: str, attrs: dict[str, Any], since: int) -> bytes:
        """The entry of ``path``, whose ``attrs`` were read at generation ``since``."""
        nodeid = self.node_ids.get(path, self.next_node_id)
        fields = self.fields(nodeid, attrs)
        if self.state is not None:
            entry_timeout = attr_timeout = STABLE_TIMEOUT
        else:
            entry_timeout = STABLE_TIMEOUT if path in self.stable else self.entry_timeout
            attr_timeout = self.attr_timeout
        reply = self._pack_entry(unique, nodeid, entry_timeout, attr_timeout, fields)
        # Counted only once the reply exists: the kernel counts a lookup only if it gets one.
        self._remember(path, nodeid)
        if self._told(self.nodes[nodeid], fields, since):
            return reply
        return self._pack_entry(unique, nodeid, NO_TIMEOUT, NO_TIMEOUT, fields)

    def _entry_now(self, unique: int, path: str, fh: int | None = None) -> bytes:
        """The entry of ``path`` as it is now."""
        since = self._generation()
        return self._entry(unique, path, self.ops.getattr(path, fh), since)

    @staticmethod
    def _pack_entry(
        unique: int,
        nodeid: int,
        entry_timeout: tuple[int, int],
        attr_timeout: tuple[int, int],
        fields: tuple[int, ...],
    ) -> bytes:
        (valid, valid_ns), (attr_valid, attr_valid_ns) = entry_timeout, attr_timeout
        return ENTRY_OUT.pack(
            ENTRY_OUT.size, 0, unique, nodeid, 0, valid, attr_valid, valid_ns, attr_valid_ns,
            *fields,
        )  # fmt: skip

    def _attr_reply(self, unique: int, nodeid: int, attrs: dict[str, Any], since: int) -> bytes:
        """The attributes of node ``nodeid``, read at generation ``since``."""
        fields = self.fields(nodeid, attrs)
        node = self.nodes.get(nodeid)
        # The mountpoint's attributes are asked for every time: a stat of it is how
        # a mount whose daemon died is told (ENOTCONN), and it is rarely asked.
        if self.state is None:
            valid, valid_ns = self.attr_timeout
        elif nodeid != ROOT_ID and node is not None and self._told(node, fields, since):
            valid, valid_ns = STABLE_TIMEOUT
        else:
            valid, valid_ns = NO_TIMEOUT
        return ATTR_OUT.pack(ATTR_OUT.size, 0, unique, valid, valid_ns, 0, *fields)

    def _told(self, node: _Node, fields: tuple[int, ...], since: int) -> bool:
        """Record that the kernel may keep ``fields``: False if a change came since they
        were read, as the comparison after it may have missed this node (the kernel must
        then ask again)."""
        if self.state is None:
            return True
        node.attrs = fields
        if self.state.generation == since:
            return True
        node.attrs = None
        return False

    def _generation(self) -> int:
        """State changes so far (0 without invalidations): read before a reply's state."""
        return 0 if self.state is None else self.state.generation

    # -- invalidations -----------------------------------------------------------

    def fields(self, nodeid: int, attrs: dict[str, Any]) -> tuple[int, ...]:
        """fuse_attr fields of a node, with a directory's mtime moved by a listing change."""
        node = self.nodes.get(nodeid)
        if node is not None and node.mtime is not None:
            shown_by_ops, shown, _listing = node.mtime
            if attrs.get("st_mtime") == shown_by_ops:  # else utime set it since
                attrs = {**attrs, "st_mtime": shown}
        return self._attr(nodeid, attrs)

    def listing_changed(self, node: _Node, attrs: dict[str, Any]) -> bool:
        """Whether the listing the kernel may keep of a directory differs from its state.

        The directory's mtime then moves: fuse_readdir_cached() drops a cached
        listing whose mtime differs from the directory's (with
        FUSE_AUTO_INVAL_DATA it asks for the mtime first), which covers a
        listing read before the change but cached after its invalidation.
        """
        told = node.listing
        if told is None:
            return False
        key = self._listing_key(node.path)
        if key == told.key:
            return False
        if node.mtime is None or node.mtime[2] != key:
            mtime = attrs.get("st_mtime", 0)
            previous = mtime if node.mtime is None else node.mtime[1]
            now = time.time_ns() if self.use_ns else time.time()
            tick = 1 if self.use_ns else 1e-6
            node.mtime = (mtime, max(now, previous + tick), key)
        return True

    def _existing(self, nodeid: int) -> str:
        """The node's path, if it still resolves (ENOENT otherwise)."""
        path = self._path(nodeid)
        self.ops.getattr(path, None)
        return path

    def _new_name(self, parent: int, name: str) -> str:
        """The path a namespace call would create or remove, under a parent that exists."""
        return _join(self._existing(parent), name)

    def _op(self, name: str) -> Callable[..., Any]:
        method = getattr(self.ops, name, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        return method  # type: ignore[no-any-return]

    # -- requests ------------------------------------------------------------

    def _init(self, unique: int, nodeid: int, request: memoryview) -> bytes | None:
        major, minor, max_readahead, flags = INIT_IN.unpack_from(request, 40)
        if major > KERNEL_VERSION:  # the kernel answers with an INIT of lpfs's major
            return INIT_OUT.pack(INIT_OUT.size, 0, unique, KERNEL_VERSION, MINOR_VERSION, *(0,) * 9)
        if major < KERNEL_VERSION or minor < OLDEST_MINOR:
            self.refusal = (
                f"the kernel speaks FUSE {major}.{minor}; lpfs needs "
                f"{KERNEL_VERSION}.{OLDEST_MINOR} or newer (Linux {OLDEST_KERNEL})"
            )
            self.stopping = True
            return error_reply(unique, errno.EPROTO)
        self.minor = min(minor, MINOR_VERSION)
        self.open_flags = self._open_flags()
        granted = flags & self.init_flags
        # Listings the kernel keeps without an OPENDIR, checked against the
        # directory's mtime at each start (fuse_readdir_cached()).
        cached_listings = NO_OPENDIR_SUPPORT | AUTO_INVAL_DATA
        if self.state is not None and self.minor >= NO_OPENDIR_MINOR:
            self.cached_listings = flags & cached_listings == cached_listings
            granted |= cached_listings if self.cached_listings else 0
        reply = INIT_OUT.pack(
            INIT_OUT.size, 0, unique, KERNEL_VERSION, self.minor,
            max_readahead, granted, 0, 0, MAX_WRITE, 0, 0, 0, 0,
        )  # fmt: skip
        if self.minor < INIT_OUT_23_MINOR:  # fuse_init_out before time_gran came
            body = reply[16 : 16 + INIT_OUT_22_SIZE]
            reply = OUT_HEADER.pack(16 + len(body), 0, unique) + body
        # The kernel takes the mount as ready on this reply: answer before init runs.
        if not self._send(unique, reply):
            self.refusal = "the kernel refused lpfs's answer to its INIT"
            self.stopping = True
            return None
        if self.state is not None and self.invalidator is None:
            self.invalidator = Invalidator(self)
            self.handlers[WRITE] = self._held_write
            self.state.attach(self.invalidator.flush)
        if hasattr(self.ops, "init"):
            try:
                self.ops.init("/")
            except Exception:  # the kernel has its answer already: only the log can tell
                log.exception("the operations object's init failed")
        return None

    def _open_flags(self) -> int:
        if not self.options.get("direct_io"):
            return 0
        # Parallel writes to one file, as kernfs allows (it locks per open file, not per
        # inode): writers queue their requests here instead of on the inode's lock.
        if self.minor >= PARALLEL_DIRECT_WRITES_MINOR:
            return FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES
        return FOPEN_DIRECT_IO

    def _destroy(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        self.stopping = True
        return OUT_HEADER.pack(16, 0, unique)

    def _lookup(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        path = self._child(nodeid, _names(request, 40)[0])
        return self._entry_now(unique, path)

    def _forget(self, unique: int, nodeid: int, request: memoryview) -> None:
        self._drop(nodeid, FORGET_IN.unpack_from(request, 40)[0])

    def _batch_forget(self, unique: int, nodeid: int, request: memoryview) -> None:
        (count,) = BATCH_FORGET_IN.unpack_from(request, 40)
        for index in range(count):
            self._drop(*FORGET_ONE.unpack_from(request, 48 + index * FORGET_ONE.size))

    def _getattr(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        flags, _, fh = GETATTR_IN.unpack_from(request, 40)
        since = self._generation()
        attrs = self.ops.getattr(self._path(nodeid), fh if flags & GETATTR_FH else None)
        return self._attr_reply(unique, nodeid, attrs, since)

    def _setattr(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (valid, fh, size, _owner, atime, mtime, _ctime, atime_ns, mtime_ns, _ctime_ns,
         mode, uid, gid) = SETATTR_IN.unpack_from(request, 40)  # fmt: skip
        path = self._path(nodeid)
        handle = fh if valid & FATTR_FH else None
        since = self._generation()
        if valid & FATTR_MODE:
            self._op("chmod")(path, mode)
        if valid & (FATTR_UID | FATTR_GID):
            self._op("chown")(
                path, uid if valid & FATTR_UID else -1, gid if valid & FATTR_GID else -1
            )
        if valid & FATTR_SIZE:
            self._op("truncate")(path, size, handle)
        if valid & (FATTR_ATIME | FATTR_MTIME):
            times = self._times(path, valid, (atime, atime_ns), (mtime, mtime_ns))
            self._op("utimens")(path, times)
        return self._attr_reply(unique, nodeid, self.ops.getattr(path, handle), since)

    def _times(
        self, path: str, valid: int, atime: tuple[int, int], mtime: tuple[int, int]
    ) -> tuple[float, float]:
        """utimens' (atime, mtime): a time not being set keeps its current value."""
        current = self.ops.getattr(path, None)
        now = time.time_ns() if self.use_ns else time.time()

        def pick(bit: int, now_bit: int, given: tuple[int, int], key: str) -> float:
            if valid & now_bit:
                return now
            if valid & bit:
                seconds, nanos = given
                return seconds * NSEC + nanos if self.use_ns else seconds + nanos / NSEC
            return current.get(key, 0)  # type: ignore[no-any-return]

        return (
            pick(FATTR_ATIME, FATTR_ATIME_NOW, atime, "st_atime"),
            pick(FATTR_MTIME, FATTR_MTIME_NOW, mtime, "st_mtime"),
        )

    def _open(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (flags,) = OPEN_IN.unpack_from(request, 40)[:1]
        fh = self.ops.open(self._path(nodeid), flags)
        return OPEN_OUT.pack(OPEN_OUT.size, 0, unique, fh, self.open_flags, 0)

    def _read(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        fh, offset, size = RW_IN.unpack_from(request, 40)
        data: bytes = self.ops.read(self._path(nodeid), size, offset, fh)[:size]
        return OUT_HEADER.pack(16 + len(data), 0, unique) + data

    def _write(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        fh, offset, size = RW_IN.unpack_from(request, 40)
        data = bytes(request[WRITE_IN_SIZE + 40 : WRITE_IN_SIZE + 40 + size])
        written = self.ops.write(self._path(nodeid), data, offset, fh)
        return WRITE_OUT.pack(WRITE_OUT.size, 0, unique, written, 0)

    def _held_write(self, unique: int, nodeid: int, request: memoryview) -> None:
        """A write whose reply leaves only once what it changed is invalidated.

        The invalidator's thread sends the reply; the loop serves on meanwhile,
        since an entry invalidation may wait for requests only it answers.
        """
        state = self.state
        assert state is not None and self.invalidator is not None
        since = state.generation
        changed = state.changing()
        reply = self._answer(self._write, WRITE, unique, nodeid, request)
        assert reply is not None
        if state.generation == since:
            changed()
            self._send(unique, reply)
            return

        def deliver() -> None:
            # Its log lines first, as the kernel prints them before the write returns;
            # the reply then finds them readable.
            changed()
            self._send(unique, reply)

        self.invalidator.flush(state.generation, deliver)

    def _release(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (fh,) = RELEASE_IN.unpack_from(request, 40)
        if hasattr(self.ops, "release"):
            self.ops.release(self.nodes[nodeid].path if nodeid in self.nodes else None, fh)
        return OUT_HEADER.pack(16, 0, unique)

    def _opendir(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        if self.cached_listings:  # the kernel opens directories itself from now on
            raise FuseOSError(errno.ENOSYS)
        path = self._path(nodeid)
        listing = self._listing(path)
        handle = self.next_dir
        self.dirs[handle] = _Dir(path, listing)
        self.next_dir += 1
        return OPEN_OUT.pack(OPEN_OUT.size, 0, unique, handle, 0, 0)

    def _listing_key(self, path: str) -> tuple[tuple[str, int], ...]:
        return tuple(map(_entry_kind, self.ops.readdir(path, 0)))

    def _listing(self, path: str) -> _Listing:
        """The packed entries of a directory, shared by every open of the same listing."""
        entries = self._listing_key(path)
        listing = self.listings.get(entries)
        if listing is None:
            if len(self.listings) >= MAX_LISTINGS:
                self.listings.clear()
                self.listing_serials.clear()
            serial = len(self.listing_serials) + 1 if self.cached_listings else 0
            listing = self.listings[entries] = _Listing(entries, serial)
            if serial:
                self.listing_serials[serial] = listing
        return listing

    def _readdir(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        fh, offset, size = RW_IN.unpack_from(request, 40)
        if self.cached_listings:
            listing, start = self._kept_listing(nodeid, offset)
        else:
            directory = self.dirs.get(fh)
            if directory is None:
                raise FuseOSError(errno.EBADF)
            if offset == 0 and directory.started:  # rewinddir(): list afresh
                directory.listing = self._listing(directory.path)
            directory.started = True
            listing, start = directory.listing, offset
        # Offsets are byte positions in the packed listing; a reply ends on an entry.
        last = bisect.bisect_right(listing.ends, start + size) - 1
        end = max(start, listing.ends[last])
        return OUT_HEADER.pack(16 + end - start, 0, unique) + listing.entries[start:end]

    def _kept_listing(self, nodeid: int, offset: int) -> tuple[_Listing, int]:
        """The listing a READDIR without OPENDIR reads, and where in it.

        Offset 0 lists afresh, recorded as what the kernel may keep; any other
        offset resumes the listing its serial names, or ends the listing if
        that one was forgotten (after MAX_LISTINGS others).
        """
        if offset:
            listing = self.listing_serials.get(offset >> SERIAL_SHIFT, _NO_LISTING)
            return listing, offset & ((1 << SERIAL_SHIFT) - 1)
        state, invalidator = self.state, self.invalidator
        assert state is not None and invalidator is not None
        since = state.generation
        path = self._path(nodeid)
        listing = self._listing(path)
        node = self.nodes.get(nodeid)
        if node is not None:
            node.listing = listing
            if state.generation != since:  # the comparison after that change may have missed it
                node.listing = _UNKNOWN_LISTING
                invalidator.flush(state.generation, _done)
        return listing, 0

    def _getxattr(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        self._existing(nodeid)
        raise FuseOSError(errno.ENODATA)  # sysfs attributes carry no extended attributes

    def _listxattr(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        self._existing(nodeid)
        (size,) = GETXATTR_IN.unpack_from(request, 40)
        if size == 0:  # the caller asks how long the list is
            return GETXATTR_OUT.pack(GETXATTR_OUT.size, 0, unique, 0)
        return OUT_HEADER.pack(16, 0, unique)

    def _no_xattrs(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        self._existing(nodeid)
        raise FuseOSError(errno.EOPNOTSUPP)

    def _releasedir(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (fh,) = RELEASE_IN.unpack_from(request, 40)
        self.dirs.pop(fh, None)
        return OUT_HEADER.pack(16, 0, unique)

    def _statfs(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        if hasattr(self.ops, "statfs"):
            fields = self.ops.statfs(self._path(nodeid))
        else:  # libfuse's answer for a filesystem without statfs
            fields = {"f_bsize": 512, "f_namemax": 255}
        get = fields.get
        return STATFS_OUT.pack(
            STATFS_OUT.size, 0, unique,
            get("f_blocks", 0), get("f_bfree", 0), get("f_bavail", 0),
            get("f_files", 0), get("f_ffree", 0),
            get("f_bsize", 512), get("f_namemax", 255), get("f_frsize", 0), 0,
        )  # fmt: skip

    def _readlink(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        target = os.fsencode(self._op("readlink")(self._path(nodeid)))[:READLINK_MAX]
        return OUT_HEADER.pack(16 + len(target), 0, unique) + target

    def _create(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        _flags, mode = CREATE_IN.unpack_from(request, 40)
        path = self._new_name(nodeid, _names(request, 40 + CREATE_IN.size)[0])
        fh = self._op("create")(path, mode)
        entry = self._entry_now(unique, path, fh)
        opened = OPEN_OUT.pack(0, 0, 0, fh, self.open_flags, 0)[16:]
        return struct.pack("<I", len(entry) + len(opened)) + entry[4:] + opened

    def _mknod(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        mode, rdev = MKNOD_IN.unpack_from(request, 40)
        path = self._new_name(nodeid, _names(request, 40 + MKNOD_IN.size)[0])
        if stat.S_ISREG(mode) and hasattr(self.ops, "create"):  # as libfuse does
            fh = self.ops.create(path, mode)
            if hasattr(self.ops, "release"):
                self.ops.release(path, fh)
        else:
            self._op("mknod")(path, mode, rdev)
        return self._entry_now(unique, path)

    def _mkdir(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (mode,) = MKDIR_IN.unpack_from(request, 40)
        path = self._new_name(nodeid, _names(request, 40 + MKDIR_IN.size)[0])
        self._op("mkdir")(path, mode)
        return self._entry_now(unique, path)

    def _unlink(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        path = self._new_name(nodeid, _names(request, 40)[0])
        self._op("unlink")(path)
        self._unlinked(path)
        return OUT_HEADER.pack(16, 0, unique)

    def _rmdir(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        path = self._new_name(nodeid, _names(request, 40)[0])
        self._op("rmdir")(path)
        self._unlinked(path)
        return OUT_HEADER.pack(16, 0, unique)

    def _unlinked(self, path: str) -> None:
        # The kernel may still hold the node (an open file); a new name at the
        # path must get a node of its own.
        self.node_ids.pop(path, None)

    def _rename(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (newdir,) = RENAME_IN.unpack_from(request, 40)
        return self._rename_names(unique, nodeid, newdir, _names(request, 40 + RENAME_IN.size))

    def _rename2(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        newdir, flags = RENAME2_IN.unpack_from(request, 40)
        if flags:
            raise FuseOSError(errno.EINVAL)
        return self._rename_names(unique, nodeid, newdir, _names(request, 40 + RENAME2_IN.size))

    def _rename_names(self, unique: int, old: int, new: int, names: list[str]) -> bytes:
        source, target = self._new_name(old, names[0]), self._new_name(new, names[1])
        self._op("rename")(source, target)
        self._unlinked(target)
        # The kernel moved the dentries: the nodes under the old name follow them.
        moved = [
            (nodeid, node)
            for nodeid, node in self.nodes.items()
            if node.path == source or node.path.startswith(source + "/")
        ]
        for nodeid, node in moved:
            if self.node_ids.get(node.path) == nodeid:
                del self.node_ids[node.path]
            node.path = target + node.path[len(source) :]
        for nodeid, node in moved:
            self.node_ids[node.path] = nodeid
        return OUT_HEADER.pack(16, 0, unique)

    def _symlink(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        name, target = _names(request, 40)
        path = self._new_name(nodeid, name)
        self._op("symlink")(path, target)
        return self._entry_now(unique, path)

    def _link(self, unique: int, nodeid: int, request: memoryview) -> bytes:
        (old,) = LINK_IN.unpack_from(request, 40)
        path = self._new_name(nodeid, _names(request, 40 + LINK_IN.size)[0])
        self._op("link")(path, self._path(old))
        return self._entry_now(unique, path)


def _entry_kind(item: Any) -> tuple[str, int]:
    """(name, d_type) of a readdir item: a name, or fusepy's (name, attrs, offset)."""
    if isinstance(item, str):
        return item, 0  # DT_UNKNOWN, as libfuse sends without attributes
    attrs = item[1] or {}
    return item[0], stat.S_IFMT(attrs.get("st_mode", 0)) >> 12


def _join(base: str, name: str) -> str:
    return "/" + name if base == "/" else f"{base}/{name}"


def _ignore(unique: int, nodeid: int, request: memoryview) -> None:
    return None


def _done() -> None:
    """Nothing waits for this invalidation."""


def _seconds(value: float) -> tuple[int, int]:
    whole = int(value)
    return whole, int((value - whole) * NSEC)


def FUSE(operations: Any, mountpoint: str, **options: Any) -> None:
    """Serve ``operations`` at ``mountpoint`` until unmounted (fusepy's call shape)."""
    for name, value in options.items():
        if name not in OPTIONS:
            raise ValueError(f"lpfs's FUSE session has no option {name!r}")
        allowed = OPTIONS[name]
        if allowed is not None and value not in allowed:
            raise ValueError(f"lpfs's FUSE session implements {name} only as {min(allowed)!r}")
    Session(operations, options).serve_at(mountpoint)
