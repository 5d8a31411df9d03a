"""One transition try, driving lpfs.kernel.core.Core in this process, beside a bare Python loop.

Simulated tasks sleep with a stack of ``stack_depth`` frames; a fraction of
them sleep in one of the patch's ``patch_funcs`` functions, so the
transition stays open after insmod. Before each timed try every task is put
back to the initial state, so the try checks every stack, as a first try
does. The baseline is a bare loop doing the same membership test over the
same stacks.
"""

import gc
import os
import random
import time
from typing import Any, Final

from config import Config
from stats import ratio, spread
from targets import target

from lpfs.kernel.clock import FakeClock
from lpfs.kernel.core import Core
from lpfs.kernel.klog import KernelLog
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import FuncDef, ModuleDef, ObjectDef
from lpfs.kernel.tasks import HostTasks, SchedState, SimulatedTasks, Task

VOCABULARY: Final = tuple(f"kernel_fn_{i:04d}" for i in range(4096))
SLEEPER_PID: Final = 1 << 30  # beyond any pid_max, so never a host thread's pid
LINEAR_LIMIT: Final = 1.5  # per-task cost at the largest size over the next one


def patch_module(funcs: int) -> ModuleDef:
    """A livepatch of ``funcs`` vmlinux functions."""
    pairs = (FuncDef(f"bench_func_{i}", f"livepatch_bench_func_{i}") for i in range(funcs))
    return ModuleDef("bench_engine", objects=(ObjectDef("vmlinux", tuple(pairs)),))


def make_stack(rng: random.Random, depth: int, patched: str | None) -> tuple[str, ...]:
    frames = [rng.choice(VOCABULARY) for _ in range(depth)]
    if patched is not None:
        frames[rng.randrange(depth)] = patched
    return tuple(frames)


def new_core(tasks: SimulatedTasks) -> Core:
    clock = FakeClock()
    return Core(KernelLog(clock), tasks, Profile(), clock)


def simulated_core(count: int, config: Config) -> Core:
    """A core with ``count`` simulated tasks and the patch loaded, its transition open."""
    rng = random.Random(count)
    core = new_core(SimulatedTasks(ncpus=os.cpu_count()))
    every = round(1 / config.sleeping_fraction)
    for pid in range(1, count + 1):
        patched = f"bench_func_{rng.randrange(config.patch_funcs)}" if pid % every == 0 else None
        stack = make_stack(rng, config.stack_depth, patched)
        core.spawn_task(Task(pid, f"t{pid}", SchedState.SLEEPING, stack))
    core.insmod(patch_module(config.patch_funcs))
    assert core.engine.patch is not None, "the sleepers should keep the transition open"
    return core


def host_core(config: Config) -> Core:
    """A core over this machine's threads, plus one simulated sleeper that keeps it open."""
    core = new_core(HostTasks(ncpus=os.cpu_count()))
    stack = ("bench_func_0", "do_syscall_64")
    core.spawn_task(Task(SLEEPER_PID, "bench_sleeper", SchedState.SLEEPING, stack))
    core.insmod(patch_module(config.patch_funcs))
    assert core.engine.patch is not None
    return core


def timed_try(core: Core) -> tuple[float, list[tuple[str, ...]]]:
    """Reset every task to the initial state, then time one `core.tick()`; and the stacks."""
    with core.lock:
        tasks = core.tasks.tasks()
        for task in tasks:
            task.patch_state = core.engine.initial_state
            task.pending = True
    start = time.perf_counter()
    ran = core.tick()
    elapsed = time.perf_counter() - start
    assert ran == 1
    return elapsed, [task.stack for task in tasks if not task.idle]


def bare_loop(stacks: list[tuple[str, ...]], checked: frozenset[str]) -> float:
    """Seconds for the same membership test over the same stacks, in a plain loop."""
    start = time.perf_counter()
    blocked = 0
    for stack in stacks:
        for frame in stack:
            if frame in checked:
                blocked += 1
                break
    return time.perf_counter() - start


def compare(core: Core, repetitions: int) -> dict[str, Any]:
    """Interleaved tries and bare loops over the core's tasks, after one of each to warm up."""
    engine = core.engine
    assert engine.patch is not None
    checked = core.functions_to_check(engine.patch, engine.target)
    tries, loops = [], []
    for rep in range(repetitions + 1):
        elapsed, stacks = timed_try(core)
        loop = bare_loop(stacks, checked)
        if rep:
            tries.append(elapsed)
            loops.append(loop)
    result = {"tasks": len(stacks), "try_s": spread(tries), "bare_loop_s": spread(loops)}
    result["ratio_try_bare"] = ratio(result["try_s"]["median"], result["bare_loop_s"]["median"])
    result["try_per_task_ns"] = result["try_s"]["median"] / max(len(stacks), 1) * 1e9
    return result


def _gc_paused(core_factory: Any, *args: Any) -> Any:
    """Build a large core with the cyclic collector paused, as building allocates a lot."""
    gc.disable()
    try:
        return core_factory(*args)
    finally:
        gc.enable()


def measure(config: Config) -> dict[str, Any]:
    sizes = []
    for count in config.engine_tasks:
        core = _gc_paused(simulated_core, count, config)
        sizes.append(compare(core, config.repetitions))
        del core
        gc.collect()
    host = compare(host_core(config), config.repetitions)
    largest = sizes[-1]
    growth = ratio(largest["try_per_task_ns"], sizes[-2]["try_per_task_ns"])
    name = f"try over {largest['tasks']} tasks vs bare loop"
    value = largest["ratio_try_bare"]
    return {
        "stack_depth": config.stack_depth,
        "patch_funcs": config.patch_funcs,
        "sleeping_fraction": config.sleeping_fraction,
        "simulated": sizes,
        "per_task_growth": growth,
        "host": host,
        "targets": [
            target(name, value, "<= 2x", value is not None and value <= 2),
            target(
                "try linear in tasks (per-task cost, largest vs next size)",
                growth,
                f"<= {LINEAR_LIMIT}x",
                growth is not None and growth <= LINEAR_LIMIT,
            ),
        ],
    }
