"""How many requests of each kind the FUSE session has read: ``lpfs stats``.

The session adds one to ``by_opcode[opcode]`` per request, and nothing
else: reading the counts is the reader's work (a copy of the list, taken
without a lock: the session is their only writer). They only grow; a
caller measuring an operation takes the difference of two readings.
"""

from lpfs.fuse.wire import OPCODE_NAMES, OPCODES


class RequestCounts:
    """Requests read from /dev/fuse, by opcode, once a session counts them."""

    def __init__(self) -> None:
        self.by_opcode = [0] * OPCODES
        # Set by lpfs's own session; a libfuse binding counts nothing.
        self.counting = False

    def named(self) -> dict[str, int] | None:
        """Every opcode seen so far with its count (None if no session counts)."""
        if not self.counting:
            return None
        counts = self.by_opcode.copy()
        return {
            OPCODE_NAMES.get(opcode, f"opcode {opcode}"): count
            for opcode, count in enumerate(counts)
            if count
        }
