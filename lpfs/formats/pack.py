"""``lpfs pack``: a module file wrapped in an ELF object that tools read as a kernel module.

The ``.ko`` carries what kmod and kpatch look at (``.modinfo`` and the name
in ``.gnu.linkonce.this_module``) and, in ``.lpfs.module``, the module
file's text verbatim, which ``lpfs insmod`` loads. No code is in it.
"""

from pathlib import Path
from typing import Final

from lpfs.errors import ModfileError
from lpfs.formats import elf, modfile
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import MODULE_NAME_LEN, ModuleDef

# struct module on x86-64 starts with enum module_state (4 bytes, padded to 8)
# and struct list_head (16): name[MODULE_NAME_LEN] follows, where kpatch reads it.
THIS_MODULE_NAME_OFFSET: Final = 24


def modinfo(definition: ModuleDef) -> bytes:
    """The ``.modinfo`` strings modpost and the MODULE_*() macros would leave."""
    entries = ["livepatch=Y"] if definition.livepatch else []
    entries += [
        "license=GPL",
        f"description={definition.name}, an lpfs module file packed by lpfs pack",
        "depends=",
        f"name={definition.name}",
        f"vermagic={Profile().release} SMP preempt mod_unload ",
    ]
    return b"".join(entry.encode() + b"\0" for entry in entries)


def this_module(name: str) -> bytes:
    """A zeroed struct module with only its name set: enough for ``readelf -p``."""
    field = name.encode().ljust(MODULE_NAME_LEN, b"\0")
    return bytes(THIS_MODULE_NAME_OFFSET) + field


def pack(text: str, file: str, default_name: str) -> tuple[str, bytes]:
    """Check a module file's text and build its ``.ko``; returns (module name, ELF bytes)."""
    definition = modfile.parse(text, file, default_name)
    image = elf.build(
        [
            elf.Section(".modinfo", modinfo(definition), flags=elf.SHF_ALLOC, align=8),
            elf.Section(
                ".gnu.linkonce.this_module",
                this_module(definition.name),
                flags=elf.SHF_WRITE | elf.SHF_ALLOC,
                align=64,
            ),
            elf.Section(modfile.LPFS_SECTION, text.encode()),
        ]
    )
    return definition.name, image


def pack_file(source: Path, output: Path | None) -> Path:
    """Write ``source``'s ``.ko`` to ``output`` (default ``<module name>.ko``); returns its path."""
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModfileError(str(source), "", "not UTF-8 text") from None
    name, image = pack(text, str(source), source.name.split(".", 1)[0])
    target = output or Path(f"{name}.ko")
    target.write_bytes(image)
    return target
