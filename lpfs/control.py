"""The control socket: JSON lines between the ``lpfs`` CLI and its daemon.

A request is one JSON object with a ``cmd`` key; the reply is one JSON
object ``{"ok": true, "data": ...}`` or ``{"ok": false, "kind": ..., "error":
..., "errno": ...}``. A following request (``dmesg --follow``) gets one
``{"record": ...}`` line per log record until the client hangs up.

The socket lives in a directory only its owner can enter, is created 0600,
and the daemon checks each peer's uid (SO_PEERCRED): its own user and root
may talk to it, nobody else.
"""

import hashlib
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from .errors import ControlError

log = logging.getLogger(__name__)

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


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def error_reply(kind: str, message: str, code: int | None = None) -> Reply:
    return {"ok": False, "kind": kind, "error": message, "errno": code}


class _Connection(socketserver.StreamRequestHandler):
    server: "ControlServer"

    def handle(self) -> None:
        uid = peer_uid(self.connection)
        if uid not in (0, os.getuid()):
            self._send(error_reply("permission", f"uid {uid} may not control this daemon"))
            return
        self.connection.settimeout(REQUEST_TIMEOUT)
        try:
            line = self.rfile.readline(MAX_REQUEST + 1)
        except OSError:
            return
        if not line:
            return
        if len(line) > MAX_REQUEST:
            self._send(error_reply("protocol", f"request longer than {MAX_REQUEST} bytes"))
            return
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:
            self._send(error_reply("protocol", f"request is not JSON: {exc}"))
            return
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self._send(error_reply("protocol", "request must be an object with a 'cmd' string"))
            return
        self.connection.settimeout(None)
        try:
            reply = self.server.handler(request, self._send)
        except Exception as exc:  # the daemon keeps serving whatever one request does
            log.exception("control request %r failed", request.get("cmd"))
            reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        try:
            self.wfile.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            self.wfile.flush()
        except OSError as exc:
            raise BrokenPipeError from exc


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The daemon's end: one thread per connection, one request per connection."""

    daemon_threads = True
    request_queue_size = 128  # many test processes may knock at once

    def __init__(self, path: Path, handler: Handler) -> None:
        self.handler = handler
        self.path = path
        ensure_runtime_dir()
        path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)
        try:
            super().__init__(os.fspath(path), _Connection)
        finally:
            os.umask(old_umask)

    def start(self) -> threading.Thread:
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="lpfs-control", daemon=True)
        self._thread.start()
        return self._thread

    def _serve(self) -> None:
        while not self._closing:
            self.handle_request()  # waits for the next connection, however long

    def close(self) -> None:
        """Stop accepting at once: one empty connection wakes the waiting accept."""
        self._closing = True
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
                wake.settimeout(1.0)
                wake.connect(os.fspath(self.path))
        except OSError:
            pass  # not listening any more: nothing waits
        self._thread.join(timeout=5.0)
        self.server_close()
        self.path.unlink(missing_ok=True)


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
