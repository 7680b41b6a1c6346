"""Any Python object to strict JSON text within limits; never raises, never runs for long.

Every value is walked. A dict, list or tuple found on the way is first scanned, without
running any code of its own: when it is a tree (no part shared, no cycle) of exact
built-in JSON types (dicts with string keys, lists, tuples, strings, finite floats,
integers, booleans, None) within every limit, the C encoder behind the ``json`` module
writes it as it is: the fast path. Everything else is walked further: cycles become a
``{"$cycle": ...}`` marker, other types a ``{"$type": ...}`` record, subclasses of
built-in types are read through their base type, user code (``__repr__``, ``__str__``,
``__pypanic__``, attribute reads) runs only under a time limit and a failure becomes an
``"$error"`` field, and every cut (depth, items, string length, size, time) leaves a
marker in place and an entry in the budget's list of cuts.
"""

from __future__ import annotations

import sys
import types

# The C encoder itself: the `json` package imports `re`, 10 to 20 ms in a process that has
# not, spent with the GIL held before a dump writes anything.
from _json import encode_basestring, make_encoder
from itertools import chain, compress, islice, repeat
from operator import eq, is_, itemgetter, mul
from time import monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

CALL_SECONDS = 0.25
"""How long one call of user code (a ``__repr__``, say) may run before it is abandoned."""

MAX_RECORDED_CUTS = 100
MAX_CUT_PATH = 200
"""Characters kept of the path in a record of a cut."""

CUTS_ROOM = MAX_RECORDED_CUTS * (MAX_CUT_PATH + 120)
"""An upper bound of the JSON text of the list of cuts."""

_MAX_INT_BITS = 8192
_REPR_CHARS = 2000
_SCAN_WIDTH = 16
"""Containers inside a value this wide or wider are scanned for the fast path."""
_SCAN_CHUNK = 1 << 16
"""Values the scan of the fast path checks at once (between two looks at the clock)."""

_FAST_INT = 1 << 63
"""Integers up to this size are written by the fast path; larger ones are walked."""
_FAST_BYTES_PER_SECOND = 20_000_000
"""A slow machine's pace of the C encoder (measured: 26 to 140 MB/s here under load). The
fast path writes a value in one call that cannot stop midway, so it takes only values
whose text can be written at this pace in the time left; others are walked, and cut when
time runs out."""
_RECORD_KEYS = 64
"""Dicts with at most this many keys, all alike, are scanned as records (a list per key)."""
_RECORD_WIDTHS = 8
"""Dicts of at most this many different numbers of keys are scanned as records of each
number (records with optional fields)."""
_CLOCK_EVERY = 1024
"""Items of a container walked between two looks at the clock."""

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

_QUOTED: Callable[[str], str] = encode_basestring
"""A string as the encoder writes it (ensure_ascii off): quoted, control characters escaped."""


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


# Arguments: markers (None: no cycle check), default, string encoder, indent, key and item
# separators, sort_keys, skipkeys, allow_nan; as json.JSONEncoder passes them.
_CHUNKS = make_encoder(None, _refuse, encode_basestring, None, ": ", ", ", False, False, False)


def json_text(value: Any) -> str:
    """Strict JSON text of built-in JSON types, as ``json.dumps(value, ensure_ascii=False,
    allow_nan=False)`` writes it; TypeError or ValueError for anything else. Cycles never
    reach it: the walk turns them into markers, the scan refuses them (one made meanwhile
    by another thread ends in RecursionError)."""
    if type(value) is str:
        return encode_basestring(value)
    return "".join(_CHUNKS(value, 0))


_MRO = type.__dict__["__mro__"].__get__
_CLASS_DICT = type.__dict__["__dict__"].__get__
_CLASS_MODULE = type.__dict__["__module__"].__get__
_CLASS_QUALNAME = type.__dict__["__qualname__"].__get__
_CLASS_FLAGS = type.__dict__["__flags__"].__get__
_HEAPTYPE, _IMMUTABLETYPE = 1 << 9, 1 << 8
_EXCEPTION_ARGS = BaseException.__dict__["args"].__get__
_NONE_TYPE = type(None)
_MODULE_DICT: Callable[[types.ModuleType], dict[str, Any]] = vars(types.ModuleType)["__dict__"].__get__
_MODULE_SPEC = type(sys.__spec__)
"""importlib's ModuleSpec."""

_C_REPRS = frozenset(
    map(
        id,
        (
            types.FunctionType,
            types.BuiltinFunctionType,
            types.MethodWrapperType,
            types.WrapperDescriptorType,
            types.MethodDescriptorType,
            types.ClassMethodDescriptorType,
            types.GetSetDescriptorType,
            types.MemberDescriptorType,
            types.CodeType,
        ),
    )
)
"""The ids of the types whose ``__repr__`` is C code that reads only names, never the
value's own code (ids: a set of the types would hash a class, see ``_type_ids``). Their
values are written without ``call_guarded``, whose ``sys.settrace`` is slow on 3.12 and
later (it re-instruments the code that runs next)."""


class Budget:
    """What one dump may still spend (bytes and time), and the cuts made so far."""

    def __init__(self, max_bytes: int, max_seconds: float) -> None:
        self.bytes_left = max_bytes
        self.deadline = monotonic() + max_seconds
        self.cuts: list[dict[str, Any]] = []
        self.cut_count = 0

    def checkpoint(self) -> tuple[int, int, int]:
        """What ``rewind`` needs to forget everything spent and cut after this call."""
        return self.bytes_left, len(self.cuts), self.cut_count

    def rewind(self, checkpoint: tuple[int, int, int]) -> None:
        self.bytes_left, recorded, self.cut_count = checkpoint
        del self.cuts[recorded:]

    def record_cut(self, where: str, reason: str, detail: str) -> None:
        self.cut_count += 1
        if len(self.cuts) < MAX_RECORDED_CUTS:
            if len(where) > MAX_CUT_PATH:
                where = where[:MAX_CUT_PATH] + "..."
            self.cuts.append({"path": where, "reason": reason, "detail": detail})


class _Overtime(BaseException):
    """Raised inside user code that ran past ``CALL_SECONDS``; BaseException so that a
    careless ``except Exception`` there does not swallow it."""


def class_name(cls: type, *, builtins: bool = False) -> str:
    """``module.QualName`` of a class (``int`` for builtins, unless ``builtins``), read
    without running any of its (or its metaclass's) code; never raises."""
    try:
        name = _CLASS_QUALNAME(cls)
    except Exception:
        return "?"
    module = class_module(cls)
    if type(name) is not str:
        return "?"
    if module is None or (module == "builtins" and not builtins):
        return name
    return f"{module}.{name}"


def class_module(cls: type) -> str | None:
    """The module a class records it was defined in (None if it records none), read in C:
    a ``__module__`` property of its metaclass does not run."""
    try:
        module = _CLASS_MODULE(cls)
    except Exception:
        return None
    return module if type(module) is str else None


def defined_in(cls: type, module: str) -> bool:
    """Whether ``cls`` was defined in ``module``, as it records: a type made in C records
    its module truly, but a class statement may write any ``__module__``, so ``module`` must
    hold the class under its qualified name. Nothing of the application runs."""
    flags = _CLASS_FLAGS(cls)
    if not flags & _HEAPTYPE or flags & _IMMUTABLETYPE:
        return True
    found: Any = sys.modules.get(module)
    if type(found) is not types.ModuleType:
        return False
    namespace = _MODULE_DICT(found)
    for part in _CLASS_QUALNAME(cls).split("."):
        found = namespace.get(part)
        if not issubclass(type(found), type):
            return False
        namespace = _CLASS_DICT(found)
    return found is cls


def type_name(obj: Any) -> str:
    """``module.QualName`` of ``obj``'s type (``int`` for builtins); never raises."""
    return class_name(type(obj))


def class_attribute(cls: type, name: str) -> Any:
    """``name`` as found in the class dictionaries along the MRO, without running any code."""
    for klass in _MRO(cls):
        found = _CLASS_DICT(klass).get(name)
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


def _type_ids(values: Iterable[Any]) -> set[int]:
    """The ids of the exact types of ``values``. Types are told apart by identity: a set or
    a ``==`` of classes would hash or compare them, which runs a metaclass's code."""
    return set(map(id, map(type, values)))


_PLAIN_ARGUMENTS = _type_ids(("", 0, 0.0, False, None))


def exception_text(exc: BaseException) -> tuple[bool, Any]:
    """``call_guarded(str, exc)``, without the guard (and its ``sys.settrace``) when the
    text is BaseException's own of plain arguments: C code that runs none of the
    exception's."""
    args = _EXCEPTION_ARGS(exc)
    if class_attribute(type(exc), "__str__") is BaseException.__str__ and _type_ids(args) <= _PLAIN_ARGUMENTS:
        try:
            return True, BaseException.__str__(exc)
        except Exception:  # an integer too long to write
            pass
    return call_guarded(str, exc)


def describe_error(e: BaseException) -> str:
    """``Type: message`` for an exception, without running the exception's own code."""
    args = _EXCEPTION_ARGS(e)
    message = args[0] if len(args) == 1 and type(args[0]) is str else ""
    name = type_name(e)
    return f"{name}: {message[:_REPR_CHARS]}" if message else name


def plain_text(value: Any) -> str | None:
    """A string of any type as an exact ``str``, without running its code; else None."""
    return str.__str__(value) if issubclass(type(value), str) else None


def _finite(x: float) -> float | str:
    """A float JSON can hold as it is; else the word JavaScript writes for it."""
    if x - x == 0.0:
        return x
    return "Infinity" if x > 0 else "-Infinity" if x < 0 else "NaN"


def key_text(key: Any) -> str:
    """A dictionary key as a JSON object key: strings as they are, others as JSON or repr."""
    if type(key) is str:
        return key
    cls = type(key)
    if cls is int and key.bit_length() > _MAX_INT_BITS:
        return hex(key)
    if key is None or cls is bool or cls is int or cls is float:
        word = _finite(key) if cls is float else key
        return word if type(word) is str else json_text(word)
    ok, text = call_guarded(repr, key)
    text = plain_text(text) if ok else None
    return text[:_REPR_CHARS] if text is not None else f"<{type_name(key)} key>"


_CONTAINERS = (dict, list, tuple, set, frozenset)


def larger_than(values: Iterable[Any], items: int) -> bool:
    """Whether ``values`` hold more than ``items`` elements, counting the built-in
    containers within reach (and a string as one element per 64 characters); stops as soon
    as it knows, and runs no code of the values' own."""
    count, pending = 0, list(values)
    while pending:
        value = pending.pop()
        cls = type(value)
        if issubclass(cls, _CONTAINERS):
            base = next(b for b in _CONTAINERS if issubclass(cls, b))
            count += base.__len__(value)
            if count > items:
                return True
            contents = dict.values(value) if base is dict else base.__iter__(value) if base in (list, tuple) else ()
            pending.extend(islice(contents, items - count + 1))
        elif issubclass(cls, str):
            count += str.__len__(value) // 64
        elif issubclass(cls, bytes):
            count += bytes.__len__(value) // 64
        else:
            count += 1
        if count > items:
            return True
    return False


def one_of(kind: type, kinds: tuple[type, ...]) -> bool:
    """Whether ``kind`` is one of ``kinds``, by identity: ``in`` compares classes with
    ``==``, which runs a metaclass's ``__eq__``."""
    return any(kind is k for k in kinds)


def _all_of(kind: type, values: Iterable[Any]) -> bool:
    """Whether every one of ``values`` is exactly of type ``kind``."""
    return all(map(is_, map(type, values), repeat(kind)))


_SCANNED = _type_ids(({}, [], ()))
"""The containers the fast path's scan looks into."""


def _by_type(values: list[Any]) -> list[tuple[type, list[Any]]]:
    """``values`` grouped by their exact type."""
    if not values:
        return []
    if _all_of(type(values[0]), values):
        return [(type(values[0]), values)]
    types = list(map(type, values))
    kinds = dict(zip(map(id, types), types)).values()
    return [(kind, list(compress(values, map(is_, types, repeat(kind))))) for kind in kinds]


def _by_width(dicts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``dicts`` grouped by their number of keys, when they have a few different numbers
    (records with optional fields), so that each group may be read as records."""
    widths = list(map(len, dicts))
    distinct = set(widths)
    if len(distinct) == 1 or len(distinct) > _RECORD_WIDTHS:
        return [dicts]
    return [list(compress(dicts, map(eq, widths, repeat(width)))) for width in distinct]


def _record_columns(dicts: list[dict[str, Any]]) -> list[list[Any]] | None:
    """A list per key of the first dict, of every dict's value there, when ``dicts`` (whose
    keys are exact strings) all have the first one's keys and are worth reading so; else
    None.

    Every dict holding each of the first one's keys, and no more keys in all than that many
    each: they all have the same keys. (Every key is an exact string, so looking one up runs
    no code of a key's own.) Only for several dicts with a few keys each: a column per key
    of one wide dict would cost a call per value. And not for records holding several
    containers each: the next level's containers are best kept in the order the dicts hold
    them, close in memory, which columns would interleave (that made a config tree's scan
    2.5 times slower).
    """
    first = dicts[0]
    if (
        len(dicts) < 2
        or len(first) > _RECORD_KEYS
        or sum(id(type(value)) in _SCANNED for value in first.values()) > 1
        or sum(map(len, dicts)) != len(first) * len(dicts)
    ):
        return None
    try:
        return [list(map(itemgetter(key), dicts)) for key in first]
    except KeyError:
        return None


def _held_values(containers: list[Any]) -> tuple[int, list[list[Any]]] | None:
    """The values held by ``containers`` (exact dicts, lists and tuples) as lists, and the
    length of the text of their keys; None when a key is not an exact string. Dicts with
    the same keys (records) give one list per key, which mostly holds one type."""
    key_size = 0
    columns: list[list[Any]] = []
    for kind, group in _by_type(containers):
        if kind is not dict:
            # Sequences of one small length (pairs, rows): a column per position, which
            # mostly holds one type and so is checked in one pass.
            widths = set(map(len, group)) if len(group) > 1 else set()
            if len(widths) == 1 and 0 < (width := widths.pop()) <= _RECORD_KEYS:
                columns += [list(map(itemgetter(at), group)) for at in range(width)]
                continue
            columns.append(list(chain.from_iterable(group)))
            continue
        if not _all_of(str, chain.from_iterable(group)):
            return None
        for same_width in _by_width(group):
            found = _record_columns(same_width)
            if found is not None:
                columns += found
                first = same_width[0]
                key_size += (sum(map(len, first)) + 4 * len(first)) * len(same_width)
            else:
                columns.append(list(chain.from_iterable(map(dict.values, same_width))))
                key_size += sum(map(len, chain.from_iterable(same_width))) + 4 * sum(map(len, same_width))
    return key_size, columns


class Serializer:
    """Turns values into JSON text within the given limits, spending from one Budget."""

    def __init__(self, budget: Budget, *, depth: int, items: int, string: int) -> None:
        self.budget = budget
        self.max_depth = depth
        self.max_items = items
        self.max_string = string
        self._active: set[int] = set()
        self._path: list[Any] = []
        self._nodes = 0
        self._deadline = budget.deadline
        self._out_of_time = False
        self._fast = True
        self._quoted: tuple[str, str] | None = None
        """The last string written and its JSON text: a value that is one string is quoted once."""

    def encode(self, value: Any, where: str, *, seconds: float | None = None) -> str:
        """The JSON text of ``value``, its length taken from the budget; never raises.
        ``where`` names it in the list of cuts; ``seconds`` bounds the time it may take,
        within the budget's."""
        before = self.budget.checkpoint()
        deadline = self.budget.deadline if seconds is None else min(self.budget.deadline, monotonic() + seconds)
        try:
            try:
                text = self._text(self._data(value, where, deadline))
            except (TypeError, ValueError, RecursionError):
                # A part left to the fast path was changed by another thread after it was
                # scanned: walk everything again, copying what is kept.
                text = self._walk_only(value, where, deadline, before)
            if len(text) > before[0]:
                # The scan's size is in characters; escapes (\u0001) can make the text longer.
                text = self._walk_only(value, where, deadline, before)
        except BaseException as e:
            text = json_text({"$error": f"pypanic could not write this value: {describe_error(e)}"})
        self.budget.bytes_left = before[0] - len(text)
        return text

    def _walk_only(self, value: Any, where: str, deadline: float, before: tuple[int, int, int]) -> str:
        """``value``'s text again, from the budget as it was ``before``, without the fast path."""
        self.budget.rewind(before)
        self._fast = False
        try:
            return self._text(self._data(value, where, deadline))
        finally:
            self._fast = True

    def _text(self, data: Any) -> str:
        quoted, self._quoted = self._quoted, None
        return quoted[1] if quoted is not None and quoted[0] is data else json_text(data)

    def to_data(self, value: Any, where: str) -> Any:
        """``value`` as finite, acyclic JSON data (parts of it may be ``value``'s own
        containers, when they passed the scan)."""
        return self._data(value, where, self.budget.deadline)

    def _data(self, value: Any, where: str, deadline: float) -> Any:
        self._path = [where]
        self._active.clear()
        self._deadline = deadline
        self._out_of_time = False
        return self._walk(value, 0)

    # -- the fast path ------------------------------------------------------------------

    def _plain_size(self, root: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> int | None:
        """An upper bound of the length of ``root``'s JSON text when ``root``, found at
        ``depth``, is a tree of exact JSON types within every limit and what the budget
        has left; else None.

        The scan goes level by level and checks each level's values in bulk, grouped by
        exact type, with C loops (map, compress, set): a loop in Python per value would
        cost as much as encoding them. It looks into exact built-in types only, so it runs
        no code of the value's own.
        """
        allowance, deadline = self.budget.bytes_left, self._deadline
        seen: set[int] = set()
        level: list[Any] = [root]
        size = 0
        while level:
            counts = list(map(len, level))
            widest = max(counts)
            if widest > self.max_items:
                return None
            size += 2 * len(level) + 2 * sum(counts)
            below: list[Any] = []
            step = max(1, _SCAN_CHUNK // max(widest, 1))
            for start in range(0, len(level), step):
                chunk = level[start : start + step]
                found = _held_values(chunk)
                if found is None:
                    return None
                key_size, columns = found
                size += key_size
                held = len(below)
                for values in columns:
                    for at in range(0, len(values), _SCAN_CHUNK):
                        if monotonic() > deadline:
                            self._out_of_time = True
                            return None
                        grown = self._plain_values(values[at : at + _SCAN_CHUNK], depth + 1, below)
                        if grown is None:
                            return None
                        size += grown
                # Containers that hold containers must each occur once: sharing among them
                # could grow the text exponentially, and a cycle passes through them. One
                # that holds only scalars may occur many times: each time is counted above.
                if len(below) > held:
                    known = len(seen)
                    seen.update(map(id, chunk))
                    if len(seen) < known + len(chunk):
                        return None  # a part is shared (or a cycle): the walk writes it where it occurs
                if size > allowance or size > (deadline - monotonic()) * _FAST_BYTES_PER_SECOND:
                    return None  # too big for the fast path, in bytes or in the time left to write it
            level = below
            depth += 1
        return size

    def _plain_values(self, values: list[Any], depth: int, below: list[Any]) -> int | None:
        """An upper bound of the length of the text of ``values`` (found at ``depth``)
        when each is of an exact JSON type within the limits (each non-empty container
        among them is added to ``below``); else None."""
        size = 0
        for kind, group in _by_type(values):
            if kind is str:
                total = sum(map(len, group))
                if total > self.max_string and max(map(len, group)) > self.max_string:
                    return None
                size += total + 2 * len(group)
            elif kind is int:
                if max(group) >= _FAST_INT or min(group) <= -_FAST_INT:
                    return None
                size += 20 * len(group)
            elif kind is float:
                if sum(map(mul, group, repeat(0.0))) != 0.0:  # NaN or infinite: 0 * x is NaN
                    return None
                size += 24 * len(group)
            elif kind is bool or kind is _NONE_TYPE:
                size += 5 * len(group)
            elif kind is dict or kind is list or kind is tuple:
                if depth >= self.max_depth:
                    return None
                filled = list(compress(group, group))
                size += 2 * (len(group) - len(filled))
                below += filled
            else:
                return None
        return size

    # -- the walk ---------------------------------------------------------------------

    def _where(self) -> str:
        parts = [str(self._path[0])]
        for key in self._path[1:]:
            if type(key) is int:
                parts.append(f"[{key}]")
            elif type(key) is str and key.isidentifier():
                parts.append(f".{key}")
            else:
                parts.append(f"[{_QUOTED(str(key))}]")
        return "".join(parts)

    def _cut(self, reason: str, obj: Any, detail: str) -> dict[str, Any]:
        marker = {"$cut": reason, "$type": type_name(obj), "detail": detail}
        self.budget.record_cut(self._where(), reason, detail)
        self._spend(len(reason) + len(marker["$type"]) + len(detail) + 40)
        return marker

    def _copy(self, items: Iterable[Any]) -> list[Any]:
        """The first ``max_items`` of ``items``, copied before any of them is walked (code run
        on the way, a __repr__, may change the container). At once for most containers; a
        huge one in chunks, between which the clock is looked at."""
        iterator = iter(items)
        copied = list(islice(iterator, min(_SCAN_CHUNK, self.max_items)))
        while len(copied) < self.max_items and len(copied) % _SCAN_CHUNK == 0:
            if monotonic() > self._deadline:
                self._out_of_time = True
                break
            more = list(islice(iterator, min(_SCAN_CHUNK, self.max_items - len(copied))))
            if not more:
                break
            copied += more
        return copied

    def _stop(self, index: int) -> str | None:
        """Why a container's items from ``index`` on must be left out (``size``, ``time``), or None."""
        if self.budget.bytes_left <= 0:
            return "size"
        if index % _CLOCK_EVERY == _CLOCK_EVERY - 1 and monotonic() > self._deadline:
            self._out_of_time = True
        return "time" if self._out_of_time else None

    def _spend(self, n: int) -> None:
        self.budget.bytes_left -= n

    def _walk(self, obj: Any, depth: int) -> Any:
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
        # Only what needs walking is cut for time: a number or a string costs nothing.
        self._nodes += 1
        if self._out_of_time or (self._nodes & 255 == 0 and monotonic() > self._deadline):
            self._out_of_time = True
            return self._cut("time", obj, "the dump's time limit was reached")
        if depth >= self.max_depth:
            return self._cut("depth", obj, f"nested deeper than {self.max_depth}")
        if id(obj) in self._active:
            self._spend(20)
            return {"$cycle": type_name(obj)}
        # The scan costs about as much as walking a dozen values: worth it for a value and
        # for wide containers, whose parts (or they themselves) can take the fast path.
        if self._fast and (cls is dict or cls is list or cls is tuple) and (depth == 0 or len(obj) >= _SCAN_WIDTH):
            size = self._plain_size(obj, depth)
            if size is not None and size <= (self._deadline - monotonic()) * _FAST_BYTES_PER_SECOND:
                self._spend(size)
                return obj
            if self._out_of_time:
                return self._cut("time", obj, "the dump's time limit was reached")
        self._active.add(id(obj))
        try:
            return self._container(obj, cls, depth)
        except Exception as e:  # a container changed under us, an odd C type, a deep recursion
            return {"$type": type_name(obj), "$error": describe_error(e)}
        finally:
            self._active.discard(id(obj))

    def _string(self, s: str) -> str:
        left = max(self.budget.bytes_left - 2, 0)
        room = min(self.max_string, left)
        quoted = _QUOTED(s) if len(s) <= room else None
        if quoted is not None and len(quoted) - 2 > left:
            room = left // 6  # what is sure to fit: an escape (\u0001) takes six characters
        if len(s) > room:
            detail = f"{len(s) - room} of {len(s)} characters cut"
            self.budget.record_cut(self._where(), "string" if room == self.max_string else "size", detail)
            s = f"{s[:room]}...[pypanic: {detail}]"
            quoted = _QUOTED(s)
        assert quoted is not None
        self._spend(len(quoted))
        self._quoted = (s, quoted)
        return s

    def _int(self, n: int) -> Any:
        bits = n.bit_length()
        if bits <= _MAX_INT_BITS:
            self._spend(bits // 3 + 2)
            return n
        return {"$type": "int", "bits": bits, "hex": self._string(hex(n))}

    def _float(self, x: float) -> Any:
        self._spend(24)
        return _finite(x)

    def _mapping(self, obj: Any, mapping: dict[Any, Any], depth: int) -> Any:
        """The items of ``mapping`` (``obj`` itself, or its ``__dict__``) as a JSON object."""
        length = dict.__len__(mapping)
        out: dict[str, Any] = {}
        reason = "items"
        self._spend(2)
        # A copy of the items kept: code run on the way (a __repr__) may change the dict.
        for i, (key, value) in enumerate(self._copy(dict.items(mapping))):
            stop = self._stop(i)
            if stop:
                reason = stop
                break
            name = key_text(key)
            while name in out:
                name += "'"
            self._spend(len(name) + 6)
            self._path.append(name)
            out[name] = self._walk(value, depth + 1)
            self._path.pop()
        if length > len(out):
            out["$cut"] = self._cut(reason, obj, f"{length - len(out)} of {length} items cut")
        return out

    def _sequence(self, obj: Any, items: Iterable[Any], length: int, depth: int) -> list[Any]:
        """The first ``max_items`` of ``items`` (``length`` in all) as a JSON array."""
        out = []
        reason = "items"
        self._spend(2)
        # A copy first: code run during the walk (a __repr__, another thread) may change a set or deque.
        for i, value in enumerate(self._copy(items)):
            stop = self._stop(i)
            if stop:
                reason = stop
                break
            self._spend(2)
            self._path.append(i)
            out.append(self._walk(value, depth + 1))
            self._path.pop()
        if length > len(out):
            out.append(self._cut(reason, obj, f"{length - len(out)} of {length} items cut"))
        return out

    def _record(self, obj: Any, **fields: Any) -> dict[str, Any]:
        record = {"$type": type_name(obj)}
        record.update(fields)
        self._spend(len(record["$type"]) + 12)
        return record

    def _guarded_text(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The string ``fn(*args)`` returns, run under the time limit, or an ``$error``."""
        return self._returned_text(*call_guarded(fn, *args), getattr(fn, "__name__", "the call"))

    def _returned_text(self, ok: bool, text: Any, call: str) -> Any:
        """What ``call`` gave (``ok``: it returned ``text``, else ``text`` says why it
        failed) as a string, or an ``$error``."""
        if not ok:
            return {"$error": text}
        text = plain_text(text)
        if text is None:
            return {"$error": f"{call} returned a non-string"}
        return self._string(text[: max(self.max_string, _REPR_CHARS)])

    def _container(self, obj: Any, cls: type, depth: int) -> Any:
        """A value that is not a JSON scalar, read through its built-in base type when it
        has one; none of its own methods runs except under ``call_guarded``."""
        if cls is dict:
            return self._mapping(obj, obj, depth)
        if cls is list or cls is tuple:
            return self._sequence(obj, obj, len(obj), depth)
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
        if class_attribute(cls, "_member_map_") is not None:
            return self._enum(obj, cls, depth)
        if issubclass(cls, str):
            return self._string(str.__str__(obj))
        if issubclass(cls, int):
            return self._int(int.__int__(obj))
        if issubclass(cls, float):
            return self._float(float.__float__(obj))
        if issubclass(cls, dict):
            return self._mapping(obj, obj, depth)
        for base in (list, tuple, set, frozenset):
            if issubclass(cls, base):
                items = self._sequence(obj, base.__iter__(obj), base.__len__(obj), depth)
                return items if base is list or base is tuple else self._record(obj, items=items)
        if issubclass(cls, (bytes, bytearray, memoryview)):
            return self._bytes(obj, cls)
        if issubclass(cls, complex):
            real, imag = complex.__dict__["real"].__get__(obj), complex.__dict__["imag"].__get__(obj)
            return self._record(obj, real=self._float(real), imag=self._float(imag))
        name = type_name(obj)
        if name in _ISO_TYPES:
            return self._record(obj, value=self._guarded_text(class_attribute(cls, "isoformat"), obj))
        if name in _STRING_VALUE_TYPES:
            return self._record(obj, value=self._guarded_text(str, obj))
        if issubclass(cls, BaseException):
            return self._exception(obj, depth)
        if issubclass(cls, type):
            return {"$type": "type", "name": self._string(class_name(obj, builtins=True))}
        fields = class_attribute(cls, "__dataclass_fields__")
        if type(fields) is dict:
            return self._record(obj, fields=self._attributes(obj, [f for f in fields if type(f) is str], depth))
        collections = sys.modules.get("collections")
        if collections is not None and issubclass(cls, collections.deque):
            deque = collections.deque
            return self._record(obj, items=self._sequence(obj, deque.__iter__(obj), deque.__len__(obj), depth))
        return self._object(obj, cls, depth)

    def _enum(self, obj: Any, cls: type, depth: int) -> dict[str, Any]:
        attributes = _instance_dict(obj, cls) or {}
        record = self._record(obj)
        for field, attribute in (("name", "_name_"), ("value", "_value_")):
            self._path.append(field)
            record[field] = self._walk(dict.get(attributes, attribute), depth + 1)
            self._path.pop()
        return record

    def _bytes(self, obj: Any, cls: type) -> dict[str, Any]:
        if issubclass(cls, memoryview):
            length = obj.nbytes
            data = obj.tobytes()[: self.max_string]
        else:
            base = bytes if issubclass(cls, bytes) else bytearray
            length = base.__len__(obj)
            data = bytes(base.__getitem__(obj, slice(0, self.max_string)))
        text = data.decode("utf-8", "backslashreplace")
        record = self._record(obj, length=length, text=text)
        self._spend(len(text))
        if length > len(data):
            record["$cut"] = self._cut("string", obj, f"{length - len(data)} of {length} bytes cut")
        return record

    def _exception(self, exc: BaseException, depth: int) -> dict[str, Any]:
        record = self._record(exc, message=self._returned_text(*exception_text(exc), "str"))
        self._path.append("args")
        record["args"] = self._walk(_EXCEPTION_ARGS(exc), depth + 1)
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
        text = repr(obj) if id(cls) in _C_REPRS else module_repr(obj) if cls is types.ModuleType else None
        if text is not None:
            record["repr"] = self._string(text)
        elif class_attribute(cls, "__repr__") is not object.__repr__:
            record["repr"] = self._guarded_text(repr, obj)
        else:
            record["id"] = hex(id(obj))
        attributes = _instance_dict(obj, cls)
        if attributes and not issubclass(cls, types.ModuleType):
            self._path.append("attrs")
            record["attrs"] = self._mapping(attributes, attributes, depth)
            self._path.pop()
        slots = _slot_values(obj, cls)
        if slots:
            self._path.append("slots")
            record["slots"] = self._mapping(obj, slots, depth)
            self._path.pop()
        return record


def module_repr(module: types.ModuleType) -> str | None:
    """``repr(module)`` of a module imported the usual way (importlib's ModuleSpec, a
    string origin), built from its spec without running importlib's or the module's code
    (a module ``__getattr__``, a loader's repr); None for any other module."""
    spec = dict.get(_MODULE_DICT(module), "__spec__")
    fields = _instance_dict(spec, _MODULE_SPEC) if type(spec) is _MODULE_SPEC else None
    if fields is None:
        return None
    name, origin, located = (dict.get(fields, key) for key in ("name", "origin", "_set_fileattr"))
    if type(name) is not str or type(origin) is not str:
        return None
    return f"<module {name!r} from {origin!r}>" if located is True else f"<module {name!r} ({origin})>"


def _instance_dict(obj: Any, cls: type) -> dict[str, Any] | None:
    """``obj.__dict__`` when the class keeps it the usual way, read without running code."""
    descriptor = class_attribute(cls, "__dict__")
    if type(descriptor) is not types.GetSetDescriptorType:
        return None
    try:
        found = descriptor.__get__(obj, cls)
    except Exception:
        return None
    return found if issubclass(type(found), dict) else None


def _slot_values(obj: Any, cls: type) -> dict[str, Any]:
    """The ``__slots__`` attributes that are set on ``obj``, read without running code."""
    found = {}
    for klass in _MRO(cls):
        names = _CLASS_DICT(klass).get("__slots__", ())
        if type(names) is str:
            names = (names,)
        elif type(names) not in (tuple, list, dict):
            continue
        for name in names:
            if type(name) is not str or name in ("__dict__", "__weakref__"):
                continue
            descriptor = _CLASS_DICT(klass).get(name)
            if type(descriptor) is not types.MemberDescriptorType:
                continue
            try:
                found[name] = descriptor.__get__(obj, klass)
            except Exception:
                continue
    return found
