"""lpfs insmod of a .ko made by lpfs pack, against a real daemon."""

from pathlib import Path

from support import MODULES

from lpfs.formats import elf, pack
from lpfs.pytest_plugin import LpfsMount


def test_packed_module_loads_its_patch(mnt: LpfsMount, tmp_path: Path) -> None:
    """The .ko's module file is loaded: its patch appears enabled and the module is listed."""
    ko = pack.pack_file(MODULES / "test_klp_livepatch.toml", tmp_path / "renamed.ko")
    mnt.run("insmod", str(ko))
    assert ("1", ["test_klp_livepatch"]) == (
        mnt.read("kernel/livepatch/test_klp_livepatch/enabled").strip(),
        [module["name"] for module in mnt.status()["modules"]],
    )


def test_module_keeps_its_name_when_the_ko_is_renamed(mnt: LpfsMount, tmp_path: Path) -> None:
    """A module file without a name is named after its .toml, as packed, not after the .ko."""
    source = tmp_path / "my-patch.toml"
    text = (MODULES / "test_klp_livepatch.toml").read_text()
    source.write_text(text.replace('name = "test_klp_livepatch"\n', ""))
    mnt.run("insmod", str(pack.pack_file(source, tmp_path / "other.ko")))
    assert ["my_patch"] == mnt.patches()


def test_foreign_elf_is_refused(mnt: LpfsMount, tmp_path: Path) -> None:
    """An ELF object without lpfs's section is refused before the daemon sees it."""
    ko = tmp_path / "real.ko"
    ko.write_bytes(elf.build([elf.Section(".modinfo", b"name=real\0")]))
    result = mnt.command("insmod", str(ko))
    expected = f"insmod: ERROR: {ko}: not an lpfs module: no .lpfs.module section\n"
    assert (1, expected, []) == (result.returncode, result.stderr, mnt.status()["modules"])
