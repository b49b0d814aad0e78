"""Policies (process managers): react to events, timers and rejected commands with actions.
`Policy` is what an author declares; `send`, `schedule` and `cancel_timer` make its actions;
`_react_wire`, `_on_timer_wire` and `_on_rejected_wire` are the paths that the component's
exports and `evhost.testing` both run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from . import log
from ._codec import (
    DataMismatch,
    decode_data,
    decode_value,
    encode_json,
    to_json_value,
    type_and_data,
)
from ._envelope import WireEvent, entity_id_of
from ._errors import Failure
from ._handler import WireCommand
from ._names import check_plugin_name
from ._plugin import F, Kind, Subscriber
from ._state import Backend, State

T = TypeVar("T")

_MAX_DUE_MS = 2**64 - 1


@dataclasses.dataclass(frozen=True)
class SendCommand:
    """An action: send a command to a handler. Make it with `send`."""

    handler: str
    """The handler's name (`visit`)."""
    stream: str
    """The stream the command is about (`visit-42`)."""
    command_type: str
    """The command type (`AddNote`)."""
    data: Any
    """The command's data, as plain JSON values."""

    @property
    def data_json(self) -> str:
        """The command's data as JSON text."""
        return encode_json(self.data)


@dataclasses.dataclass(frozen=True)
class ScheduleTimer:
    """An action: set (or move) the policy's timer `key`. Make it with `schedule`."""

    key: str
    """The timer's key within the policy: setting a key again moves the timer."""
    due_ms: int
    """When it is due: milliseconds since the Unix epoch."""
    payload: Any
    """What `on_timer` gets back, as plain JSON values."""

    @property
    def payload_json(self) -> str:
        """The payload as JSON text."""
        return encode_json(self.payload)


@dataclasses.dataclass(frozen=True)
class CancelTimer:
    """An action: cancel the policy's timer `key`, if it is set. Make it with `cancel_timer`."""

    key: str
    """The timer's key."""


Action = SendCommand | ScheduleTimer | CancelTimer
"""What a policy asks the host to do."""


def send(handler: str, stream: str, command: Any, data: Any = None) -> SendCommand:
    """Sends a command to the handler `handler` about `stream`: `command` is a command type
    with its `data`, or a dataclass instance (its type name and fields)::

        send("visit", "visit-42", "AddNote", {"author": "returns", "text": "..."})
        send("visit", "visit-42", AddNote(author="returns", text="..."))

    The host derives the command's id from what the policy reacted to, so it is executed once
    however often it is delivered.
    """
    check_plugin_name(handler)
    command_type, data = type_and_data(command, data, caller="send", kind="command")
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream {stream!r} is empty; expected a stream such as 'visit-42'")
    return SendCommand(handler, stream, command_type, _json_value("command data", data))


def schedule(key: str, due_ms: int, payload: Any = None) -> ScheduleTimer:
    """Sets the timer `key` to fire at `due_ms` (milliseconds since the Unix epoch) with
    `payload` (anything JSON holds, or a dataclass); setting a key that is set moves it.

    Time inside a plugin is frozen: derive `due_ms` from an event's `recorded_at_ms`.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"timer key {key!r} is empty")
    if isinstance(due_ms, bool) or not isinstance(due_ms, int) or not 0 <= due_ms <= _MAX_DUE_MS:
        raise ValueError(f"due_ms of timer {key} is {due_ms!r}; expected milliseconds since 1970")
    return ScheduleTimer(key, due_ms, _json_value(f"the payload of timer {key}", payload))


def cancel_timer(key: str) -> CancelTimer:
    """Cancels the timer `key`, if it is set."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"timer key {key!r} is empty")
    return CancelTimer(key)


def _json_value(what: str, value: Any) -> Any:
    try:
        return to_json_value(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} is not JSON: {error}") from None


class Timer:
    """A timer of the policy that is due, as `on_timer` gets it."""

    def __init__(self, key: str, payload_json: str = "null") -> None:
        self.key = key
        """The key it was set with."""
        self.payload_json = payload_json
        """The payload as JSON text."""
        self.payload: Any = json.loads(payload_json) if payload_json else None
        """The payload it was set with, parsed."""

    def payload_as(self, cls: type[T]) -> T:
        """The payload converted to `cls` (a dataclass, say); `Failure` if it does not fit."""
        try:
            payload: T = decode_value(cls, self.payload)
            return payload
        except DataMismatch as mismatch:
            raise Failure(f"the payload of timer {self.key} does not match: {mismatch}") from None

    def __repr__(self) -> str:
        return f"Timer(key={self.key!r}, payload={self.payload!r})"


class RejectedCommand:
    """A command this policy sent that its handler rejected, as it was delivered."""

    def __init__(
        self, id: str, stream: str, type: str, data_json: str = "null", metadata_json: str = "{}"
    ) -> None:
        self.id = id
        """The command's id (the host derives it from what the policy reacted to)."""
        self.stream = stream
        """The stream it was about."""
        self.type = type
        """The command type."""
        self.data_json = data_json
        """Its data as JSON text."""
        self.data: Any = json.loads(data_json) if data_json else None
        """Its data, parsed."""
        parsed = json.loads(metadata_json) if metadata_json else {}
        self.metadata: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        """Its metadata."""

    @property
    def entity_id(self) -> str:
        """The part of the stream's name after the first `-`."""
        return entity_id_of(self.stream)

    def decode(self, cls: type[T]) -> T:
        """The command's data as the dataclass `cls`; `Failure` if it does not fit."""
        try:
            return decode_data(cls, self.data)
        except DataMismatch as mismatch:
            raise Failure(
                f"the rejected command {self.id} of type {self.type} does not match "
                f"{cls.__name__}: {mismatch}"
            ) from None

    def __repr__(self) -> str:
        return f"RejectedCommand(id={self.id!r}, stream={self.stream!r}, type={self.type!r})"


class Policy(Subscriber[Any]):
    """A policy (process manager): reacts to the events it subscribes to, to its timers and to
    the rejections of commands it sent, with actions (`send`, `schedule`, `cancel_timer`) and
    writes to its key-value state::

        returns = Policy("returns", "Notes returns within 72 hours", categories=["visit"])

        @returns.on(PatientCheckedIn)
        def checked_in(state: State, event: Envelope[PatientCheckedIn]) -> list[Action]:
            return [schedule(f"followup/{event.entity_id}", event.recorded_at_ms + DAY_MS)]

        @returns.on_timer
        def fired(state: State, timer: Timer) -> list[Action]:
            return [send("visit", f"visit-{timer.key.split('/')[1]}", "AddNote", {...})]

    A function returns a list of actions, or None for none. It subscribes as a projection does
    (`categories`, `event_types`). The state writes and actions of a call are committed with
    the policy's checkpoint; an exception takes none of them: the host retries, then parks the
    event for an operator. Time inside a plugin is frozen: take it from events
    (`Envelope.recorded_at_ms`) and carry it in timer payloads.

    Without an `on_timer` function, due timers are logged and ignored; without an
    `on_rejected` function, rejections are logged as warnings.
    """

    kind: ClassVar[Kind] = "policy"

    # Set on the instance by `on_timer` and `on_rejected`.
    _timer_function: Callable[[State, Timer], Any] | None = None
    _rejected_function: Callable[[State, RejectedCommand, str], Any] | None = None

    def on_timer(self, function: F) -> F:
        """Registers the decorated function `fn(state, timer)` for the policy's due timers."""
        if self._timer_function is not None:
            raise ValueError(f"policy {self.name} has an on_timer function already")
        self._timer_function = function
        return function

    def on_rejected(self, function: F) -> F:
        """Registers the decorated function `fn(state, command, reason)` for the commands this
        policy sent that their handler rejected: a `RejectedCommand` and the handler's reason."""
        if self._rejected_function is not None:
            raise ValueError(f"policy {self.name} has an on_rejected function already")
        self._rejected_function = function
        return function

    def _react_wire(self, backend: Backend, wire: WireEvent) -> list[Action]:
        """Reacts to one event with the state in `backend`: the actions. Raises `Failure`
        (logged), and then writes nothing."""
        state = State(backend)
        try:
            dispatch = self._dispatch(wire)
            if dispatch is None:
                return []
            envelope, function = dispatch
            actions = _actions(function(state, envelope), f"reacting to {wire.event_type}")
        except Exception as error:
            raise self._failure(
                error, f"to react to {wire.event_type} at position {wire.position}"
            ) from error
        self._commit(state)
        return actions

    def _on_timer_wire(self, backend: Backend, key: str, payload: str) -> list[Action]:
        """Reacts to the due timer `key` with its payload (JSON text)."""
        state = State(backend)
        try:
            if self._timer_function is None:
                log.warn(f"policy {self.name} has no on_timer function; timer {key} ignored")
                return []
            actions = _actions(self._timer_function(state, Timer(key, payload)), "on a timer")
        except Exception as error:
            raise self._failure(error, f"on timer {key}") from error
        self._commit(state)
        return actions

    def _on_rejected_wire(
        self, backend: Backend, command: WireCommand, reason: str
    ) -> list[Action]:
        """Reacts to the rejection of `command`, a command this policy sent, for `reason`."""
        state = State(backend)
        try:
            rejected = RejectedCommand(
                command.id,
                command.stream_id,
                command.command_type,
                command.data,
                command.metadata,
            )
            if self._rejected_function is None:
                log.warn(
                    f"policy {self.name}: {rejected.type} on {rejected.stream} was rejected: "
                    f"{reason}"
                )
                return []
            actions = _actions(
                self._rejected_function(state, rejected, reason), "on a rejected command"
            )
        except Exception as error:
            raise self._failure(error, f"on the rejection of {command.command_type}") from error
        self._commit(state)
        return actions


def _actions(result: Any, doing: str) -> list[Action]:
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise TypeError(
            f"the policy returned {result!r} {doing}; expected a list of actions or None"
        )
    for action in result:
        if not isinstance(action, (SendCommand, ScheduleTimer, CancelTimer)):
            raise TypeError(
                f"the policy returned {action!r} {doing}; expected actions made by send, "
                "schedule or cancel_timer"
            )
    return list(result)
