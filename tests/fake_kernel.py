"""A fake kernel for lpfs's FUSE session: no mount, no /dev/fuse.

A SOCK_SEQPACKET socketpair stands in for the device: as /dev/fuse does, it
gives the session one whole request per read and takes one reply per write.
The test plays the kernel on the other end.
"""

import os
import select
import socket
import struct
import threading
from typing import Any

from lpfs.fuse.session import Session
from lpfs.fuse.wire import DIRENT, IN_HEADER, INIT, INIT_IN, OUT_HEADER, ROOT_ID

UID, GID, PID = 1000, 1000, 4242
ALL_FLAGS = 0xFFFFFFFF


class Reply:
    """One reply as the kernel reads it."""

    def __init__(self, message: bytes) -> None:
        length, self.error, self.unique = OUT_HEADER.unpack_from(message)
        assert length == len(message), "the header's length is the message's"
        self.body = message[OUT_HEADER.size :]


class FakeKernel:
    def __init__(self, operations: Any, sndbuf: int = 0, **options: Any) -> None:
        self.end, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if sndbuf:
            device.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.session = Session(operations, options)
        self.failure: BaseException | None = None
        self.next_unique = 2
        self.thread = threading.Thread(target=self._serve, args=(device,), daemon=True)

    def _serve(self, device: socket.socket) -> None:
        with device:
            try:
                self.session.serve(device.fileno())
            except BaseException as exc:
                self.failure = exc

    def __enter__(self) -> "FakeKernel":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end.close()  # the session reads end of file and leaves
        self.thread.join(5)
        assert not self.thread.is_alive(), "the session did not end with its connection"

    def send(self, opcode: int, body: bytes = b"", nodeid: int = ROOT_ID) -> int:
        unique = self.next_unique
        self.next_unique += 2
        length = IN_HEADER.size + len(body)
        self.end.send(IN_HEADER.pack(length, opcode, unique, nodeid, UID, GID, PID) + body)
        return unique

    def reply(self, timeout: float = 5) -> Reply:
        if not select.select([self.end], [], [], timeout)[0]:
            raise AssertionError(f"no reply within {timeout} s")
        return Reply(self.end.recv(1 << 20))

    def silent(self, timeout: float = 0.2) -> bool:
        """No reply arrives within ``timeout``."""
        return not select.select([self.end], [], [], timeout)[0]

    def call(self, opcode: int, body: bytes = b"", nodeid: int = ROOT_ID) -> Reply:
        unique = self.send(opcode, body, nodeid)
        reply = self.reply()
        assert unique == reply.unique
        return reply

    def init(self, minor: int, flags: int = ALL_FLAGS, major: int = 7) -> Reply:
        body = INIT_IN.pack(major, minor, 128 * 1024, flags)
        if minor >= 36:  # fuse_init_in grew flags2 and reserved fields
            body += bytes(48)
        return self.call(INIT, body)


def name(text: str) -> bytes:
    """A name as a request carries it."""
    return os.fsencode(text) + b"\0"


def dirent_names(listing: bytes) -> list[bytes]:
    names = []
    offset = 0
    while offset < len(listing):
        _ino, end, length, _kind = DIRENT.unpack_from(listing, offset)
        names.append(listing[offset + DIRENT.size : offset + DIRENT.size + length])
        offset = end
    return names


def init_out(body: bytes) -> tuple[int, int, int]:
    """(major, minor, flags) of a fuse_init_out."""
    major, minor, _readahead, flags = struct.unpack_from("<IIII", body)
    return major, minor, flags
