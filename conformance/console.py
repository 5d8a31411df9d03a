"""A shell driven one command a line over a pipe: the guest's serial console,
or ``lpfs ns``'s bash.

The shell runs ``COMMAND_LOOP``: it says ``@@READY``, then runs each line it
reads with ``bash -c`` and ends that command's output with
``@@DONE <status>``. Everything the shell prints is kept in a transcript.
"""

import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

COMMAND_LOOP: Final = r"""echo '@@READY'
while IFS= read -r command; do
    bash -c "$command" </dev/null
    printf '\n@@DONE %d\n' "$?"
done
"""

READY: Final = re.compile(r"@@READY\n")
DONE: Final = re.compile(r"\n@@DONE (\d+)\n")


class ConsoleError(Exception):
    """The shell did not start, died, or a command did not finish in time."""


@dataclass(frozen=True)
class Result:
    status: int
    output: str


class Console:
    """The command loop in ``process`` (started with stdin and stdout as pipes)."""

    def __init__(self, process: subprocess.Popen[bytes], transcript: Path) -> None:
        self.process = process
        self.transcript_path = transcript
        transcript.parent.mkdir(parents=True, exist_ok=True)
        self._transcript = transcript.open("w")
        self._buffer = ""

    @classmethod
    def start(cls, argv: list[str], transcript: Path, timeout: float) -> "Console":
        """Start the program that runs the command loop; return once the loop is ready."""
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        console = cls(process, transcript)
        try:
            console._read_until(READY, time.monotonic() + timeout)
        except ConsoleError:
            console.close()
            raise
        return console

    def close(self, grace: float = 0.0) -> None:
        """End the command loop's input, give the process ``grace`` seconds to
        finish on its own, then kill it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._transcript.close()

    def _read_until(self, marker: re.Pattern[str], deadline: float) -> re.Match[str]:
        """Read until ``marker`` appears; returns the match (over everything read
        since the last match), and keeps only what follows it."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            found = marker.search(self._buffer)
            if found is not None:
                self._buffer = self._buffer[found.end() :]
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConsoleError(f"no {marker.pattern!r} in time; see {self.transcript_path}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ConsoleError(f"the shell exited; see {self.transcript_path}")
            text = chunk.decode(errors="replace").replace("\r", "")
            self._transcript.write(text)
            self._transcript.flush()
            self._buffer += text

    def run(self, command: str, timeout: float) -> Result:
        """Run ``command`` (one line of bash); its output and status."""
        if "\n" in command:
            raise ValueError("the console takes one line per command")
        assert self.process.stdin is not None
        self._buffer = ""
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        found = self._read_until(DONE, time.monotonic() + timeout)
        return Result(int(found[1]), found.string[: found.start()])


class ConsoleSide:
    """A side a scenario runs on: a Console its subclass starts in ``__enter__``;
    leaving it closes the console, giving the process ``exit_grace`` seconds."""

    console: Console
    exit_grace: float = 0.0

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.console.close(self.exit_grace)

    def run(self, command: str, timeout: float) -> Result:
        return self.console.run(command, timeout)
