"""The control socket: JSON lines between the ``lpfs`` CLI and its daemon.

A request is one JSON object with a ``cmd`` key; the reply is one JSON
object ``{"ok": true, "data": ...}`` or ``{"ok": false, "kind": ..., "error":
..., "errno": ...}``. A following request (``dmesg --follow``) gets one
``{"record": ...}`` line per log record until the client hangs up.

The socket lives in a directory only its owner can enter, is created 0600,
and the daemon checks each peer's uid (SO_PEERCRED): its own user and root
may talk to it, nobody else. This module is the protocol and the client's
end, which every CLI command loads; ``control_server`` is the daemon's.
"""

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from .errors import ControlError

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


class Client:
    """The CLI's end."""

    def __init__(self, path: Path, timeout: float | None = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + CONNECT_PATIENCE
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.path))
                return sock
            except BlockingIOError:
                # The daemon's backlog is full: it is alive, just busy.
                sock.close()
                if time.monotonic() > deadline:
                    raise ControlError(f"the lpfs daemon at {self.path} is too busy") from None
                time.sleep(0.01)
            except OSError as exc:
                sock.close()
                raise ControlError(
                    f"no lpfs daemon answers at {self.path}: {exc.strerror}"
                ) from None

    def stream(self, cmd: str, **args: Any) -> Iterator[Reply]:
        """Send one request and yield every reply line until the daemon closes."""
        sock = self._connect()
        try:
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            with sock.makefile("rb") as replies:
                for line in replies:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise ControlError(f"malformed reply from the daemon: {line!r}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ControlError(f"lost the lpfs daemon at {self.path}: {exc}") from None
        finally:
            sock.close()

    def call(self, cmd: str, **args: Any) -> Reply:
        """Send one request and return its reply."""
        for reply in self.stream(cmd, **args):
            return reply
        raise ControlError(f"the lpfs daemon at {self.path} closed without replying")
