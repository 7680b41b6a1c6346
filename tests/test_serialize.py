"""The serializer: strict JSON whatever the input, typed forms, markers for every cut."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import time
import uuid
from collections import OrderedDict, deque
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypanic._serialize import Budget, Serializer


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as strict JSON parsers do."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict constant {name}"))


def encode(value: Any, **limits: int) -> Any:
    budget = Budget(limits.pop("bytes", 1 << 30), 10.0)
    options = {"depth": 32, "items": 10_000, "string": 1 << 20, **limits}
    return strict_loads(Serializer(budget, **options).encode(value, "value")), budget


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a = 1


class Plain:
    def __init__(self) -> None:
        self.name = "plain"
        self.child = [1, 2]


class RaisingRepr:
    def __repr__(self) -> str:
        raise KeyError("nope")


class EndlessRepr:
    def __repr__(self) -> str:
        while True:
            pass


class Hook:
    def __pypanic__(self) -> dict[str, str]:
        return {"custom": "form"}


def test_json_native_data_is_unchanged():
    """Plain JSON data comes back as it went in (the fast path)."""
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}
    assert encode(value)[0] == value


def test_typed_forms():
    """Types JSON lacks get a readable record naming the type."""
    value = {
        "bytes": b"ab\xff",
        "set": {3},
        "tuple": (1, 2),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "money": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=1),
        "path": PurePosixPath("/x"),
        "enum": Color.RED,
        "point": Point(1, 2),
        "complex": 1 + 2j,
        "ordered": OrderedDict(a=1),
        "queue": deque([1]),
        "slots": Slotted(),
        "plain": Plain(),
        "hook": Hook(),
        "type": int,
        "error": ValueError("bad"),
    }
    out = encode(value)[0]
    assert out["bytes"] == {"$type": "bytes", "length": 3, "text": "ab\\xff"}
    assert out["set"] == {"$type": "set", "items": [3]}
    assert out["tuple"] == [1, 2]
    assert out["when"] == {"$type": "datetime.datetime", "value": "2024-01-02T03:04:05"}
    assert out["money"] == {"$type": "decimal.Decimal", "value": "1.10"}
    assert out["id"]["value"] == "00000000-0000-0000-0000-000000000001"
    assert out["path"]["value"] == "/x"
    assert out["enum"] == {"$type": f"{__name__}.Color", "name": "RED", "value": 1}
    assert out["point"] == {"$type": f"{__name__}.Point", "fields": {"x": 1, "y": 2}}
    assert out["complex"] == {"$type": "complex", "real": 1.0, "imag": 2.0}
    assert out["ordered"] == {"a": 1}
    assert out["queue"] == {"$type": "collections.deque", "items": [1]}
    assert out["slots"]["slots"] == {"a": 1}
    assert out["plain"]["attrs"] == {"name": "plain", "child": [1, 2]}
    assert out["hook"] == {"custom": "form"}
    assert out["type"] == {"$type": "type", "name": "builtins.int"}
    assert out["error"]["message"] == "bad" and out["error"]["args"] == ["bad"]


def test_json_native_data_that_fits_is_written_whole():
    """The per-value limits cut only values that need the walk; plain JSON data that fits
    the size budget goes through the fast path whole."""
    value = [[[["deep"]]]], "x" * 100
    assert encode(value, depth=2, string=10)[0] == [[[[["deep"]]]], "x" * 100]
    out, budget = encode(["x" * 100, "y" * 100], bytes=150)
    assert out == ["x" * 100, "y" * 44 + "...[pypanic: 56 of 100 characters cut]"]
    assert budget.cuts == [{"path": "value[1]", "reason": "size", "detail": "56 of 100 characters cut"}]


def test_non_finite_floats_become_strings():
    """The file stays strict JSON: NaN and infinities are written as strings."""
    assert encode([math.nan, math.inf, -math.inf])[0] == ["NaN", "Infinity", "-Infinity"]


def test_non_string_keys_are_stringified():
    """Keys that are not strings become their JSON or repr text."""
    assert encode({1: "a", None: "b", (1, 2): "c"})[0] == {"1": "a", "null": "b", "(1, 2)": "c"}


def test_cycles_become_markers_and_the_object_is_untouched():
    """A cycle is written as a marker; the live object keeps its cycle."""
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    assert encode(value)[0] == {"name": "loop", "self": {"$cycle": "dict"}}
    assert value["self"] is value


def test_raising_and_endless_reprs_become_markers():
    """A __repr__ that raises or never returns gives an $error naming what happened."""
    start = time.monotonic()
    out = encode([RaisingRepr(), EndlessRepr()])[0]
    assert out[0]["repr"] == {"$error": "KeyError: nope"}
    assert out[1]["repr"]["$error"].startswith("gave up after")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("value", "limits", "reason"),
    [
        ([[[[{"deep"}]]]], {"depth": 2}, "depth"),
        ([{1}, *range(100)], {"items": 10}, "items"),
        ({"set": {1}, **{str(i): i for i in range(100)}}, {"items": 10}, "items"),
        ([{1}, "x" * 100], {"string": 10}, "string"),
        ([Plain() for _ in range(100)], {"bytes": 200}, "size"),
    ],
)
def test_every_cut_is_marked_and_recorded(value, limits, reason):
    """Each limit cuts with a marker in place and a record in the budget's list."""
    text, budget = encode(value, **limits)
    assert reason in json.dumps(text) or reason == "string"
    assert budget.cut_count >= 1
    assert budget.cuts[0]["reason"] == reason
    assert budget.cuts[0]["path"].startswith("value")


def test_a_million_element_hostile_structure_is_bounded():
    """A million objects with raising reprs: cut to the item limit, quickly."""
    start = time.monotonic()
    text, budget = encode([RaisingRepr() for _ in range(1_000_000)], items=1000)
    assert len(text) == 1001
    assert budget.cuts[0]["detail"] == "999000 of 1000000 items cut"
    assert time.monotonic() - start < 30


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
odd_scalars = (
    st.binary()
    | st.sets(st.integers())
    | st.complex_numbers()
    | st.decimals()
    | st.datetimes()
    | st.integers(min_value=10**5000, max_value=10**5001)
    | st.builds(RaisingRepr)
    | st.builds(Plain)
    | st.sampled_from(list(Color))
)
anything = st.recursive(
    json_values | odd_scalars,
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False)), children)
        | st.frozensets(st.integers())
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(anything, st.integers(1, 8), st.integers(1, 20), st.integers(1, 50), st.integers(0, 5000))
def test_always_strict_json_never_raises(value, depth, items, string, size):
    """Whatever the input and the limits, the output parses as strict JSON."""
    budget = Budget(size, 10.0)
    text = Serializer(budget, depth=depth, items=items, string=string).encode(value, "v")
    strict_loads(text)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_native_values_round_trip(value):
    """Finite JSON-native data comes back equal (NaN and infinities as strings)."""
    out = encode(value)[0]
    assert out == json.loads(json.dumps(value, allow_nan=True), parse_constant=lambda c: c)
