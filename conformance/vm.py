"""A Debian kernel booted in QEMU, driven through its serial console.

The initramfs's ``/init`` (see ``initramfs.py``) runs ``console.COMMAND_LOOP``
on the first serial port. The kernel's own console is the second port, written
to a file: kernel messages (a patched console_loglevel prints them all, as
test_klp_state does) never mix with a command's output.
"""

import time
from pathlib import Path
from typing import Final, Self

from .console import Console, ConsoleSide

# TCG emulates every instruction; on a loaded 2-core host a boot has taken
# from 4 s to 30 s, so the limit leaves a wide margin.
BOOT_TIMEOUT: Final = 300.0


class Vm(ConsoleSide):
    """One boot of ``kernel`` with ``initramfs``; a context manager that stops it."""

    def __init__(
        self, kernel: Path, initramfs: Path, transcript: Path, kernel_console: Path
    ) -> None:
        self.kernel = kernel
        self.initramfs = initramfs
        self.transcript = transcript
        self.kernel_console = kernel_console
        self.boot_seconds = 0.0

    def __enter__(self) -> Self:
        started = time.monotonic()
        self.console = Console.start(
            [
                *("qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "1024"),
                *("-nographic", "-no-reboot", "-nic", "none"),
                *("-serial", "mon:stdio", "-serial", f"file:{self.kernel_console}"),
                *("-kernel", str(self.kernel), "-initrd", str(self.initramfs)),
                *("-append", "console=ttyS1 panic=-1"),
            ],
            self.transcript,
            BOOT_TIMEOUT,
        )
        self.boot_seconds = time.monotonic() - started
        return self
