"""The ``lpfs`` command.

Exit codes: 0 success; 1 a kernel- or kmod-style error (one line, kmod's
wording for insmod and rmmod); 2 a usage error; 3 no daemon could be reached.
"""

import argparse
import json
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

# Only what every command needs is imported here: each command imports the rest,
# so a short command like `lpfs umount` starts without loading the daemon's side.
from lpfs import __version__
from lpfs.control.client import Client
from lpfs.control.protocol import runtime_dir, socket_path
from lpfs.errors import ControlError, ModfileError, UnsupportedKernel
from lpfs.fuse import mounttable

if TYPE_CHECKING:
    from lpfs.daemon import daemon

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
READY_TIMEOUT: Final = 30.0
UMOUNT_TIMEOUT: Final = 10.0
UMOUNT_SETTLE: Final = 0.1  # a daemon leaves within milliseconds of an unmount that is not lazy

# kmod's insmod words these errnos its own way (tools/insmod.c mod_strerror).
KMOD_INSMOD_TEXT: Final = {
    8: "Invalid module format",  # ENOEXEC
    2: "Unknown symbol in module",  # ENOENT
    3: "Module has wrong symbol version",  # ESRCH
    22: "Invalid parameters",  # EINVAL
}


class CommandError(Exception):
    """A failure the CLI reports as one line and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- finding the daemon -------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    mount = args.mount or os.environ.get("LPFS_MOUNT")
    if mount:
        return Client(socket_path(mount))
    live = []
    for sock in sorted(runtime_dir().glob("*.sock")):
        try:
            reply = Client(sock, timeout=2).call("ping")
        except ControlError:
            continue
        if reply.get("ok"):
            live.append(sock)
    if len(live) == 1:
        return Client(live[0])
    why = "no lpfs daemon is running" if not live else "several lpfs daemons are running"
    raise CommandError(f"lpfs: {why}; name one with --mount or LPFS_MOUNT", EXIT_UNREACHABLE)


def _call(args: argparse.Namespace, cmd: str, **request: Any) -> Any:
    """One request; returns its data or raises CommandError with the daemon's message."""
    try:
        reply = _client(args).call(cmd, **request)
    except ControlError as exc:
        raise CommandError(f"lpfs: {exc}", EXIT_UNREACHABLE) from None
    if not reply.get("ok"):
        raise CommandError(f"lpfs: {args.command}: {reply.get('error')}")
    return reply.get("data")


def _request(args: argparse.Namespace, cmd: str, **request: Any) -> dict[str, Any]:
    try:
        return _client(args).call(cmd, **request)
    except ControlError as exc:
        raise CommandError(f"lpfs: {exc}", EXIT_UNREACHABLE) from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# -- subcommands --------------------------------------------------------------


def _serving_pid(mountpoint: Path) -> int | None:
    """The pid of the daemon answering for ``mountpoint``, or None."""
    try:
        return int(Client(socket_path(mountpoint), timeout=2).call("ping")["data"]["pid"])
    except (ControlError, KeyError, TypeError):
        return None


def cmd_mount(args: argparse.Namespace) -> int:
    from lpfs.daemon import daemon  # the FUSE binding loads only where a daemon starts
    from lpfs.kernel.profiles import Profile

    mountpoint = Path(args.mountpoint).absolute()
    if not mounttable.is_stale(mountpoint) and not mountpoint.is_dir():
        raise CommandError(f"lpfs: mount: {args.mountpoint}: not a directory", EXIT_USAGE)
    pid = _serving_pid(mountpoint)
    if pid is not None:
        raise CommandError(f"lpfs: mount: {args.mountpoint} is already served by pid {pid}")
    try:
        profile = Profile.parse(args.kernel) if args.kernel else Profile()
    except ValueError as exc:
        raise CommandError(f"lpfs: mount: {exc}", EXIT_USAGE) from None
    options = daemon.MountOptions(
        mountpoint=mountpoint,
        kernel_log=Path(args.kernel_log).absolute() if args.kernel_log else None,
        transition_interval=args.transition_interval,
        scenario=Path(args.scenario).absolute() if args.scenario else None,
        dyndbg=not args.no_dyndbg,
        follow_log=args.follow_log,
        demo=args.demo,
        allow_other=args.allow_other,
        threaded=args.threaded,
        host_tasks=args.tasks == "host",
        host_symbols=args.symbols == "host",
        profile=profile,
    )
    if args.daemon:
        return _mount_in_background(options, args)
    _setup_logging(args)
    try:
        return daemon.run(options)
    except (ControlError, ModfileError, UnsupportedKernel) as exc:
        raise CommandError(f"lpfs: mount: {exc}") from None


def _setup_logging(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(
        filename=args.log_file,
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s lpfs[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def _mount_in_background(options: "daemon.MountOptions", args: argparse.Namespace) -> int:
    """Fork a daemon and return once its mount answers (or report why it failed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _setup_logging(args)

        def ready() -> None:
            os.write(write_end, b"R")
            os.close(write_end)

        try:
            from lpfs.daemon import daemon

            code = daemon.run(options, ready)
        except (ControlError, ModfileError, UnsupportedKernel) as exc:
            os.write(write_end, b"E" + str(exc).encode())
            code = EXIT_ERROR
        except BaseException as exc:  # report, never let a forked child unwind into the CLI
            os.write(write_end, b"E" + repr(exc).encode())
            code = EXIT_ERROR
        os._exit(code)
    os.close(write_end)
    readable, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
    message = os.read(read_end, 65536) if readable else b""
    os.close(read_end)
    if message.startswith(b"R"):
        return EXIT_OK
    os.waitpid(pid, os.WNOHANG)
    reason = message[1:].decode(errors="replace") if message else "the daemon did not mount"
    raise CommandError(f"lpfs: mount: {reason}")


def cmd_umount(args: argparse.Namespace) -> int:
    target = args.mountpoint or args.mount or os.environ.get("LPFS_MOUNT")
    if not target:
        raise CommandError("lpfs: umount: name the mountpoint", EXIT_USAGE)
    mountpoint = Path(target).absolute()
    pid = _serving_pid(mountpoint)
    if pid is None:
        if mounttable.is_stale(mountpoint):
            mounttable.unmount(mountpoint, lazy=True)
            socket_path(mountpoint).unlink(missing_ok=True)
            return EXIT_OK
        raise CommandError(f"lpfs: umount: {target}: no lpfs daemon serves it")
    ours = mounttable.top_mount(mounttable.table_path(mountpoint))  # its id names its users later
    result = mounttable.unmount(mountpoint, lazy=args.lazy)
    if result.returncode != 0:
        hint = " (lpfs umount --lazy detaches it now)" if "busy" in result.stderr else ""
        raise CommandError(f"lpfs: umount: {result.stderr.strip()}{hint}")
    _wait_for_exit(pid, ours.mount_id if ours else None, lazy=args.lazy)
    return EXIT_OK


def _wait_for_exit(pid: int, mount_id: int | None, lazy: bool) -> None:
    """Wait for the daemon to leave, saying what keeps it once that takes a moment.

    A lazily detached daemon serves its last users first: the wait ends as soon
    as none of them waits for one of its answers.
    """
    started = time.monotonic()
    told: set[mounttable.User] = set()
    waiting: list[mounttable.User] = []
    while time.monotonic() < started + UMOUNT_TIMEOUT:
        if not _running(pid):
            return
        if time.monotonic() < started + UMOUNT_SETTLE:
            time.sleep(0.001)
            continue
        users = [] if mount_id is None else mounttable.mount_users(mount_id, waiting_only=not lazy)
        waiting = [user for user in users if user.waiting]
        if lazy and not waiting:
            whom = ", ".join(map(_named, users)) or "its last user"
            _say(f"daemon {pid} serves the detached mount until {whom} leaves")
            return
        for user in set(waiting) - told:
            _say(f"waiting for daemon {pid} to answer {_named(user)}")
        told.update(waiting)
        time.sleep(0.05)
    answering = f", answering {', '.join(map(_named, waiting))}" if waiting else ""
    raise CommandError(f"lpfs: umount: daemon {pid} is still running{answering}")


def _named(user: mounttable.User) -> str:
    return f"pid {user.pid} ({user.comm})"


def _say(message: str) -> None:
    print(f"lpfs: umount: {message}", file=sys.stderr)


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has: only its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z"


def _module_file(arg: str) -> Path:
    """A module file's path; a bare name that is no file is looked up as modprobe would."""
    from lpfs.formats.modpath import find_module

    path = Path(arg)
    if not path.exists() and "/" not in arg:
        path = find_module(arg) or path
    return path


def cmd_insmod(args: argparse.Namespace) -> int:
    from lpfs.formats import modfile

    path = _module_file(args.file)
    try:
        text, name = modfile.module_text(path)
    except OSError as exc:
        raise CommandError(
            f"insmod: ERROR: could not load module {args.file}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise CommandError(
            f"insmod: ERROR: could not insert module {args.file}: Invalid module format"
        ) from None
    except ModfileError as exc:
        raise CommandError(f"insmod: ERROR: {exc}") from None
    reply = _request(args, "insmod", file=str(path), text=text, name=name, params=args.params)
    if reply.get("ok"):
        return EXIT_OK
    if reply.get("kind") == "modfile":
        raise CommandError(f"insmod: ERROR: {reply['error']}")
    if reply.get("kind") == "kernel":
        code = reply["errno"]
        text = KMOD_INSMOD_TEXT.get(code, os.strerror(code))
        raise CommandError(f"insmod: ERROR: could not insert module {args.file}: {text}")
    raise CommandError(f"insmod: ERROR: {reply.get('error')}")


def cmd_install_system(args: argparse.Namespace) -> int:
    from lpfs.tools import sysinstall

    root = Path(args.root)
    try:
        if args.uninstall:
            changed = sysinstall.uninstall(root)
        else:
            lpfs = sysinstall.this_lpfs()
            if lpfs is None:
                raise CommandError("lpfs: install-system: cannot find the lpfs command")
            changed = sysinstall.install(root, lpfs)
    except OSError as exc:
        raise CommandError(f"lpfs: install-system: {exc.filename}: {exc.strerror}") from None
    for path in changed:
        print(f"{'removed' if args.uninstall else 'installed'} {path}")
    sysinstall.reload_systemd(root)
    return EXIT_OK


def cmd_pack(args: argparse.Namespace) -> int:
    from lpfs.formats import pack

    try:
        pack.pack_file(_module_file(args.file), Path(args.output) if args.output else None)
    except ModfileError as exc:
        raise CommandError(f"lpfs: pack: {exc}") from None
    except OSError as exc:
        raise CommandError(f"lpfs: pack: {exc.filename}: {exc.strerror}") from None
    return EXIT_OK


def cmd_rmmod(args: argparse.Namespace) -> int:
    from lpfs.formats import modfile

    name = modfile.module_name_from_arg(args.name)
    reply = _request(args, "rmmod", name=args.name)
    if reply.get("ok"):
        return EXIT_OK
    if reply.get("kind") == "kernel":
        if reply["errno"] == 2:  # ENOENT
            raise CommandError(f"rmmod: ERROR: Module {name} is not currently loaded")
        raise CommandError(f"rmmod: ERROR: Module {name} is in use")
    raise CommandError(f"rmmod: ERROR: {reply.get('error')}")


def cmd_lsmod(args: argparse.Namespace) -> int:
    modules = _call(args, "lsmod")
    if args.json:
        _print_json(modules)
        return EXIT_OK
    print("Module                  Size  Used by")
    for m in modules:
        holders = f" {','.join(m['holders'])}" if m["holders"] else ""
        print(f"{m['name']:<19} {m['size']:>8}  {m['refcnt']}{holders}")
    return EXIT_OK


def cmd_dmesg(args: argparse.Namespace) -> int:
    from lpfs.kernel.klog import Record

    def show(fields: dict[str, Any]) -> None:
        record = Record(**fields)
        print(record.json() if args.json else record.dmesg(), flush=True)

    if not args.follow:
        for fields in _call(args, "dmesg", clear=args.clear or args.read_clear):
            if not args.clear:
                show(fields)
        return EXIT_OK
    try:
        for reply in _client(args).stream("dmesg", follow=True):
            show(reply["record"])
    except ControlError as exc:
        raise CommandError(f"lpfs: {exc}", EXIT_UNREACHABLE) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_kmsg(args: argparse.Namespace) -> int:
    _call(args, "kmsg", text=" ".join(args.text))
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = _call(args, "tasks", blocking=args.blocking)
    if args.json:
        _print_json(rows)
    elif args.blocking:
        print(f"{'PID':>7} {'COMM':<16} REASON")
        for row in rows:
            print(f"{row['pid']:>7} {row['comm']:<16} {row['reason']}")
    else:
        print(f"{'PID':>7} {'COMM':<16} {'STATE':<16} {'PATCH_STATE':>11}  STACK")
        for row in rows:
            print(
                f"{row['pid']:>7} {row['comm']:<16} {row['state']:<16} "
                f"{row['patch_state']:>11}  {','.join(row['stack'])}"
            )
    return EXIT_OK


def _split_stack(text: str | None) -> list[str] | None:
    return None if text is None else [f for f in text.split(",") if f]


def cmd_task(args: argparse.Namespace) -> int:
    if args.task_command == "add":
        fields: dict[str, Any] = {
            "pid": args.pid,
            "comm": args.comm or f"task{args.pid}",
            "state": args.state or "sleeping",
            "stack": _split_stack(args.stack) or [],
            "kthread": args.kthread,
            "unreliable": args.unreliable,
        }
        if args.parent is not None:
            fields["parent"] = args.parent
        view = _call(args, "task_add", **fields)
    elif args.task_command == "set":
        changes: dict[str, Any] = {"pid": args.pid}
        if args.state is not None:
            changes["state"] = args.state
        if args.stack is not None:
            changes["stack"] = _split_stack(args.stack)
        if args.comm is not None:
            changes["comm"] = args.comm
        for flag in ("kthread", "unreliable"):
            if getattr(args, flag) is not None:
                changes[flag] = getattr(args, flag)
        view = _call(args, "task_set", **changes)
    else:
        view = _call(args, "task_exit", pid=args.pid)
    if args.json and view is not None:
        _print_json(view)
    return EXIT_OK


def cmd_tick(args: argparse.Namespace) -> int:
    ran = _call(args, "tick", count=args.count)
    if args.json:
        _print_json({"tries": ran})
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    _call(
        args, "wait", patch=args.patch, mode="gone" if args.gone else "idle", timeout=args.timeout
    )
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    _call(args, "reset")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _call(args, "stats")
    if args.json:
        _print_json(stats)
        return EXIT_OK
    counts = stats["fuse_requests"]
    if counts is None:
        print("FUSE requests: not counted (a libfuse binding serves this mount)")
        return EXIT_OK
    print(f"{'REQUEST':<12} {'COUNT':>12}")
    for name, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{name:<12} {count:>12}")
    return EXIT_OK


def _transition_line(transition: dict[str, Any] | None) -> str:
    if transition is None:
        return "transition:  none"
    return (
        f"transition:  {transition['patch']} {transition['direction']}: "
        f"{transition['tasks_switched']}/{transition['tasks_total']} tasks switched, "
        f"{transition['tries']} tries, fake signal in {transition['next_signal_in']} tries"
    )


def _wait_for_transition(args: argparse.Namespace) -> int:
    """Show the transition live until it ends: 0 if it completed, 1 if it was reversed."""
    first = _call(args, "status")["transition"]
    if first is None:
        print(_transition_line(None))
        return EXIT_OK
    shown = ""
    while True:
        status = _call(args, "status")
        transition = status["transition"]
        if transition is None or transition["patch"] != first["patch"]:
            break
        line = _transition_line(transition)
        if line != shown:
            print(line, flush=True)
            shown = line
        time.sleep(0.1)
    patch = next((p for p in status["patches"] if p["name"] == first["patch"]), None)
    enabled = bool(patch and patch["enabled"])
    completed = enabled == (first["direction"] == "patching")
    print(f"transition:  {first['patch']} {'complete' if completed else 'reversed'}")
    return EXIT_OK if completed else EXIT_ERROR


def cmd_status(args: argparse.Namespace) -> int:
    if args.wait:
        return _wait_for_transition(args)
    status = _call(args, "status")
    if args.json:
        _print_json(status)
        return EXIT_OK
    print(f"kernel:      {status['kernel']} (lpfs {status['version']}, pid {status['pid']})")
    print(f"mount:       {status['mountpoint']}")
    print(f"socket:      {status['socket']}")
    print(f"tainted:     {status['tainted']}")
    for patch in status["patches"]:
        state = "enabled" if patch["enabled"] else "disabled"
        extra = ", replace" if patch["replace"] else ""
        extra += ", forced" if patch["forced"] else ""
        print(f"patch:       {patch['name']} ({state}, stack_order {patch['stack_order']}{extra})")
    print(_transition_line(status["transition"]))
    return EXIT_OK


# -- argument parsing ---------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _add_mount_options(p: argparse.ArgumentParser, *, mountpoint: bool = True) -> None:
    if mountpoint:
        p.add_argument("mountpoint")
    p.add_argument("--daemon", action="store_true", help="return once the mount answers")
    p.add_argument("--kernel-log", metavar="FILE", help="append each kernel log line to FILE")
    p.add_argument(
        "--transition-interval",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="seconds between transition retries; 0 = only `lpfs tick` (default 1)",
    )
    p.add_argument("--scenario", metavar="FILE", help="tasks and modules to start with")
    p.add_argument("--kernel", metavar="VERSION", help="mainline release to emulate")
    p.add_argument(
        "--tasks",
        choices=["simulated", "host"],
        default="simulated",
        help="where tasks come from: scripted (default) or this machine's threads",
    )
    p.add_argument(
        "--symbols",
        choices=["any", "host"],
        default="any",
        help="check vmlinux function names against this machine's /proc/kallsyms",
    )
    p.add_argument("--no-dyndbg", action="store_true", help="hide pr_debug lines")
    p.add_argument("--demo", action="store_true", help="load the demo livepatch at start")
    p.add_argument("--follow-log", action="store_true", help="print the kernel log as it grows")
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users in, with sysfs's permission checks",
    )
    p.add_argument("--threaded", action="store_true", help="use libfuse's multithreaded loop")
    p.add_argument("--log-file", metavar="F", help="diagnostics log (default stderr)")
    p.add_argument("--log-level", metavar="L", default="warning", help="diagnostics level")


def _add_task_actions(
    actions: "argparse._SubParsersAction[argparse.ArgumentParser]",
    *parents: argparse.ArgumentParser,
) -> None:
    add = actions.add_parser(
        "add", parents=parents, help="a new task (forked from --parent if given)"
    )
    add.add_argument("--pid", type=int, required=True)
    change = actions.add_parser("set", parents=parents, help="change a task")
    change.add_argument("pid", type=int)
    for p, default in ((add, False), (change, None)):
        p.add_argument("--comm")
        p.add_argument("--state", choices=["running", "sleeping", "uninterruptible", "R", "S", "D"])
        p.add_argument("--stack", metavar="F1,F2", help="kernel stack, innermost first")
        p.add_argument("--kthread", action=argparse.BooleanOptionalAction, default=default)
        p.add_argument("--unreliable", action=argparse.BooleanOptionalAction, default=default)
    add.add_argument("--parent", type=int, help="inherit this task's patch state")
    end = actions.add_parser("exit", parents=parents, help="the task exits")
    end.add_argument("pid", type=int)


NS_HELP: Final = (
    "run COMMAND in a private mount namespace where the emulation is the kernel: "
    "/sys/kernel/livepatch, /sys/module, /dev/kmsg, /proc's module files and the "
    "kmod, dmesg and uname tools are lpfs's (root only)"
)


def _ns_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lpfs ns",
        usage="%(prog)s [--mount M] [lpfs mount options] -- COMMAND [ARGS...]",
        description=NS_HELP[0].upper() + NS_HELP[1:] + ".",
    )
    p.add_argument("--mount", metavar="M", help="use the daemon serving M instead of starting one")
    _add_mount_options(p, mountpoint=False)
    return p


def run_ns(argv: list[str]) -> NoReturn:
    """`lpfs ns`: check the options, then hand over to the namespace script."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = _ns_parser()
    parser.parse_args(argv[:split])
    if not argv[split + 1 :]:
        parser.error("no COMMAND: give it after --")
    script = Path(__file__).with_name("ns.sh")
    env = {**os.environ, "LPFS_PYTHON": sys.executable}
    try:
        os.execvpe("bash", ["bash", str(script), *argv], env)
    except OSError as exc:
        print(f"lpfs ns: cannot run bash: {exc.strerror}", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # Accepted before and after the subcommand; SUPPRESS keeps a later
    # subparser from resetting a value given before it.
    common.add_argument(
        "--mount",
        metavar="M",
        default=argparse.SUPPRESS,
        help="mountpoint of the daemon (default $LPFS_MOUNT)",
    )
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true", help="print data as JSON")

    parser = argparse.ArgumentParser(
        prog="lpfs", description="Emulate the Linux kernel's livepatch sysfs interface over FUSE."
    )
    parser.add_argument("--version", action="version", version=f"lpfs {__version__}")
    parser.add_argument(
        "--mount", metavar="M", help="mountpoint of the daemon (default $LPFS_MOUNT)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        helptext: str,
        *parents: argparse.ArgumentParser,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext, parents=[common, *parents])
        p.set_defaults(func=func)
        return p

    p = add("mount", cmd_mount, "mount the emulated sysfs and serve it")
    _add_mount_options(p)

    # Parsed by run_ns: everything after `--` is the command's own.
    sub.add_parser("ns", help=NS_HELP, add_help=False)

    p = add("umount", cmd_umount, "unmount and stop the daemon")
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("-l", "--lazy", action="store_true", help="detach now even if busy (umount -l)")

    p = add("insmod", cmd_insmod, "load a module file")
    p.add_argument("file", help="a .toml or .ko module file, or the name of a shipped one")
    p.add_argument("params", nargs="*", metavar="name=value")

    p = add("pack", cmd_pack, "wrap a module file in a .ko that modinfo and readelf read")
    p.add_argument("file", help="a .toml module file, or the name of a shipped one")
    p.add_argument("-o", "--output", metavar="NAME.ko", help="default <module name>.ko")

    p = add(
        "install-system",
        cmd_install_system,
        "install mount(8)'s helper mount.lpfs and the systemd unit lpfs@.service",
    )
    p.add_argument("--root", default="/", metavar="DIR", help="install under DIR (default /)")
    p.add_argument("--uninstall", action="store_true", help="remove them instead")

    p = add("rmmod", cmd_rmmod, "unload a module")
    p.add_argument("name")

    add("lsmod", cmd_lsmod, "list loaded modules", data)

    p = add("dmesg", cmd_dmesg, "print the kernel log", data)
    p.add_argument("-w", "--follow", action="store_true", help="wait for new lines")
    p.add_argument("-C", "--clear", action="store_true", help="clear the ring")
    p.add_argument("-c", "--read-clear", action="store_true", help="print, then clear")

    p = add("kmsg", cmd_kmsg, "log a line, as a write to /dev/kmsg does")
    p.add_argument("text", nargs="+")

    p = add("tasks", cmd_tasks, "list tasks and their patch states", data)
    p.add_argument("--blocking", action="store_true", help="only tasks that block the transition")

    p = add("task", cmd_task, "add, change or end a simulated task")
    _add_task_actions(
        p.add_subparsers(dest="task_command", required=True, metavar="ACTION"), common, data
    )

    p = add("tick", cmd_tick, "run transition retries now", data)
    p.add_argument("count", nargs="?", type=int, default=1)

    p = add("wait", cmd_wait, "wait until a patch is gone or its transition is over")
    p.add_argument("patch")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--gone", action="store_true", help="until its directory is gone")
    how.add_argument("--idle", action="store_true", help="until it is not in transition")
    p.add_argument("--timeout", type=_positive_float, metavar="S")

    add("reset", cmd_reset, "unload everything and clear the log")
    add("status", cmd_status, "show the emulated kernel's state", data).add_argument(
        "--wait", action="store_true", help="follow the transition until it completes or reverses"
    )
    add("stats", cmd_stats, "count the FUSE requests served, by kind", data)
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ns"]:
        run_ns(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        code = exc.code
    except BrokenPipeError:
        code = EXIT_OK
    sys.exit(code)
