"""The `lpfs` command against a real daemon: kmod-style texts, logs, status and exit codes.

Exit codes (lpfs/tools/cli.py): 0 success, 1 a kernel or kmod error, 2 a usage
error, 3 no daemon reachable. Texts follow kmod (docs/kernel.md §3.1, §3.2) and dmesg
(docs/kernel.md §6.11).
"""

# STYLE.md asks for `assert expected == actual`, which SIM300 calls a Yoda condition.

import json
import re
from pathlib import Path

import pytest
from support import MODULES, shipped

from lpfs.fuse import binding
from lpfs.pytest_plugin import LpfsMount, lpfs_command

LP = "test_klp_livepatch"
MOD = "test_klp_callbacks_mod"
DMESG_PREFIX = re.compile(r"^\[ *\d+\.\d{6}\] ")
TAINT_LIVEPATCH = 1 << 15

MISSING_OLD_NAME = """\
name = "broken"

[[object]]
name = "vmlinux"

[[object.func]]
new_name = "livepatch_cmdline_proc_show"
"""
NOT_A_LIVEPATCH = """\
name = "plain_patcher"
livepatch = false

[[object]]
name = "vmlinux"

[[object.func]]
old_name = "cmdline_proc_show"
new_name = "livepatch_cmdline_proc_show"
"""


def module_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def disable(mnt: LpfsMount, patch: str) -> None:
    mnt.sh(f"echo 0 > kernel/livepatch/{patch}/enabled", check=True)


class TestLsmod:
    def test_layout(self, lp: LpfsMount) -> None:
        """lsmod prints kmod's header, then `%-19s %8d  %d` rows, newest module first."""
        lp.insmod(shipped(MOD))
        sizes = {module["name"]: module["size"] for module in lp.status()["modules"]}
        expected = [
            "Module                  Size  Used by",
            f"{MOD:<19} {sizes[MOD]:>8}  0",
            f"{LP:<19} {sizes[LP]:>8}  1",
        ]
        assert expected == lp.run("lsmod").splitlines()

    def test_empty(self, mnt: LpfsMount) -> None:
        """Without modules lsmod prints only the header."""
        assert "Module                  Size  Used by\n" == mnt.run("lsmod")


class TestRmmod:
    def test_livepatch_in_use(self, lp: LpfsMount) -> None:
        """A livepatch whose patch exists holds its module: rmmod fails as kmod says."""
        result = lp.command("rmmod", LP)
        assert (1, f"rmmod: ERROR: Module {LP} is in use\n") == (result.returncode, result.stderr)

    def test_unknown_module(self, mnt: LpfsMount) -> None:
        """rmmod of a module that is not loaded fails as kmod says."""
        result = mnt.command("rmmod", "x")
        expected = "rmmod: ERROR: Module x is not currently loaded\n"
        assert (1, expected) == (result.returncode, result.stderr)

    def test_after_disable(self, lp: LpfsMount) -> None:
        """Once the patch is disabled and freed, rmmod succeeds silently."""
        disable(lp, LP)
        result = lp.command("rmmod", LP)
        assert (0, "", "") == (result.returncode, result.stdout, result.stderr)


class TestInsmod:
    def test_loaded_module_exists(self, lp: LpfsMount) -> None:
        """Loading a module that is already loaded fails with File exists."""
        result = lp.command("insmod", str(shipped(LP)))
        file = MODULES / f"{LP}.toml"
        expected = f"insmod: ERROR: could not insert module {file}: File exists\n"
        assert (1, expected) == (result.returncode, result.stderr)

    def test_malformed_module_file_names_the_key(self, mnt: LpfsMount, tmp_path: Path) -> None:
        """A func without old_name is refused with the file, the key and the reason."""
        result = mnt.command("insmod", module_file(tmp_path, "broken", MISSING_OLD_NAME))
        assert (1, True) == (
            result.returncode,
            "object[0].func[0].old_name: missing" in result.stderr,
        )

    def test_objects_without_livepatch_flag_are_invalid(
        self, mnt: LpfsMount, tmp_path: Path
    ) -> None:
        """A module not marked livepatch that calls klp_enable_patch fails with EINVAL."""
        file = module_file(tmp_path, "plain_patcher", NOT_A_LIVEPATCH)
        result = mnt.command("insmod", file)
        expected = f"insmod: ERROR: could not insert module {file}: Invalid parameters\n"
        assert (1, expected) == (result.returncode, result.stderr)

    def test_objects_without_livepatch_flag_are_logged(
        self, mnt: LpfsMount, tmp_path: Path
    ) -> None:
        """klp_enable_patch logs why it refused the module."""
        mnt.command("insmod", module_file(tmp_path, "plain_patcher", NOT_A_LIVEPATCH))
        expected = "livepatch: module plain_patcher is not marked as a livepatch module"
        assert [expected] == mnt.dmesg()


class TestStatus:
    def test_json_fields(self, lp: LpfsMount) -> None:
        """status --json names the daemon, the taint, the transition, patches and modules."""
        status = lp.status()
        expected = {
            "pid",
            "mountpoint",
            "socket",
            "version",
            "kernel",
            "transition_interval",
            "tainted",
            "transition",
            "patches",
            "modules",
        }
        assert expected == set(status)

    def test_json_values(self, lp: LpfsMount) -> None:
        """After one livepatch loaded: tainted K, no transition, the mountpoint served."""
        status = lp.status()
        actual = (status["mountpoint"], status["tainted"], status["transition"])
        assert (str(lp.mountpoint), TAINT_LIVEPATCH, None) == actual

    def test_json_patch(self, lp: LpfsMount) -> None:
        """Each patch shows what its sysfs directory shows."""
        expected = {
            "name": LP,
            "enabled": True,
            "transition": False,
            "replace": False,
            "stack_order": 1,
            "forced": False,
            "objects": [
                {
                    "name": "vmlinux",
                    "patched": True,
                    "dynamic": False,
                    "funcs": [
                        {
                            "old_name": "cmdline_proc_show",
                            "new_name": "livepatch_cmdline_proc_show",
                            "sympos": 1,
                            "nop": False,
                        }
                    ],
                }
            ],
        }
        assert [expected] == lp.status()["patches"]

    def test_json_transition(self, blocked: LpfsMount) -> None:
        """A blocked transition shows its patch, direction and task counts."""
        transition = blocked.status()["transition"]
        actual = {key: transition[key] for key in ("patch", "direction", "tasks_switched")}
        assert {"patch": LP, "direction": "patching", "tasks_switched": 2} == actual


class TestStats:
    """lpfs's own session counts the requests it reads; a libfuse binding counts none."""

    def requests(self, mnt: LpfsMount) -> dict[str, int] | None:
        counts: dict[str, int] | None = json.loads(mnt.run("stats", "--json"))["fuse_requests"]
        return counts

    @pytest.mark.own_session
    def test_a_read_counts_its_open_and_reads(self, lp: LpfsMount) -> None:
        before = self.requests(lp)
        assert before is not None
        lp.read(f"kernel/livepatch/{LP}/enabled")
        after = self.requests(lp)
        assert after is not None
        grown = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in ("OPEN", "READ")}
        assert {"OPEN": 1, "READ": 2} == grown

    def test_counted_only_by_lpfss_own_session(self, lp: LpfsMount) -> None:
        assert (binding.NAME == "lpfs.fuse.session") == (self.requests(lp) is not None)

    @pytest.mark.own_session
    def test_the_table_names_each_kind(self, lp: LpfsMount) -> None:
        lp.read(f"kernel/livepatch/{LP}/enabled")
        rows = [line.split() for line in lp.run("stats").splitlines()]
        assert ["REQUEST", "COUNT"] == rows[0]
        assert {"INIT", "OPEN", "READ"} <= {row[0] for row in rows[1:]}


class TestDmesg:
    def test_lines_carry_a_timestamp(self, lp: LpfsMount) -> None:
        """Every line starts with `[ seconds.micro] `, as the selftests' sed expects."""
        lines = lp.run("dmesg").splitlines()
        assert (True, []) == (bool(lines), [line for line in lines if not DMESG_PREFIX.match(line)])

    def test_json_records(self, lp: LpfsMount) -> None:
        """dmesg --json prints one object per line with seq, ts_usec, level, text and facility."""
        records = [json.loads(line) for line in lp.run("dmesg", "--json").splitlines()]
        shapes = {tuple((key, type(value).__name__) for key, value in r.items()) for r in records}
        expected = {
            (
                ("seq", "int"),
                ("ts_usec", "int"),
                ("level", "int"),
                ("text", "str"),
                ("facility", "int"),
            )
        }
        assert expected == shapes

    def test_json_matches_text(self, lp: LpfsMount) -> None:
        """The JSON records and the text lines carry the same messages in the same order."""
        texts = [DMESG_PREFIX.sub("", line) for line in lp.run("dmesg").splitlines()]
        assert texts == lp.dmesg()

    def test_clear_empties_the_ring(self, lp: LpfsMount) -> None:
        """dmesg -C prints nothing and leaves an empty log."""
        cleared = lp.run("dmesg", "-C")
        assert ("", "") == (cleared, lp.run("dmesg"))


class TestExitCodes:
    @pytest.mark.parametrize(
        "args",
        [("--mount", "/nonexistent", "status"), ("status", "--mount", "/nonexistent")],
        ids=["before-command", "after-command"],
    )
    def test_no_daemon_is_3(self, args: tuple[str, ...]) -> None:
        """Naming a mountpoint no daemon serves exits 3."""
        assert 3 == lpfs_command(*args).returncode

    @pytest.mark.parametrize(
        "args", [("no-such-command",), ("wait", LP), ("tick", "many")], ids=lambda a: a[0]
    )
    def test_usage_error_is_2(self, args: tuple[str, ...]) -> None:
        """A command line argparse rejects exits 2."""
        assert 2 == lpfs_command(*args).returncode


class TestWait:
    def test_gone_times_out_while_patch_exists(self, lp: LpfsMount) -> None:
        """wait --gone exits 1 when the timeout passes with the patch still there."""
        assert 1 == lp.command("wait", LP, "--gone", "--timeout", "0.2").returncode

    def test_gone_returns_once_patch_is_freed(self, lp: LpfsMount) -> None:
        """wait --gone exits 0 once the patch directory is gone."""
        disable(lp, LP)
        assert 0 == lp.command("wait", LP, "--gone", "--timeout", "0.2").returncode


class TestTasks:
    def test_blocking_names_task_and_function(self, blocked: LpfsMount) -> None:
        """tasks --blocking lists the task and the function it sleeps on."""
        expected = [
            "    PID COMM             REASON",
            "    100 task100          is sleeping on function cmdline_proc_show",
        ]
        assert expected == blocked.run("tasks", "--blocking").splitlines()

    def test_blocking_json(self, blocked: LpfsMount) -> None:
        """tasks --blocking --json gives pid, comm, reason and function."""
        expected = [
            {
                "pid": 100,
                "comm": "task100",
                "reason": "is sleeping on function cmdline_proc_show",
                "function": "cmdline_proc_show",
            }
        ]
        assert expected == json.loads(blocked.run("tasks", "--blocking", "--json"))

    def test_nothing_blocks_without_a_transition(self, lp: LpfsMount) -> None:
        """With no transition in progress no task is blocking."""
        assert [] == json.loads(lp.run("tasks", "--blocking", "--json"))
