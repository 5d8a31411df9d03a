"""The control socket: JSON lines between the ``lpfs`` CLI and its daemon.

A request is one JSON object with a ``cmd`` key; the reply is one JSON
object ``{"ok": true, "data": ...}`` or ``{"ok": false, "kind": ..., "error":
..., "errno": ...}``. A following request (``dmesg --follow``) gets one
``{"record": ...}`` line per log record until the client hangs up.

The socket lives in a directory only its owner can enter, is created 0600,
and the daemon checks each peer's uid (SO_PEERCRED): its own user and root
may talk to it, nobody else. This module is the protocol; ``client`` is the
CLI's end, and ``lpfs.daemon.control_server`` the daemon's.
"""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from lpfs.errors import ControlError

MAX_REQUEST: Final = 4 << 20  # a module file travels inside a request
REQUEST_TIMEOUT: Final = 10.0  # a client that stops mid-request is dropped
CONNECT_PATIENCE: Final = 10.0  # how long a client waits for a busy daemon's backlog

Reply = dict[str, Any]
Handler = Callable[[dict[str, Any], Callable[[Reply], None]], Reply | None]


def runtime_dir() -> Path:
    """Where sockets live: /run/lpfs for root, $XDG_RUNTIME_DIR/lpfs (or /tmp/lpfs-UID)."""
    if os.getuid() == 0:
        return Path("/run/lpfs")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "lpfs" if xdg else Path(f"/tmp/lpfs-{os.getuid()}")


def socket_path(mountpoint: str | os.PathLike[str]) -> Path:
    """The socket of the daemon serving ``mountpoint``, named after its real path."""
    real = os.path.realpath(mountpoint)
    digest = hashlib.sha256(real.encode()).hexdigest()[:16]
    stem = os.path.basename(real)[:40] or "root"
    return runtime_dir() / f"{stem}-{digest}.sock"


def ensure_runtime_dir() -> Path:
    """Create the socket directory, enterable by its owner only; refuse one that is not ours."""
    path = runtime_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ControlError(f"{path} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def error_reply(kind: str, message: str, code: int | None = None) -> Reply:
    return {"ok": False, "kind": kind, "error": message, "errno": code}
