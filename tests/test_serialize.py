"""The serializer: strict JSON whatever the input, typed forms, markers for every cut."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import sys
import time
import types
import uuid
from collections import OrderedDict, deque
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypanic._serialize import Budget, Serializer, module_repr

from .interpreters import run_with_pypanic


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


FORBIDDEN_CALLS: list[str] = []
"""Code of hostile values that the serializer ran: it must stay empty."""


def forbidden(name: str) -> Any:
    """A method that records that it ran, then raises."""

    def method(self: Any, *args: Any) -> Any:
        FORBIDDEN_CALLS.append(f"{type(self).__name__}.{name}")
        raise RuntimeError(f"{name} must not run")

    return method


def hostile(base: type, *names: str) -> type:
    """A subclass of ``base`` whose ``names`` record and raise."""
    return type(f"Hostile{base.__name__.title()}", (base,), {name: forbidden(name) for name in names})


READING = ("__iter__", "__len__", "__getitem__", "__contains__", "__bool__", "__eq__", "__hash__", "__reversed__")
HostileDict = hostile(dict, *READING, "items", "keys", "values", "get", "__repr__", "__str__")
HostileList = hostile(list, *READING, "__repr__", "__str__", "copy")
HostileTuple = hostile(tuple, *READING, "__repr__", "__str__")
HostileStr = hostile(str, *READING, "__str__", "__repr__", "__format__", "encode", "__add__", "__mod__")
HostileInt = hostile(int, "__int__", "__index__", "__repr__", "__str__", "__format__", "__eq__", "__hash__")
HostileFloat = hostile(float, "__float__", "__repr__", "__str__", "__format__", "__eq__", "__hash__")
HostileSet = hostile(set, *READING)
HostileBytes = hostile(bytes, *READING, "__bytes__", "decode")


class HostileClass:
    """Asking for its class, as ``isinstance`` does, records and raises."""

    __class__ = property(forbidden("__class__"))


@pytest.fixture(autouse=True)
def _no_forbidden_calls() -> Any:
    FORBIDDEN_CALLS.clear()
    yield
    assert FORBIDDEN_CALLS == []


def test_json_native_data_is_unchanged():
    """Plain JSON data comes back as it went in (the fast path)."""
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}
    assert encode(value)[0] == value


def test_records_of_every_layout_come_back_whole():
    """Wide lists of dicts, read by the scan as records of each size, as one column, or
    with their containers kept in order, are written exactly as they are."""
    optional = [{"id": i, **({"tag": "x"} if i % 3 else {}), **({"seen": [i]} if i % 5 else {})} for i in range(100)]
    nested = [{"a": {"x": i}, "b": [i, {"y": i}], "c": i} for i in range(50)]
    renamed = [{f"k{i % 7}": i, "v": 0.5} for i in range(40)]
    value = {"optional": optional, "nested": nested, "renamed": renamed, "pairs": [[i, str(i)] for i in range(30)]}
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


def test_json_native_data_is_cut_like_any_other():
    """Depth, items and string length bound plain JSON data too, with a marker and a
    record for each cut; the rest of it is written as it is."""
    out, budget = encode({"deep": [[["x"]]], "long": "x" * 100, "many": list(range(20))}, depth=3, string=10, items=15)
    assert out["deep"] == [[{"$cut": "depth", "$type": "list", "detail": "nested deeper than 3"}]]
    assert out["long"] == "x" * 10 + "...[pypanic: 90 of 100 characters cut]"
    assert out["many"][:15] == list(range(15))
    assert out["many"][15] == {"$cut": "items", "$type": "list", "detail": "5 of 20 items cut"}
    assert [(c["path"], c["reason"]) for c in budget.cuts] == [
        ("value.deep[0][0]", "depth"),
        ("value.long", "string"),
        ("value.many", "items"),
    ]
    out, budget = encode(["x" * 100, "y" * 100], bytes=150)
    assert out == ["x" * 100, "y" * 40 + "...[pypanic: 60 of 100 characters cut]"]
    assert budget.cuts == [{"path": "value[1]", "reason": "size", "detail": "60 of 100 characters cut"}]


def test_subclasses_are_read_without_their_code():
    """Subclasses of dict, list, tuple, str, int, float, set and bytes are read through
    their base type: none of their own methods runs, even the ones that raise."""
    value = {
        "dict": HostileDict(a=1),
        "list": HostileList([1, 2]),
        "tuple": HostileTuple((3,)),
        "str": HostileStr("text"),
        "int": HostileInt(5),
        "float": HostileFloat(2.5),
        "set": HostileSet({7}),
        "bytes": HostileBytes(b"ab"),
    }
    out = encode(value)[0]
    assert {k: out[k] for k in ("dict", "list", "tuple", "str", "int", "float")} == {
        "dict": {"a": 1},
        "list": [1, 2],
        "tuple": [3],
        "str": "text",
        "int": 5,
        "float": 2.5,
    }
    assert out["set"]["items"] == [7] and out["bytes"]["text"] == "ab"


def test_a_hostile_class_attribute_is_never_asked():
    """``isinstance`` asks an object for ``__class__``, which a property can answer with
    anything (or never); the serializer looks only at the real type."""
    out = encode([HostileClass(), {"k": HostileClass()}])[0]
    assert out[0]["$type"] == f"{__name__}.HostileClass"
    assert out[1]["k"]["$type"] == f"{__name__}.HostileClass"


HostileMeta = hostile(type, "__hash__", "__eq__", "__ne__")
"""A metaclass whose classes cannot be hashed or compared without its code running."""
HostileMetaObject = HostileMeta("HostileMetaObject", (), {})
HostileMetaStr = HostileMeta("HostileMetaStr", (str,), {})


def test_a_metaclass_is_never_asked_to_hash_or_compare_its_classes():
    """Types are told apart by identity: a set or a ``==`` of the classes met (grouping a
    list's values by type, checking keys, picking a repr) would run the metaclass's code."""
    wide = [HostileMetaObject() for _ in range(20)]
    value = {
        "mixed": [*wide, 1, "x", 2.5, [1]],
        "keys": [{HostileMetaStr("k"): 1} for _ in range(20)],
        "records": [{"a": HostileMetaObject(), "b": i} for i in range(20)],
    }
    out = encode(value)[0]
    assert [item["$type"] for item in out["mixed"][:20]] == [f"{__name__}.HostileMetaObject"] * 20
    assert out["mixed"][20:] == [1, "x", 2.5, [1]]
    assert out["keys"] == [{"'k'": 1}] * 20
    assert [record["b"] for record in out["records"]] == list(range(20))


def test_shared_parts_are_written_where_they_occur():
    """A part shared by several containers (not a cycle) is written at each place."""
    part = {"x": [1, 2]}
    assert encode([part, part, {"again": part}])[0] == [{"x": [1, 2]}, {"x": [1, 2]}, {"again": {"x": [1, 2]}}]


def test_shared_parts_cannot_blow_up():
    """Forty levels of shared halves (2**40 leaves as a tree) are written up to the size
    budget within the time budget (the subprocess timeout is the hang guard)."""
    code = """
import json
from pypanic._serialize import Budget, Serializer
value = [1]
for _ in range(40):
    value = [value, value]
budget = Budget(100_000, 2.0)
text = Serializer(budget, depth=64, items=10_000, string=1000).encode(value, "value")
print(json.dumps([len(text), sorted({cut["reason"] for cut in budget.cuts})]))
"""
    done = run_with_pypanic(code)
    assert done.returncode == 0, done.stderr
    length, reasons = json.loads(done.stdout)
    assert length <= 100_000
    assert reasons == ["size"]


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
    out = encode([RaisingRepr(), EndlessRepr()])[0]
    assert out[0]["repr"] == {"$error": "KeyError: nope"}
    assert out[1]["repr"]["$error"].startswith("gave up after")


def _settrace_calls(value: Any) -> tuple[Any, int]:
    """The value encoded, and how often the serializer called sys.settrace meanwhile."""
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(arg) if event == "c_call" and arg is sys.settrace else None)
    try:
        out = encode(value)[0]
    finally:
        sys.setprofile(None)
    return out, len(calls)


def test_functions_builtins_and_modules_are_written_without_a_guard():
    """Their repr is C code, or built from the module's spec: no guarded call (a
    sys.settrace, slow on 3.12 and later), and the text repr() gives."""
    value = [encode, len, [].append, "".join, str.upper, (1).__add__, Point.__init__.__code__, json, sys]
    out, calls = _settrace_calls(value)
    assert [item["repr"] for item in out] == [repr(item) for item in value]
    assert calls == 0
    out, calls = _settrace_calls([Plain(), RaisingRepr()])
    assert calls == 2 and out[1]["repr"] == {"$error": "KeyError: nope"}


def test_a_modules_repr_is_the_one_python_writes():
    """Every module of the test's process that has a usual spec gets its repr() text; the
    others (``__main__`` of a script run by path, say) get the guarded repr."""
    modules = [m for m in list(sys.modules.values()) if type(m) is types.ModuleType]
    built = [(module_repr(m), m) for m in modules]
    # 3.9 to 3.11 name a built-in module by its __name__ (_io calls itself io), later ones by its spec.
    renamed = sys.version_info < (3, 12)
    compared = [(t, m) for t, m in built if t is not None and not (renamed and m.__name__ != t.split("'")[1])]
    assert all(text == repr(m) for text, m in compared)
    assert sum(text is not None for text, _ in built) > 0.9 * len(modules)
    odd = types.ModuleType("odd")
    assert module_repr(odd) is None
    assert encode(odd)[0]["repr"] == "<module 'odd'>"


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
hostile_scalars = (
    st.builds(HostileClass)
    | st.text().map(HostileStr)
    | st.integers().map(HostileInt)
    | st.floats().map(HostileFloat)
    | st.binary().map(HostileBytes)
    | st.sets(st.integers()).map(HostileSet)
)
anything = st.recursive(
    json_values | odd_scalars | hostile_scalars,
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False)), children)
        | st.frozensets(st.integers())
        | st.lists(children).map(HostileList)
        | st.dictionaries(st.text(), children).map(HostileDict)
        | children.map(lambda shared: [shared, {"again": shared}])
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(anything, st.integers(1, 8), st.integers(1, 20), st.integers(1, 50), st.integers(0, 5000))
def test_always_strict_json_never_raises(value, depth, items, string, size):
    """Whatever the input and the limits, the output parses as strict JSON, and no code
    of a hostile subclass or class attribute runs (the fixture checks)."""
    budget = Budget(size, 10.0)
    text = Serializer(budget, depth=depth, items=items, string=string).encode(value, "v")
    strict_loads(text)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_native_values_round_trip(value):
    """Finite JSON-native data comes back equal (NaN and infinities as strings)."""
    out = encode(value)[0]
    assert out == json.loads(json.dumps(value, allow_nan=True), parse_constant=lambda c: c)


def test_a_set_changed_during_the_walk_is_still_written():
    """An item whose repr grows the set it is in: the walk goes over a copy, so the set is
    written, not replaced by an error."""
    box: set[Any] = set()

    class Grower:
        def __repr__(self) -> str:
            box.add(object())
            return "grower"

    box.add(Grower())
    data, _ = encode(box)
    assert data["$type"] == "set" and data["items"][0]["repr"] == "grower"


def test_escapes_never_take_the_text_past_the_size_budget():
    """Control characters are written as six-character escapes; the size budget holds anyway
    (give or take the cut markers, a few dozen characters each: it was 18012 for 5000)."""
    value = ["\x01" * 1000] * 3
    budget = Budget(5000, 10.0)
    text = Serializer(budget, depth=8, items=100, string=2000).encode(value, "value")
    assert len(text) <= 5000 + 200
    assert "$cut" in text
