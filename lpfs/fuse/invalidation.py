"""What a state change made stale in the kernel's caches, and the messages that drop it.

The session records on each node what the kernel may keep of it: the
attributes of the last reply that carried a timeout, and the listing a
READDIR from offset 0 served. After a change, ``Invalidator`` compares
every node the kernel holds with the state and writes:

- ``FUSE_NOTIFY_INVAL_INODE`` for a node whose attributes or listing
  changed (fuse_reverse_inval_inode(): the attributes, and for a directory
  the pages its cached listing lives in);
- ``FUSE_NOTIFY_INVAL_ENTRY`` for the topmost name that went away:
  d_invalidate() in fuse_reverse_inval_entry() drops every unused name
  below it, so no per-file message is needed. A FUSE_NOTIFY_DELETE would
  also lock the child's inode, which a held write to it owns.

An entry invalidation locks the parent directory (fuse_reverse_inval_entry()),
so it waits for any LOOKUP or READDIR pending there, which waits for the
request loop. These messages are therefore written by the invalidator's
own thread, never the loop's and never under the state's lock, and the
loop serves on meanwhile; a write whose reply must follow them hands its
reply to this thread.
"""

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Final, Protocol

from lpfs.fuse.wire import (
    NOTIFY_INVAL_ENTRY,
    NOTIFY_INVAL_ENTRY_OUT,
    NOTIFY_INVAL_INODE,
    NOTIFY_INVAL_INODE_OUT,
)

if TYPE_CHECKING:
    from lpfs.fuse.session import Session

log = logging.getLogger(__name__)

Flush = Callable[[int, Callable[[], None]], None]


class State(Protocol):
    """An operations object's ``invalidation``: what the session needs of the state."""

    generation: int  # state changes so far

    def consistent(self) -> AbstractContextManager[object]:
        """A context in which the state holds still."""

    def changing(self) -> Callable[[], None]:
        """Called before a write; what it returns, once the write's changes are invalidated."""

    def attach(self, flush: Flush | None) -> None:
        """The session's ``flush(generation, done)``, or None once it ends."""


ATTRIBUTES_ONLY: Final = -1  # fuse_notify_inval_inode_out.off: keep the page cache
WHOLE_CACHE: Final = 0  # from offset 0, len 0: every cached page (a listing's)


def inval_inode(nodeid: int, offset: int) -> bytes:
    return NOTIFY_INVAL_INODE_OUT.pack(
        NOTIFY_INVAL_INODE_OUT.size, NOTIFY_INVAL_INODE, 0, nodeid, offset, 0
    )


def inval_entry(parent: int, name: str) -> bytes:
    encoded = os.fsencode(name)
    size = NOTIFY_INVAL_ENTRY_OUT.size + len(encoded) + 1
    header = NOTIFY_INVAL_ENTRY_OUT.pack(size, NOTIFY_INVAL_ENTRY, 0, parent, len(encoded), 0)
    return header + encoded + b"\0"


def stale(session: "Session") -> list[bytes]:
    """The messages that bring the kernel's caches in line with the state now.

    Called with the state held still (``consistent()``)."""
    changed: list[bytes] = []
    gone: dict[str, int] = {}
    for nodeid, node in session.nodes.copy().items():
        try:
            attrs = session.ops.getattr(node.path, None)
        except OSError:
            gone[node.path] = nodeid
            continue
        is_dir = stat.S_ISDIR(attrs.get("st_mode", 0))
        listing_changed = is_dir and session.listing_changed(node, attrs)
        told = node.attrs
        if listing_changed or (told is not None and told != session.fields(nodeid, attrs)):
            changed.append(inval_inode(nodeid, WHOLE_CACHE if is_dir else ATTRIBUTES_ONLY))
    for path in gone:
        parent, _, name = path.rpartition("/")
        parent = parent or "/"
        if parent in gone:
            continue  # its parent's invalidation drops it
        parent_id = session.node_ids.get(parent)
        if parent_id is not None:
            changed.append(inval_entry(parent_id, name))
    return changed


class Invalidator:
    """The thread that writes invalidations, and whatever must follow them."""

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._cond = threading.Condition()
        self._waiting: list[Callable[[], None]] = []
        self._flushed = -1  # the generation the last completed comparison started at
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="lpfs-invalidate", daemon=True)
        self._thread.start()

    def flush(self, generation: int, done: Callable[[], None]) -> None:
        """Call ``done`` (on this thread) once changes up to ``generation`` are invalidated."""
        with self._cond:
            if not self._stopped and self._flushed < generation:
                self._waiting.append(done)
                self._cond.notify()
                return
        done()

    def stop(self) -> None:
        """No more messages: whatever waits is done (the connection is gone)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                batch, self._waiting = self._waiting, []
                stopped = self._stopped
            if not stopped:
                state = self._session.state
                assert state is not None
                with state.consistent():
                    generation = state.generation
                    messages = stale(self._session)
                self._write(messages)
                with self._cond:
                    self._flushed = max(self._flushed, generation)
            for done in batch:
                done()
            if stopped:
                return

    def _write(self, messages: list[bytes]) -> None:
        for message in messages:
            try:
                os.write(self._session.fd, message)
            except OSError as exc:
                # ENOENT: the kernel holds no such node or name any more.
                if exc.errno in (errno.ENODEV, errno.ECONNABORTED):
                    return
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    log.warning("the kernel refused an invalidation: %s", exc.strerror)
