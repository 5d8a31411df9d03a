"""The client's end of the control socket, which every CLI command loads."""

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lpfs.control.protocol import CONNECT_PATIENCE, Reply
from lpfs.errors import ControlError


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
