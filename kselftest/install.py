"""Install a tree's livepatch selftests as kernel CI does: the kselftest Makefile's
``install`` target, with lpfs-packed modules where the tree builds its own."""

import shutil
import subprocess
from pathlib import Path
from typing import Final

from .sources import Source

# KDIR for the install: a directory that never exists, so test_modules/Makefile
# skips its kbuild step (it builds only `ifneq ($(wildcard $(KDIR)),)`). Debian
# keeps /nonexistent absent on purpose (it is the home of system users).
NO_KDIR: Final = "/nonexistent"


class InstallError(Exception):
    """The kselftest Makefile's install failed; the message ends with its output."""


def pack_test_modules(livepatch: Path, lpfs: list[str]) -> list[str]:
    """``test_modules/NAME.ko``, packed by lpfs, for every ``test_modules/NAME.c``
    of the tree (lib.mk's install rsyncs ``test_modules/*.ko``).

    Returns the names lpfs has no module file for.
    """
    modules = livepatch / "test_modules"
    for stale in modules.glob("*.ko"):
        stale.unlink()
    missing = []
    for source in sorted(modules.glob("*.c")):
        out = modules / f"{source.stem}.ko"
        packed = subprocess.run(
            [*lpfs, "pack", source.stem, "-o", str(out)], capture_output=True, check=False
        )
        if packed.returncode != 0:
            missing.append(source.stem)
    return missing


def install(source: Source, dest: Path, log: Path) -> None:
    """``make -C tools/testing/selftests TARGETS=livepatch INSTALL_PATH=dest install``,
    into a fresh ``dest``; make's output goes to ``log``."""
    shutil.rmtree(dest, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        made = subprocess.run(
            [
                *("make", "-C", str(source.selftests), "TARGETS=livepatch"),
                *(f"KDIR={NO_KDIR}", f"INSTALL_PATH={dest}", "install"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if made.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise InstallError("\n".join([f"make install failed (full output: {log})", *tail]))
