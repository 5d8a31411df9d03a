"""conformance/'s pieces that need no kernel: the module compiler, the
recordings' format and the fuzzer's rules."""

import re

import pytest
from hypothesis import given, seed, settings

from conformance import fuzz, modcc, recording
from conformance.compare import Observation
from conformance.scenarios import SCENARIOS, Scenario
from conformance.steps import Cleanup, Load, Unblock
from lpfs.formats import modfile

SOURCES = modcc.compile_directory()


def compile_one(text: str, *others: str) -> dict[str, str]:
    definitions = [modfile.parse(t, f"m{i}.toml") for i, t in enumerate((text, *others))]
    return modcc.compile_set(definitions)


def test_every_module_file_of_the_set_compiles() -> None:
    assert sorted(SOURCES) == sorted(p.stem for p in modcc.MODULES.glob("*.toml"))
    for name, source in SOURCES.items():
        assert f"// {name}: made from {name}.toml" in source
        assert 'MODULE_LICENSE("GPL");' in source


def test_target_functions_cannot_be_cloned_and_stay_global() -> None:
    target = SOURCES["test_klp_conf_target"]
    for function in ("conf_target_func", "conf_target_work_func"):
        assert f"void {function}(void);" in target
        assert f"noinline __attribute__((noipa)) void {function}(void)" in target
    assert "while (READ_ONCE(block))\n\t\tmsleep(20);" in target


def test_init_waits_for_the_work_items_lines() -> None:
    init = SOURCES["test_klp_conf_target"].split("module_start(void)")[1]
    assert init.index("schedule_work(&work0)") < init.index("wait_for_completion(&work0_started)")
    assert "if (!READ_ONCE(block))\n\t\tflush_work(&work0);" in init
    exit_ = SOURCES["test_klp_conf_target"].split("module_stop(void)")[1]
    assert exit_.index("WRITE_ONCE(block, false)") < exit_.index("test_klp_conf_target_exit")


def test_a_patch_names_its_targets_functions_but_never_links_to_them() -> None:
    patch = SOURCES["test_klp_conf_patch"]
    assert '.old_name = "conf_target_work_func"' in patch
    assert '.name = "test_klp_conf_target"' in patch
    # No call or address of the target's own symbols: modpost would make a dependency.
    assert not re.search(r"[^\"_]conf_target_(work_)?func\b(?!\")", patch)
    assert 'MODULE_INFO(livepatch, "Y");' in patch


def test_callback_lines_become_printk_formats() -> None:
    patch = SOURCES["test_klp_conf_patch"]
    assert 'pr_info("pre_patch_callback: vmlinux\\n");' in patch
    assert (
        'pr_info("post_unpatch_callback: test_klp_conf_target -> %s\\n", object_state(obj));'
        in patch
    )
    assert "return pre_patch_ret;" in patch
    state2 = SOURCES["test_klp_conf_state2"]
    assert 'if (klp_get_prev_state(1))\n\t\tpr_info("state 1 already allocated\\n");' in state2
    assert 'if (!klp_get_prev_state(1))\n\t\tpr_info("allocating state 1\\n");' in state2
    assert "{ .id = 1, .version = 2 }," in state2
    assert ".replace = true," in state2


def test_percent_signs_and_quotes_are_kept_as_text() -> None:
    source = compile_one('name = "m"\nlivepatch = false\ninit = [\'50% "done" {module}\']\n')
    assert 'pr_info("50%% \\"done\\" m\\n");' in source["m"]


def test_replace_from_a_parameter() -> None:
    source = SOURCES["test_klp_conf_replace"]
    assert "static int replace = 1;\nmodule_param(replace, int, 0644);" in source
    assert "patch.replace = !!replace;" in source


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            'name = "p"\n[[object]]\n[[object.func]]\nold_name = "cmdline_proc_show"\n'
            'new_name = "n"\noutput = "x"\nfault = "ftrace_register"\n',
            "object[0].func[0].fault",
        ),
        (
            'name = "p"\n[[object]]\n[[object.func]]\nold_name = "schedule"\nnew_name = "n"\n',
            "func",
        ),
        ('name = "p"\n[[kprobe]]\nsymbol = "x"\n', "kprobe"),
        (
            'name = "m"\nlivepatch = false\n[[param]]\nname = "a"\ntype = "int"\narray = 2\n',
            "param",
        ),
        ('name = "m"\nlivepatch = false\n[[task]]\nstack = ["schedule"]\n', "task[0].stack"),
        (
            'name = "p"\n[[object]]\nname = "elsewhere"\n[[object.func]]\n'
            'old_name = "f"\nnew_name = "n"\n',
            "object[0]",
        ),
        ('name = "m"\nlivepatch = false\ninit = ["{module:>9}"]\n', "format specs"),
    ],
)
def test_what_only_lpfs_can_do_is_refused_by_name(text: str, key: str) -> None:
    with pytest.raises(modcc.NotPortable, match=re.escape(key)):
        compile_one(text)


def test_recordings_read_back_as_written() -> None:
    kept = recording.Recording(
        "6.1.0-57-amd64",
        {
            "a": [
                Observation("modprobe x", 0, "", "livepatch: one\n  indented", "- ./x = 1"),
                Observation("rmmod x", 1, "rmmod: ERROR\n\nafter a blank", "", ""),
            ],
            "b": [],
        },
    )
    assert kept == recording.loads(recording.dumps(kept), "test")
    assert "6.1" == recording.series("6.1.0-57-amd64")
    assert "6.12" == recording.series("6.12.117+deb12-amd64")


def test_a_bad_recording_names_its_line() -> None:
    with pytest.raises(recording.RecordingError, match="here:2"):
        recording.loads("release 6.1\nnonsense\n", "here")


def test_the_kept_recordings_parse_and_hold_every_scenario() -> None:
    for kept in recording.recordings():
        assert [scenario.name for scenario in SCENARIOS] == list(kept.scenarios)
        for scenario in SCENARIOS:
            assert len(scenario.steps) == len(kept.scenarios[scenario.name])


@settings(max_examples=200, deadline=None)
@given(fuzz.scenarios())
def test_fuzzed_step_lists_keep_the_portability_rules(scenario: Scenario) -> None:
    steps = list(scenario.steps)
    assert isinstance(steps[-2], Cleanup)
    asleep_since = None
    patch_loaded = False
    for index, step in enumerate(steps):
        if isinstance(step, Load) and step.module == fuzz.PATCH:
            patch_loaded = True
        if isinstance(step, Load) and "block=1" in step.params:
            assert not patch_loaded, "the target asleep under a patch of its function"
            asleep_since = index
        if isinstance(step, Unblock | Cleanup) or (
            getattr(step, "module", None) == fuzz.TARGET and not isinstance(step, Load)
        ):
            asleep_since = None
        if asleep_since is not None:
            # a load and its settle, then at most two actions of two steps each
            assert index - asleep_since <= 1 + 2 * fuzz.BLOCKED_STEPS


def drawn_from(chosen_seed: int) -> list[tuple[object, ...]]:
    """The first five step lists the fuzzer makes from ``chosen_seed``."""
    drawn: list[tuple[object, ...]] = []

    @seed(chosen_seed)
    @settings(max_examples=5, database=None, deadline=None)
    @given(fuzz.scenarios())
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario.steps)

    collect()
    return drawn


def test_the_fuzzer_makes_the_same_lists_from_its_seed() -> None:
    assert drawn_from(fuzz.CI_SEED) == drawn_from(fuzz.CI_SEED)
    assert drawn_from(fuzz.CI_SEED) != drawn_from(fuzz.CI_SEED + 1)


def test_the_fuzzer_loads_only_the_compiled_set() -> None:
    assert set(fuzz.MODULES) <= set(SOURCES)
