"""Projections: read models folded from the log into the key-value state, and the queries that
read them. `Projection` is what an author declares; `_apply_wire` and `_query_wire` are the
paths that the component's exports and `evhost.testing` both run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from . import log
from ._codec import encode_json
from ._envelope import Params, WireEvent
from ._errors import Failure, describe
from ._plugin import F, Kind, Subscriber, register_once
from ._state import Backend, State, StateView


class Projection(Subscriber[None]):
    """A projection: folds the events it subscribes to into a key-value read model, exactly
    once per event, and answers queries about it::

        stays = Projection("stays", "Average length of stay per hospital", categories=["visit"])

        @stays.on(PatientCheckedIn)
        def checked_in(state: State, event: Envelope[PatientCheckedIn]) -> None:
            state.put(f"visit/{event.entity_id}", {"hospital": event.data.hospital})

        @stays.query("hospitals")
        def hospitals(state: StateView, params: Params) -> dict:
            return {"hospitals": [value for _, value in state.scan("hospital/")]}

    It receives the events of `categories` (empty: every category) and `event_types` (by
    default the types registered with `on`; all types once an `on_any` function is
    registered), in position order, in batches; the state writes of a batch are committed with
    the projection's checkpoint. An exception applies nothing of the batch: the host finds the
    failing event, retries it, then pauses the projection there with the error shown to
    operators (`<Type>: <message>`, or the message of a `Failure`).

    Query functions answer `GET /projections/{name}/query/{path}` with anything JSON holds; an
    exception is the answer of a 400 with its message.
    """

    kind: ClassVar[Kind] = "projection"

    @functools.cached_property
    def _queries(self) -> dict[str, Callable[[StateView, Params], Any]]:
        """The query functions by path; made on first use, as `Subscriber` is the constructor."""
        return {}

    def query(self, path: str) -> Callable[[F], F]:
        """Registers the decorated function `fn(state, params)` as the query `path`: it gets a
        read-only `StateView` and the request's `Params` (a dict of names to values) and returns
        the answer, anything JSON holds."""
        if not isinstance(path, str) or not path:
            raise ValueError(f"query path {path!r} is empty; expected a name such as 'hospitals'")
        return register_once(
            self._queries,
            path,
            lambda function: function,
            f"projection {self.name} has a query {path} already",
        )

    @property
    def query_paths(self) -> tuple[str, ...]:
        """The paths of its queries, sorted."""
        return tuple(sorted(self._queries))

    def _apply_wire(self, backend: Backend, events: Iterable[WireEvent]) -> None:
        """Applies a batch of events to the state in `backend`; the writes reach it only if the
        whole batch applies. Raises `Failure` (logged) otherwise."""
        state = State(backend)
        for wire in events:
            try:
                dispatch = self._dispatch(wire)
                if dispatch is not None:
                    envelope, function = dispatch
                    function(state, envelope)
            except Exception as error:
                raise self._failure(
                    error, f"to apply {wire.event_type} at position {wire.position}"
                ) from error
        self._commit(state)

    def _query_wire(self, backend: Backend, path: str, params: Iterable[tuple[str, str]]) -> str:
        """Answers the query `path`: the answer's JSON text. Raises `Failure` with the message
        shown to the caller."""
        function = self._queries.get(path)
        if function is None:
            if not self._queries:
                raise Failure(f"unknown query {path}; projection {self.name} has no queries")
            paths = self.query_paths
            expected = paths[0] if len(paths) == 1 else f"one of {', '.join(paths)}"
            raise Failure(f"unknown query {path}; expected {expected}")
        try:
            answer = function(StateView(backend), Params(params))
            return encode_json(answer)
        except Failure:
            raise
        except Exception as error:
            # A query's message goes back to the caller; the traceback helps whoever wrote it.
            log.warn(f"projection {self.name}: query {path} raised:\n{describe(error)}")
            raise Failure(str(error) or type(error).__name__) from error
