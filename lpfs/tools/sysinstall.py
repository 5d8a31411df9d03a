"""`lpfs install-system`: mount(8)'s helper and the systemd unit, from the installed package.

The shipped files name ``/opt/lpfs/bin/lpfs``; the copies installed name the
``lpfs`` command of the installation that writes them, so a wheel installed
anywhere (a venv, pipx) gives ``mount -t lpfs`` and ``lpfs@.service``.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

SHIPPED: Final = Path(__file__).with_name("system")
SHIPPED_LPFS: Final = "/opt/lpfs/bin/lpfs"
# (shipped file, where it goes under the root, mode)
FILES: Final = (
    ("mount.lpfs", "sbin/mount.lpfs", 0o755),
    ("lpfs@.service", "etc/systemd/system/lpfs@.service", 0o644),
)


def this_lpfs() -> Path | None:
    """The lpfs command beside this interpreter (a venv's or pipx's), or on PATH."""
    beside = Path(sys.executable).with_name("lpfs")
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("lpfs")
    return Path(found).absolute() if found else None


def install(root: Path, lpfs: Path) -> list[Path]:
    """Write each file under root with lpfs's path; the paths written."""
    written = []
    for name, rel, mode in FILES:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (SHIPPED / name).read_text().replace(SHIPPED_LPFS, str(lpfs))
        target.write_text(text)
        target.chmod(mode)
        written.append(target)
    return written


def uninstall(root: Path) -> list[Path]:
    """Remove the files install() writes; the paths removed."""
    removed = []
    for _, rel, _ in FILES:
        target = root / rel
        if target.exists():
            target.unlink()
            removed.append(target)
    return removed


def reload_systemd(root: Path) -> None:
    if root == Path("/") and os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
