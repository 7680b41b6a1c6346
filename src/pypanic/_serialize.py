"""Any Python object to strict JSON text within limits; never raises, never runs for long.

Values that are plain JSON (dicts with string keys, lists, tuples, strings, finite
numbers, booleans, None) and fit their allowance go through the C encoder of the
``json`` module unchanged: the fast path. Everything else is walked: cycles become a
``{"$cycle": ...}`` marker, other types a ``{"$type": ...}`` record, user code
(``__repr__``, ``__str__``, ``__pypanic__``) runs under a time limit and a failure
becomes an ``"$error"`` field, and every cut (depth, items, string length, size, time)
leaves a marker in place and an entry in the budget's list of cuts.
"""

from __future__ import annotations

import json
import math
import sys
from itertools import islice
from time import monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

CALL_SECONDS = 0.25
"""How long one call of user code (a ``__repr__``, say) may run before it is abandoned."""

MAX_RECORDED_CUTS = 100
_MAX_INT_BITS = 8192
_REPR_CHARS = 2000

_STRING_VALUE_TYPES = frozenset(
    {
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "pathlib.PosixPath",
        "pathlib.PurePosixPath",
        "pathlib.WindowsPath",
        "pathlib.PureWindowsPath",
        "pathlib._local.PosixPath",
        "pathlib._local.PurePosixPath",
        "ipaddress.IPv4Address",
        "ipaddress.IPv6Address",
        "ipaddress.IPv4Network",
        "ipaddress.IPv6Network",
        "ipaddress.IPv4Interface",
        "ipaddress.IPv6Interface",
        "datetime.timedelta",
        "datetime.timezone",
        "zoneinfo.ZoneInfo",
    }
)
"""Types whose ``str()`` is the readable value, written as ``{"$type": T, "value": str(v)}``."""

_ISO_TYPES = frozenset({"datetime.datetime", "datetime.date", "datetime.time"})

_ENCODE_FAST = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=True).encode


class Budget:
    """What one dump may still spend (bytes and time), and the cuts made so far."""

    def __init__(self, max_bytes: int, max_seconds: float) -> None:
        self.bytes_left = max_bytes
        self.deadline = monotonic() + max_seconds
        self.cuts: list[dict[str, Any]] = []
        self.cut_count = 0

    def record_cut(self, where: str, reason: str, detail: str) -> None:
        self.cut_count += 1
        if len(self.cuts) < MAX_RECORDED_CUTS:
            self.cuts.append({"path": where, "reason": reason, "detail": detail})


class _Overtime(BaseException):
    """Raised inside user code that ran past ``CALL_SECONDS``; BaseException so that a
    careless ``except Exception`` there does not swallow it."""


def type_name(obj: Any) -> str:
    """``module.QualName`` of ``obj``'s type (``int`` for builtins); never raises."""
    cls = type(obj)
    try:
        module = cls.__module__
        name = cls.__qualname__
    except Exception:
        return "?"
    return name if module == "builtins" else f"{module}.{name}"


def class_attribute(cls: type, name: str) -> Any:
    """``name`` as found in the class dictionaries along the MRO, without running any code."""
    for klass in type.__dict__["__mro__"].__get__(cls):
        found = klass.__dict__.get(name)
        if found is not None:
            return found
    return None


def call_guarded(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """``(True, fn(*args))``, or ``(False, why)`` when it raised or ran out of time."""
    deadline = monotonic() + CALL_SECONDS

    def trace(frame: Any, event: str, arg: Any) -> Any:
        # Opcode events, not only line events: `while True: pass` never starts a new line.
        frame.f_trace_opcodes = True
        if monotonic() > deadline:
            raise _Overtime
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        return True, fn(*args)
    except _Overtime:
        return False, f"gave up after {CALL_SECONDS} s"
    except BaseException as e:
        return False, describe_error(e)
    finally:
        sys.settrace(previous)


def describe_error(e: BaseException) -> str:
    """``Type: message`` for an exception, without running the exception's own code."""
    args = e.args if isinstance(e.args, tuple) else ()
    message = args[0] if len(args) == 1 and type(args[0]) is str else ""
    name = type_name(e)
    return f"{name}: {message[:_REPR_CHARS]}" if message else name


def key_text(key: Any) -> str:
    """A dictionary key as a JSON object key: strings as they are, others as JSON or repr."""
    if type(key) is str:
        return key
    if key is None or type(key) in (bool, int, float):
        return json.dumps(key)
    ok, text = call_guarded(repr, key)
    return text[:_REPR_CHARS] if ok and isinstance(text, str) else f"<{type_name(key)} key>"


def encode_fast(value: Any, allowance: int) -> str | None:
    """The JSON text of ``value`` when it is plain JSON no longer than ``allowance``."""
    try:
        text = _ENCODE_FAST(value)
    except (TypeError, ValueError, RecursionError, OverflowError):
        return None
    return text if len(text) <= allowance else None


class Serializer:
    """Turns values into JSON text within the given limits, spending from one Budget."""

    def __init__(self, budget: Budget, *, depth: int, items: int, string: int, fast: int | None = None) -> None:
        self.budget = budget
        self.max_depth = depth
        self.max_items = items
        self.max_string = string
        self.fast_allowance = fast
        self._active: set[int] = set()
        self._path: list[Any] = []
        self._nodes = 0
        self._out_of_time = False

    def encode(self, value: Any, where: str) -> str:
        """The JSON text of ``value``; ``where`` names it in the list of cuts."""
        allowance = self.budget.bytes_left
        if self.fast_allowance is not None:
            allowance = min(allowance, self.fast_allowance)
        text = encode_fast(value, allowance)
        if text is None:
            try:
                text = json.dumps(self.to_data(value, where), ensure_ascii=False, allow_nan=False)
            except BaseException as e:
                text = json.dumps({"$error": f"pypanic could not write this value: {describe_error(e)}"})
        self.budget.bytes_left -= len(text)
        return text

    def to_data(self, value: Any, where: str) -> Any:
        """``value`` as plain, finite, acyclic JSON data."""
        self._path = [where]
        self._active.clear()
        return self._walk(value, 0)

    # -- the walk ---------------------------------------------------------------------

    def _where(self) -> str:
        parts = [str(self._path[0])]
        for key in self._path[1:]:
            if isinstance(key, int):
                parts.append(f"[{key}]")
            elif isinstance(key, str) and key.isidentifier():
                parts.append(f".{key}")
            else:
                parts.append(f"[{json.dumps(str(key), ensure_ascii=False)}]")
        return "".join(parts)

    def _cut(self, reason: str, obj: Any, detail: str) -> dict[str, Any]:
        self.budget.record_cut(self._where(), reason, detail)
        return {"$cut": reason, "$type": type_name(obj), "detail": detail}

    def _spend(self, n: int) -> None:
        self.budget.bytes_left -= n

    def _walk(self, obj: Any, depth: int) -> Any:
        self._nodes += 1
        if self._out_of_time or (self._nodes & 1023 == 0 and monotonic() > self.budget.deadline):
            self._out_of_time = True
            return self._cut("time", obj, "the dump's time limit was reached")
        if self.budget.bytes_left <= 0:
            return self._cut("size", obj, "the dump's size limit was reached")
        cls = type(obj)
        if obj is None or cls is bool:
            self._spend(5)
            return obj
        if cls is str:
            return self._string(obj)
        if cls is int:
            return self._int(obj)
        if cls is float:
            return self._float(obj)
        if depth >= self.max_depth:
            return self._cut("depth", obj, f"nested deeper than {self.max_depth}")
        if id(obj) in self._active:
            self._spend(20)
            return {"$cycle": type_name(obj)}
        self._active.add(id(obj))
        try:
            if cls is dict:
                return self._mapping(obj, list(islice(dict.items(obj), self.max_items)), len(obj), depth)
            if cls is list or cls is tuple:
                return self._sequence(obj, obj[: self.max_items], len(obj), depth)
            return self._other(obj, cls, depth)
        except Exception as e:  # a container changed under us, an odd C type, a deep recursion
            return {"$type": type_name(obj), "$error": describe_error(e)}
        finally:
            self._active.discard(id(obj))

    def _string(self, s: str) -> str:
        room = max(min(self.max_string, self.budget.bytes_left - 2), 0)
        if len(s) > room:
            detail = f"{len(s) - room} of {len(s)} characters cut"
            self.budget.record_cut(self._where(), "string" if room == self.max_string else "size", detail)
            s = f"{s[:room]}...[pypanic: {detail}]"
        self._spend(len(s) + 2)
        return s

    def _int(self, n: int) -> Any:
        self._spend(8)
        if n.bit_length() <= _MAX_INT_BITS:
            return n
        return {"$type": "int", "bits": n.bit_length(), "hex": self._string(hex(n))}

    def _float(self, x: float) -> Any:
        self._spend(8)
        if math.isfinite(x):
            return x
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")

    def _mapping(self, obj: Any, items: list[tuple[Any, Any]], length: int, depth: int) -> Any:
        out: dict[str, Any] = {}
        for key, value in items:
            name = key_text(key)
            while name in out:
                name += "'"
            self._spend(len(name) + 4)
            self._path.append(name)
            out[name] = self._walk(value, depth + 1)
            self._path.pop()
        if length > len(items):
            out["$cut"] = self._cut("items", obj, f"{length - len(items)} of {length} items cut")
        return out

    def _sequence(self, obj: Any, items: Any, length: int, depth: int) -> list[Any]:
        out = []
        for i, value in enumerate(items):
            self._spend(1)
            self._path.append(i)
            out.append(self._walk(value, depth + 1))
            self._path.pop()
        if length > len(out):
            out.append(self._cut("items", obj, f"{length - len(out)} of {length} items cut"))
        return out

    def _record(self, obj: Any, **fields: Any) -> dict[str, Any]:
        record = {"$type": type_name(obj)}
        record.update(fields)
        self._spend(len(record["$type"]) + 12)
        return record

    def _repr(self, obj: Any) -> Any:
        ok, text = call_guarded(repr, obj)
        if ok and isinstance(text, str):
            return self._string(text[: max(self.max_string, _REPR_CHARS)])
        return {"$error": text if not ok else "__repr__ returned a non-string"}

    def _other(self, obj: Any, cls: type, depth: int) -> Any:
        hook = class_attribute(cls, "__pypanic__")
        if hook is not None:
            ok, value = call_guarded(hook, obj)
            if not ok:
                return self._record(obj, **{"$error": f"__pypanic__ failed: {value}"})
            self._path.append("__pypanic__")
            try:
                return self._walk(value, depth + 1)
            finally:
                self._path.pop()
        name = type_name(obj)
        if class_attribute(cls, "_member_map_") is not None:
            return self._enum(obj, depth)
        if isinstance(obj, str):
            return self._string(str.__str__(obj))
        if isinstance(obj, int):
            return self._int(int(obj))
        if isinstance(obj, float):
            return self._float(float(obj))
        if isinstance(obj, dict):
            return self._mapping(obj, list(islice(dict.items(obj), self.max_items)), len(obj), depth)
        if isinstance(obj, (list, tuple)):
            head: Sequence[Any]
            if isinstance(obj, list):
                head = list.__getitem__(obj, slice(self.max_items))
            else:
                head = tuple.__getitem__(obj, slice(self.max_items))
            return self._sequence(obj, head, len(obj), depth)
        if isinstance(obj, (set, frozenset)):
            return self._record(obj, items=self._sequence(obj, list(islice(obj, self.max_items)), len(obj), depth))
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return self._bytes(obj)
        if isinstance(obj, complex):
            return self._record(obj, real=self._float(obj.real), imag=self._float(obj.imag))
        if name in _ISO_TYPES:
            return self._record(obj, value=self._string(obj.isoformat()))
        if name in _STRING_VALUE_TYPES:
            ok, text = call_guarded(str, obj)
            return self._record(obj, value=self._string(text) if ok else {"$error": text})
        if isinstance(obj, BaseException):
            return self._exception(obj, depth)
        if isinstance(obj, type):
            return {"$type": "type", "name": self._string(f"{obj.__module__}.{obj.__qualname__}")}
        fields = class_attribute(cls, "__dataclass_fields__")
        if isinstance(fields, dict):
            return self._record(obj, fields=self._attributes(obj, list(fields), depth))
        collections = sys.modules.get("collections")
        if collections is not None and isinstance(obj, collections.deque):
            return self._record(obj, items=self._sequence(obj, list(islice(obj, self.max_items)), len(obj), depth))
        return self._object(obj, cls, depth)

    def _enum(self, obj: Any, depth: int) -> dict[str, Any]:
        record = self._record(obj, name=self._string(str(obj.__dict__.get("_name_"))))
        self._path.append("value")
        record["value"] = self._walk(obj.__dict__.get("_value_"), depth + 1)
        self._path.pop()
        return record

    def _bytes(self, obj: bytes | bytearray | memoryview) -> dict[str, Any]:
        data = bytes(obj[: self.max_string]) if not isinstance(obj, memoryview) else obj.tobytes()[: self.max_string]
        length = obj.nbytes if isinstance(obj, memoryview) else len(obj)
        text = data.decode("utf-8", "backslashreplace")
        record = self._record(obj, length=length, text=text)
        self._spend(len(text))
        if length > len(data):
            record["$cut"] = self._cut("string", obj, f"{length - len(data)} of {length} bytes cut")
        return record

    def _exception(self, exc: BaseException, depth: int) -> dict[str, Any]:
        ok, message = call_guarded(str, exc)
        record = self._record(exc, message=self._string(message) if ok else {"$error": message})
        self._path.append("args")
        record["args"] = self._walk(exc.args, depth + 1)
        self._path.pop()
        return record

    def _attributes(self, obj: Any, names: list[str], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names[: self.max_items]:
            ok, value = call_guarded(getattr, obj, name)
            self._path.append(name)
            out[name] = self._walk(value, depth + 1) if ok else {"$error": value}
            self._path.pop()
        if len(names) > self.max_items:
            out["$cut"] = self._cut("items", obj, f"{len(names) - self.max_items} of {len(names)} attributes cut")
        return out

    def _object(self, obj: Any, cls: type, depth: int) -> dict[str, Any]:
        record = self._record(obj)
        if class_attribute(cls, "__repr__") is not object.__repr__:
            record["repr"] = self._repr(obj)
        else:
            record["id"] = hex(id(obj))
        try:
            attributes = object.__getattribute__(obj, "__dict__")
        except Exception:
            attributes = None
        if isinstance(attributes, dict) and attributes and not isinstance(obj, type(sys)):
            self._path.append("attrs")
            record["attrs"] = self._mapping(
                attributes, list(islice(dict.items(attributes), self.max_items)), len(attributes), depth
            )
            self._path.pop()
        slots = self._slot_values(obj, cls)
        if slots:
            self._path.append("slots")
            record["slots"] = self._mapping(obj, slots[: self.max_items], len(slots), depth)
            self._path.pop()
        return record

    @staticmethod
    def _slot_values(obj: Any, cls: type) -> list[tuple[str, Any]]:
        found = []
        for klass in type.__dict__["__mro__"].__get__(cls):
            names = klass.__dict__.get("__slots__", ())
            for name in (names,) if isinstance(names, str) else names:
                descriptor = klass.__dict__.get(name)
                if name in ("__dict__", "__weakref__") or type(descriptor).__name__ != "member_descriptor":
                    continue
                try:
                    found.append((name, descriptor.__get__(obj, klass)))
                except Exception:
                    continue
        return found
