"""What every plugin kind shares: its name and description, what it tells the host about itself
(`PluginInfo`), how it reports a failure, and how its decorators register a function once per
name (`register_once`); and, for projections and policies, their constructor, the functions
registered per event type, the subscription they imply, and how their state writes are committed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, Literal, TypeVar

from . import log
from ._codec import decode_registered, registration
from ._envelope import Envelope, WireEvent
from ._errors import Failure, describe, summary
from ._names import check_category, check_plugin_name, check_type_name
from ._state import State

Kind = Literal["handler", "projection", "policy"]

F = TypeVar("F", bound=Callable[..., Any])
"""A registered function: the decorators that register one return it unchanged."""
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What a plugin tells the host about itself when it is deployed (`meta.describe`)."""

    name: str
    """The plugin's name, unique in the host."""
    kind: Kind
    """Its kind, which matches the world the component implements."""
    category: str | None
    """For a handler, the category of streams it owns."""
    categories: tuple[str, ...]
    """For projections and policies, the categories to receive; empty means every category."""
    event_types: tuple[str, ...]
    """For projections and policies, the event types to receive; empty means every type."""
    description: str
    """One line for operators: what the plugin is for."""


class Plugin:
    """A plugin of any kind: see `Handler`, `Projection` and `Policy`."""

    kind: ClassVar[Kind]

    def __init__(self, name: str, description: str) -> None:
        self.name = check_plugin_name(name)
        self.description = str(description)

    def info(self) -> PluginInfo:
        """What the component's `describe` answers."""
        raise NotImplementedError

    def _failure(self, error: Exception, doing: str) -> Failure:
        """Logs `error` with its traceback at error level and returns the failure the host gets
        (to be raised from `error`): the message of a `Failure`, `<Type>: <message>` of any other
        exception."""
        log.error(f"{self.kind} {self.name} failed {doing}:\n{describe(error)}")
        message = error.message if isinstance(error, Failure) else summary(error)
        return Failure(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def register_once(
    table: dict[str, Any], key: str, entry: Callable[[Any], Any], already: str
) -> Callable[[F], F]:
    """A decorator that stores `entry(function)` under `key` in `table` and returns the function;
    it raises `ValueError(already)` if `key` has an entry."""

    def register(function: F) -> F:
        if key in table:
            raise ValueError(already)
        table[key] = entry(function)
        return function

    return register


class Subscriber(Plugin, Generic[R]):
    """A projection or a policy: receives the events of its categories and event types, and
    calls the function registered for each event's type. `Projection` and `Policy` take its
    constructor as theirs."""

    def __init__(
        self,
        name: str,
        description: str = "",
        *,
        categories: Iterable[str] = (),
        event_types: Iterable[str] | None = None,
    ) -> None:
        super().__init__(name, description)
        if isinstance(categories, str):
            raise TypeError(f"categories is the string {categories!r}; expected a list of them")
        if isinstance(event_types, str):
            raise TypeError(f"event_types is the string {event_types!r}; expected a list of them")
        self.categories: tuple[str, ...] = tuple(check_category(c) for c in categories)
        self._declared_event_types: tuple[str, ...] | None = (
            None if event_types is None else tuple(check_type_name(t) for t in event_types)
        )
        self._functions: dict[str, tuple[type | None, Callable[..., R]]] = {}
        self._fallback: Callable[..., R] | None = None

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types it subscribes to: those given to the constructor, else the types that
        have a function (all types, `()`, once an `on_any` function is registered)."""
        if self._declared_event_types is not None:
            return self._declared_event_types
        if self._fallback is not None:
            return ()
        return tuple(sorted(self._functions))

    def on(self, event_type: type | str) -> Callable[[F], F]:
        """Registers the decorated function for the events of `event_type`: a dataclass (the
        function gets an `Envelope` whose `data` is an instance of it) or a type name (the
        `data` is the parsed JSON)."""
        name, cls = registration(event_type)
        return register_once(
            self._functions,
            name,
            lambda function: (cls, function),
            f"{self.kind} {self.name} has a function for {name} already",
        )

    def on_any(self, function: F) -> F:
        """Registers the decorated function for the events whose type has no function of its
        own; its envelopes carry the parsed JSON."""
        if self._fallback is not None:
            raise ValueError(f"{self.kind} {self.name} has an on_any function already")
        self._fallback = function
        return function

    def info(self) -> PluginInfo:
        return PluginInfo(
            name=self.name,
            kind=self.kind,
            category=None,
            categories=self.categories,
            event_types=self.event_types,
            description=self.description,
        )

    def _dispatch(self, wire: WireEvent) -> tuple[Envelope[Any], Callable[..., R]] | None:
        """The envelope of `wire` and the function for its type; None if no function takes it.
        Raises `Failure` if its data does not fit the function's class."""
        entry = self._functions.get(wire.event_type)
        if entry is None:
            if self._fallback is None:
                return None
            entry = (None, self._fallback)
        cls, function = entry
        data = decode_registered(
            cls,
            json.loads(wire.data),
            lambda cls, mismatch: Failure(
                f"the event at position {wire.position}, of type {wire.event_type}, does not "
                f"match {cls.__name__}: {mismatch}"
            ),
        )
        envelope = Envelope(
            position=wire.position,
            stream=wire.stream_id,
            version=wire.version,
            id=wire.id,
            type=wire.event_type,
            data=data,
            data_json=wire.data,
            metadata_json=wire.metadata,
            recorded_at=wire.recorded_at,
        )
        return envelope, function

    def _commit(self, state: State) -> None:
        """Writes what a call put in `state`; raises `Failure` (logged) if the backend fails."""
        try:
            state._commit()
        except Exception as error:
            raise self._failure(error, "to write its state") from error
