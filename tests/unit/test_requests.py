"""The control protocol in process: requests parsed into records, and who is to blame.

A request that does not fit its command's record is a usage error (the
client's fault); a refusal of the emulated kernel is a kernel error; any
other failure while answering is lpfs's own: logged with its traceback and
reported as internal.
"""

import errno
from pathlib import Path

import pytest

from lpfs.control import requests
from lpfs.daemon.daemon import Daemon, MountOptions
from lpfs.errors import RequestError


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    return Daemon(MountOptions(mountpoint=tmp_path / "mnt", transition_interval=0))


def answer(daemon: Daemon, **request: object) -> dict:
    reply = daemon.handle(dict(request), lambda _: None)
    assert reply is not None
    return reply


class TestParse:
    def test_fields_arrive_typed(self) -> None:
        parsed = requests.parse(
            {"cmd": "insmod", "file": "x.toml", "text": "", "params": ["a=1"], "extra": 1}
        )
        assert requests.Insmod("x.toml", "", "", ("a=1",)) == parsed

    def test_a_whole_number_timeout_is_a_float(self) -> None:
        parsed = requests.parse({"cmd": "wait", "patch": "p", "mode": "idle", "timeout": 3})
        assert requests.Wait("p", "idle", 3.0) == parsed

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            ({"cmd": "format_disk"}, "unknown command 'format_disk'"),
            ({"cmd": 5}, "unknown command 5"),
            ({"cmd": "rmmod"}, "bad 'rmmod' request: name is missing"),
            ({"cmd": "tick", "count": True}, "bad 'tick' request: count must be int, not True"),
            ({"cmd": "tick", "count": 0}, "bad 'tick' request: count must be a positive integer"),
            ({"cmd": "task_set", "pid": 1, "stack": "a,b"}, "stack must be a list of strings"),
            ({"cmd": "wait", "patch": "p", "mode": "soon"}, "mode must be 'gone' or 'idle'"),
        ],
    )
    def test_what_does_not_fit_is_a_request_error(self, request_: dict, message: str) -> None:
        with pytest.raises(RequestError, match=message.replace("(", r"\(")):
            requests.parse(request_)

    def test_every_command_has_a_handler(self, daemon: Daemon) -> None:
        assert [] == [cmd for cmd in requests.COMMANDS if not hasattr(daemon, f"cmd_{cmd}")]


class TestBlame:
    def test_the_clients_fault_is_usage(self, daemon: Daemon) -> None:
        reply = answer(daemon, cmd="task_add", pid=7, state="zombie")
        assert (False, "usage") == (reply["ok"], reply["kind"])

    def test_the_kernels_refusal_is_a_kernel_error(self, daemon: Daemon) -> None:
        reply = answer(daemon, cmd="rmmod", name="nothing")
        assert (False, "kernel", errno.ENOENT) == (reply["ok"], reply["kind"], reply["errno"])

    def test_lpfs_own_failure_is_internal_and_logged(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(count: int) -> None:
            raise KeyError("a bug")

        monkeypatch.setattr(daemon.core, "tick", broken)
        reply = answer(daemon, cmd="tick", count=1)
        assert (False, "internal") == (reply["ok"], reply["kind"])
        assert "KeyError" in reply["error"]
        assert "internal error answering" in caplog.text
        assert "Traceback" in caplog.text
