"""Running bench/client.c and reading its one JSON line."""

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from procs import errno_name, run

OPS: Final = ("read", "stat", "write", "trunc", "readdir")
# A write of "1\n" to an enabled patch is EINVAL, on the kernel as on lpfs.
EXPECTED_ERRNO: Final = {"write": errno.EINVAL, "trunc": errno.EINVAL, "mixed": errno.EINVAL}


@dataclass
class ClientRun:
    """One run of the client: its throughput and what its operations returned."""

    ops_per_s: float
    ops: int
    ok: int
    expected: int
    errors: dict[str, int] = field(default_factory=dict)


def run_client(
    binary: Path,
    op: str,
    path: Path,
    *,
    procs: int = 1,
    seconds: float = 1.0,
    count: int | None = None,
) -> ClientRun:
    """Run ``op`` on ``path`` from ``procs`` processes for ``seconds`` (or ``count`` ops each)."""
    args = [str(binary), "-o", op, "-p", str(path), "-c", str(procs)]
    args += ["-n", str(count)] if count is not None else ["-t", str(seconds)]
    if op in EXPECTED_ERRNO:
        args += ["-e", str(EXPECTED_ERRNO[op])]
    data = json.loads(run(*args).stdout)
    return ClientRun(
        ops_per_s=float(data["ops_per_s"]),
        ops=int(data["ops"]),
        ok=int(data["ok"]),
        expected=int(data["expected"]),
        errors={errno_name(int(code)): int(n) for code, n in data["errors"].items()},
    )
