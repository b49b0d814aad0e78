"""Policies: actions, timers, rejected commands, and failures that write nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from evhost import (
    Action,
    CancelTimer,
    Envelope,
    Failure,
    Policy,
    RejectedCommand,
    ScheduleTimer,
    SendCommand,
    State,
    Timer,
    cancel_timer,
    command,
    schedule,
    send,
    testing,
)

from conftest import Lent, Returned

TWO_WEEKS_MS = 14 * 24 * 3600 * 1000


@command
class Remind:
    book: str


reminders = Policy("reminders", "Reminds members of books kept two weeks", categories=["book"])


@reminders.on(Lent)
def lent(state: State, event: Envelope[Lent]) -> list[Action]:
    state.put("lendings", state.get("lendings", 0) + 1)
    return [
        schedule(
            f"due/{event.entity_id}",
            event.recorded_at_ms + TWO_WEEKS_MS,
            {"member": event.data.member},
        )
    ]


@reminders.on(Returned)
def returned(state: State, event: Envelope[Returned]) -> list[Action]:
    return [cancel_timer(f"due/{event.entity_id}")]


@reminders.on("Lost")
def lost(state: State, event: Envelope[Any]) -> None:
    state.put("lost", True)
    raise RuntimeError("lost books are not handled")


@reminders.on_timer
def due(state: State, timer: Timer) -> list[Action]:
    book = timer.key.removeprefix("due/")
    return [send("member", f"member-{timer.payload['member']}", Remind(book=book))]


@reminders.on_rejected
def rejected(state: State, command: RejectedCommand, reason: str) -> list[Action]:
    state.put(
        f"rejected/{command.id}",
        {"type": command.type, "book": command.decode(Remind).book, "reason": reason},
    )
    return []


def test_a_reaction_schedules_a_timer_that_sends_a_command() -> None:
    state = testing.MemoryState()
    lending = testing.record(
        1, "book-7", Lent(member="ana"), recorded_at="2026-11-01T10:00:00.000000Z"
    )
    [timer] = testing.react(reminders, state, lending)
    assert timer == ScheduleTimer("due/7", 1_793_527_200_000 + TWO_WEEKS_MS, {"member": "ana"})
    assert timer.payload_json == '{"member":"ana"}'
    [reminder] = testing.fire_timer(reminders, state, timer)
    assert reminder == send("member", "member-ana", "Remind", {"book": "7"})
    assert reminder == SendCommand("member", "member-ana", "Remind", {"book": "7"})
    assert testing.reject_command(reminders, state, reminder, "member left") == []
    assert state.get("rejected/rejected-1") == {
        "type": "Remind",
        "book": "7",
        "reason": "member left",
    }
    assert state.get("lendings") == 1
    assert testing.react(reminders, state, testing.record(2, "book-7", Returned())) == [
        CancelTimer("due/7")
    ]


def test_a_failed_reaction_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    state = testing.MemoryState()
    with (
        caplog.at_level(logging.ERROR, logger="evhost.plugin"),
        pytest.raises(Failure) as failure,
    ):
        testing.react(reminders, state, testing.record(3, "book-1", "Lost"))
    assert failure.value.message == "RuntimeError: lost books are not handled"
    assert len(state) == 0
    assert "policy reminders failed to react to Lost at position 3" in caplog.text


def test_events_without_a_function_take_no_action() -> None:
    assert (
        testing.react(reminders, testing.MemoryState(), testing.record(1, "book-1", "Shelved"))
        == []
    )


def test_without_on_timer_or_on_rejected_they_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    quiet = Policy("quiet")
    with caplog.at_level(logging.WARNING, logger="evhost.plugin"):
        assert testing.fire_timer(quiet, testing.MemoryState(), "t/1", {"x": 1}) == []
        assert (
            testing.reject_command(quiet, testing.MemoryState(), send("a", "a-1", "Go"), "no") == []
        )
    assert "policy quiet has no on_timer function; timer t/1 ignored" in caplog.text
    assert "policy quiet: Go on a-1 was rejected: no" in caplog.text


def test_results_must_be_lists_of_actions() -> None:
    sloppy = Policy("sloppy")
    sloppy.on("One")(lambda state, event: send("a", "a-1", "Go"))
    sloppy.on("Text")(lambda state, event: ["send it"])
    with pytest.raises(Failure, match="expected a list of actions or None"):
        testing.react(sloppy, testing.MemoryState(), testing.record(1, "x-1", "One"))
    with pytest.raises(Failure, match="expected actions made by send, schedule or cancel_timer"):
        testing.react(sloppy, testing.MemoryState(), testing.record(1, "x-1", "Text"))


def test_actions_check_what_they_are_given() -> None:
    assert send("visit", "visit-1", Remind(book="b")).data == {"book": "b"}
    with pytest.raises(TypeError, match="not with a command instance"):
        send("visit", "visit-1", Remind(book="b"), {"book": "c"})
    with pytest.raises(ValueError, match="plugin name"):
        send("Visit", "visit-1", "Go")
    with pytest.raises(TypeError, match="command data is not JSON"):
        send("visit", "visit-1", "Go", {"when": object()})
    with pytest.raises(ValueError, match="expected milliseconds since 1970"):
        schedule("t", -1)
    with pytest.raises(ValueError, match="timer key '' is empty"):
        cancel_timer("")
    assert schedule("t", 5).payload_json == "null"
