"""The parts of a dump read from outside that need no process: local values from their
reprs, the one key order, and a core file's notes."""

from __future__ import annotations

import pytest

from ncore.elf import NotElf, core_notes
from ncore.stacks import value_of
from pypanic._dump import PYPANIC_KEYS, layout


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'findme'", "findme"),
        ('"it\'s"', "it's"),
        ("42", 42),
        ("-1.5", -1.5),
        ("True", True),
        ("None", None),
        ("[1, 2]", {"$repr": "[1, 2]"}),
        ("<Thread at 0x7f00>", {"$repr": "<Thread at 0x7f00>"}),
        ("1e999", {"$repr": "1e999"}),
        ("nan", {"$repr": "nan"}),
        ("'" + "a" * 2000 + "'", {"$repr": "'" + "a" * 2000 + "'"}),
        ("Thread-1", {"$repr": "Thread-1"}),
    ],
)
def test_a_local_is_its_literal_or_its_repr(text, value):
    assert value_of(text) == value


def test_layout_puts_registered_keys_after_init_and_skips_what_is_missing():
    own = {key: "0" for key in PYPANIC_KEYS if key not in ("panic.gc", "dbg.outside")}
    entries = layout(own, [("mine", "1")])
    keys = [key for key, _ in entries]
    assert keys.index("mine") == keys.index("init.time-ms") + 1 == keys.index("panic.error") - 1
    assert [k for k in keys if k != "mine"] == [k for k in PYPANIC_KEYS if k in own]


def test_core_notes_refuse_what_is_not_a_core():
    with pytest.raises(NotElf, match="not a 64-bit little-endian ELF file"):
        core_notes(__file__)
    with pytest.raises(NotElf, match="an ELF file but not a core file"):
        core_notes("/bin/true")


def test_ncore_and_pypanic_agree_on_the_marks_layout():
    from ncore import signaled
    from pypanic import _beacon

    assert (signaled.REQUEST_AT, signaled.ANSWER_AT, signaled.ACK_AT) == (
        _beacon.REQUEST_AT, _beacon.ANSWER_AT, _beacon.ACK_AT)  # fmt: skip
    assert (signaled.EMPTY, signaled.ASKED, signaled.TAKEN, signaled.WITHDRAWN) == (
        _beacon.EMPTY, _beacon.ASKED, _beacon.TAKEN, _beacon.WITHDRAWN)  # fmt: skip
