"""The key-value state of a projection or a policy: JSON values under string keys.

`State` is what `apply`, `react`, `on_timer` and `on_rejected` functions get; `StateView` the
read-only access of a projection's queries. Both sit on a backend: the host's `state` import in
a component, `evhost.testing.MemoryState` natively.

`State` keeps the JSON text of every key it reads or writes for the rest of the call, so reads
see earlier writes and a key read twice is fetched once. Writes reach the backend when the call
ends well, each written key once, in key order; a call that fails writes nothing.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar, overload

from ._codec import DataMismatch, decode_value, encode_json
from ._errors import Failure

T = TypeVar("T")

HOST_SCAN_PAGE = 1000
"""Most entries the host returns from one `scan` call."""
MAX_KEY_BYTES = 1024
"""Longest key the host stores, in bytes of UTF-8."""
MAX_VALUE_BYTES = 1 << 20
"""Longest value the host stores, in bytes of JSON text."""


class Backend(Protocol):
    """Where a state lives: the host's `state` interface, or a test's memory."""

    def read(self, key: str) -> str | None:
        """The JSON text stored under `key`, if any."""
        ...

    def read_page(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        """Entries whose keys start with `prefix`, in key order, after `after`, at most `limit`
        (and at most `HOST_SCAN_PAGE`)."""
        ...

    def commit(self, writes: list[tuple[str, str | None]]) -> None:
        """Applies the writes of a call that ended well (JSON text, or None to delete): all of
        them, or none with an exception."""
        ...


class StateView:
    """A projection's state as its queries see it: read-only."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @overload
    def get(self, key: str, default: Any = None) -> Any: ...
    @overload
    def get(self, key: str, default: Any = None, *, as_type: type[T]) -> T: ...
    def get(self, key: str, default: Any = None, *, as_type: Any = None) -> Any:
        """The value under `key` (parsed JSON), or `default` if the key is absent.

        With `as_type` (a dataclass, `int`, `list[str]`, ...), the value is checked against it
        and converted, as event data is.
        """
        text = self._text(key)
        if text is None:
            return default
        return _parse(key, text, as_type)

    def contains(self, key: str) -> bool:
        """Whether `key` holds a value."""
        return self._text(key) is not None

    def __contains__(self, key: str) -> bool:
        return self.contains(key)

    def scan(
        self, prefix: str, *, after: str | None = None, as_type: Any = None
    ) -> Iterator[tuple[str, Any]]:
        """Every entry whose key starts with `prefix`, in key order (after the key `after`, if
        given), as (key, parsed value) pairs.

        The host serves at most 1000 entries per call; this asks for page after page as the
        iteration goes on, so stop early to read fewer.
        """
        for key, text in self._scan_text(prefix, after):
            yield key, _parse(key, text, as_type)

    def _text(self, key: str) -> str | None:
        return self._backend.read(key)

    def _scan_text(self, prefix: str, after: str | None) -> Iterator[tuple[str, str]]:
        return _stored_entries(self._backend, prefix, after)

    def put(self, key: str, value: Any) -> None:
        """Refused: a query cannot change the state."""
        raise Failure(f"state key {key!r} cannot be written in a query; the state is read-only")

    def delete(self, key: str) -> None:
        """Refused: a query cannot change the state."""
        raise Failure(f"state key {key!r} cannot be deleted in a query; the state is read-only")


class State(StateView):
    """A projection's or a policy's state while it handles events, timers or rejections.

    Values are anything JSON holds (dicts, lists, strings, numbers, booleans, None) and
    dataclasses, which are stored as the JSON object of their fields::

        visits = state.get(f"hospital/{hospital}", {"visits": 0})
        visits["visits"] += 1
        state.put(f"hospital/{hospital}", visits)

    A value read is a fresh copy: change it, then `put` it back.
    """

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        # The JSON text of each key as this call knows it (None: absent), and the keys written.
        self._known: dict[str, str | None] = {}
        self._written: set[str] = set()

    def put(self, key: str, value: Any) -> None:
        """Stores `value` under `key`, replacing what was there."""
        _check_key(key)
        try:
            text = encode_json(value)
        except (TypeError, ValueError) as error:
            raise Failure(f"the value for state key {key!r} is not JSON: {error}") from None
        if len(text.encode()) > MAX_VALUE_BYTES:
            raise Failure(
                f"the value for state key {key!r} is {len(text.encode())} bytes of JSON; "
                f"expected at most {MAX_VALUE_BYTES}"
            )
        self._known[key] = text
        self._written.add(key)

    def delete(self, key: str) -> None:
        """Removes `key`, if it holds a value."""
        _check_key(key)
        self._known[key] = None
        self._written.add(key)

    def _text(self, key: str) -> str | None:
        if key in self._known:
            return self._known[key]
        text = self._backend.read(key)
        self._known[key] = text
        return text

    def _scan_text(self, prefix: str, after: str | None) -> Iterator[tuple[str, str]]:
        # The stored entries, overridden by this call's writes. The writes are taken as they are
        # when the scan starts; writes made while iterating may or may not be seen.
        written = sorted(
            (key, self._known[key])
            for key in self._written
            if key.startswith(prefix) and (after is None or key > after)
        )
        stored = _stored_entries(self._backend, prefix, after)
        return _overlay(stored, written)

    def _commit(self) -> None:
        """Hands this call's writes to the backend: each written key once, in key order."""
        if self._written:
            self._backend.commit([(key, self._known[key]) for key in sorted(self._written)])


def _stored_entries(backend: Backend, prefix: str, after: str | None) -> Iterator[tuple[str, str]]:
    cursor = after
    while True:
        page = backend.read_page(prefix, cursor, HOST_SCAN_PAGE)
        yield from page
        if len(page) < HOST_SCAN_PAGE:
            return
        cursor = page[-1][0]


def _overlay(
    stored: Iterator[tuple[str, str]], written: list[tuple[str, str | None]]
) -> Iterator[tuple[str, str]]:
    """Merges two key-ordered sequences; for a key in both, the written entry wins, and a
    written None (a deletion) removes the key."""
    # Sort by key, then by source: at equal keys the written entry (1) comes after the stored one
    # (0), and replaces it.
    tagged_stored = ((key, 0, text) for key, text in stored)
    tagged_written = ((key, 1, text) for key, text in written)
    pending: tuple[str, str | None] | None = None
    for key, _source, text in heapq.merge(tagged_stored, tagged_written):
        if pending is not None and pending[0] != key and pending[1] is not None:
            yield pending[0], pending[1]
        pending = (key, text)
    if pending is not None and pending[1] is not None:
        yield pending[0], pending[1]


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise Failure(f"state key {key!r} is a {type(key).__name__}; expected a string")
    size = len(key.encode())
    if not 1 <= size <= MAX_KEY_BYTES:
        raise Failure(f"state key {key!r} is {size} bytes; expected 1 to {MAX_KEY_BYTES}")


def _parse(key: str, text: str, as_type: Any) -> Any:
    value = json.loads(text)
    if as_type is None:
        return value
    try:
        return decode_value(as_type, value)
    except DataMismatch as mismatch:
        raise Failure(f"state key {key!r} does not hold a {_name(as_type)}: {mismatch}") from None


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)
