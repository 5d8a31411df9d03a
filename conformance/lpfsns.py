"""lpfs emulating a given kernel: bash inside ``lpfs ns``, driven like the VM."""

import shutil
import sys
from pathlib import Path
from typing import Final, Self

from .console import COMMAND_LOOP, Console, ConsoleError, ConsoleSide
from .modcc import MODULES

START_TIMEOUT: Final = 120.0
# lpfs ns unmounts and stops its daemon once bash has exited.
EXIT_GRACE: Final = 60.0


def lpfs_command() -> str:
    """The lpfs beside this interpreter (the project's virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / "lpfs"
    if beside.is_file():
        return str(beside)
    found = shutil.which("lpfs")
    if found is None:
        raise ConsoleError("no lpfs command: run make deps")
    return found


class LpfsNs(ConsoleSide):
    """``lpfs ns --kernel <release>`` running the command loop; a context manager.
    Its modprobe finds the module files of ``conformance/modules`` by name, as
    the kernel finds their compiled modules."""

    exit_grace = EXIT_GRACE

    def __init__(self, release: str, transcript: Path) -> None:
        self.release = release
        self.transcript = transcript

    def __enter__(self) -> Self:
        self.console = Console.start(
            [
                *("env", f"LPFS_MODULE_PATH={MODULES}", lpfs_command(), "ns"),
                *("--kernel", self.release, "--", "bash", "-c", COMMAND_LOOP),
            ],
            self.transcript,
            START_TIMEOUT,
        )
        return self
