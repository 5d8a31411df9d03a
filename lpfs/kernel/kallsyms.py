"""vmlinux's function names from /proc/kallsyms, for `lpfs mount --symbols host`."""

from collections import Counter
from pathlib import Path


class Kallsyms:
    """How many text symbols of each name vmlinux has (module symbols excluded)."""

    def __init__(self, path: Path = Path("/proc/kallsyms")) -> None:
        counts: Counter[str] = Counter()
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 3 and fields[1] in ("t", "T"):
                    counts[fields[2]] += 1
        self._counts = counts

    def count(self, name: str) -> int:
        return self._counts[name]
