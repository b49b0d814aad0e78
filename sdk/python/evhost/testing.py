"""Running handlers, projections and policies natively, without WebAssembly or a host: for unit
tests with pytest.

Every function here runs the plugin through the same wire-level path as the component's
exports: events and commands become a type name plus JSON text, a handler's state goes through
its stored bytes, a projection's or policy's writes go through the same `State` and reach the
`MemoryState` only when the call ends well. So what passes here behaves the same in the host.

- handlers: `replay` (the state some events fold into), `evolve`, and `decide`, which returns
  the events as `NewEvent`s (compare with `NewEvent.of(MyEvent(...))`) or raises `Rejected`;
- projections: `apply` a batch of `record`s to a `MemoryState`, then `query` it;
- policies: `react` to a record, `fire_timer`, `reject_command`.

Failures of projections and policies raise `evhost.Failure` with the message the host would
get, chained to the exception that caused it::

    state = MemoryState()
    testing.apply(checkins, state, [testing.record(1, "visit-1", PatientCheckedIn("p-1"))])
    assert state.get("hospital/main") == 1
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from ._codec import encode_json, to_json_value, type_and_data
from ._errors import Failure
from ._handler import Handler, NewEvent, _encode_event
from ._names import check_type_name
from ._policy import Action, Policy, ScheduleTimer, SendCommand
from ._projection import Projection
from ._state import HOST_SCAN_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES
from .time import millis_from_rfc3339, rfc3339_from_millis

S = TypeVar("S")

TEST_EPOCH_MS = 1_767_225_600_000
"""When the record at position 0 was recorded if a test gives no time: 2026-01-01T00:00:00Z."""


class MemoryState:
    """A projection's or a policy's key-value state in memory, with the host's rules: keys of 1
    to 1024 bytes, values of JSON text up to 1 MiB, scans served in key order in pages of at
    most 1000 entries, and a call's writes kept all together or not at all.

    Read it as a mapping of keys to parsed values (`state.get(key)`, `state[key]`,
    `dict(state.items())`); seed it with `put` or the constructor.
    """

    def __init__(self, entries: Mapping[str, Any] | None = None) -> None:
        self._keys: list[str] = []
        self._texts: dict[str, str] = {}
        self.write_count = 0
        """How many writes (puts and deletes) calls have handed over: one per key a call wrote,
        however often it wrote it."""
        self.page_reads = 0
        """How many pages of a scan calls have read."""
        for key, value in (entries or {}).items():
            self.put(key, value)

    # The mapping a test reads.

    def get(self, key: str, default: Any = None) -> Any:
        """The value under `key`, parsed; `default` if absent."""
        text = self._texts.get(key)
        return default if text is None else json.loads(text)

    def __getitem__(self, key: str) -> Any:
        return json.loads(self._texts[key])

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def keys(self, prefix: str = "") -> list[str]:
        """The keys that start with `prefix`, in order."""
        return [key for key in self._keys if key.startswith(prefix)]

    def items(self, prefix: str = "") -> list[tuple[str, Any]]:
        """The entries whose keys start with `prefix`, in key order, with parsed values."""
        return [(key, json.loads(self._texts[key])) for key in self.keys(prefix)]

    def text(self, key: str) -> str | None:
        """The JSON text stored under `key`, as the host would serve it."""
        return self._texts.get(key)

    def put(self, key: str, value: Any) -> None:
        """Stores `value` (as JSON) under `key`, outside any call: to set up a test."""
        text = encode_json(value)
        _check_write(key, text)
        self._store(key, text)

    # The backend a plugin's `State` writes through.

    def read(self, key: str) -> str | None:
        return self._texts.get(key)

    def read_page(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        self.page_reads += 1
        start = (
            bisect.bisect_right(self._keys, after)
            if after is not None and after >= prefix
            else bisect.bisect_left(self._keys, prefix)
        )
        page: list[tuple[str, str]] = []
        for key in self._keys[start:]:
            if not key.startswith(prefix) or len(page) >= min(limit, HOST_SCAN_PAGE):
                break
            page.append((key, self._texts[key]))
        return page

    def commit(self, writes: list[tuple[str, str | None]]) -> None:
        for key, text in writes:
            _check_write(key, text)
        self.write_count += len(writes)
        for key, text in writes:
            self._store(key, text)

    def _store(self, key: str, text: str | None) -> None:
        present = key in self._texts
        if text is None:
            if present:
                del self._texts[key]
                self._keys.pop(bisect.bisect_left(self._keys, key))
        else:
            self._texts[key] = text
            if not present:
                bisect.insort(self._keys, key)

    def __repr__(self) -> str:
        return f"MemoryState({dict(self.items())!r})"


def _check_write(key: str, text: str | None) -> None:
    """Refuses a write the host would refuse (it fails the whole call)."""
    size = len(key.encode())
    if not 1 <= size <= MAX_KEY_BYTES:
        raise Failure(f"state key {key!r} is {size} bytes; expected 1 to {MAX_KEY_BYTES}")
    if text is not None:
        if len(text.encode()) > MAX_VALUE_BYTES:
            raise Failure(
                f"the value of state key {key!r} is {len(text.encode())} bytes; expected at "
                f"most {MAX_VALUE_BYTES}"
            )
        try:
            json.loads(text)
        except ValueError as error:
            raise Failure(f"the value of state key {key!r} is not JSON text: {error}") from None


@dataclasses.dataclass(frozen=True)
class EventRecord:
    """A recorded event as a test makes it (see `record`): the fields of the host's record."""

    position: int
    stream: str
    type: str
    data: Any
    version: int
    id: str
    metadata: dict[str, Any]
    recorded_at: str

    @property
    def recorded_at_ms(self) -> int:
        """When it was recorded, in milliseconds since the Unix epoch."""
        return millis_from_rfc3339(self.recorded_at)

    def _wire(self) -> _WireEvent:
        return _WireEvent(
            position=self.position,
            stream_id=self.stream,
            version=self.version,
            id=self.id,
            event_type=self.type,
            data=encode_json(self.data),
            metadata=encode_json(self.metadata),
            recorded_at=self.recorded_at,
        )


@dataclasses.dataclass(frozen=True)
class _WireEvent:
    """An event as the host hands it over: the WIT record's fields."""

    position: int
    stream_id: str
    version: int
    id: str
    event_type: str
    data: str
    metadata: str
    recorded_at: str


@dataclasses.dataclass(frozen=True)
class _WireCommand:
    """A command as the host hands it over: the WIT record's fields."""

    id: str
    stream_id: str
    command_type: str
    data: str
    metadata: str


def record(
    position: int,
    stream: str,
    event: Any,
    data: Any = None,
    *,
    version: int | None = None,
    id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    recorded_at: str | int | None = None,
) -> EventRecord:
    """The recorded event `event` at `position` on `stream`: `event` is a dataclass instance,
    or a type name with its `data`.

    By default its version is `position`, its id `event-<position>`, its metadata empty, and it
    was recorded `position` seconds after 2026-01-01T00:00:00Z; `recorded_at` takes an RFC 3339
    timestamp or milliseconds since the Unix epoch.
    """
    event_type, data = type_and_data(event, data, caller="record", kind="event")
    data = to_json_value(data)
    if recorded_at is None:
        recorded_at = rfc3339_from_millis(TEST_EPOCH_MS + position * 1000)
    elif isinstance(recorded_at, int):
        recorded_at = rfc3339_from_millis(recorded_at)
    return EventRecord(
        position=position,
        stream=stream,
        type=event_type,
        data=data,
        version=position if version is None else version,
        id=f"event-{position}" if id is None else id,
        metadata=dict(metadata or {}),
        recorded_at=recorded_at,
    )


# Handlers.


def replay(handler: Handler[S], events: Iterable[Any]) -> S:
    """The state that `events` fold into from the handler's initial state. Each event is a
    dataclass instance, a `NewEvent`, or a (type, data) pair."""
    state: S = handler._load_state(handler._evolve_wire(None, _stream_events(events)))
    return state


def evolve(handler: Handler[S], state: S, events: Iterable[Any]) -> S:
    """The state that `events` fold `state` into, through its stored bytes."""
    stored = handler._dump_state(state)
    evolved: S = handler._load_state(handler._evolve_wire(stored, _stream_events(events)))
    return evolved


def decide(
    handler: Handler[Any],
    command: Any,
    data: Any = None,
    *,
    state: Any = None,
    given: Iterable[Any] | None = None,
    stream: str | None = None,
    id: str = "command-1",
    metadata: Mapping[str, Any] | None = None,
) -> list[NewEvent]:
    """Decides `command` (a dataclass instance, or a type name with its `data`) as the host
    would: the events to append, as `NewEvent`s with their data as plain JSON values. Raises
    `Rejected` for a rejection.

    The stream's state is `state` if given, else what the events `given` fold into, else the
    initial state; the stream is `<category>-1` unless `stream` names another.
    """
    if state is not None and given is not None:
        raise TypeError("decide takes state or given events, not both")
    if given is not None:
        stored: bytes | None = handler._evolve_wire(None, _stream_events(given))
    elif state is not None:
        stored = handler._dump_state(state)
    else:
        stored = None
    command_type, data = type_and_data(command, data, caller="decide", kind="command")
    wire = _WireCommand(
        id=id,
        stream_id=stream if stream is not None else f"{handler.category}-1",
        command_type=command_type,
        data=encode_json(data),
        metadata=encode_json(dict(metadata or {})),
    )
    return [
        NewEvent(
            event_type,
            json.loads(event_data),
            None if event_metadata is None else json.loads(event_metadata),
        )
        for event_type, event_data, event_metadata in handler._decide_wire(stored, wire)
    ]


def _stream_events(events: Iterable[Any]) -> Iterator[tuple[int, str, str]]:
    for version, event in enumerate(events, start=1):
        if isinstance(event, tuple) and len(event) == 2 and isinstance(event[0], str):
            event_type, data = event
            yield version, check_type_name(event_type), encode_json(data)
        else:
            event_type, data_json, _metadata = _encode_event(event)
            yield version, event_type, data_json


# Projections.


def apply(projection: Projection, state: MemoryState, records: Iterable[EventRecord]) -> None:
    """Applies `records` to `state` as one batch, exactly as the component's `apply` does.
    Raises `Failure` (and writes nothing) if the projection fails."""
    projection._apply_wire(state, [item._wire() for item in records])


def query(
    projection: Projection,
    state: MemoryState,
    path: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> Any:
    """Asks `projection` the query `path` with `params`, as
    `GET /projections/{name}/query/{path}` does: the answer, parsed. Raises `Failure` with the
    message the caller would get."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    return json.loads(projection._query_wire(state, path, pairs))


# Policies.


def react(policy: Policy, state: MemoryState, event: EventRecord) -> list[Action]:
    """Has `policy` react to `event`, as the component's `react` does: its actions, with its
    writes kept in `state` (none if it fails)."""
    return policy._react_wire(state, event._wire())


def fire_timer(
    policy: Policy, state: MemoryState, timer: ScheduleTimer | str, payload: Any = None
) -> list[Action]:
    """Fires `timer` (an action the policy returned, or a key with its `payload`), as the
    host's call of `on_timer` does."""
    if isinstance(timer, ScheduleTimer):
        key, payload_json = timer.key, timer.payload_json
    else:
        key, payload_json = timer, encode_json(payload)
    return policy._on_timer_wire(state, key, payload_json)


def reject_command(
    policy: Policy,
    state: MemoryState,
    command: SendCommand,
    reason: str,
    *,
    id: str = "rejected-1",
    metadata: Mapping[str, Any] | None = None,
) -> list[Action]:
    """Tells `policy` that `command` (one it sent) was rejected for `reason`, as the host's
    call of `on_rejected` does."""
    wire = _WireCommand(
        id=id,
        stream_id=command.stream,
        command_type=command.command_type,
        data=command.data_json,
        metadata=encode_json(dict(metadata or {})),
    )
    return policy._on_rejected_wire(state, wire, reason)
