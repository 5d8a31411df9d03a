"""Requests per operation: what a FUSE stack counted across a client run, over its ops.

lpfs's session counts the requests it reads by opcode (`lpfs stats`, read
here through the control socket); the C baseline counts its libfuse
callbacks by name in its /requests file (LOOKUP and GETATTR both call
getattr). Neither reading makes a request that is counted.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path

T = TypeVar("T")
Counts = dict[str, int]
Reader = Callable[[], Counts]


def lpfs_reader(mountpoint: Path) -> Reader | None:
    """The counts of the lpfs daemon serving ``mountpoint``; None if it counts nothing
    (a libfuse binding serves it)."""
    client = Client(socket_path(mountpoint), timeout=10)

    def read() -> Counts:
        counts: Counts = client.call("stats")["data"]["fuse_requests"]
        return counts

    return read if client.call("stats")["data"]["fuse_requests"] is not None else None


def baseline_reader(mountpoint: Path) -> Reader:
    """The callback counts of a C baseline mounted at ``mountpoint``."""

    def read() -> Counts:
        lines = (mountpoint / "requests").read_text().splitlines()
        return {name: int(count) for name, count in (line.split() for line in lines)}

    return read


def difference(before: Counts, after: Counts) -> Counts:
    """What grew between two readings, by kind."""
    return {
        kind: count - before.get(kind, 0)
        for kind, count in after.items()
        if count > before.get(kind, 0)
    }


def per_op(runs: Iterable[Counts | None], ops: int) -> dict[str, float] | None:
    """Requests per operation by kind, and their ``total``, over runs of ``ops`` operations;
    None if a run was not counted."""
    summed: Counter[str] = Counter()
    for counts in runs:
        if counts is None:
            return None
        summed.update(counts)
    result = {kind: count / ops for kind, count in sorted(summed.items())} if ops else {}
    result["total"] = sum(summed.values()) / ops if ops else 0.0
    return result


def measured(reader: Reader | None, run: Callable[[], T]) -> tuple[T, Counts | None]:
    """Run ``run`` and return its result with the requests it made (None without a reader)."""
    if reader is None:
        return run(), None
    before = reader()
    result = run()
    return result, difference(before, reader())
