"""The component's side of the WIT boundary: the `WitWorld` and `Meta` classes that
componentize-py exports, made for one plugin by `exports_for`.

This module imports `wit_world`, the bindings componentize-py generates while it builds a
component, so it is imported only there: by the entry module that `evhost build` writes. The
classes here only convert WIT records to and from the SDK's wire-level paths (which
`evhost.testing` runs natively) and turn failures into what the host expects: a rejection or a
failure becomes the `err` of the export's result, and any other exception of `decide` leaves the
export as it is, which makes the component trap (a plugin failure, not a rejection).

With WASI stubbed out (componentize-py's `--stub-wasi`), writing to standard output or error
would trap, so both are pointed at the host's log here.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as host_log
from wit_world.imports import types

from . import log
from ._errors import Failure, Rejected
from ._handler import Handler
from ._plugin import Plugin, PluginInfo
from ._policy import Action, CancelTimer, Policy, ScheduleTimer, SendCommand
from ._projection import Projection

_HOST_LEVELS = {
    "trace": host_log.Level.TRACE,
    "debug": host_log.Level.DEBUG,
    "info": host_log.Level.INFO,
    "warn": host_log.Level.WARN,
    "error": host_log.Level.ERROR,
}

_KINDS = {
    "handler": types.Kind.HANDLER,
    "projection": types.Kind.PROJECTION,
    "policy": types.Kind.POLICY,
}


def _write_to_host(level: log.Level, message: str) -> None:
    host_log.write(_HOST_LEVELS[level], message)


class _HostLogLines(io.TextIOBase):
    """A text stream that writes each complete line to the host's log at one level."""

    def __init__(self, level: host_log.Level) -> None:
        super().__init__()
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            host_log.write(self._level, line)
        return len(text)

    def flush(self) -> None:
        # A line without its newline yet is written when the call ends, not held for the next.
        if self._pending:
            host_log.write(self._level, self._pending)
            self._pending = ""


_stdout = _HostLogLines(host_log.Level.INFO)
_stderr = _HostLogLines(host_log.Level.WARN)


def _flush_output() -> None:
    _stdout.flush()
    _stderr.flush()


@contextlib.contextmanager
def _failure_as_err() -> Iterator[None]:
    """Makes a `Failure` raised in the block the `err` of the export's result, and sends what the
    block printed to the host's log before the export returns."""
    try:
        yield
    except Failure as failure:
        raise Err(failure.message) from None
    finally:
        _flush_output()


def _describe(info: PluginInfo) -> types.PluginInfo:
    return types.PluginInfo(
        name=info.name,
        kind=_KINDS[info.kind],
        category=info.category,
        categories=list(info.categories),
        event_types=list(info.event_types),
        description=info.description,
    )


def exports_for(plugin: Plugin) -> tuple[type, type]:
    """The component's `WitWorld` and `Meta` classes for `plugin`; also sends the SDK's log,
    standard output and standard error to the host's log."""
    log.set_sink(_write_to_host)
    sys.stdout = _stdout
    sys.stderr = _stderr

    info = _describe(plugin.info())

    class Meta(exports.Meta):
        def describe(self) -> types.PluginInfo:
            return info

    if isinstance(plugin, Handler):
        return _handler_world(plugin), Meta
    if isinstance(plugin, Projection):
        return _projection_world(plugin), Meta
    if isinstance(plugin, Policy):
        return _policy_world(plugin), Meta
    raise TypeError(f"expected a Handler, Projection or Policy, found {plugin!r}")


def _handler_world(handler: Handler[Any]) -> type:
    class HandlerWorld(wit_world.WitWorld):
        def evolve(
            self,
            state: bytes | None,
            event_types: list[str],
            events: list[types.StreamEvent],
        ) -> bytes:
            with _failure_as_err():
                batch = ((e.version, event_types[e.type_index], e.data) for e in events)
                return handler._evolve_wire(state, batch)

        def decide(self, state: bytes | None, command: types.Command) -> list[types.NewEvent]:
            try:
                events = handler._decide_wire(state, command)
            except Rejected as rejection:
                raise Err(rejection.reason) from None
            finally:
                _flush_output()
            return [
                types.NewEvent(event_type=event_type, data=data, metadata=metadata)
                for event_type, data, metadata in events
            ]

    return HandlerWorld


class _HostState:
    """The host's `state` import as the SDK's state backend."""

    def __init__(self) -> None:
        # Imported here: only the projection and policy worlds import `state`.
        from wit_world.imports import state

        self._state = state

    def read(self, key: str) -> str | None:
        return self._state.get(key)

    def read_page(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, str]]:
        return self._state.scan(prefix, after, limit)

    def commit(self, writes: list[tuple[str, str | None]]) -> None:
        for key, value in writes:
            if value is None:
                self._state.delete(key)
            else:
                self._state.put(key, value)


def _projection_world(projection: Projection) -> type:
    host_state = _HostState()

    class ProjectionWorld(wit_world.WitWorld):
        def apply(self, events: list[types.Event]) -> None:
            with _failure_as_err():
                projection._apply_wire(host_state, events)

        def query(self, path: str, params: list[tuple[str, str]]) -> str:
            with _failure_as_err():
                return projection._query_wire(host_state, path, params)

    return ProjectionWorld


def _policy_world(policy: Policy) -> type:
    host_state = _HostState()

    class PolicyWorld(wit_world.WitWorld):
        def react(self, event: types.Event) -> list[Any]:
            with _failure_as_err():
                return _wit_actions(policy._react_wire(host_state, event))

        def on_timer(self, key: str, payload: str) -> list[Any]:
            with _failure_as_err():
                return _wit_actions(policy._on_timer_wire(host_state, key, payload))

        def on_rejected(self, command: types.Command, reason: str) -> list[Any]:
            with _failure_as_err():
                return _wit_actions(policy._on_rejected_wire(host_state, command, reason))

    return PolicyWorld


def _wit_actions(actions: list[Action]) -> list[Any]:
    converted: list[Any] = []
    for action in actions:
        if isinstance(action, SendCommand):
            converted.append(
                types.Action_Send(
                    types.SendCommand(
                        handler=action.handler,
                        stream_id=action.stream,
                        command_type=action.command_type,
                        data=action.data_json,
                    )
                )
            )
        elif isinstance(action, ScheduleTimer):
            converted.append(
                types.Action_Schedule(
                    types.SetTimer(
                        key=action.key, due_ms=action.due_ms, payload=action.payload_json
                    )
                )
            )
        elif isinstance(action, CancelTimer):
            converted.append(types.Action_CancelTimer(action.key))
    return converted
