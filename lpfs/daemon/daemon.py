"""The daemon: one emulated kernel, its FUSE mount, retry timer and control socket.

``Daemon.handle`` answers control requests by calling the core; ``run``
mounts and serves until the mount goes away (``lpfs umount``, ``fusermount
-u``) or SIGINT/SIGTERM, which libfuse turns into a clean unmount.
"""

import dataclasses
import errno
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lpfs import __version__
from lpfs.control import requests
from lpfs.control.protocol import Reply, error_reply, socket_path
from lpfs.daemon import livepatchfs
from lpfs.daemon.coherence import Coherence
from lpfs.daemon.control_server import ControlServer
from lpfs.errors import ControlError, KernelError, ModfileError, RequestError
from lpfs.formats import modfile, scenario
from lpfs.fuse import mounttable
from lpfs.fuse.stats import RequestCounts
from lpfs.kernel.clock import SystemClock
from lpfs.kernel.core import Core
from lpfs.kernel.kallsyms import Kallsyms
from lpfs.kernel.klog import LOG_USER, KernelLog
from lpfs.kernel.kstrtox import kstrtobool
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import VMLINUX, Module, Patch
from lpfs.kernel.tasks import HostTasks, SchedState, SimulatedTasks
from lpfs.sysfs.tree import Tree

log = logging.getLogger(__name__)

DEFAULT_MESSAGE_LOGLEVEL = 4  # the level of a /dev/kmsg line without a <N> prefix
DEMO_MODULE = Path(__file__).parents[1] / "demo" / "livepatch_demo.toml"


@dataclass(frozen=True)
class MountOptions:
    """Everything ``lpfs mount`` was asked for."""

    mountpoint: Path
    kernel_log: Path | None = None
    transition_interval: float = 1.0
    scenario: Path | None = None
    dyndbg: bool = True
    follow_log: bool = False
    demo: bool = False
    allow_other: bool = False
    threaded: bool = False
    host_tasks: bool = False
    host_symbols: bool = False
    profile: Profile = field(default_factory=Profile)


def _ok(data: Any = None) -> Reply:
    return {"ok": True, "data": data}


def _kernel_error(exc: KernelError) -> Reply:
    return error_reply("kernel", str(exc), exc.errno)


class Daemon:
    """The control-request side of a running lpfs."""

    def __init__(self, options: MountOptions) -> None:
        self.options = options
        self.clock = SystemClock()
        self.klog = KernelLog(self.clock, sink=options.kernel_log, debug=options.dyndbg)
        self.tasks = HostTasks() if options.host_tasks else SimulatedTasks()
        self.core = Core(self.klog, self.tasks, options.profile, self.clock)
        if options.host_symbols:
            self.core.symbols = Kallsyms()
        self.tree = Tree(self.core)
        self.coherence = Coherence(self.core)
        self.request_counts = RequestCounts()
        self.socket = socket_path(options.mountpoint)
        self.stopping = threading.Event()

    # -- requests ------------------------------------------------------------

    def handle(self, request: dict[str, Any], send: Callable[[Reply], None]) -> Reply | None:
        """One request: parsed into its record, then answered by ``cmd_<command>``.

        The client's faults are usage errors; the emulated kernel's refusals are
        kernel errors; anything else is lpfs's own failure, logged with its
        traceback and reported as internal, never blamed on the client.
        """
        try:
            parsed = requests.parse(request)
        except RequestError as exc:
            return error_reply("usage", str(exc))
        cmd = request["cmd"]
        handler: Callable[[Any, Callable[[Reply], None]], Reply | None]
        handler = getattr(self, f"cmd_{cmd}")
        try:
            return handler(parsed, send)
        except KernelError as exc:
            return _kernel_error(exc)
        except ModfileError as exc:
            return error_reply("modfile", str(exc), errno.ENOEXEC)
        except RequestError as exc:
            return error_reply("usage", f"bad '{cmd}' request: {exc}")
        except Exception as exc:
            log.exception("internal error answering %r", request)
            return error_reply("internal", f"lpfs failed to answer '{cmd}': {exc!r}")

    def cmd_ping(self, request: requests.Ping, send: Callable[[Reply], None]) -> Reply:
        return _ok(self._identity())

    def _identity(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": str(self.options.mountpoint),
            "socket": str(self.socket),
            "version": __version__,
            "kernel": self.core.profile.release,
        }

    def cmd_insmod(self, request: requests.Insmod, send: Callable[[Reply], None]) -> Reply:
        # A packed .ko names its module itself; a file's name may differ from it.
        stem = request.name or os.path.basename(request.file).split(".", 1)[0]
        definition = modfile.parse(request.text, request.file, default_name=stem)
        self.core.insmod(definition, request.params)
        return _ok()

    def cmd_rmmod(self, request: requests.Rmmod, send: Callable[[Reply], None]) -> Reply:
        self.core.rmmod(modfile.module_name_from_arg(request.name))
        return _ok()

    def cmd_lsmod(self, request: requests.Lsmod, send: Callable[[Reply], None]) -> Reply:
        with self.core.lock:
            # /proc/modules lists the most recently loaded module first.
            modules = [_module_view(m) for m in reversed(self.core.modules.values())]
        return _ok(modules)

    def cmd_dmesg(self, request: requests.Dmesg, send: Callable[[Reply], None]) -> Reply | None:
        records = self.klog.records()
        if request.clear:
            self.klog.clear()
        if not request.follow:
            return _ok([asdict(r) for r in records])
        after = records[-1].seq if records else -1
        try:
            for record in records:
                send({"record": asdict(record)})
            for record in self.klog.follow(after, self.stopping):
                send({"record": asdict(record)})
        except BrokenPipeError:
            pass
        return None

    def cmd_kmsg(self, request: requests.Kmsg, send: Callable[[Reply], None]) -> Reply:
        """A write to /dev/kmsg: one record, an optional ``<N>`` prefix sets its level."""
        text = request.text.rstrip("\n")
        level, facility = DEFAULT_MESSAGE_LOGLEVEL, LOG_USER
        prefix = re.match(r"<(\d+)>", text)
        if prefix:
            priority = int(prefix.group(1))
            # devkmsg_write(): user space may not pose as the kernel (facility 0).
            level, facility = priority & 7, (priority >> 3) or LOG_USER
            text = text[prefix.end() :]
        self.klog.printk(level, text, facility)
        return _ok()

    def cmd_call(self, request: requests.Call, send: Callable[[Reply], None]) -> Reply:
        """A task calls a show function (of vmlinux, or of ``object``): the replacement it
        runs and its output, or None for the original code. The function tracer sees it."""
        func = self.core.call(
            request.function, request.pid, request.comm, request.object or VMLINUX
        )
        if func is None:
            return _ok(None)
        return _ok({"new_name": func.new_name, "output": func.output})

    def cmd_tracing(self, request: requests.Tracing, send: Callable[[Reply], None]) -> Reply:
        """A tracing/<file> read, or a write (``data``, after a truncation if asked)."""
        name = request.file
        with self.core.lock:
            if request.truncate:
                self.core.ftrace.truncate(name)
            if request.data is not None:
                self.core.ftrace.store(name, request.data)
            return _ok(self.core.ftrace.show(name))

    def cmd_kprobes(self, request: requests.Kprobes, send: Callable[[Reply], None]) -> Reply:
        """kprobes/enabled and kprobes/list; ``enabled`` is a write of that text, parsed
        as write_enabled_file_bool() does (kstrtobool)."""
        kprobes = self.core.kprobes
        with self.core.lock:
            if request.enabled is not None:
                text = request.enabled.encode(errors="surrogateescape")
                kprobes.set_enabled(kstrtobool(text, self.core.profile))
            return _ok({"enabled": kprobes.show_enabled(), "list": kprobes.show_list()})

    def cmd_kallsyms(self, request: requests.Kallsyms, send: Callable[[Reply], None]) -> Reply:
        """The /proc/kallsyms lines of what lpfs adds to the kernel."""
        return _ok(self.core.kallsyms())

    def cmd_sysctl(self, request: requests.Sysctl, send: Callable[[Reply], None]) -> Reply:
        """kernel.ftrace_enabled, the one sysctl lpfs emulates."""
        if request.name != "kernel.ftrace_enabled":
            raise KernelError(errno.ENOENT, f"no sysctl {request.name!r}")
        if request.value is not None:
            self.core.set_ftrace_enabled(bool(request.value))
        return _ok(int(self.core.ftrace_enabled))

    def cmd_dyndbg(self, request: requests.Dyndbg, send: Callable[[Reply], None]) -> Reply:
        """/sys/kernel/debug/dynamic_debug/control: apply a query, return the listing."""
        return _ok(self.klog.dyndbg_control(request.query))

    def cmd_tasks(self, request: requests.Tasks, send: Callable[[Reply], None]) -> Reply:
        self.tasks.prefetch()  # this machine's threads as they are now, scanned unlocked
        with self.core.lock:
            if request.blocking:
                return _ok([asdict(b) for b in self.core.engine.blockers()])
            return _ok([task.view() for task in self.tasks.tasks()])

    def cmd_task_add(self, request: requests.TaskAdd, send: Callable[[Reply], None]) -> Reply:
        try:
            fields = {k: v for k, v in dataclasses.asdict(request).items() if v is not None}
            task = scenario.task_from_fields({**fields, "stack": list(request.stack)})
        except (TypeError, ValueError) as exc:
            raise RequestError(str(exc)) from None
        with self.core.lock:
            parent_pid = request.parent
            parent = self.tasks.get(parent_pid) if parent_pid is not None else None
            if parent_pid is not None and parent is None:
                raise KernelError(errno.ESRCH, f"no task with pid {parent_pid}")
            try:
                self.core.spawn_task(task, parent)
            except KeyError:
                raise KernelError(errno.EEXIST, f"pid {task.pid} exists") from None
        return _ok(task.view())

    def cmd_task_set(self, request: requests.TaskSet, send: Callable[[Reply], None]) -> Reply:
        with self.core.lock:
            task = self.tasks.get(request.pid)
            if task is None:
                raise KernelError(errno.ESRCH, f"no task with pid {request.pid}")
            if request.state is not None:
                task.state = _sched_state(request.state)
            if request.stack is not None:
                task.stack = request.stack
            if request.kthread is not None:
                task.kthread = request.kthread
            if request.unreliable is not None:
                task.unreliable = request.unreliable
            if request.comm is not None:
                task.comm = request.comm[:15]
            self.core.changed.notify_all()
            return _ok(task.view())

    def cmd_task_exit(self, request: requests.TaskExit, send: Callable[[Reply], None]) -> Reply:
        with self.core.lock:
            try:
                self.tasks.remove(request.pid)
            except KeyError:
                raise KernelError(errno.ESRCH, f"no task with pid {request.pid}") from None
            self.core.changed.notify_all()
        return _ok()

    def cmd_tick(self, request: requests.Tick, send: Callable[[Reply], None]) -> Reply:
        return _ok(self.core.tick(request.count))

    def cmd_wait(self, request: requests.Wait, send: Callable[[Reply], None]) -> Reply:
        name, mode, timeout = request.patch, request.mode, request.timeout
        core = self.core
        if mode == "gone":

            def done() -> bool:
                return core.find_patch(name) is None
        else:  # "idle", the one other mode the record allows

            def done() -> bool:
                return core.engine.patch is None or core.engine.patch.name != name

        if core.wait_until(done, timeout):
            return _ok()
        return error_reply("timeout", f"timed out waiting for {name} ({mode})", errno.ETIMEDOUT)

    def cmd_reset(self, request: requests.Reset, send: Callable[[Reply], None]) -> Reply:
        self.core.reset()
        return _ok()

    def cmd_status(self, request: requests.Status, send: Callable[[Reply], None]) -> Reply:
        core = self.core
        with core.lock:
            transition = core.engine.status()
            return _ok(
                {
                    **self._identity(),
                    "transition_interval": self.options.transition_interval,
                    "tainted": core.tainted,
                    "transition": asdict(transition) if transition else None,
                    "patches": [_patch_view(core, p) for p in core.patches],
                    "modules": [_module_view(m) for m in core.modules.values()],
                }
            )

    def cmd_stats(self, request: requests.Stats, send: Callable[[Reply], None]) -> Reply:
        """Requests the FUSE session has read, by opcode (null through a libfuse binding)."""
        return _ok({"fuse_requests": self.request_counts.named()})

    # -- lifecycle -----------------------------------------------------------

    def load_startup(self) -> None:
        """Tasks and modules from --scenario and --demo. Raises ControlError with a message."""
        files: list[Path] = []
        if self.options.scenario:
            plan = scenario.load(self.options.scenario)
            with self.core.lock:
                for task, parent_pid in plan.tasks:
                    parent = self.tasks.get(parent_pid) if parent_pid else None
                    self.core.spawn_task(task, parent)
            files.extend(plan.modules)
        if self.options.demo:
            files.append(DEMO_MODULE)
        for file in files:
            try:
                self.core.insmod(modfile.load(file))
            except KernelError as exc:
                raise ControlError(f"insmod {file}: {exc}") from None


def _sched_state(text: str) -> SchedState:
    try:
        return SchedState.parse(text)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _module_view(module: Module) -> dict[str, Any]:
    return {
        "name": module.name,
        "size": module.size,
        "refcnt": module.refcnt,
        "holders": [],
        "livepatch": module.definition.livepatch,
        "state": module.state,
        "procs": [asdict(proc) for proc in module.definition.procs],
    }


def _patch_view(core: Core, patch: Patch) -> dict[str, Any]:
    return {
        "name": patch.name,
        "enabled": patch.enabled,
        "transition": core.engine.patch is patch,
        "replace": patch.replace,
        "stack_order": core.stack_order(patch),
        "forced": patch.forced,
        "objects": [
            {
                "name": obj.name,
                "patched": obj.patched,
                "dynamic": obj.dynamic,
                "funcs": [
                    {
                        "old_name": f.old_name,
                        "new_name": f.new_name,
                        "sympos": f.old_sympos or 1,
                        "nop": f.nop,
                    }
                    for f in obj.funcs
                ],
            }
            for obj in patch.objects
        ],
    }


def run(options: MountOptions, ready: Callable[[], None] = lambda: None) -> int:
    """Mount, serve until unmounted, clean up. Raises ControlError before mounting."""
    os.umask(os.umask(0) | 0o002)  # nothing the daemon writes is world-writable
    daemon = Daemon(options)
    if mounttable.is_stale(options.mountpoint):
        mounttable.unmount(options.mountpoint, lazy=True)
    daemon.load_startup()
    server = ControlServer(daemon.socket, daemon.coherence.settling(daemon.handle))
    threads = [server.start()]
    if options.transition_interval > 0:
        timer = threading.Thread(
            target=daemon.core.run_retry_timer,
            args=(options.transition_interval, daemon.stopping),
            name="lpfs-retry",
            daemon=True,
        )
        timer.start()
        threads.append(timer)

    def on_init() -> None:
        ready()
        if options.follow_log:
            _start_follower(daemon)

    try:
        livepatchfs.serve(
            daemon.tree,
            daemon.coherence,
            os.fspath(options.mountpoint),
            on_init,
            request_counts=daemon.request_counts,
            allow_other=options.allow_other,
            threaded=options.threaded,
        )
    finally:
        daemon.stopping.set()
        with daemon.core.lock:
            daemon.core.changed.notify_all()
        server.close()
        daemon.klog.close()
    return 0


def _start_follower(daemon: Daemon) -> None:
    mnt = daemon.options.mountpoint
    print(
        f"lpfs: emulated sysfs at {mnt}; try `ls {mnt}/kernel/livepatch` and "
        f"`echo 0 > {mnt}/kernel/livepatch/<patch>/enabled`; Ctrl-C unmounts",
        flush=True,
    )

    def follow() -> None:
        for record in daemon.klog.follow(-1, daemon.stopping):
            sys.stdout.write(record.dmesg() + "\n")
            sys.stdout.flush()

    threading.Thread(target=follow, name="lpfs-follow", daemon=True).start()
