"""A differential fuzzer: step lists that hypothesis makes up, run on the real
kernel and on lpfs, compared step by step.

The steps act on the compiled modules of ``conformance/modules``: a plain
patch with callbacks (``test_klp_conf_patch``), a second one
(``test_klp_conf_other``), an atomic replace (``test_klp_conf_replace``), two
cumulative patches with klp states, and the target module whose work item can
hold a transition. A step loads a module (with parameters), disables, enables
or forces a patch, removes a module or lets the work item go; after each the
transitions get two seconds to settle. Every step list switches the livepatch
core's pr_debug lines on first, as the scenarios do, and ends with a clean-up,
so the next starts from a kernel as booted (after a ``force``, a new boot).

Two rules keep the step lists portable:

- the work item sleeps at most two steps: about 15 s of a held transition
  would bring the fake signal, at a step that depends on each side's speed;
- the target is loaded with its work item asleep only before any
  ``test_klp_conf_patch``, which replaces the function it sleeps in (see
  ``modcc.py``: a real work item started under the patch runs the
  replacement, which does not sleep). PATCH stays "loaded" for the rest of
  the step list: whether its rmmod worked is the kernel's to say.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from . import compare
from .compare import Side
from .scenarios import (
    CONF_REPLACE,
    DEBUG_OFF,
    DEBUG_ON,
    OTHER,
    PATCH,
    TARGET,
    TARGET_EXIT,
    Scenario,
)
from .steps import Cleanup, Load, Remove, Settle, Step, Unblock, Write

STATE, STATE2 = "test_klp_conf_state", "test_klp_conf_state2"
PATCHES: Final = (PATCH, OTHER, CONF_REPLACE, STATE, STATE2)
# Removal order for the clean-up: patches before the module they patch.
MODULES: Final = (*PATCHES, TARGET)
MAX_STEPS: Final = 12
BLOCKED_STEPS: Final = 2
SETTLE_TRIES: Final = 20  # two seconds: a retry comes every second
# What a step writes, mostly the plain value: kstrtobool's other spellings
# and some it refuses (each release reads them its own way).
WRITTEN: Final = {
    "disable": ("0", "0", "0", "n", "off", "0x0"),
    "enable": ("1", "1", "y", "on", "2", "x", ""),
    "force": ("1", "1", "1", "y", "0"),
}
# The fixed seed CI runs with: the same step lists every time.
CI_SEED: Final = 20261129


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A step list over the generated modules, ending with a clean-up."""
    steps: list[Step] = list(DEBUG_ON)  # as the scenarios: a booted kernel has them off
    loaded: list[str] = []  # what was loaded, as far as a step list can tell
    asleep_for: int | None = None  # steps since the work item went to sleep

    def some(modules: tuple[str, ...]) -> str:
        """Mostly one that is loaded, sometimes any (for the errors)."""
        mine = tuple(module for module in loaded if module in modules)
        pick_loaded = bool(mine) and draw(st.integers(0, 3)) > 0
        return draw(st.sampled_from(mine if pick_loaded else modules))

    for _ in range(draw(st.integers(1, MAX_STEPS))):
        if asleep_for is not None and asleep_for >= BLOCKED_STEPS:
            action = "unblock"
        else:
            # force only while the work item may hold a transition: otherwise
            # it is EINVAL, and each force costs a new boot.
            held = ("unblock", "force") if asleep_for is not None else ()
            action = draw(st.sampled_from(("load", "load", "disable", "rmmod", "enable", *held)))
        if asleep_for is not None:
            asleep_for += 1
        match action:
            case "load":
                module = draw(st.sampled_from(MODULES))
                params: tuple[str, ...] = ()
                if module == TARGET:
                    if TARGET not in loaded and PATCH not in loaded and draw(st.booleans()):
                        params = ("block=1",)
                        asleep_for = 0
                elif module == PATCH:
                    params = draw(st.sampled_from(((), ("pre_patch_ret=-19",))))
                elif module == CONF_REPLACE:
                    params = draw(st.sampled_from((("replace=1",), ("replace=0",))))
                if module not in loaded:
                    loaded.append(module)
                steps += [Load(module, params), Settle(SETTLE_TRIES)]
            case "disable" | "enable" | "force":
                patch = some(PATCHES)
                name = "force" if action == "force" else "enabled"
                value = draw(st.sampled_from(WRITTEN[action]))
                steps += [Write(f"kernel/livepatch/{patch}/{name}", value), Settle(SETTLE_TRIES)]
            case "rmmod":
                module = some(MODULES)
                steps.append(Remove(module))
                if module == TARGET:
                    if TARGET in loaded:
                        loaded.remove(TARGET)
                    asleep_for = None  # its exit lets the work item go
            case "unblock":
                steps.append(Unblock(TARGET, "block", TARGET_EXIT))
                asleep_for = None
    steps += [Cleanup(((TARGET, "block"),), MODULES), *DEBUG_OFF]
    return Scenario(f"fuzzed, {len(steps)} steps", tuple(steps))


@dataclass
class Report:
    examples: int = 0
    steps: int = 0
    found: list[tuple[Scenario, list[tuple[int, str, str]]]] = field(default_factory=list)


class Disagreement(AssertionError):
    """lpfs did not do as the kernel did: hypothesis shrinks the step list."""


def run(kernel: Side, lpfs: Side, examples: int, chosen_seed: int | None, shrink: bool) -> Report:
    """``examples`` step lists on both sides. Without ``shrink`` every
    disagreement is collected; with it, the first is shrunk to a minimal step
    list and raised as Disagreement."""
    report = Report()
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios())
    def example(scenario: Scenario) -> None:
        # The kernel's QEMU keeps one core busy; lpfs runs on the other meanwhile.
        with ThreadPoolExecutor(1) as pool:
            lpfs_observed = pool.submit(lpfs.observe, scenario)
            on_kernel = kernel.observe(scenario)
            on_lpfs = lpfs_observed.result()
        report.examples += 1
        report.steps += len(on_kernel)
        found = compare.disagreements(on_kernel, on_lpfs)
        if found and shrink:
            raise Disagreement(describe(scenario, found))
        if found:
            report.found.append((scenario, found))

    if chosen_seed is not None:
        example = hypothesis_seed(chosen_seed)(example)
    try:
        example()
    finally:
        kernel.stop()
        lpfs.stop()
    return report


def describe(scenario: Scenario, found: list[tuple[int, str, str]]) -> str:
    """A disagreement as a report prints it: the step list, as Python that can
    be kept as a regression, then each difference."""
    lines = [f"Scenario({scenario.name!r}, ("]
    lines += [f"    {step!r}," for step in scenario.steps]
    lines.append("))")
    for number, name, diff in found:
        lines.append(f"step {number} ({scenario.steps[number - 1]!r}): {name}")
        lines += diff.splitlines()
    return "\n".join(lines)
