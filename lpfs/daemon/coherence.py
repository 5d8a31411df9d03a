"""The kernel's caches of the mount, kept in step with the emulated kernel.

lpfs's own FUSE session lets the kernel keep names, attributes and
directory listings, and tells it what each state change made stale
(``lpfs.fuse.invalidation``). This is the daemon's side of that: ``Coherence.generation``
counts state changes (an observer of ``Core.changed``, run under the core
lock), and a thread that changed state settles before anything can see the
change:

- a control command, before its reply (``settling()``);
- the retry timer, before the lines its try logged become readable
  (``change()``, installed as ``Core.changed.announce``);
- a FUSE write, before its reply: the session holds the reply (``changing()``).

With a libfuse binding nothing attaches, settling costs nothing, and the
mount's zero timeouts keep the kernel asking.
"""

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from lpfs.control.protocol import Handler, Reply
from lpfs.fuse.invalidation import Flush
from lpfs.kernel.core import Core

log = logging.getLogger(__name__)

T = TypeVar("T")
SETTLE_WARNING_SECONDS = 30.0  # an invalidation this slow is a bug worth a log line


class Coherence:
    """State changes, counted, and the wait until the kernel has dropped what they made stale."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.generation = 0  # state changes so far
        self._flush: Flush | None = None
        core.changed.observers.append(self._changed)
        core.changed.announce = self.change

    def _changed(self) -> None:
        self.generation += 1

    # -- the FUSE session's side ---------------------------------------------

    def attach(self, flush: Flush | None) -> None:
        """The session's ``flush(generation, done)``: it calls ``done`` once the kernel has
        dropped whatever changes up to ``generation`` made stale. None detaches."""
        self._flush = flush

    def consistent(self) -> AbstractContextManager[object]:
        """Inside, no state changes: the session compares what it told the kernel."""
        return self._core.lock

    def changing(self) -> Callable[[], None]:
        """Before a request that may change state: its log lines wait for the returned
        callable, which the session calls once the change is invalidated."""
        return self._core.log.hold()

    # -- the daemon's side -----------------------------------------------------

    def settle(self) -> None:
        """Return once every change so far is invalidated; at once with nothing attached.

        Called with the core lock released: the invalidations wait for requests
        that the session answers under it.
        """
        flush = self._flush
        if flush is None:
            return
        done = threading.Event()
        flush(self.generation, done.set)
        if not done.wait(SETTLE_WARNING_SECONDS):
            log.error("invalidating the kernel's caches takes over %.0f s", SETTLE_WARNING_SECONDS)
            done.wait()

    def change(self, work: Callable[[], T]) -> T:
        """Run a change made outside any request (the retry timer's try): its log lines
        become readable once what it made stale is invalidated."""
        release = self._core.log.hold()
        try:
            return work()
        finally:
            try:
                self.settle()
            finally:
                release()

    def settling(self, handler: Handler) -> Handler:
        """A control handler whose reply leaves only once its changes are invalidated."""

        def handle(request: dict[str, Any], send: Callable[[Reply], None]) -> Reply | None:
            try:
                return handler(request, send)
            finally:
                self.settle()

        return handle
