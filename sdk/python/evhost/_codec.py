"""Typed events and commands: their type names, and the conversion between dataclasses and the
JSON text the host stores.

An event or command type is a dataclass; its type name is the class name unless `@event` or
`@command` gives another. Decoding follows the Rust SDK's rules: fields the class does not
declare are ignored, a missing field without a default is an error that names it, and a class
without fields (`Okayed`) accepts any data and encodes as `null`. Field annotations are checked
for the shapes JSON has (str, int, float, bool, None, lists, dicts, nested dataclasses, unions,
`Literal` and enums); other annotations take the value as it is.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from ._names import check_type_name

T = TypeVar("T")

_TYPE_NAME_ATTRIBUTE = "__evhost_type__"


class DataMismatch(Exception):
    """JSON data that does not fit a dataclass: the message says where and how (`missing field
    `room``)."""


@overload
def event(cls: type[T], /) -> type[T]: ...
@overload
def event(*, name: str | None = None) -> Callable[[type[T]], type[T]]: ...
def event(cls: type[T] | None = None, /, *, name: str | None = None) -> Any:
    """Declares an event type: makes the class a dataclass (if it is not one) and names its type.

    The type name is the class name unless `name` says otherwise::

        @event
        class PatientCheckedIn:
            patient_id: str
            hospital: str = "main"

        @event(name="visit.closed")
        class VisitClosed:
            pass
    """
    return _declare(cls, name)


@overload
def command(cls: type[T], /) -> type[T]: ...
@overload
def command(*, name: str | None = None) -> Callable[[type[T]], type[T]]: ...
def command(cls: type[T] | None = None, /, *, name: str | None = None) -> Any:
    """Declares a command type, as `event` declares an event type."""
    return _declare(cls, name)


def _declare(cls: type[T] | None, name: str | None) -> Any:
    def declare(cls: type[T]) -> type[T]:
        if not isinstance(cls, type):
            raise TypeError(f"expected a class, found {cls!r}")
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(cls)
        # Set on the class itself, so a subclass does not inherit its parent's name.
        setattr(cls, _TYPE_NAME_ATTRIBUTE, check_type_name(name or cls.__name__))
        return cls

    return declare if cls is None else declare(cls)


def type_name_of(cls: type) -> str:
    """The event or command type of a dataclass: its declared name, or its class name."""
    declared = cls.__dict__.get(_TYPE_NAME_ATTRIBUTE)
    return declared if declared is not None else check_type_name(cls.__name__)


def registration(key: type | str) -> tuple[str, type | None]:
    """The type name and the dataclass (none for a name given as a string) that a decorator such
    as `@handler.decide(CheckIn)` registers a function for."""
    if isinstance(key, str):
        return check_type_name(key), None
    if isinstance(key, type) and dataclasses.is_dataclass(key):
        return type_name_of(key), key
    raise TypeError(f"expected a dataclass or a type name, found {key!r}")


def encode_json(value: Any) -> str:
    """Compact JSON text of `value`: dataclasses become objects of their fields, enums their
    values. Raises `TypeError` for anything JSON cannot hold."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def to_json_value(value: Any) -> Any:
    """`value` as plain JSON values (dicts, lists, str, int, float, bool, None)."""
    return json.loads(encode_json(value))


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"a {type(value).__name__} is not JSON; use a list")
    raise TypeError(f"a {type(value).__name__} is not JSON")


def event_data_json(value: Any) -> str:
    """The data of an event or command instance as the host stores it: `null` for a dataclass
    without fields, else the JSON object of its fields."""
    if dataclasses.is_dataclass(value) and not dataclasses.fields(value):
        return "null"
    return encode_json(value)


def decode_data(cls: type[T], data: Any) -> T:
    """The dataclass `cls` from the parsed data of an event or command.

    A class without fields accepts any data (and ignores it); a class with fields takes a JSON
    object. Raises `DataMismatch`.
    """
    if not dataclasses.fields(cls):  # type: ignore[arg-type]
        return cls()
    decoded: T = _decode(cls, data, "")
    return decoded


def decode_registered(
    cls: type | None, data: Any, error: Callable[[type, DataMismatch], Exception]
) -> Any:
    """The parsed `data` for a function registered for `cls` (see `registration`): an instance
    of the dataclass, or `data` as it is when the function was registered by type name. Raises
    `error(cls, mismatch)` when it does not fit."""
    if cls is None:
        return data
    try:
        return decode_data(cls, data)
    except DataMismatch as mismatch:
        raise error(cls, mismatch) from None


def type_and_data(value: Any, data: Any, *, caller: str, kind: str) -> tuple[str, Any]:
    """The type name and data of an event or command that `caller` takes as a type name with its
    `data`, or as a dataclass instance (its type name, and its fields as plain JSON values);
    `kind` ("event" or "command") names what it takes in the errors."""
    a = "an" if kind[0] in "aeiou" else "a"
    if isinstance(value, str):
        return check_type_name(value), data
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if data is not None:
            raise TypeError(
                f"{caller} takes data with {a} {kind} type, not with {a} {kind} instance"
            )
        return type_name_of(type(value)), json.loads(event_data_json(value))
    raise TypeError(f"expected {a} {kind} type or a dataclass {kind}, found {value!r}")


def decode_value(annotation: Any, value: Any) -> Any:
    """`value` (parsed JSON) checked against, and converted to, `annotation`. Raises
    `DataMismatch`."""
    return _decode(annotation, value, "")


def _decode(annotation: Any, value: Any, path: str) -> Any:
    if annotation is Any or annotation is object:
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _decode_dataclass(annotation, value, path)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _decode_union(annotation, value, path)
    if origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
        expected = " or ".join(json.dumps(arg) for arg in typing.get_args(annotation))
        raise _mismatch(path, expected, value)
    if origin in (list, Sequence, tuple, set, frozenset) or annotation in (list, tuple):
        return _decode_sequence(annotation, origin, value, path)
    if origin in (dict, Mapping) or annotation is dict:
        if not isinstance(value, dict):
            raise _mismatch(path, "an object", value)
        args = typing.get_args(annotation)
        item = args[1] if len(args) == 2 else Any
        return {key: _decode(item, entry, _join(path, key)) for key, entry in value.items()}
    if annotation is type(None) or annotation is None:
        if value is not None:
            raise _mismatch(path, "null", value)
        return None
    if annotation is bool:
        if not isinstance(value, bool):
            raise _mismatch(path, "a boolean", value)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch(path, "an integer", value)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(path, "a number", value)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise _mismatch(path, "a string", value)
        return value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            expected = " or ".join(json.dumps(member.value) for member in annotation)
            raise _mismatch(path, expected, value) from None
    # An annotation JSON has no shape for (a NewType, a Protocol, ...): take the value as it is.
    return value


def _decode_dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(path, "an object", value)
    hints = _type_hints(cls)
    arguments: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in value:
            arguments[field.name] = _decode(
                hints.get(field.name, Any), value[field.name], _join(path, field.name)
            )
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise DataMismatch(f"missing field `{_join(path, field.name)}`")
    return cls(**arguments)


def _decode_union(annotation: Any, value: Any, path: str) -> Any:
    arms = typing.get_args(annotation)
    if value is None and type(None) in arms:
        return None
    failures = []
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _decode(arm, value, path)
        except DataMismatch as mismatch:
            failures.append(mismatch)
    if len(failures) == 1:
        raise failures[0]
    raise _mismatch(path, " or ".join(_describe(arm) for arm in arms), value)


def _decode_sequence(annotation: Any, origin: Any, value: Any, path: str) -> Any:
    if not isinstance(value, list):
        raise _mismatch(path, "an array", value)
    args = typing.get_args(annotation)
    if (origin is tuple or annotation is tuple) and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise DataMismatch(
                f"{_where(path)}expected an array of {len(args)} items, found {len(value)}"
            )
        return tuple(
            _decode(arm, item, _join(path, str(index)))
            for index, (arm, item) in enumerate(zip(args, value, strict=True))
        )
    item_type = args[0] if args else Any
    items = [_decode(item_type, item, _join(path, str(index))) for index, item in enumerate(value)]
    if origin is tuple or annotation is tuple:
        return tuple(items)
    if origin in (set, frozenset):
        return origin(items)
    return items


_hints_cache: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _hints_cache.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            # An annotation that does not resolve (a name imported only for type checkers):
            # such fields take their values as they are.
            hints = {}
        _hints_cache[cls] = hints
    return hints


def _describe(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(path: str) -> str:
    return f"field `{path}`: " if path else ""


def _mismatch(path: str, expected: str, value: Any) -> DataMismatch:
    return DataMismatch(f"{_where(path)}expected {expected}, found {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
