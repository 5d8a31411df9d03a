"""The kernel selftests' functions.sh helpers, played against an lpfs mount.

Names and checks follow tools/testing/selftests/livepatch/functions.sh: the
harness logs each command it runs (``% insmod test_modules/<mod>.ko``) into
the kernel log, waits as the real helpers wait, and ``check_result``
compares the log since the test's canary line with the expected text, after
the same filtering (lines with ``livepatch:`` or ``test_klp``, minus taint
lines, timestamps stripped).
"""

import difflib
import json
import os
import time

from support import MODULES, dedent, shipped

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.pytest_plugin import LpfsMount

RETRY_INTERVAL = 0.01
MAX_WAIT = 30.0


class Selftest:
    def __init__(self, mnt: LpfsMount) -> None:
        self.mnt = mnt
        self.canary = -1

    def log(self, msg: str) -> None:
        self.mnt.run("kmsg", msg)

    def loop_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + MAX_WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {what}")
            time.sleep(RETRY_INTERVAL)

    def start_test(self, name: str) -> None:
        self.log(f"===== TEST: {name} =====")
        self.canary = self._records()[-1]["seq"]

    def _records(self) -> list[dict]:
        out = self.mnt.run("dmesg", "--json")
        return [json.loads(line) for line in out.splitlines()]

    def load_lp(self, mod: str, *args: str) -> None:
        self.load_lp_nowait(mod, *args)
        transition = self.mnt.livepatch_dir / mod / "transition"
        self.loop_until(lambda: transition.read_text() == "0\n", f"{mod} transition")

    def load_lp_nowait(self, mod: str, *args: str) -> None:
        self.log(" ".join(["%", "insmod", f"test_modules/{mod}.ko", *args]))
        self.mnt.insmod(shipped(mod), *args)
        self.loop_until((self.mnt.livepatch_dir / mod).is_dir, f"{mod} in sysfs")

    def wait_for_transition(self, mod: str) -> None:
        """test-callbacks.sh's loop_until on transition reading 1."""
        transition = self.mnt.livepatch_dir / mod / "transition"
        self.loop_until(lambda: transition.read_text() == "1\n", "failed to stall transition")

    def load_mod(self, mod: str, *args: str) -> None:
        self.log(" ".join(["%", "insmod", f"test_modules/{mod}.ko", *args]))
        self.mnt.insmod(shipped(mod), *args)
        self.loop_until((self.mnt.mountpoint / "module" / mod).is_dir, f"{mod} loaded")

    def disable_lp(self, mod: str) -> None:
        self.log(f"% echo 0 > /sys/kernel/livepatch/{mod}/enabled")
        self.mnt.sh(f"echo 0 > kernel/livepatch/{mod}/enabled", check=True)
        self.loop_until(lambda: not (self.mnt.livepatch_dir / mod).exists(), f"{mod} disabled")

    def unload_mod(self, mod: str) -> None:
        refcnt = self.mnt.mountpoint / "module" / mod / "refcnt"
        self.loop_until(lambda: refcnt.read_text() == "0\n", f"{mod} refcnt 0")
        self.log(f"% rmmod {mod}")
        result = self.mnt.command("rmmod", mod)
        assert (0, "") == (result.returncode, result.stdout + result.stderr)
        self.loop_until(lambda: not refcnt.parent.exists(), f"{mod} unloaded")

    unload_lp = unload_mod

    def load_failing_mod(self, mod: str, *args: str) -> None:
        """insmod that must fail; its error line goes to the log, as functions.sh does."""
        self.log(" ".join(["%", "insmod", f"test_modules/{mod}.ko", *args]))
        result = self.mnt.command("insmod", str(shipped(mod)), *args)
        assert result.returncode != 0, f"{mod} unexpectedly loaded"
        error = result.stderr.strip().replace(str(MODULES) + "/", "test_modules/")
        self.log(error.replace(".toml", ".ko"))

    def check_sysfs_value(self, mod: str, rel: str, value: str) -> None:
        assert value == (self.mnt.livepatch_dir / mod / rel).read_text().rstrip("\n")

    def result(self) -> str:
        lines = [
            r["text"]
            for r in self._records()
            if r["seq"] > self.canary
            and ("livepatch:" in r["text"] or "test_klp" in r["text"])
            and "tainting kernel" not in r["text"]
            and "taints kernel" not in r["text"]
        ]
        return "\n".join(lines)

    def control(self, cmd: str, **args: object) -> object:
        """A control request, as lpfs ns's files make them; AssertionError if refused."""
        reply = Client(socket_path(self.mnt.mountpoint)).call(cmd, **args)
        assert reply["ok"], reply
        return reply["data"]

    def cat(self, show: str, obj: str = "vmlinux") -> str | None:
        """``cat /proc/…`` by this process: the /proc file's show function runs (traced),
        and the output of the replacement it runs, or None for the original's."""
        ran = self.control("call", function=show, pid=os.getpid(), comm="cat", object=obj)
        return None if ran is None else ran["output"]  # type: ignore[index]

    def tracing(self, name: str, data: str | None = None, truncate: bool = False) -> str:
        """A write (``echo data > tracing/name``, truncating if asked) or a read."""
        extra = {} if data is None else {"data": data}
        return str(self.control("tracing", file=name, truncate=truncate, **extra))

    def cleanup_tracing(self) -> None:
        self.tracing("tracing_on", "0\n", truncate=True)
        self.tracing("set_ftrace_filter", "\n", truncate=True)
        self.tracing("current_tracer", "nop\n", truncate=True)
        self.tracing("trace", "\n", truncate=True)

    def trace_function(self, function: str) -> None:
        self.cleanup_tracing()
        self.tracing("current_tracer", "function\n", truncate=True)
        self.tracing("set_ftrace_filter", f"{function}\n", truncate=True)
        self.tracing("tracing_on", "1\n", truncate=True)

    def check_traced_functions(self, *functions: str) -> None:
        trace = self.tracing("trace")
        for function in functions:
            assert f" {function} <-" in trace, f"Function ({function}) did not appear in the trace"
        self.cleanup_tracing()

    def check_result(self, expected: str) -> None:
        """Compare the log since the canary with the expected text; a unified diff if not."""
        wanted, result = dedent(expected), self.result()
        diff = difflib.unified_diff(
            wanted.splitlines(), result.splitlines(), "expected", "result", lineterm=""
        )
        assert wanted == result, "\n".join(diff)
