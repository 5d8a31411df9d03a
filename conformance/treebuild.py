"""Build a kernel's livepatch test modules out of tree against its unpacked
headers, and install its livepatch selftests as kernel CI does.

The build works in a fresh copy of the unpacked source, so the cached tree
stays as Debian shipped it.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Final

from . import modcc
from .kernels import Kernel

# KDIR for the selftests' install: a directory that never exists, so 6.12's
# test_modules/Makefile skips its own kbuild step (it builds only when KDIR
# exists); the modules are built beforehand, with the unpacked headers.
NO_KDIR: Final = "/nonexistent"


class BuildError(Exception):
    """make failed; the message names the log with its output."""


def _make(args: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ make {' '.join(args)}\n")
        out.flush()
        made = subprocess.run(["make", *args], stdout=out, stderr=subprocess.STDOUT, check=False)
    if made.returncode != 0:
        raise BuildError(f"make {' '.join(args)} failed; see {log}")


def copy_tree(source_top: Path, tree: Path) -> None:
    """A fresh writable copy of the unpacked source at ``tree``."""
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(source_top, tree, symlinks=True)


def build_modules(kdir: Path, directory: Path, log: Path) -> list[Path]:
    """The .ko files of the out-of-tree modules in ``directory``, built there."""
    args = ["-C", str(kdir), f"M={directory}", "-j2", "modules"]
    # lib/livepatch's Makefile builds its modules only with this option, which
    # Debian's kernels leave unset.
    args.append("CONFIG_TEST_LIVEPATCH=m")
    if shutil.which("pahole") is None:
        # Without pahole a kernel with module BTF cannot build modules at all;
        # BTF is not needed to load them.
        args.append("CONFIG_DEBUG_INFO_BTF_MODULES=")
    _make(args, log)
    modules = sorted(directory.glob("*.ko"))
    if not modules:
        raise BuildError(f"no module built in {directory}; see {log}")
    return modules


def build_test_modules(kernel: Kernel, kdir: Path, tree: Path, log: Path) -> list[Path]:
    """The kernel's livepatch test modules, built in ``tree``'s copy of their directory."""
    return build_modules(kdir, tree / kernel.test_modules, log)


def build_generated(kdir: Path, directory: Path, log: Path) -> list[Path]:
    """conformance/modules compiled (modcc.py) into ``directory`` and built."""
    shutil.rmtree(directory, ignore_errors=True)
    modcc.write_kbuild(modcc.compile_directory(), directory)
    return build_modules(kdir, directory, log)


def install_selftests(tree: Path, dest: Path, log: Path) -> Path:
    """``make -C tools/testing/selftests TARGETS=livepatch install`` into a fresh
    ``dest``: run_kselftest.sh, the runner, the scripts, and since 6.9 the test
    modules and test_klp-call_getpid, which the install builds with the host's gcc."""
    shutil.rmtree(dest, ignore_errors=True)
    selftests = tree / "tools/testing/selftests"
    _make(
        [
            *("-C", str(selftests), "TARGETS=livepatch"),
            *(f"KDIR={NO_KDIR}", f"INSTALL_PATH={dest}", "install"),
        ],
        log,
    )
    return dest
