"""Reads what ncore needs from an ELF file: its type, load segments and dynamic symbols.

Only ``.dynsym`` is read (a few milliseconds, against a hundred for a full ``.symtab``):
it is what a stripped binary keeps, and it holds every exported ``Py*`` function and
``_PyRuntime`` with its size. Undefined entries (a PIE python that imports
``PyRun_SimpleString`` from its libpython) are skipped.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

ET_EXEC = 2
ET_DYN = 3
_SHT_DYNSYM = 11
_PT_LOAD = 1
_SHN_UNDEF = 0


class NotElf(ValueError):
    """The file is not a 64-bit little-endian ELF file ncore can read."""


@dataclass(frozen=True)
class Symbol:
    value: int
    size: int


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int


@dataclass(frozen=True)
class ElfFile:
    """The parts of one ELF file ncore uses."""

    path: str
    type: int
    machine: int
    segments: tuple[Segment, ...]
    symbols: dict[str, Symbol]

    def file_offset(self, vaddr: int) -> int | None:
        """Where the byte at link-time address ``vaddr`` lies in the file."""
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return vaddr - s.vaddr + s.offset
        return None

    def read(self, vaddr: int, size: int) -> bytes | None:
        """``size`` bytes of initialised data at link-time address ``vaddr``."""
        offset = self.file_offset(vaddr)
        if offset is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    @property
    def first_load_vaddr(self) -> int:
        return min((s.vaddr for s in self.segments), default=0)


def read_elf(path: str, wanted: frozenset[str] | None = None) -> ElfFile:
    """Parse ``path``; keep only the defined dynamic symbols named in ``wanted`` (all when None)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse(path, data, wanted)


def _parse(path: str, data: mmap.mmap, wanted: frozenset[str] | None) -> ElfFile:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NotElf(f"{path} is not a 64-bit little-endian ELF file")
    (e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum, _) = (
        struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    )
    segments = []
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == _PT_LOAD:
            segments.append(Segment(p_vaddr, p_offset, p_filesz))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    symbols: dict[str, Symbol] = {}
    for _, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize in sections:
        if sh_type != _SHT_DYNSYM or not sh_entsize:
            continue
        strtab_offset = sections[sh_link][4]
        for entry in range(sh_offset, sh_offset + sh_size, sh_entsize):
            st_name, _, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, entry)
            if st_shndx == _SHN_UNDEF or not st_name:
                continue
            start = strtab_offset + st_name
            name = data[start : data.find(b"\0", start)].decode("ascii", "replace")
            if wanted is None or name in wanted:
                symbols[name] = Symbol(st_value, st_size)
    return ElfFile(path, e_type, e_machine, tuple(segments), symbols)
