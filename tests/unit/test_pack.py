"""lpfs pack: module files wrapped in ELF objects, read back by lpfs and by binutils and kmod."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import MODULES, PACKAGES, missing

from lpfs.errors import ModfileError
from lpfs.formats import elf, pack
from lpfs.formats.modfile import module_text
from lpfs.kernel.profiles import Profile
from lpfs.pytest_plugin import lpfs_command

LIVEPATCH = MODULES / "test_klp_livepatch.toml"
UNNAMED = """\
[[object]]
[[object.func]]
old_name = "cmdline_proc_show"
new_name = "livepatch_cmdline_proc_show"
"""


def packed(tmp_path: Path, source: Path = LIVEPATCH, name: str = "x.ko") -> Path:
    return pack.pack_file(source, tmp_path / name)


def tool(name: str) -> str:
    """The path of a binutils or kmod program, or skip: the tests never install them."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        missing(f"{name} is missing (apt install {PACKAGES[name]})")
    return found


class TestRoundTrip:
    def test_text_comes_back_verbatim(self, tmp_path):
        """The .ko holds the module file's text byte for byte, and the module's name."""
        assert (LIVEPATCH.read_text(), "test_klp_livepatch") == module_text(packed(tmp_path))

    def test_name_defaults_to_the_source_file(self, tmp_path):
        """Without a name key the module is named after the .toml, whatever the .ko is called."""
        source = tmp_path / "my-patch.toml"
        source.write_text(UNNAMED)
        assert (UNNAMED, "my_patch") == module_text(packed(tmp_path, source, "other.ko"))

    def test_toml_file_is_read_as_text(self):
        """A module file is its own text; its name defaults to the file name."""
        assert (LIVEPATCH.read_text(), "test_klp_livepatch") == module_text(LIVEPATCH)

    def test_elf_without_lpfs_section_is_refused(self, tmp_path):
        """An ELF object lpfs pack did not make is not an lpfs module."""
        path = tmp_path / "real.ko"
        path.write_bytes(elf.build([elf.Section(".modinfo", b"name=real\0")]))
        with pytest.raises(ModfileError) as info:
            module_text(path)
        assert f"{path}: not an lpfs module: no .lpfs.module section" == str(info.value)

    def test_truncated_elf_is_refused(self, tmp_path):
        """A .ko cut short is not read past its end."""
        path = tmp_path / "cut.ko"
        path.write_bytes(packed(tmp_path).read_bytes()[:100])
        with pytest.raises(ModfileError, match="not an lpfs module: bad section header table"):
            module_text(path)

    def test_invalid_module_file_is_not_packed(self, tmp_path):
        """pack checks the module file as insmod would, so a .ko always loads."""
        source = tmp_path / "bad.toml"
        source.write_text('name = "bad"\nbogus = 1\n')
        with pytest.raises(ModfileError, match=r"bad\.toml: bogus: unknown key"):
            pack.pack_file(source, tmp_path / "bad.ko")


class TestLayout:
    def test_modinfo_of_a_livepatch(self, tmp_path):
        """.modinfo has livepatch=Y, the name, a GPL license and this kernel's vermagic."""
        strings = elf.sections(packed(tmp_path).read_bytes())[".modinfo"].split(b"\0")
        assert {
            b"livepatch=Y",
            b"name=test_klp_livepatch",
            b"license=GPL",
            b"depends=",
            f"vermagic={Profile().release} SMP preempt mod_unload ".encode(),
        } <= set(strings)

    def test_plain_module_is_not_marked_livepatch(self, tmp_path):
        """livepatch=Y is only for livepatch modules."""
        source = tmp_path / "plain.toml"
        source.write_text("livepatch = false\n")
        strings = elf.sections(packed(tmp_path, source).read_bytes())[".modinfo"].split(b"\0")
        assert (False, True) == (b"livepatch=Y" in strings, b"name=plain" in strings)

    def test_this_module_name_where_struct_module_keeps_it(self, tmp_path):
        """The name is NUL-terminated at offsetof(struct module, name) and nothing else is set."""
        data = elf.sections(packed(tmp_path).read_bytes())[".gnu.linkonce.this_module"]
        name = b"test_klp_livepatch"
        offset = pack.THIS_MODULE_NAME_OFFSET
        assert name + b"\0" == data[offset : offset + len(name) + 1]
        assert b"" == data.replace(name, b"").strip(b"\0")

    def test_cli_writes_module_name_ko_by_default(self, tmp_path):
        """`lpfs pack FILE` writes <module name>.ko in the current directory."""
        result = subprocess.run(
            [sys.executable, "-m", "lpfs", "pack", str(LIVEPATCH)],
            cwd=tmp_path,
            capture_output=True,
            check=False,
        )
        assert (0, True) == (result.returncode, (tmp_path / "test_klp_livepatch.ko").is_file())

    def test_cli_reports_a_missing_file(self, tmp_path):
        """A source that cannot be read is an error of one line and exit 1."""
        result = lpfs_command("pack", str(tmp_path / "none.toml"))
        expected = f"lpfs: pack: {tmp_path / 'none.toml'}: No such file or directory\n"
        assert (1, expected) == (result.returncode, result.stderr)


class TestRealTools:
    def test_readelf_prints_the_name_first(self, tmp_path):
        """kpatch takes the module name from `readelf -p .gnu.linkonce.this_module`."""
        readelf = tool("readelf")
        result = subprocess.run(
            [readelf, "-p", ".gnu.linkonce.this_module", str(packed(tmp_path))],
            capture_output=True,
            text=True,
            check=True,
        )
        dumped = [
            line.split("]", 1)[1].strip() for line in result.stdout.splitlines() if "[" in line
        ]
        assert ["test_klp_livepatch"] == dumped
        assert "" == result.stderr

    def test_modinfo_reads_a_livepatch_module(self, tmp_path):
        """kmod's modinfo prints the fields livepatch tools check."""
        modinfo = tool("modinfo")
        result = subprocess.run(
            [modinfo, str(packed(tmp_path))], capture_output=True, text=True, check=True
        )
        fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
        assert {
            "livepatch": "Y",
            "name": "test_klp_livepatch",
            "license": "GPL",
            "vermagic": f"{Profile().release} SMP preempt mod_unload",
        } == {key: fields[key].strip() for key in ("livepatch", "name", "license", "vermagic")}
