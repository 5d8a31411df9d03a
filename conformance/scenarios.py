"""Scenarios as step lists, run the same way on the real kernel and on lpfs.

Each one leaves the kernel as it found it: every module it loads is removed,
and dynamic debug is switched back off; one that writes ``force`` is followed
by a reboot (on lpfs, a new ``lpfs ns``), as a forced transition may pin its
module for good.

They are the flows of the kernel's selftests (test-livepatch.sh,
test-callbacks.sh, test-state.sh, test-sysfs.sh) with the test modules both
kernels have, and transitions that tasks hold up, with the module files of
``conformance/modules`` compiled into real modules (``modcc.py``).
"""

from dataclasses import dataclass
from typing import Final

from .steps import Load, Remove, Settle, Step, Unblock, WaitSignal, Write

# As the selftests set it (functions.sh, set_dynamic_debug): the livepatch
# core's pr_debug lines on, klp_try_switch_task's off.
DYNAMIC_DEBUG: Final = "kernel/debug/dynamic_debug/control"
DEBUG_ON: Final = (
    Write(DYNAMIC_DEBUG, "file kernel/livepatch/* +p"),
    Write(DYNAMIC_DEBUG, "func klp_try_switch_task -p"),
)
DEBUG_OFF: Final = (Write(DYNAMIC_DEBUG, "file kernel/livepatch/* -p"),)


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]

    @property
    def modules(self) -> list[str]:
        """Every module the scenario loads, in order of first load."""
        return list(dict.fromkeys(step.module for step in self.steps if isinstance(step, Load)))

    @property
    def forces(self) -> bool:
        """Whether it writes ``force``: the kernel is rebooted after it."""
        return any(isinstance(step, Write) and step.path.endswith("/force") for step in self.steps)


def enabled(patch: str) -> str:
    return f"kernel/livepatch/{patch}/enabled"


def disable(patch: str) -> tuple[Step, ...]:
    """functions.sh's disable_lp: echo 0, then wait until the patch is gone."""
    return (Write(enabled(patch), "0", settle=True),)


def load_lp(module: str, *params: str) -> tuple[Step, ...]:
    """functions.sh's load_lp: load, then wait for the transition to end."""
    return (Load(module, params), Settle())


def lifecycle(module: str, *params: str) -> tuple[Step, ...]:
    return (*load_lp(module, *params), *disable(module), Remove(module))


def debug(*steps: Step) -> tuple[Step, ...]:
    """``steps`` with the livepatch core's pr_debug lines on, as the selftests run."""
    return (*DEBUG_ON, *steps, *DEBUG_OFF)


# The kernel selftests' test modules, in lib/livepatch (6.1) and
# tools/testing/selftests/livepatch/test_modules (6.12).
LIVEPATCH = "test_klp_livepatch"
REPLACE = "test_klp_atomic_replace"
DEMO = "test_klp_callbacks_demo"
DEMO2 = "test_klp_callbacks_demo2"
MOD = "test_klp_callbacks_mod"
BUSY = "test_klp_callbacks_busy"
STATE, STATE2, STATE3 = "test_klp_state", "test_klp_state2", "test_klp_state3"
BUSY_EXIT = f"{BUSY}: busymod_work_func exit"

# conformance/modules, compiled.
TARGET = "test_klp_conf_target"
PATCH = "test_klp_conf_patch"
OTHER = "test_klp_conf_other"
CONF_REPLACE = "test_klp_conf_replace"
TARGET_EXIT = f"{TARGET}: conf_target_work_func exit"


def blocked(*steps: Step) -> tuple[Step, ...]:
    """The target loaded with its work item asleep in conf_target_work_func,
    which test_klp_conf_patch replaces: its patching transition waits."""
    return (Load(TARGET, ("block=1",)), *steps)


LIVEPATCH_FLOWS: Final = (
    # A booted kernel starts with the core's pr_debug lines off, lpfs with
    # them on (as the selftests set them): the scenario says which it wants.
    Scenario("lifecycle, dynamic debug off", (*DEBUG_OFF, *lifecycle(LIVEPATCH))),
    Scenario("basic function patching", debug(*lifecycle(LIVEPATCH))),
    Scenario(
        "multiple livepatches",
        debug(
            *load_lp(LIVEPATCH),
            *load_lp(REPLACE, "replace=0"),
            *disable(REPLACE),
            Remove(REPLACE),
            *disable(LIVEPATCH),
            Remove(LIVEPATCH),
        ),
    ),
    Scenario(
        "atomic replace livepatch",
        debug(
            *load_lp(LIVEPATCH),
            *load_lp(DEMO),
            *load_lp(REPLACE, "replace=1"),
            Remove(DEMO),
            Remove(LIVEPATCH),
            *disable(REPLACE),
            Remove(REPLACE),
        ),
    ),
)

CALLBACK_FLOWS: Final = (
    Scenario(
        "target module before livepatch",
        debug(Load(MOD), *lifecycle(DEMO), Remove(MOD)),
    ),
    Scenario(
        "module_coming notifier",
        debug(*load_lp(DEMO), Load(MOD), *disable(DEMO), Remove(DEMO), Remove(MOD)),
    ),
    Scenario(
        "module_going notifier",
        debug(Load(MOD), *load_lp(DEMO), Remove(MOD), *disable(DEMO), Remove(DEMO)),
    ),
    Scenario(
        "module_coming and module_going notifiers",
        debug(*load_lp(DEMO), Load(MOD), Remove(MOD), *disable(DEMO), Remove(DEMO)),
    ),
    Scenario("target module not present", debug(*lifecycle(DEMO))),
    Scenario(
        "pre-patch callback -ENODEV",
        debug(Load(MOD), Load(DEMO, ("pre_patch_ret=-19",)), Settle(), Remove(MOD)),
    ),
    Scenario(
        "module_coming + pre-patch callback -ENODEV",
        debug(
            *load_lp(DEMO),
            Write(f"module/{DEMO}/parameters/pre_patch_ret", "-19"),
            Load(MOD),
            *disable(DEMO),
            Remove(DEMO),
        ),
    ),
    Scenario(
        "multiple target modules",
        debug(
            Load(BUSY, ("block_transition=N",)),
            *load_lp(DEMO),
            Load(MOD),
            Remove(MOD),
            *disable(DEMO),
            Remove(DEMO),
            Remove(BUSY),
        ),
    ),
    Scenario(
        "busy target module",
        debug(
            Load(BUSY, ("block_transition=Y",)),
            Load(DEMO),
            Load(MOD),
            Remove(MOD),
            *disable(DEMO),
            Remove(DEMO),
            Remove(BUSY),
        ),
    ),
    Scenario(
        "multiple livepatches with callbacks",
        debug(
            *load_lp(DEMO),
            *load_lp(DEMO2),
            *disable(DEMO2),
            *disable(DEMO),
            Remove(DEMO2),
            Remove(DEMO),
        ),
    ),
    Scenario(
        "atomic replace with callbacks",
        debug(
            *load_lp(DEMO),
            *load_lp(DEMO2, "replace=1"),
            *disable(DEMO2),
            Remove(DEMO2),
            Remove(DEMO),
        ),
    ),
)

STATE_FLOWS: Final = (
    Scenario("system state modification", debug(*lifecycle(STATE))),
    Scenario(
        "taking over system state modification",
        debug(*load_lp(STATE), *load_lp(STATE2), Remove(STATE), *disable(STATE2), Remove(STATE2)),
    ),
    Scenario(
        "compatible cumulative livepatches",
        debug(
            *load_lp(STATE2),
            *load_lp(STATE3),
            Remove(STATE2),
            *load_lp(STATE2),
            *disable(STATE2),
            Remove(STATE2),
            Remove(STATE3),
        ),
    ),
    Scenario(
        "incompatible cumulative livepatches",
        debug(*load_lp(STATE2), Load(STATE), *disable(STATE2), Remove(STATE2)),
    ),
)

SYSFS_FLOWS: Final = (
    Scenario("sysfs of a patch", debug(*lifecycle(LIVEPATCH))),
    Scenario(
        "sysfs of an object coming and going",
        debug(*load_lp(PATCH), Load(TARGET), Remove(TARGET), *disable(PATCH), Remove(PATCH)),
    ),
    Scenario("sysfs replace enabled", debug(*lifecycle(REPLACE, "replace=1"))),
    Scenario("sysfs replace disabled", debug(*lifecycle(REPLACE, "replace=0"))),
)

TRANSITION_FLOWS: Final = (
    Scenario(
        "a work item holds patching until it wakes",
        debug(
            *blocked(Load(PATCH)),
            Unblock(TARGET, "block", TARGET_EXIT),
            *disable(PATCH),
            Remove(PATCH),
            Remove(TARGET),
        ),
    ),
    Scenario(
        "blocked patching is signaled, then reversed",
        debug(
            *blocked(Load(PATCH)),
            WaitSignal(),
            *disable(PATCH),
            Remove(PATCH),
            Unblock(TARGET, "block", TARGET_EXIT),
            Remove(TARGET),
        ),
    ),
    Scenario(
        "busy during a transition",
        debug(
            *load_lp(OTHER),
            *blocked(Load(PATCH)),
            Write(enabled(OTHER), "0"),
            Load(CONF_REPLACE),
            Unblock(TARGET, "block", TARGET_EXIT),
            *disable(PATCH),
            *disable(OTHER),
            Remove(PATCH),
            Remove(OTHER),
            Remove(TARGET),
        ),
    ),
    Scenario(
        "atomic replace of a patch of a module",
        debug(
            Load(TARGET),
            *load_lp(PATCH),
            *load_lp(CONF_REPLACE),
            Remove(PATCH),
            *disable(CONF_REPLACE),
            Remove(CONF_REPLACE),
            Remove(TARGET),
        ),
    ),
    Scenario(
        "forced patching",
        debug(
            *blocked(Load(PATCH)),
            Write(f"kernel/livepatch/{PATCH}/force", "1", settle=True),
            Unblock(TARGET, "block", TARGET_EXIT),
            *disable(PATCH),
            Remove(PATCH),
            Remove(TARGET),
        ),
    ),
)

SCENARIOS: Final = (
    *LIVEPATCH_FLOWS,
    *CALLBACK_FLOWS,
    *STATE_FLOWS,
    *SYSFS_FLOWS,
    *TRANSITION_FLOWS,
)
