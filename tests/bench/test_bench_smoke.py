"""The bench's smoke mode: it runs end to end and writes a well-formed results file.

No timing is asserted; speed is what `make bench` reports, never what a test checks.
"""

import json
import subprocess
import sys
from pathlib import Path

from support import require_fuse

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"
SECTIONS = ("throughput", "cycle", "startup", "many", "engine", "host_tasks", "scale")
OPS = {"read", "stat", "write", "trunc", "readdir"}


def is_spread(value) -> bool:
    return set(value) == {"median", "min", "max", "runs"} and value["min"] <= value["max"]


def run_smoke(out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1
    return result, json.loads(files[0].read_text())


def test_smoke_run_writes_well_formed_results(tmp_path):
    """`bench/run.py --smoke` exits 0, prints the table and writes every section."""
    require_fuse()

    result, data = run_smoke(tmp_path)

    assert "Targets:" in result.stdout
    assert 1 == data["schema"]
    assert "smoke" == data["config"]["mode"]
    assert all(section in data for section in SECTIONS)
    assert [] == data["cleanup"]
    for target in data["targets"]:
        assert {"name", "value", "limit", "pass"} == set(target)
        assert isinstance(target["pass"], bool)
    cells = data["throughput"]["cells"]
    assert {(op, n) for op in OPS for n in data["config"]["clients"]} == {
        (cell["op"], cell["clients"]) for cell in cells
    }
    for cell in cells:
        assert {"c_single", "c_multi", "lpfs"} <= set(cell["stacks"])
        assert all(is_spread(stack["ops_per_s"]) for stack in cell["stacks"].values())
        for stack in ("c_single", "c_multi", "lpfs"):
            assert cell["stacks"][stack]["requests_per_op"]["total"] >= 0
    assert all(is_spread(size["try_s"]) for size in data["engine"]["simulated"])
    assert data["config"]["scale_patches"] == [row["patches"] for row in data["scale"]["rows"]]
    assert data["many"]["all_gone"]
