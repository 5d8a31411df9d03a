"""Scenarios as step lists, run the same way on the real kernel and on lpfs.

Each one leaves the kernel as it found it: every module it loads is removed,
and dynamic debug is switched back off.
"""

from dataclasses import dataclass
from typing import Final

from .steps import Load, Remove, Settle, Step, Write

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


def _lifecycle(module: str) -> tuple[Step, ...]:
    return (
        Load(module),
        Settle(),
        Write(f"kernel/livepatch/{module}/enabled", "0"),
        Settle(),
        Remove(module),
    )


SCENARIOS: Final = (
    # A patch loaded, disabled and removed with the livepatch core's pr_debug
    # lines off. A booted kernel starts with them off and lpfs with them on
    # (as the selftests set them), so the scenario says which it wants.
    Scenario("lifecycle, dynamic debug off", (*DEBUG_OFF, *_lifecycle("test_klp_livepatch"))),
    # test-livepatch.sh's first case.
    Scenario("lifecycle", (*DEBUG_ON, *_lifecycle("test_klp_livepatch"), *DEBUG_OFF)),
    # test-livepatch.sh's atomic replace case.
    Scenario(
        "atomic replace",
        (
            *DEBUG_ON,
            Load("test_klp_livepatch"),
            Settle(),
            Load("test_klp_atomic_replace", ("replace=1",)),
            Settle(),
            Remove("test_klp_livepatch"),
            Write("kernel/livepatch/test_klp_atomic_replace/enabled", "0"),
            Settle(),
            Remove("test_klp_atomic_replace"),
            *DEBUG_OFF,
        ),
    ),
    # test-callbacks.sh's failing pre_patch: modprobe fails with ENODEV.
    Scenario(
        "pre_patch fails",
        (
            *DEBUG_ON,
            Load("test_klp_callbacks_demo", ("pre_patch_ret=-19",)),
            Settle(),
            *DEBUG_OFF,
        ),
    ),
    # test-callbacks.sh's "module_coming and module_going callbacks": the
    # target module comes after the patch and goes before it.
    Scenario(
        "target module comes and goes",
        (
            *DEBUG_ON,
            Load("test_klp_callbacks_demo"),
            Settle(),
            Load("test_klp_callbacks_mod"),
            Remove("test_klp_callbacks_mod"),
            Write("kernel/livepatch/test_klp_callbacks_demo/enabled", "0"),
            Settle(),
            Remove("test_klp_callbacks_demo"),
            *DEBUG_OFF,
        ),
    ),
    # test-state.sh's "system state modification", then a replacing patch
    # that takes the state over.
    Scenario(
        "klp state taken over",
        (
            *DEBUG_ON,
            Load("test_klp_state"),
            Settle(),
            Load("test_klp_state2"),
            Settle(),
            Remove("test_klp_state"),
            Write("kernel/livepatch/test_klp_state2/enabled", "0"),
            Settle(),
            Remove("test_klp_state2"),
            *DEBUG_OFF,
        ),
    ),
)
