"""The emulated kernel log: a bounded ring of printk records.

Records carry the printk level, a timestamp in microseconds since the daemon
started (what ``dmesg`` shows in brackets) and the text without its newline.
``pr_debug`` sites are filtered like dynamic debug: on by default for every
site except the per-task lines of ``klp_try_switch_task``, which is how the
kernel's livepatch selftests configure it.
"""

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, TextIO

from lpfs.kernel import dyndbg
from lpfs.kernel.clock import Clock

KERN_ERR: Final = 3
KERN_WARNING: Final = 4
KERN_NOTICE: Final = 5
KERN_INFO: Final = 6
KERN_DEBUG: Final = 7

DEFAULT_RING_BYTES: Final = 1 << 20
LOG_USER: Final = 1  # the facility of lines written to /dev/kmsg


@dataclass(frozen=True, slots=True)
class Record:
    """One kernel log line."""

    seq: int
    ts_usec: int
    level: int
    text: str
    facility: int = 0  # 0 for the kernel's own lines

    def dmesg(self) -> str:
        """The line as util-linux ``dmesg`` prints it."""
        secs, usecs = divmod(self.ts_usec, 1_000_000)
        return f"[{secs:5d}.{usecs:06d}] {self.text}"

    def json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def kmsg(self) -> str:
        """The record as a read of /dev/kmsg returns it."""
        return f"{self.facility * 8 + self.level},{self.seq},{self.ts_usec},-;{self.text}\n"


class KernelLog:
    """The ring buffer behind ``lpfs dmesg``.

    Thread-safe on its own lock, so readers never wait for the core's lock.
    """

    def __init__(
        self,
        clock: Clock,
        ring_bytes: int = DEFAULT_RING_BYTES,
        sink: Path | None = None,
        debug: bool = True,
    ) -> None:
        self._clock = clock
        self._boot = clock.monotonic()
        self._ring_bytes = ring_bytes
        self._records: deque[Record] = deque()
        self._bytes = 0
        self._next_seq = 0
        self._cond = threading.Condition()
        self._sink: TextIO | None = sink.open("a", encoding="utf-8") if sink else None
        self._holds = 0  # hold() calls not yet released
        self._held: list[Record] = []  # logged while held: not yet readable
        # The pr_debug sites dynamic debug lets through.
        self._boot_sites = frozenset(dyndbg.DEFAULT_ON if debug else ())
        self.debug_sites: set[dyndbg.Site] = set(self._boot_sites)
        self._debug_functions = {site.function for site in self.debug_sites}

    def printk(self, level: int, text: str, facility: int = 0) -> Record:
        """Append one line (without its newline) at a printk level."""
        with self._cond:
            ts = round((self._clock.monotonic() - self._boot) * 1_000_000)
            record = Record(self._next_seq, max(ts, 0), level, text, facility)
            self._next_seq += 1
            if self._holds:
                self._held.append(record)
            else:
                self._publish(record)
            return record

    def hold(self) -> Callable[[], None]:
        """Keep lines logged from now on from every reader (the ring, followers, the file)
        until the returned callable is called, and as long as any other hold lasts.

        A change's lines become readable only once the kernel's caches of the
        mount have dropped what the change made stale.
        """
        with self._cond:
            self._holds += 1

        def release() -> None:
            with self._cond:
                self._holds -= 1
                if self._holds:
                    return
                held, self._held = self._held, []
                for record in held:
                    self._publish(record)

        return release

    def _publish(self, record: Record) -> None:
        self._records.append(record)
        self._bytes += len(record.text) + 1
        while self._bytes > self._ring_bytes and len(self._records) > 1:
            self._bytes -= len(self._records.popleft().text) + 1
        if self._sink:
            self._sink.write(record.dmesg() + "\n")
            self._sink.flush()
        self._cond.notify_all()

    def pr_debug(self, function: str, text: str) -> None:
        """A ``pr_debug`` from kernel function ``function``, if dynamic debug lets it through.

        Sites are switched per function: a function's sites print together.
        """
        if function in self._debug_functions:
            self.printk(KERN_DEBUG, text)

    def reset_dynamic_debug(self) -> None:
        """The pr_debug sites as the daemon started with them."""
        with self._cond:
            self.debug_sites = set(self._boot_sites)
            self._debug_functions = {site.function for site in self.debug_sites}

    def dyndbg_control(self, query: str | None = None) -> str:
        """Apply a dynamic_debug/control query (if given); the control file's text after it."""
        with self._cond:
            if query is not None:
                dyndbg.apply(query, self.debug_sites)
                self._debug_functions = {site.function for site in self.debug_sites}
            return dyndbg.control_text(self.debug_sites)

    def records(self, after: int = -1) -> list[Record]:
        """Every record in the ring whose sequence number is greater than ``after``."""
        with self._cond:
            return [r for r in self._records if r.seq > after]

    def clear(self) -> None:
        """Empty the ring, like ``dmesg -C``; sequence numbers keep counting."""
        with self._cond:
            self._records.clear()
            self._bytes = 0

    def follow(self, after: int, stop: threading.Event) -> Iterator[Record]:
        """Yield records newer than ``after`` as they are logged, until ``stop`` is set."""
        while not stop.is_set():
            with self._cond:
                fresh = [r for r in self._records if r.seq > after]
                if not fresh:
                    self._cond.wait(0.2)
                    continue
            yield from fresh
            after = fresh[-1].seq

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._next_seq - 1

    def close(self) -> None:
        with self._cond:
            if self._sink:
                self._sink.close()
                self._sink = None
