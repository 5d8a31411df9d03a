"""An initramfs made of the host's own programs and their shared libraries.

The selftests need bash and the GNU tools (``comm``, ``diff -upr``,
``date --rfc-3339=ns``, ``sysctl --values``, kmod's ``modprobe`` and
``modinfo``), so the tools come from the host's Debian packages rather than
busybox. The layout is the host's: ``/bin``, ``/sbin``, ``/lib`` and
``/lib64`` link into ``/usr``. Its ``/init`` mounts what the selftests use and
then runs the commands that arrive on the serial console (``console.py``).
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from .console import COMMAND_LOOP

# The host packages whose programs go in, whole: bash; kmod (insmod, modprobe,
# rmmod, modinfo, depmod); util-linux (dmesg); mount; procps (sysctl); coreutils;
# grep; sed; diffutils; findutils; libc-bin (getconf).
PACKAGES: Final = (
    "bash",
    "kmod",
    "util-linux",
    "mount",
    "procps",
    "coreutils",
    "grep",
    "sed",
    "diffutils",
    "findutils",
    "libc-bin",
)

# Programs a package reaches only through Debian's alternatives, and the shell
# the selftests' runner names (#!/bin/sh): bash stands in for dash.
ALIASES: Final = {"usr/bin/awk": "awk", "usr/bin/sh": "bash"}

PROGRAM_DIRS: Final = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/libexec/")

MERGED_DIRS: Final = ("bin", "sbin", "lib", "lib64")

# Where the selftests are installed inside the initramfs.
KSELFTEST_DIR: Final = "kselftest"

INIT: Final = (
    r"""#!/bin/bash
# pid 1 of the conformance VM: mount what the selftests use, then run the
# commands that arrive on the serial console.
export PATH=/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
# The kernel's console is ttyS1; commands and their output use ttyS0.
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo -onlcr
"""
    + COMMAND_LOOP
)


class InitramfsError(Exception):
    """The initramfs could not be made; the message says which step failed."""


def _run(command: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InitramfsError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def host_programs() -> set[Path]:
    """Every program ``PACKAGES`` install on the host."""
    listed = _run(["dpkg", "-L", *PACKAGES]).splitlines()
    return {Path(path) for path in listed if path.startswith(PROGRAM_DIRS) and os.path.isfile(path)}


def shared_libraries(program: Path) -> set[Path]:
    """The libraries ``ldd`` says ``program`` loads, its interpreter included
    (none for a script)."""
    result = subprocess.run(["ldd", program], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return set()
    libraries = set()
    for line in result.stdout.splitlines():
        words = line.split()
        if "=>" in words and words[words.index("=>") + 1].startswith("/"):
            libraries.add(Path(words[words.index("=>") + 1]))
        elif words and words[0].startswith("/"):
            libraries.add(Path(words[0]))
    return libraries


def _copy(host_path: Path, root: Path) -> None:
    """``host_path``'s content at the same place under ``root``, with the
    directory spelled as the host resolves it (``/lib/x`` lands in ``/usr/lib``)."""
    target = root / os.path.realpath(host_path.parent).lstrip("/") / host_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(host_path, target)


def add_programs(root: Path) -> None:
    """The host's programs of ``PACKAGES`` and ``ALIASES``, with their libraries."""
    for directory in MERGED_DIRS:
        (root / "usr" / directory).mkdir(parents=True, exist_ok=True)
        (root / directory).symlink_to(f"usr/{directory}")
    libraries: set[Path] = set()
    for program in host_programs():
        _copy(program, root)
        libraries |= shared_libraries(program)
    for name, alias_of in ALIASES.items():
        found = shutil.which(alias_of)
        if found is None:
            raise InitramfsError(f"the host has no {alias_of}")
        shutil.copy2(found, root / name)
        libraries |= shared_libraries(Path(found))
    for library in libraries:
        _copy(library, root)


def add_modules(root: Path, image_root: Path, release: str, modules: list[Path]) -> None:
    """``modules`` in ``/lib/modules/<release>/extra`` with the image's
    ``modules.builtin*`` and ``modules.order``, indexed by ``depmod``; and an
    empty ``build`` directory, without which 6.12's selftests skip."""
    directory = root / "usr/lib/modules" / release
    (directory / "extra").mkdir(parents=True)
    (directory / "build").mkdir()
    shipped = image_root / "lib/modules" / release
    for index in [*shipped.glob("modules.builtin*"), shipped / "modules.order"]:
        shutil.copy2(index, directory)
    for module in modules:
        shutil.copy2(module, directory / "extra")
    _run(["depmod", "-b", str(root), release])


def add_init(root: Path) -> None:
    for directory in ("proc", "sys", "dev", "tmp", "root"):
        (root / directory).mkdir()
    init = root / "init"
    init.write_text(INIT)
    init.chmod(0o755)


def make(
    staging: Path,
    out: Path,
    *,
    image_root: Path,
    release: str,
    modules: list[Path],
    kselftest: Path,
) -> Path:
    """The initramfs at ``out`` (an uncompressed newc cpio), staged in ``staging``."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    add_programs(staging)
    add_modules(staging, image_root, release, modules)
    add_init(staging)
    shutil.copytree(kselftest, staging / KSELFTEST_DIR, symlinks=True)
    with out.open("wb") as archive:
        listed = subprocess.run(
            ["find", ".", "-print0"], cwd=staging, capture_output=True, check=True
        ).stdout
        packed = subprocess.run(
            ["cpio", "--null", "--create", "--format=newc", "--quiet"],
            cwd=staging,
            input=listed,
            stdout=archive,
            stderr=subprocess.PIPE,
            check=False,
        )
    if packed.returncode != 0:
        raise InitramfsError(f"cpio: {packed.stderr.decode().strip()}")
    return out
