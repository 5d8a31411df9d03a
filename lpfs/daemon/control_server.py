"""The daemon's end of the control socket (the protocol is in ``control``)."""

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path

from lpfs.control.protocol import (
    MAX_REQUEST,
    REQUEST_TIMEOUT,
    Handler,
    Reply,
    ensure_runtime_dir,
    error_reply,
)

log = logging.getLogger(__name__)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


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
