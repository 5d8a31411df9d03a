"""Just enough ELF64 (little-endian, x86-64, relocatable) to write and read sections.

``lpfs pack`` writes its modules with this and ``lpfs insmod`` reads them
back; binutils and kmod read the files as they read a kernel module.
"""

import struct
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"\x7fELF"
_HEADER: Final = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_SECTION: Final = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_IDENT: Final = MAGIC + bytes([2, 1, 1]) + bytes(9)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT
ET_REL: Final = 1
EM_X86_64: Final = 62
SHT_PROGBITS: Final = 1
SHT_STRTAB: Final = 3
SHT_NOBITS: Final = 8
SHF_WRITE: Final = 0x1
SHF_ALLOC: Final = 0x2


@dataclass(frozen=True, slots=True)
class Section:
    """One section to write: its contents and the header fields that matter here."""

    name: str
    data: bytes
    type: int = SHT_PROGBITS
    flags: int = 0
    align: int = 1


def _aligned(offset: int, align: int) -> int:
    return -(-offset // align) * align


def build(sections: list[Section]) -> bytes:
    """An ET_REL file holding ``sections`` after the null section, then ``.shstrtab``.

    Neither kmod nor readelf needs a symbol table, so there is none.
    """
    names = b"\0"
    name_offsets = []
    for section in [*sections, Section(".shstrtab", b"")]:
        name_offsets.append(len(names))
        names += section.name.encode() + b"\0"
    every = [*sections, Section(".shstrtab", names, SHT_STRTAB)]
    body = bytearray(_HEADER.size)
    headers = [bytes(_SECTION.size)]  # index 0: SHN_UNDEF
    for section, name in zip(every, name_offsets, strict=True):
        body += bytes(_aligned(len(body), section.align) - len(body))
        headers.append(
            _SECTION.pack(
                name,
                section.type,
                section.flags,
                0,
                len(body),
                len(section.data),
                0,
                0,
                section.align,
                0,
            )
        )
        body += section.data
    body += bytes(_aligned(len(body), 8) - len(body))
    shoff = len(body)
    body[: _HEADER.size] = _HEADER.pack(
        _IDENT,
        ET_REL,
        EM_X86_64,
        1,
        0,
        0,
        shoff,
        0,
        _HEADER.size,
        0,
        0,
        _SECTION.size,
        len(headers),
        len(headers) - 1,
    )
    return bytes(body) + b"".join(headers)


def sections(data: bytes) -> dict[str, bytes]:
    """Every named section's contents; ValueError if ``data`` is not an ELF64 LE file."""
    if len(data) < _HEADER.size or data[:6] != _IDENT[:6]:
        raise ValueError("not a 64-bit little-endian ELF file")
    header = _HEADER.unpack_from(data)
    shoff, shentsize, shnum, shstrndx = header[6], header[11], header[12], header[13]
    if shentsize != _SECTION.size or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        raise ValueError("bad section header table")
    table = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]

    def contents(entry: tuple[int, ...]) -> bytes:
        if entry[1] == SHT_NOBITS:  # .bss and the like take no room in the file
            return b""
        offset, size = entry[4], entry[5]
        if offset + size > len(data):
            raise ValueError("a section runs past the end of the file")
        return data[offset : offset + size]

    names = contents(table[shstrndx])
    found = {}
    for entry in table[1:]:
        end = names.find(b"\0", entry[0])
        found[names[entry[0] : end].decode(errors="replace")] = contents(entry)
    return found
