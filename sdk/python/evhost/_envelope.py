"""What a projection or a policy gets with each event: `Envelope`, the event's data with where
and when it was recorded; and `Params`, a query's parameters.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from .time import millis_from_rfc3339

T = TypeVar("T")


class WireEvent(Protocol):
    """An event as the host hands it over (the WIT record `types.event`): data and metadata are
    JSON text."""

    @property
    def position(self) -> int: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def metadata(self) -> str: ...
    @property
    def recorded_at(self) -> str: ...


def entity_id_of(stream: str) -> str:
    """The part of a stream's name after its category and the first `-`: `"42"` for
    `"visit-42"`, `""` for a name without `-`."""
    return stream.partition("-")[2]


class Envelope(Generic[T]):
    """A recorded event: its data (a dataclass instance when the function was registered with
    a class, else the parsed JSON) with its position, stream, version, id, type, metadata and
    the time it was recorded."""

    position: int
    """Position in the global log: 1-based, gapless, increasing."""
    stream: str
    """The stream's name (`visit-42`)."""
    version: int
    """Version within the stream: 1-based and contiguous."""
    id: str
    """The event's id, unique in the store."""
    type: str
    """The event type, as recorded."""
    data: T
    """The event's data: typed, or parsed JSON."""
    data_json: str
    """The event's data as JSON text, as recorded."""
    metadata_json: str
    """The event's metadata as JSON text (an object)."""
    recorded_at: str
    """When the event was recorded: RFC 3339 in UTC with microseconds."""

    def __init__(
        self,
        *,
        position: int,
        stream: str,
        version: int,
        id: str,
        type: str,
        data: T,
        data_json: str,
        metadata_json: str,
        recorded_at: str,
    ) -> None:
        self.position = position
        self.stream = stream
        self.version = version
        self.id = id
        self.type = type
        self.data = data
        self.data_json = data_json
        self.metadata_json = metadata_json
        self.recorded_at = recorded_at

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """The event's metadata: a JSON object (`correlation_id`, `causation_id`, ...)."""
        parsed = json.loads(self.metadata_json) if self.metadata_json else {}
        return parsed if isinstance(parsed, dict) else {}

    @functools.cached_property
    def recorded_at_ms(self) -> int:
        """When the event was recorded, in milliseconds since the Unix epoch (floor)."""
        return millis_from_rfc3339(self.recorded_at)

    @property
    def category(self) -> str:
        """The stream's category: its name up to the first `-` (`visit` for `visit-42`)."""
        return self.stream.partition("-")[0]

    @property
    def entity_id(self) -> str:
        """The part of the stream's name after the first `-` (`42` for `visit-42`)."""
        return entity_id_of(self.stream)

    @property
    def correlation_id(self) -> str | None:
        """The id shared by everything one request caused (`correlation_id` in the metadata)."""
        value = self.metadata.get("correlation_id", self.metadata.get("correlation-id"))
        return value if isinstance(value, str) else None

    @property
    def causation_id(self) -> str | None:
        """The id of what caused this event (`causation_id` in the metadata)."""
        value = self.metadata.get("causation_id", self.metadata.get("causation-id"))
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return (
            f"Envelope(position={self.position}, stream={self.stream!r}, type={self.type!r}, "
            f"data={self.data!r}, recorded_at={self.recorded_at!r})"
        )


class Params(dict[str, str]):
    """A query's parameters: the request's query string, decoded, without the host's own
    (`min_position`, `timeout_ms`, `version`). A dict of each name's first value; `pairs` holds
    every pair in the request's order."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs: list[tuple[str, str]] = [(str(name), str(value)) for name, value in pairs]
        super().__init__()
        for name, value in self.pairs:
            self.setdefault(name, value)

    def all(self, name: str) -> list[str]:
        """Every value of the parameter `name`, in order."""
        return [value for key, value in self.pairs if key == name]
