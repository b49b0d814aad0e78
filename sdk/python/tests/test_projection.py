"""Projections: subscriptions, typed events, batches that apply all or nothing, failures as the
host reports them, and queries."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from evhost import Envelope, Failure, Params, Projection, State, StateView, event, testing


@event
class Lent:
    member: str


@event
class Returned:
    member: str


loans = Projection("loans", "Books lent, by member", categories=["book"])


@loans.on(Lent)
def lent(state: State, event: Envelope[Lent]) -> None:
    key = f"member/{event.data.member}"
    member = state.get(key, {"books": []})
    member["books"].append(event.entity_id)
    state.put(key, member)


@loans.on(Returned)
def returned(state: State, event: Envelope[Returned]) -> None:
    key = f"member/{event.data.member}"
    member = state.get(key, {"books": []})
    member["books"].remove(event.entity_id)
    if member["books"]:
        state.put(key, member)
    else:
        state.delete(key)


@loans.on("Burned")
def burned(state: State, event: Envelope[Any]) -> None:
    raise ValueError(f"book {event.entity_id} burned")


@loans.query("member")
def member(state: StateView, params: Params) -> Any:
    return state.get(f"member/{params['id']}", {"books": []})


@loans.query("borrowers")
def borrowers(state: StateView, params: Params) -> list[str]:
    return [key.removeprefix("member/") for key, _ in state.scan("member/")]


def test_it_subscribes_to_the_types_it_has_functions_for() -> None:
    info = loans.info()
    assert info.kind == "projection"
    assert info.categories == ("book",)
    assert info.event_types == ("Burned", "Lent", "Returned")
    assert Projection("all", event_types=["A"]).info().event_types == ("A",)
    everything = Projection("everything")
    everything.on_any(lambda state, event: None)
    assert everything.info().event_types == ()


def test_a_batch_applies_through_the_calls_state() -> None:
    state = testing.MemoryState()
    testing.apply(
        loans,
        state,
        [
            testing.record(1, "book-7", Lent(member="ana")),
            testing.record(2, "book-9", Lent(member="ana")),
            testing.record(3, "book-7", Returned(member="ana")),
            testing.record(4, "book-3", "Shelved", {"shelf": 2}),
        ],
    )
    assert dict(state.items()) == {"member/ana": {"books": ["9"]}}
    assert state.write_count == 1, "one key, written once for the whole batch"
    assert testing.query(loans, state, "member", {"id": "ana"}) == {"books": ["9"]}
    assert testing.query(loans, state, "borrowers") == ["ana"]


def test_a_failing_event_fails_the_batch_with_its_type_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = testing.MemoryState()
    batch = [testing.record(1, "book-7", Lent(member="ana")), testing.record(2, "book-7", "Burned")]
    with (
        caplog.at_level(logging.ERROR, logger="evhost.plugin"),
        pytest.raises(Failure) as failure,
    ):
        testing.apply(loans, state, batch)
    assert failure.value.message == "ValueError: book 7 burned"
    assert isinstance(failure.value.__cause__, ValueError)
    assert len(state) == 0, "a failed batch writes nothing"
    assert "projection loans failed to apply Burned at position 2" in caplog.text
    assert 'test_projection.py", line' in caplog.text, "the log has the traceback"


def test_data_that_does_not_fit_the_event_class_is_a_failure() -> None:
    with pytest.raises(Failure) as failure:
        testing.apply(loans, testing.MemoryState(), [testing.record(5, "book-1", "Lent", {})])
    assert failure.value.message == (
        "the event at position 5, of type Lent, does not match Lent: missing field `member`"
    )


def test_query_errors_are_the_callers_answers() -> None:
    state = testing.MemoryState()
    with pytest.raises(Failure, match="^unknown query nobody; expected one of borrowers, member$"):
        testing.query(loans, state, "nobody")
    with pytest.raises(Failure, match="^'id'$"):
        testing.query(loans, state, "member")
    single = Projection("single")
    single.query("count")(lambda state, params: 0)
    with pytest.raises(Failure, match="^unknown query sum; expected count$"):
        testing.query(single, state, "sum")
    with pytest.raises(Failure, match="projection none has no queries"):
        testing.query(Projection("none"), state, "count")


def test_a_query_cannot_write() -> None:
    writer = Projection("writer")

    @writer.query("touch")
    def touch(state: StateView, params: Params) -> None:
        state.put("touched", True)

    with pytest.raises(Failure, match="read-only"):
        testing.query(writer, testing.MemoryState(), "touch")
