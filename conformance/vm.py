"""A Debian kernel booted in QEMU, driven through its serial console.

The initramfs's ``/init`` (see ``initramfs.py``) reads one command a line from
the console, runs it with ``bash -c`` and ends its output with
``@@DONE <status>``. Everything the console prints, the boot included, is kept
in a transcript file.
"""

import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

READY: Final = re.compile(r"@@READY\n")
DONE: Final = re.compile(r"\n@@DONE (\d+)\n")

# TCG emulates every instruction; on a loaded 2-core host a boot has taken
# 4-6 s and more, so the limits leave a wide margin.
BOOT_TIMEOUT: Final = 300.0


class VmError(Exception):
    """The VM did not boot, died, or a command did not finish in time."""


@dataclass(frozen=True)
class Result:
    status: int
    output: str


class Vm:
    """One boot of ``kernel`` with ``initramfs``; a context manager that powers it off."""

    def __init__(self, kernel: Path, initramfs: Path, transcript: Path) -> None:
        self.kernel = kernel
        self.initramfs = initramfs
        self.transcript_path = transcript
        self.boot_seconds = 0.0
        self._buffer = ""

    def __enter__(self) -> Self:
        self.transcript_path.parent.mkdir(parents=True, exist_ok=True)
        self._transcript = self.transcript_path.open("w")
        started = time.monotonic()
        self._qemu = subprocess.Popen(
            [
                *("qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "1024"),
                *("-nographic", "-no-reboot", "-nic", "none"),
                *("-kernel", str(self.kernel), "-initrd", str(self.initramfs)),
                *("-append", "console=ttyS0 panic=-1"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            self._read_until(READY, started + BOOT_TIMEOUT)
        except VmError:
            self.close()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop QEMU (the guest keeps nothing worth a clean shutdown)."""
        if self._qemu.poll() is None:
            self._qemu.kill()
        self._qemu.wait()
        self._transcript.close()

    def _read_until(self, marker: re.Pattern[str], deadline: float) -> re.Match[str]:
        """Read the console until ``marker`` appears; returns the match (over
        everything read since the last match), and keeps only what follows it."""
        assert self._qemu.stdout is not None
        fd = self._qemu.stdout.fileno()
        while True:
            found = marker.search(self._buffer)
            if found is not None:
                self._buffer = self._buffer[found.end() :]
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VmError(
                    f"no {marker.pattern!r} on the console in time; see {self.transcript_path}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise VmError(f"QEMU exited; see {self.transcript_path}")
            text = chunk.decode(errors="replace").replace("\r", "")
            self._transcript.write(text)
            self._transcript.flush()
            self._buffer += text

    def run(self, command: str, timeout: float) -> Result:
        """Run ``command`` (one line of bash) in the guest; its output and status."""
        if "\n" in command:
            raise ValueError("the console takes one line per command")
        assert self._qemu.stdin is not None
        self._buffer = ""
        self._qemu.stdin.write(command.encode() + b"\n")
        self._qemu.stdin.flush()
        found = self._read_until(DONE, time.monotonic() + timeout)
        return Result(int(found[1]), found.string[: found.start()])
