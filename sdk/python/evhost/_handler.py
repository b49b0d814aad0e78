"""Command handlers (deciders): `Handler`, the `CommandContext` a decider may take, `NewEvent`
for events given by type name, and the wire-level paths (`_evolve_wire`, `_decide_wire`) that
the component's exports and `evhost.testing` both run.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from . import log
from ._codec import (
    DataMismatch,
    decode_registered,
    decode_value,
    encode_json,
    event_data_json,
    registration,
    to_json_value,
    type_name_of,
)
from ._envelope import entity_id_of
from ._errors import Failure, Rejected, describe
from ._names import check_category, check_type_name
from ._plugin import F, Kind, Plugin, PluginInfo, register_once

S = TypeVar("S")


class WireCommand(Protocol):
    """A command as the host hands it over (the WIT record `types.command`)."""

    @property
    def id(self) -> str: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def command_type(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def metadata(self) -> str: ...


class CommandContext:
    """What a decider knows about a command besides its data: id, stream, type and metadata."""

    def __init__(
        self,
        id: str = "command-1",
        stream: str = "",
        type: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        """The command's id: the host records its outcome under it, and answers a command sent
        again with the same id from that record."""
        self.stream = stream
        """The stream the command is about (`visit-42`)."""
        self.type = type
        """The command type (`CheckIn`)."""
        self.metadata: dict[str, Any] = dict(metadata or {})
        """The command's metadata: a JSON object."""

    @property
    def entity_id(self) -> str:
        """The part of the stream's name after the first `-` (`42` for `visit-42`)."""
        return entity_id_of(self.stream)

    def __repr__(self) -> str:
        return f"CommandContext(id={self.id!r}, stream={self.stream!r}, type={self.type!r})"


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event a decider appends, given by type name rather than as a dataclass instance."""

    type: str
    """The event type: 1 to 128 characters from `[A-Za-z0-9_.:-]`."""
    data: Any = None
    """The event's data: anything JSON holds, or a dataclass."""
    metadata: dict[str, Any] | None = None
    """Extra metadata; the host adds the command's correlation and causation ids."""

    @classmethod
    def of(cls, event: Any) -> NewEvent:
        """The `NewEvent` of a dataclass event instance, with its data as plain JSON values: for
        comparing what `evhost.testing.decide` returns."""
        if isinstance(event, NewEvent):
            return NewEvent(event.type, to_json_value(event.data), event.metadata)
        if not dataclasses.is_dataclass(event) or isinstance(event, type):
            raise TypeError(f"expected a dataclass event or a NewEvent, found {event!r}")
        return NewEvent(type_name_of(type(event)), json.loads(event_data_json(event)))


class Handler(Plugin, Generic[S]):
    """A command handler (a decider): owns one category of streams (`visit` owns `visit-42`)
    and decides the commands sent to them.

    For each command, the host folds the stream's events into a state with the `evolve`
    functions, then calls the `decide` function of the command's type: it returns the events
    to append (possibly none) or raises `Rejected`::

        book = Handler("book", "book", "Lends library books", initial=BookState)

        @book.evolve(Lent)
        def lent(state: BookState, event: Lent) -> None:
            state.borrower = event.member

        @book.decide(Lend)
        def lend(state: BookState, command: Lend) -> list[Lent]:
            if state.borrower is not None:
                raise Rejected(f"the book is lent to {state.borrower}")
            return [Lent(member=command.member)]

    The state is anything JSON holds, or a dataclass; the host keeps it between commands as its
    JSON. A stream without events starts from `initial`: a function (or class) called for a
    fresh state, or a value that is copied.

    A command type without a `decide` function is rejected ("unknown command type X; expected
    one of A, B"), and so is command data that does not fit the function's class ("X data does
    not match: missing field `room`"). An event type without an `evolve` function is a plugin
    failure, unless `ignore_unknown_events` is set. Any exception other than `Rejected` is a
    plugin failure: logged with its traceback, and reported by the host as such (HTTP 500).
    """

    kind: ClassVar[Kind] = "handler"

    def __init__(
        self,
        name: str,
        category: str,
        description: str = "",
        *,
        initial: Callable[[], S] | S = dict,  # type: ignore[assignment]
        ignore_unknown_events: bool = False,
    ) -> None:
        super().__init__(name, description)
        self.category = check_category(category)
        self._initial = initial
        self.ignore_unknown_events = ignore_unknown_events
        self._evolvers: dict[str, tuple[type | None, Callable[..., Any]]] = {}
        self._deciders: dict[str, tuple[type | None, Callable[..., Any], bool]] = {}
        self._state_type: type | None | bool = False  # False: not determined yet

    def evolve(self, event_type: type | str) -> Callable[[F], F]:
        """Registers the decorated function `fn(state, data)` for the events of `event_type`: a
        dataclass (`data` is an instance of it) or a type name (`data` is the parsed JSON). It
        returns the new state, or None when it changed `state` in place."""
        name, cls = registration(event_type)
        return register_once(
            self._evolvers,
            name,
            lambda function: (cls, function),
            f"handler {self.name} has an evolve function for {name} already",
        )

    def decide(self, command_type: type | str) -> Callable[[F], F]:
        """Registers the decorated function `fn(state, command)` or `fn(state, command, context)`
        for the commands of `command_type`: a dataclass (`command` is an instance of it) or a
        type name (`command` is the parsed JSON). `context` is a `CommandContext`.

        It returns a list of events (dataclass instances, or `NewEvent`s), or raises `Rejected`.
        """
        name, cls = registration(command_type)
        return register_once(
            self._deciders,
            name,
            lambda function: (cls, function, _takes_context(function)),
            f"handler {self.name} has a decide function for {name} already",
        )

    @property
    def command_types(self) -> tuple[str, ...]:
        """The command types it decides, sorted."""
        return tuple(sorted(self._deciders))

    def initial_state(self) -> S:
        """A fresh state for a stream without events."""
        initial = self._initial
        return initial() if callable(initial) else copy.deepcopy(initial)

    def info(self) -> PluginInfo:
        return PluginInfo(
            name=self.name,
            kind=self.kind,
            category=self.category,
            categories=(),
            event_types=(),
            description=self.description,
        )

    # The wire level: state as bytes, events and commands as a type name plus JSON text.

    def _evolve_wire(self, state: bytes | None, events: Iterable[tuple[int, str, str]]) -> bytes:
        """Folds `events` (version, type, data as JSON text) into the state stored as `state`
        (None before the stream's first event) and returns the new state's bytes. Raises
        `Failure` (logged) if a function raises or an event does not fit."""
        try:
            current = self._load_state(state)
            for version, event_type, data in events:
                current = self._evolve_one(current, version, event_type, data)
            return self._dump_state(current)
        except Exception as error:
            raise self._failure(error, "to evolve a state") from error

    def _decide_wire(
        self, state: bytes | None, command: WireCommand
    ) -> list[tuple[str, str, str | None]]:
        """Decides `command` against the state stored as `state`: the events to append, each as
        (type, data, metadata or None) in JSON text. Raises `Rejected` for a rejection; any other
        exception is logged and raised as it is (the component then traps)."""
        try:
            entry = self._deciders.get(command.command_type)
            if entry is None:
                expected = (
                    f"expected one of {', '.join(self.command_types)}"
                    if self._deciders
                    else f"handler {self.name} decides none"
                )
                raise Rejected(f"unknown command type {command.command_type}; {expected}")
            cls, function, takes_context = entry
            data = decode_registered(
                cls,
                _parse_command_data(command),
                lambda _cls, mismatch: Rejected(
                    f"{command.command_type} data does not match: {mismatch}"
                ),
            )
            current = self._load_state(state)
            if takes_context:
                context = CommandContext(
                    id=command.id,
                    stream=command.stream_id,
                    type=command.command_type,
                    metadata=_parse_metadata(command.metadata),
                )
                events = function(current, data, context)
            else:
                events = function(current, data)
            return [_encode_event(event) for event in _event_list(events, command.command_type)]
        except Rejected:
            raise
        except Exception as error:
            log.error(
                f"handler {self.name} failed to decide {command.command_type} on "
                f"{command.stream_id}:\n{describe(error)}"
            )
            raise

    def _evolve_one(self, state: Any, version: int, event_type: str, data: str) -> Any:
        entry = self._evolvers.get(event_type)
        if entry is None:
            if self.ignore_unknown_events:
                return state
            expected = (
                f"expected one of {', '.join(sorted(self._evolvers))}"
                if self._evolvers
                else "the handler has none"
            )
            raise Failure(
                f"event version {version} has the type {event_type}, which no evolve function "
                f"takes; {expected} (set ignore_unknown_events to ignore such events)"
            )
        cls, function = entry
        value = decode_registered(
            cls,
            json.loads(data),
            lambda cls, mismatch: Failure(
                f"event version {version}, of type {event_type}, does not match "
                f"{cls.__name__}: {mismatch}"
            ),
        )
        changed = function(state, value)
        return state if changed is None else changed

    def _load_state(self, stored: bytes | None) -> Any:
        if stored is None:
            return self.initial_state()
        try:
            value = json.loads(stored)
        except ValueError as error:
            raise Failure(
                f"the stream's state ({len(stored)} bytes) is not JSON: {error}"
            ) from None
        state_type = self._resolved_state_type()
        if state_type is None:
            return value
        try:
            return decode_value(state_type, value)
        except DataMismatch as mismatch:
            raise Failure(
                f"the stream's state does not match {state_type.__name__}: {mismatch}"
            ) from None

    def _dump_state(self, state: Any) -> bytes:
        try:
            return encode_json(state).encode()
        except (TypeError, ValueError) as error:
            raise Failure(f"the state cannot be stored as JSON: {error}") from None

    def _resolved_state_type(self) -> type | None:
        """The dataclass the state is, judged by a fresh initial state; None for plain JSON."""
        if self._state_type is False:
            sample = self.initial_state()
            self._state_type = type(sample) if dataclasses.is_dataclass(sample) else None
        return self._state_type  # type: ignore[return-value]


def _takes_context(function: Callable[..., Any]) -> bool:
    """Whether a decider takes a third argument, the command's context."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 3


def _parse_command_data(command: WireCommand) -> Any:
    try:
        return json.loads(command.data) if command.data else None
    except ValueError as error:
        raise Rejected(f"{command.command_type} data is not JSON: {error}") from None


def _parse_metadata(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _event_list(events: Any, command_type: str) -> list[Any]:
    if isinstance(events, (list, tuple)):
        return list(events)
    raise TypeError(
        f"the decide function of {command_type} returned {events!r}; expected a list of events "
        "(an empty list appends nothing)"
    )


def _encode_event(event: Any) -> tuple[str, str, str | None]:
    if isinstance(event, NewEvent):
        metadata = event.metadata
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(
                f"the metadata of a {event.type} event is {metadata!r}; expected a dict"
            )
        return (
            check_type_name(event.type),
            encode_json(event.data),
            None if metadata is None else encode_json(metadata),
        )
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return type_name_of(type(event)), event_data_json(event), None
    raise TypeError(f"expected a dataclass event or a NewEvent, found {event!r}")
