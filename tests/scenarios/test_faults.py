"""Failures injected from module files, with the kernel's log lines and errno."""

import pytest
from selftest import Selftest
from support import MODULES

from lpfs.pytest_plugin import LpfsMount

LP = "test_klp_faulty"
TARGET = "test_klp_callbacks_mod"


def module_file(tmp_path, obj: str = "vmlinux", func: str = "cmdline_proc_show", **fault) -> str:
    """A livepatch of one function with a fault, written next to the test."""
    extra = "".join(
        f'{key} = "{value}"\n' if isinstance(value, str) else f"{key} = {value}\n"
        for key, value in fault.items()
    )
    path = tmp_path / f"{LP}.toml"
    path.write_text(
        f'[[object]]\nname = "{obj}"\n[[object.func]]\n'
        f'old_name = "{func}"\nnew_name = "livepatch_{func}"\n{extra}'
    )
    return str(path)


def insmod_error(mnt: LpfsMount, file: str) -> str:
    result = mnt.command("insmod", file)
    assert 1 == result.returncode
    return result.stderr.strip().rpartition(": ")[2]


def test_ftrace_handler_fails_to_register(klp: Selftest, tmp_path) -> None:
    """As test-ftrace.sh with ftrace disabled: the enable is cancelled, insmod gets EBUSY."""
    file = module_file(tmp_path, fault="ftrace_register")
    klp.start_test("ftrace_register")
    assert "Device or resource busy" == insmod_error(klp.mnt, file)
    klp.check_result(f"""
        livepatch: enabling patch '{LP}'
        livepatch: '{LP}': initializing patching transition
        livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)
        livepatch: failed to patch object 'vmlinux'
        livepatch: failed to enable patch '{LP}'
        livepatch: '{LP}': canceling patching transition, going to unpatch
        livepatch: '{LP}': completing unpatching transition
        livepatch: '{LP}': unpatching complete""")
    assert ([], False) == (klp.mnt.patches(), (klp.mnt.mountpoint / "module" / LP).exists())


def test_ftrace_fault_spares_an_already_patched_function(klp: Selftest, tmp_path) -> None:
    """Only the first patch of a function registers an ftrace handler, so only it can fail."""
    klp.load_lp("test_klp_livepatch")
    klp.mnt.insmod(module_file(tmp_path, fault="ftrace_register"))
    assert "0\n" == klp.mnt.read(f"kernel/livepatch/{LP}/transition")


@pytest.mark.parametrize(
    ("fault", "errno_text", "line"),
    [
        (
            "symbol_not_found",
            "Invalid parameters",
            "symbol 'cmdline_proc_show' not found in symbol table",
        ),
        (
            "symbol_ambiguous",
            "Invalid parameters",
            "unresolvable ambiguity for symbol 'cmdline_proc_show' in object 'vmlinux'",
        ),
        (
            "bad_sympos",
            "Invalid parameters",
            "symbol position 0 for symbol 'cmdline_proc_show' in object 'vmlinux' not found",
        ),
        (
            "kallsyms_size",
            "Unknown symbol in module",
            "kallsyms size lookup failed for 'cmdline_proc_show'",
        ),
        (
            "kallsyms_size_replacement",
            "Unknown symbol in module",
            "kallsyms size lookup failed for 'cmdline_proc_show' replacement",
        ),
        (
            "ftrace_location",
            "Invalid parameters",
            "failed to find location for function 'cmdline_proc_show'",
        ),
    ],
)
def test_lookup_failures(klp: Selftest, tmp_path, fault: str, errno_text: str, line: str) -> None:
    """Each lookup failure prints its line and fails insmod with its errno, in kmod's words."""
    klp.start_test(fault)
    assert errno_text == insmod_error(klp.mnt, module_file(tmp_path, fault=fault))
    assert f"livepatch: {line}" in klp.result().splitlines()
    assert [] == klp.mnt.patches()


def test_target_module_refused_when_its_object_fails(klp: Selftest, tmp_path) -> None:
    """A fault in a module object shows when that module loads: the load is refused."""
    klp.mnt.insmod(
        module_file(tmp_path, obj=TARGET, func="callbacks_mod_work", fault="symbol_not_found")
    )
    klp.start_test("module coming")
    assert "Invalid parameters" == insmod_error(klp.mnt, str(MODULES / f"{TARGET}.toml"))
    klp.check_result(f"""
        livepatch: symbol 'callbacks_mod_work' not found in symbol table
        livepatch: failed to initialize patch '{LP}' for module '{TARGET}' (-22)
        livepatch: patch '{LP}' failed for module '{TARGET}', refusing to load module '{TARGET}'""")
    assert not (klp.mnt.mountpoint / "module" / TARGET).exists()


def test_ftrace_failure_when_target_module_loads(klp: Selftest, tmp_path) -> None:
    """An ftrace failure while a module comes refuses it with that errno."""
    klp.mnt.insmod(
        module_file(tmp_path, obj=TARGET, func="callbacks_mod_work", fault="ftrace_register")
    )
    klp.start_test("module coming ftrace")
    assert "Device or resource busy" == insmod_error(klp.mnt, str(MODULES / f"{TARGET}.toml"))
    klp.check_result(f"""
        livepatch: applying patch '{LP}' to loading module '{TARGET}'
        livepatch: failed to register ftrace handler for function 'callbacks_mod_work' (-16)
        livepatch: failed to apply patch '{LP}' to module '{TARGET}' (-16)
        livepatch: patch '{LP}' failed for module '{TARGET}', refusing to load module '{TARGET}'""")


def test_host_symbols(lpfs_factory, tmp_path) -> None:
    """--symbols host checks vmlinux names against /proc/kallsyms."""
    mnt = lpfs_factory("--symbols", "host")
    ambiguous = next(
        name
        for name, count in _kallsyms_counts().items()
        if count > 1 and not name.startswith("__pfx")
    )
    assert "Invalid parameters" == insmod_error(
        mnt, module_file(tmp_path, func="no_such_function_x")
    )
    assert "Invalid parameters" == insmod_error(mnt, module_file(tmp_path, func=ambiguous))
    assert "Invalid parameters" == insmod_error(
        mnt, module_file(tmp_path, func=ambiguous, old_sympos=9999)
    )
    mnt.insmod(module_file(tmp_path, func=ambiguous, old_sympos=2))
    log = mnt.dmesg()
    assert "livepatch: symbol 'no_such_function_x' not found in symbol table" in log
    assert f"livepatch: unresolvable ambiguity for symbol '{ambiguous}' in object 'vmlinux'" in log
    assert (
        f"livepatch: symbol position 9999 for symbol '{ambiguous}' in object 'vmlinux' not found"
        in log
    )


def _kallsyms_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3 and fields[1] in ("t", "T"):
                counts[fields[2]] = counts.get(fields[2], 0) + 1
    return counts
