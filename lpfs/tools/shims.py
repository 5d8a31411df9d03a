"""Stand-ins for kmod, dmesg and uname inside lpfs-ns, in the real tools' words.

Each is ``python -m lpfs.tools.shims TOOL ARGS…`` (lpfs-ns installs one script that
dispatches on the name it was called by). They talk to the daemon of
``$LPFS_MOUNT``. Module names resolve, as modprobe would look them up, in the
current directory, ``test_modules/`` there, the directories of
``$LPFS_MODULE_PATH``, and last the module files of the kernel's livepatch
test modules that ship with lpfs, as ``NAME.ko`` or ``NAME.toml``.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from lpfs.control.client import Client
from lpfs.control.protocol import socket_path
from lpfs.errors import ControlError, ModfileError
from lpfs.formats import elf, modfile, pack
from lpfs.formats.modpath import find_module
from lpfs.kernel.klog import Record
from lpfs.tools import cli

LEVELS: Final = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
FACILITIES: Final = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news")


def _client() -> Client:
    return Client(socket_path(os.environ["LPFS_MOUNT"]))


def _call(cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return _client().call(cmd, **args)
    except ControlError as exc:
        print(f"lpfs: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _release() -> str:
    return str(_call("status")["data"]["kernel"])


def insmod(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        print("insmod: ERROR: missing filename.", file=sys.stderr)
        return 1
    return _run_cli(["insmod", *args])


def rmmod(argv: list[str]) -> int:
    code = 0
    for name in (a for a in argv if not a.startswith("-")):
        code = _run_cli(["rmmod", name]) or code
    return code


def _run_cli(argv: list[str]) -> int:
    try:
        cli.main([*argv, "--mount", os.environ["LPFS_MOUNT"]])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def modprobe(argv: list[str]) -> int:
    dry_run = remove = quiet = verbose = False
    dirs: list[str] = []
    words: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg in ("-n", "--dry-run", "--show"):
            dry_run = True
        elif arg in ("-r", "--remove"):
            remove = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("-d", "--dirname"):
            dirs.append(next(items, "."))
        elif arg.startswith("--dirname="):
            dirs.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            words.append(arg)
    if not words:
        print("modprobe: ERROR: missing parameters. See -h.", file=sys.stderr)
        return 1
    name, params = modfile.module_name(words[0]), words[1:]
    loaded = {m["name"] for m in _call("lsmod")["data"]}
    if remove:
        if name not in loaded:
            print(f"modprobe: FATAL: Module {name} is not in kernel.", file=sys.stderr)
            return 1
        return 0 if dry_run else rmmod([name])
    path = find_module(words[0], dirs)
    if path is None:
        if not quiet:
            print(
                f"modprobe: FATAL: Module {words[0]} not found in directory "
                f"/lib/modules/{_release()}",
                file=sys.stderr,
            )
        return 1
    if verbose:
        print(f"insmod {path.absolute()} {' '.join(params)}".rstrip())
    if dry_run or name in loaded:
        return 0
    text, default = modfile.module_text(path)
    reply = _call("insmod", file=str(path), text=text, name=default, params=params)
    if reply.get("ok"):
        return 0
    error = os.strerror(reply["errno"]) if reply.get("errno") else reply.get("error")
    print(f"modprobe: ERROR: could not insert '{name}': {error}", file=sys.stderr)
    return 1


def modinfo(argv: list[str]) -> int:
    field = None
    targets = []
    items = iter(argv)
    for arg in items:
        if arg in ("-F", "--field"):
            field = next(items, "")
        elif arg.startswith("--field="):
            field = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            targets.append(arg)
    code = 0
    for target in targets:
        path = Path(target) if Path(target).is_file() else find_module(target)
        if path is None:
            print(f"modinfo: ERROR: Module {target} not found.", file=sys.stderr)
            code = 1
            continue
        try:
            fields = _modinfo_fields(path)
        except (ModfileError, OSError, UnicodeDecodeError, ValueError) as exc:
            print(f"modinfo: ERROR: could not get modinfo from '{target}': {exc}", file=sys.stderr)
            code = 1
            continue
        for key, value in fields:
            if field is None:
                print(f"{key + ':':<16}{value}")
            elif key == field:
                print(value)
    return code


def _modinfo_fields(path: Path) -> list[tuple[str, str]]:
    """What kmod's modinfo lists: the .modinfo strings of a .ko (or of the .ko that
    `lpfs pack` would make of a module file), then the parameters."""
    text, default = modfile.module_text(path)
    definition = modfile.parse(text, str(path), default_name=default)
    data = path.read_bytes()
    raw = elf.sections(data).get(".modinfo", b"") if data.startswith(elf.MAGIC) else None
    strings = (raw if raw is not None else pack.modinfo(definition)).split(b"\0")
    fields = [("filename", str(path.absolute()))]
    for entry in strings:
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            fields.append((key, value))
    # __MODULE_PARM_TYPE(): module_param_array() types its parameters "array of <type>".
    fields += [
        ("parm", f"{p.name}:{'array of ' if p.array else ''}{p.type}") for p in definition.params
    ]
    return fields


def lsmod(argv: list[str]) -> int:
    """kmod's lsmod over /proc/modules (lpfs-ns's union of host and emulated modules)."""
    proc = Path("/proc/modules")
    if proc.exists():
        rows = [line.split()[:4] for line in proc.read_text().splitlines()]
    else:  # a kernel without module support: only the emulated ones
        rows = [
            [m["name"], str(m["size"]), str(m["refcnt"]), ",".join(m["holders"]) or "-"]
            for m in _call("lsmod")["data"]
        ]
    print("Module                  Size  Used by")
    for name, size, refcnt, holders in rows:
        users = "" if holders == "-" else " " + holders.rstrip(",")
        print(f"{name:<19} {size:>8}  {refcnt}{users}")
    return 0


def dmesg(argv: list[str]) -> int:
    opts = {
        "clear": False,
        "read_clear": False,
        "follow": False,
        "raw": False,
        "kernel": False,
        "human": False,
        "notime": False,
        "decode": False,
    }
    levels: set[int] | None = None
    items = iter(argv)
    flags = {
        "-C": "clear",
        "--clear": "clear",
        "-c": "read_clear",
        "--read-clear": "read_clear",
        "-w": "follow",
        "--follow": "follow",
        "-r": "raw",
        "--raw": "raw",
        "-k": "kernel",
        "--kernel": "kernel",
        "-T": "human",
        "--ctime": "human",
        "-t": "notime",
        "--notime": "notime",
        "-x": "decode",
        "--decode": "decode",
    }
    for arg in items:
        if arg in flags:
            opts[flags[arg]] = True
        elif arg in ("-l", "--level") or arg.startswith("--level="):
            value = arg.split("=", 1)[1] if "=" in arg else next(items, "")
            levels = {LEVELS.index(v) for v in value.split(",") if v in LEVELS}
        elif arg.startswith("-") and len(arg) > 2 and not arg.startswith("--"):
            for letter in arg[1:]:
                if f"-{letter}" in flags:
                    opts[flags[f"-{letter}"]] = True
    boot = time.time() - time.monotonic() if opts["human"] else 0.0

    def show(fields: dict[str, Any]) -> None:
        record = Record(**fields)
        if opts["kernel"] and record.facility != 0:
            return
        if levels is not None and record.level not in levels:
            return
        print(_format(record, opts, boot), flush=True)

    if opts["clear"]:
        _call("dmesg", clear=True)
        return 0
    if not opts["follow"]:
        for fields in _call("dmesg", clear=opts["read_clear"])["data"]:
            show(fields)
        return 0
    try:
        for reply in _client().stream("dmesg", follow=True):
            show(reply["record"])
    except (ControlError, KeyboardInterrupt):
        pass
    return 0


def _format(record: Record, opts: dict[str, bool], boot: float) -> str:
    secs, usecs = divmod(record.ts_usec, 1_000_000)
    if opts["raw"]:
        return f"<{record.facility * 8 + record.level}>[{secs:5d}.{usecs:06d}] {record.text}"
    if opts["notime"]:
        stamp = ""
    elif opts["human"]:
        stamp = time.strftime("[%a %b %e %H:%M:%S %Y] ", time.localtime(boot + secs))
    else:
        stamp = f"[{secs:5d}.{usecs:06d}] "
    prefix = ""
    if opts["decode"]:
        facility = FACILITIES[record.facility] if record.facility < len(FACILITIES) else "user"
        prefix = f"{facility:<6}:{LEVELS[record.level]:<6}: "
    return f"{prefix}{stamp}{record.text}"


def uname(argv: list[str]) -> int:
    """The real uname, with the emulated release in place of this machine's."""
    real = os.environ.get("LPFS_REAL_UNAME", "uname")
    result = subprocess.run([real, *argv], capture_output=True, text=True, check=False)
    sys.stdout.write(result.stdout.replace(os.uname().release, _release()))
    sys.stderr.write(result.stderr)
    return result.returncode


def depmod(argv: list[str]) -> int:
    """A module-less system's depmod: nothing to index, so it succeeds.

    lpfs's modprobe finds modules by name (``modpath.find_module``), never
    through modules.dep, so nothing is written anywhere.
    """
    return 0


KMOD_COMMANDS: Final = (
    ("help", "Show help message"),
    ("list", "list currently loaded modules"),
    (
        "static-nodes",
        "outputs the static-node information installed with the currently running kernel",
    ),
)
KMOD_COMPAT: Final = ("lsmod", "rmmod", "insmod", "modinfo", "modprobe", "depmod")


def _kmod_help() -> None:
    print("kmod - Manage kernel modules: list, load, unload, etc")
    print("Usage:\n\tkmod [options] command [command_options]\n")
    print("Options:\n\t-V, --version     show version\n\t-h, --help        show this help\n")
    print("Commands:")
    for name, text in KMOD_COMMANDS:
        print(f"  {name:<12} {text}")
    print("\nkmod also handles gracefully if called from following symlinks:")
    for name in KMOD_COMPAT:
        print(f"  {name:<12} compat {name} command")


def kmod(argv: list[str]) -> int:
    """kmod called by its own name (tools/kmod.c): ``list``, ``help``, ``static-nodes``."""
    command = argv[0] if argv else ""
    if command in ("-h", "--help", "help"):
        _kmod_help()
        return 0
    if command in ("-V", "--version"):
        print("kmod version 30")
        return 0
    if command == "list":
        return lsmod(argv[1:])
    if command == "static-nodes":
        return 0  # no module of lpfs's asks for a device node
    print(f"invalid command '{command}'" if command else "missing command", file=sys.stderr)
    _kmod_help()
    return 1


TOOLS: Final[dict[str, Callable[[list[str]], int]]] = {
    "kmod": kmod,
    "depmod": depmod,
    "insmod": insmod,
    "rmmod": rmmod,
    "modprobe": modprobe,
    "modinfo": modinfo,
    "lsmod": lsmod,
    "dmesg": dmesg,
    "uname": uname,
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    tool = os.path.basename(args[0]) if args else ""
    if tool not in TOOLS:
        print(f"lpfs: no stand-in for '{tool}'", file=sys.stderr)
        raise SystemExit(2)
    try:
        raise SystemExit(TOOLS[tool](args[1:]))
    except BrokenPipeError:
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
