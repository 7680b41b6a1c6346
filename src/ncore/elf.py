"""Reads what ncore needs from an ELF file: its type, load segments and a few dynamic
symbols, or a core file's notes.

Only ``.dynsym`` is read: it is what a stripped binary keeps, and it holds every exported
``Py*`` function and ``_PyRuntime`` with its size. The wanted names are found in the
string table first, so that only their numbers are compared in the symbol table (1 ms
for a libpython, where decoding every name took 8 to 19 ms). Undefined entries (a PIE
python that imports ``PyRun_SimpleString`` from its libpython) are skipped.
"""

from __future__ import annotations

import os
import struct

ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4
NT_PRSTATUS = 1
_SHT_DYNSYM = 11
_PT_LOAD = 1
_PT_NOTE = 4
_MAX_NOTES_BYTES = 64 << 20
_SHN_UNDEF = 0


class NotElf(ValueError):
    """The file is not a 64-bit little-endian ELF file ncore can read."""


class Symbol:
    """A defined dynamic symbol: its link-time address and size."""

    __slots__ = ("size", "value")

    def __init__(self, value: int, size: int) -> None:
        self.value = value
        self.size = size


class ElfFile:
    """The parts of one ELF file ncore uses."""

    __slots__ = ("machine", "path", "segments", "symbols", "type")

    def __init__(
        self,
        path: str,
        type: int,
        machine: int,
        segments: list[tuple[int, int, int]],
        symbols: dict[str, Symbol],
    ) -> None:
        self.path = path
        self.type = type
        self.machine = machine
        self.segments = segments
        """(link-time address, file offset, size in the file) of each load segment."""
        self.symbols = symbols

    def file_offset(self, vaddr: int) -> int | None:
        """Where the byte at link-time address ``vaddr`` lies in the file."""
        for start, offset, size in self.segments:
            if start <= vaddr < start + size:
                return vaddr - start + offset
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
        return min((start for start, _, _ in self.segments), default=0)


def read_elf(path: str, wanted: frozenset[str]) -> ElfFile:
    """Parse ``path``, keeping the defined dynamic symbols named in ``wanted``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _parse(path, fd, wanted)
    except struct.error:
        raise NotElf(f"{path} is cut short: its headers point past its end") from None
    finally:
        os.close(fd)


def _header(path: str, fd: int) -> tuple[int, ...]:
    """The ELF header's fields from e_type on."""
    header = os.pread(fd, 64, 0)
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        raise NotElf(f"{path} is not a 64-bit little-endian ELF file")
    return struct.unpack_from("<HHIQQQIHHHHHH", header, 16)


def _program_headers(fd: int, header: tuple[int, ...]) -> list[tuple[int, ...]]:
    """(p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align) of each segment."""
    e_phoff, e_phentsize, e_phnum = header[4], header[8], header[9]
    table = os.pread(fd, e_phnum * e_phentsize, e_phoff)
    return [struct.unpack_from("<IIQQQQQQ", table, i * e_phentsize) for i in range(e_phnum)]


def core_notes(path: str) -> list[tuple[int, bytes, bytes]]:
    """Every note of core file ``path``, in the file's order, as (type, name, contents);
    NotElf if it is no core file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        header = _header(path, fd)
        if header[0] != ET_CORE:
            raise NotElf(f"{path} is an ELF file but not a core file")
        notes = []
        for p_type, _, p_offset, _, _, p_filesz, _, _ in _program_headers(fd, header):
            if p_type != _PT_NOTE:
                continue
            data = os.pread(fd, min(p_filesz, _MAX_NOTES_BYTES), p_offset)
            at = 0
            while at + 12 <= len(data):
                namesz, descsz, kind = struct.unpack_from("<III", data, at)
                name_at = at + 12
                desc_at = name_at + (namesz + 3) // 4 * 4
                notes.append((kind, data[name_at : name_at + namesz].rstrip(b"\0"), data[desc_at : desc_at + descsz]))
                at = desc_at + (descsz + 3) // 4 * 4
        return notes
    except struct.error:
        raise NotElf(f"{path} is cut short: its headers point past its end") from None
    finally:
        os.close(fd)


def _parse(path: str, fd: int, wanted: frozenset[str]) -> ElfFile:
    header = _header(path, fd)
    e_type, e_machine, e_shoff, e_shentsize, e_shnum = header[0], header[1], header[5], header[10], header[11]
    segments = [(h[3], h[2], h[5]) for h in _program_headers(fd, header) if h[0] == _PT_LOAD]
    section_headers = os.pread(fd, e_shnum * e_shentsize, e_shoff)
    sections = [struct.unpack_from("<IIQQQQIIQQ", section_headers, i * e_shentsize) for i in range(e_shnum)]
    symbols: dict[str, Symbol] = {}
    for _, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize in sections:
        if sh_type != _SHT_DYNSYM or sh_entsize != struct.calcsize("<IBBHQQ") or sh_link >= len(sections):
            continue
        strings = sections[sh_link]
        names = _name_offsets(os.pread(fd, strings[5], strings[4]), wanted)
        table = os.pread(fd, sh_size, sh_offset)
        for st_name, _, _, st_shndx, st_value, st_size in struct.iter_unpack("<IBBHQQ", table):
            if st_name in names and st_shndx != _SHN_UNDEF:
                symbols[names[st_name]] = Symbol(st_value, st_size)
    return ElfFile(path, e_type, e_machine, segments, symbols)


def _name_offsets(strings: bytes, wanted: frozenset[str]) -> dict[int, str]:
    """Every offset in a string table where a wanted name starts and runs to its end.

    A name may also sit at the tail of a longer one (linkers share tails), so every
    occurrence counts, not only those after a NUL.
    """
    offsets = {}
    for name in wanted:
        needle = name.encode() + b"\0"
        found = strings.find(needle)
        while found >= 0:
            offsets[found] = name
            found = strings.find(needle, found + 1)
    return offsets
