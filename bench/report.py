"""The printed table: medians with their spread, every time beside its same-run baseline."""

from collections.abc import Sequence
from typing import Any

from targets import verdict

STACK_TITLES = {"sysfs": "sysfs", "c_single": "C -s", "c_multi": "C mt", "lpfs": "lpfs"}


def rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def seconds(value: float) -> str:
    """A duration with three significant digits in a fitting unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale or unit == "us":
            scaled = value / scale
            digits = 0 if scaled >= 100 else 1 if scaled >= 10 else 2
            return f"{scaled:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def spread_of(summary: dict[str, Any], fmt: Any) -> str:
    return f"{fmt(summary['median'])} [{fmt(summary['min'])}-{fmt(summary['max'])}]"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, the first row a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def throughput(section: dict[str, Any]) -> str:
    stacks = [s for s in STACK_TITLES if any(s in c["stacks"] for c in section["cells"])]
    header = ["op", "clients", *(STACK_TITLES[s] for s in stacks)]
    header += ["faster C", "lpfs/C", "lpfs/sysfs", ">=0.75x C", "4/1 clients", ">=1.0x"]
    rows = [header]
    by_key = {(c["op"], c["clients"]): c for c in section["cells"]}
    clients = sorted({c["clients"] for c in section["cells"]})
    for cell in section["cells"]:
        row = [cell["op"], str(cell["clients"])]
        for stack in stacks:
            summary = cell["stacks"].get(stack)
            row.append(spread_of(summary["ops_per_s"], rate) if summary else "-")
        ok = (cell["ratio_lpfs_c"] or 0) >= 0.75 and cell["lpfs_errors"] == 0
        row += [STACK_TITLES[cell["c_best"]], times(cell["ratio_lpfs_c"])]
        row += [times(cell["ratio_lpfs_sysfs"]), verdict(ok)]
        if cell["clients"] == clients[-1] and len(clients) > 1:
            one = by_key[cell["op"], clients[0]]["stacks"]["lpfs"]["ops_per_s"]["median"]
            many = cell["stacks"]["lpfs"]["ops_per_s"]["median"]
            row += [times(many / one if one else None), verdict(many >= one)]
        else:
            row += ["", ""]
        rows.append(row)
    title = (
        f"Throughput, ops/s, median [min-max] of {section['repetitions']} x "
        f"{section['seconds_per_run']} s; sysfs = {section['sysfs_path']}; "
        f"lpfs/C against the faster C loop"
    )
    return title + "\n" + table(rows)


def _requests(per_op: dict[str, float] | None) -> str:
    """``4.00 (OPEN 1, READ 2, RELEASE 1)``: the total, then each kind; ``-`` if not counted."""
    if not per_op:
        return "-"
    kinds = ", ".join(f"{k} {v:.2g}" for k, v in per_op.items() if k != "total" and v >= 0.005)
    return f"{per_op['total']:.2f} ({kinds})" if kinds else f"{per_op['total']:.2f}"


def requests(section: dict[str, Any]) -> str:
    """FUSE requests per operation: lpfs's opcodes, the C baseline's libfuse callbacks."""
    rows = [["op", "clients", "lpfs", "C -s (callbacks)"]]
    for cell in section["cells"]:
        stacks = cell["stacks"]
        rows.append(
            [
                cell["op"],
                str(cell["clients"]),
                _requests(stacks["lpfs"].get("requests_per_op")),
                _requests(stacks["c_single"].get("requests_per_op")),
            ]
        )
    title = "FUSE requests per operation, counted by each daemon over every run of the cell"
    return title + "\n" + table(rows)


def _errors_note(section: dict[str, Any]) -> str:
    notes = []
    for cell in section["cells"]:
        for stack, summary in cell["stacks"].items():
            if summary["errors"]:
                notes.append(f"{cell['op']}/{cell['clients']}/{stack}: {summary['errors']}")
    notes += [f"warning: {w}" for w in section["warnings"]]
    return "errors: " + "; ".join(notes) if notes else "errors: none (EINVAL on write is expected)"


def startup(section: dict[str, Any], many: dict[str, Any], cycle: dict[str, Any]) -> str:
    python = section["python"]["median"]
    c_mount, c_umount = section["c_mount"]["median"], section["c_umount"]["median"]
    rss = section["lpfs_rss_mb"]
    targets = {t["name"]: t["pass"] for t in section["targets"]}
    rows = [
        ["measure", "median [min-max]", "baseline (median)", "ratio", "target"],
        [
            "lpfs mount --daemon, until it answers",
            spread_of(section["lpfs_mount"], seconds),
            f"python -I -c pass {seconds(python)}",
            times(section["ratio_mount_python"]),
            "<= 5x " + verdict(targets["lpfs mount-to-ready vs python -I -c pass"]),
        ],
        [
            "",
            "",
            f"C baseline mount {seconds(c_mount)}",
            times(section["ratio_mount_c"]),
            "",
        ],
        [
            "lpfs umount, until it is gone",
            spread_of(section["lpfs_umount"], seconds),
            f"C baseline unmount {seconds(c_umount)}",
            times(section["ratio_umount_c"]),
            "<= 2x " + verdict(targets["lpfs unmount vs C baseline unmount"]),
        ],
        [
            "fusermount -u on lpfs, until gone",
            spread_of(section["lpfs_fusermount"], seconds),
            f"C baseline unmount {seconds(c_umount)}",
            times(section["ratio_fusermount_c"]),
            "(the daemon's share)",
        ],
        [
            "idle daemon RSS",
            spread_of(rss, lambda mb: f"{mb:.1f} MB"),
            "",
            "",
            "<= 30 MB " + verdict(targets["idle daemon RSS (MB)"]),
        ],
        [
            f"{many['daemons']} daemons at once",
            f"mount {seconds(many['mount_all_s'])}, umount {seconds(many['umount_all_s'])}",
            f"{many['answered']} answered, all gone: {many['all_gone']}",
            f"{many['rss_total_mb']:.0f} MB RSS",
            verdict(many["targets"][0]["pass"]),
        ],
        [
            "disable+reload cycle",
            f"{spread_of(cycle['cycles_per_s'], lambda r: f'{r:.2f}')} /s, "
            f"{seconds(cycle['step_s']['cycle'])} each",
            f"2 x python -I -c pass {seconds(2 * cycle['python']['median'])}",
            times(cycle["ratio_cycle_two_pythons"]),
            "",
        ],
    ]
    steps = cycle["step_s"]
    note = (
        f"cycle steps (median): echo 0 > enabled {seconds(steps['disable'])}, "
        f"lpfs rmmod {seconds(steps['rmmod'])}, lpfs insmod {seconds(steps['insmod'])}"
    )
    return "Start-up, memory, many daemons, reload cycle\n" + table(rows) + "\n" + note


def engine(section: dict[str, Any]) -> str:
    rows = [["tasks", "try", "bare loop", "try/bare", "per task", "target"]]
    sizes = section["simulated"]
    for i, size in enumerate(sizes):
        mark = ""
        if i == len(sizes) - 1:
            passed = (size["ratio_try_bare"] or 0) <= 2
            mark = f"<= 2x {verdict(passed)}"
        rows.append(_engine_row(str(size["tasks"]), size, mark))
    host = section["host"]
    rows.append(_engine_row(f"host ({host['tasks']} threads)", host, "-"))
    growth = section["per_task_growth"]
    linear = next(t for t in section["targets"] if t["name"].startswith("try linear"))
    title = (
        f"Engine: one transition try (stack depth {section['stack_depth']}, "
        f"{section['patch_funcs']} functions, {section['sleeping_fraction']:.0%} asleep "
        f"in one), median [min-max]"
    )
    note = (
        f"linear in tasks: per-task cost at the largest size is {times(growth)} "
        f"that of the next ({linear['limit']} {verdict(linear['pass'])})"
    )
    return title + "\n" + table(rows) + "\n" + note


def _engine_row(name: str, size: dict[str, Any], mark: str) -> list[str]:
    return [
        name,
        spread_of(size["try_s"], seconds),
        spread_of(size["bare_loop_s"], seconds),
        times(size["ratio_try_bare"]),
        f"{size['try_per_task_ns']:.0f} ns",
        mark,
    ]


def host_tasks(section: dict[str, Any]) -> str:
    rows = [["daemon", "per read", "requests/op"]]
    for name in ("idle", "transition"):
        rows.append(
            [
                name,
                spread_of(section[f"{name}_read_us"], lambda us: seconds(us * 1e-6)),
                _requests(section["requests_per_op"][name]),
            ]
        )
    title = (
        f"--tasks host: reading enabled during a transition retried every "
        f"{section['interval_s']} s over {section['tasks']} tasks "
        f"({section['threads']} sleeping threads started; open all along: "
        f"{section['open_all_along']}), median [min-max]"
    )
    target = section["targets"][0]
    note = (
        f"transition / idle: {times(section['ratio'])} (per repetition "
        f"{spread_of(section['ratio_runs'], times)}), {target['limit']} {verdict(target['pass'])}"
    )
    return title + "\n" + table(rows) + "\n" + note


def scale(section: dict[str, Any]) -> str:
    rows = [
        [
            "patches",
            "list kernel/livepatch",
            "vs 1",
            "read enabled",
            "vs 1",
            "requests/op (list, read)",
            "RSS",
            "RSS slope /10k ops",
            "noise",
        ]
    ]
    for row in section["rows"]:
        growth = row["rss_growth"]
        rows.append(
            [
                str(row["patches"]),
                spread_of(row["list_us"], lambda us: seconds(us * 1e-6)),
                times(row["ratio_list"]),
                spread_of(row["read_us"], lambda us: seconds(us * 1e-6)),
                times(row["ratio_read"]),
                ", ".join(_requests(row["requests_per_op"][name]) for name in ("list", "read")),
                f"{row['rss_mb']:.1f} MB",
                f"{growth['slope_kb_per_10k_ops']:+.1f} KB",
                f"{growth['noise_kb_per_10k_ops']:.1f} KB",
            ]
        )
    ops = section["rows"][0]["rss_growth"]["ops"]
    title = f"Scale: per-op cost (median [min-max]), RSS, RSS growth over {ops} mixed ops"
    return title + "\n" + table(rows)


def summary(targets: list[dict[str, Any]]) -> str:
    rows = [["target", "measured", "limit", "verdict"]]
    for found in targets:
        value = found["value"]
        if isinstance(value, bool):
            shown = str(value)
        elif isinstance(value, float):
            shown = f"{value:.2f}"
        else:
            shown = str(value)
        rows.append([found["name"], shown, found["limit"], verdict(found["pass"])])
    passed = sum(1 for t in targets if t["pass"])
    return f"Targets: {passed} of {len(targets)} pass\n" + table(rows)


def render(results: dict[str, Any]) -> str:
    parts = [
        f"lpfs bench ({results['config']['mode']}), {results['started']}, "
        f"{results['duration_s']:.0f} s, {results['host']['cpus']} CPUs, "
        f"kernel {results['host']['kernel']}, Python {results['host']['python']}",
        throughput(results["throughput"]),
        _errors_note(results["throughput"]),
        requests(results["throughput"]),
        startup(results["startup"], results["many"], results["cycle"]),
        engine(results["engine"]),
        host_tasks(results["host_tasks"]),
        scale(results["scale"]),
        summary(results["targets"]),
    ]
    return "\n\n".join(parts)
