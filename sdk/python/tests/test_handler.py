"""Handlers: deciding typed commands, rejections, folding events into a state through its
stored bytes, and what counts as a plugin failure."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from evhost import (
    CommandContext,
    Failure,
    Handler,
    NewEvent,
    Rejected,
    command,
    reject,
    testing,
)

from conftest import Lent, Returned


@dataclasses.dataclass
class BookState:
    borrower: str | None = None
    lendings: int = 0


@command
class Lend:
    member: str


@command
class Return:
    pass


book = Handler("book", "book", "Lends library books, one member at a time", initial=BookState)


@book.evolve(Lent)
def lent(state: BookState, event: Lent) -> None:
    state.borrower = event.member
    state.lendings += 1


@book.evolve(Returned)
def returned(state: BookState, event: Returned) -> BookState:
    return dataclasses.replace(state, borrower=None)


@book.decide(Lend)
def lend(state: BookState, command: Lend, context: CommandContext) -> list[Any]:
    if not command.member.strip():
        reject("member is empty; expected a member id")
    if state.borrower is not None:
        raise Rejected(f"the book is lent to {state.borrower}")
    return [
        Lent(member=command.member),
        NewEvent("Audited", {"by": context.id, "book": context.entity_id}),
    ]


@book.decide(Return)
def give_back(state: BookState, command: Return) -> list[Any]:
    if state.borrower is None:
        raise Rejected("the book is not lent")
    return [Returned()]


@book.decide("Inspect")
def inspect_book(state: BookState, data: Any) -> list[Any]:
    # Registered by name: the data is the parsed JSON.
    return [NewEvent("Inspected", data, metadata={"inspector": data["by"]})]


@book.decide("Explode")
def explode(state: BookState, data: Any) -> list[Any]:
    return {}["missing"]  # type: ignore[no-any-return]


@book.decide("Forget")
def forget(state: BookState, data: Any) -> None:
    pass


def test_a_typed_command_decides_with_its_context() -> None:
    events = testing.decide(book, Lend(member="ana"), stream="book-7", id="c-1")
    assert events == [
        NewEvent.of(Lent(member="ana")),
        NewEvent("Audited", {"by": "c-1", "book": "7"}),
    ]
    assert events[0] == NewEvent("Lent", {"member": "ana"})


def test_rejections_carry_their_reason() -> None:
    with pytest.raises(Rejected, match="^the book is lent to ana$"):
        testing.decide(book, "Lend", {"member": "bo"}, given=[Lent(member="ana")])
    with pytest.raises(Rejected, match="member is empty"):
        testing.decide(book, Lend(member=" "))
    with pytest.raises(Rejected, match="the book is not lent"):
        testing.decide(book, Return())


def test_an_unknown_command_type_is_rejected_with_the_known_ones_sorted() -> None:
    with pytest.raises(Rejected) as rejection:
        testing.decide(book, "Burn", {})
    assert rejection.value.reason == (
        "unknown command type Burn; expected one of Explode, Forget, Inspect, Lend, Return"
    )


def test_data_that_does_not_fit_the_command_class_is_rejected() -> None:
    with pytest.raises(Rejected) as rejection:
        testing.decide(book, "Lend", {"name": "ana"})
    assert rejection.value.reason == "Lend data does not match: missing field `member`"
    with pytest.raises(
        Rejected, match="^Lend data does not match: field `member`: expected a string"
    ):
        testing.decide(book, "Lend", {"member": 3})


def test_a_command_registered_by_name_gets_the_json_and_may_set_metadata() -> None:
    assert testing.decide(book, "Inspect", {"by": "eve"}) == [
        NewEvent("Inspected", {"by": "eve"}, {"inspector": "eve"})
    ]


def test_other_exceptions_are_failures_not_rejections(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="evhost.plugin"), pytest.raises(KeyError):
        testing.decide(book, "Explode", {})
    assert "handler book failed to decide Explode on book-1" in caplog.text
    assert "KeyError: 'missing'" in caplog.text
    with pytest.raises(TypeError, match="returned None; expected a list of events"):
        testing.decide(book, "Forget", {})


def test_the_state_folds_through_its_stored_bytes() -> None:
    state = testing.replay(book, [Lent(member="ana"), Returned(), ("Lent", {"member": "bo"})])
    assert state == BookState(borrower="bo", lendings=2)
    assert testing.evolve(book, state, [Returned()]) == BookState(borrower=None, lendings=2)
    assert book._dump_state(state) == b'{"borrower":"bo","lendings":2}'
    assert book._evolve_wire(None, []) == b'{"borrower":null,"lendings":0}'


def test_an_event_type_without_evolve_is_a_failure_unless_ignored() -> None:
    with pytest.raises(Failure) as failure:
        testing.replay(book, [("Audited", {})])
    assert failure.value.message == (
        "event version 1 has the type Audited, which no evolve function takes; expected one of "
        "Lent, Returned (set ignore_unknown_events to ignore such events)"
    )
    lenient = Handler("lenient", "lenient", initial=lambda: {"seen": 0}, ignore_unknown_events=True)

    @lenient.evolve("Seen")
    def seen(state: dict[str, int], data: Any) -> None:
        state["seen"] += 1

    assert testing.replay(lenient, [("Seen", None), ("Other", {}), ("Seen", 1)]) == {"seen": 2}


def test_evolve_failures_are_reported_with_their_type(caplog: pytest.LogCaptureFixture) -> None:
    fragile = Handler("fragile", "fragile", initial=0)

    @fragile.evolve("Counted")
    def counted(total: int, data: Any) -> int:
        return total + data["by"]

    assert testing.replay(fragile, [("Counted", {"by": 2}), ("Counted", {"by": 3})]) == 5
    with pytest.raises(Failure) as failure:
        testing.replay(fragile, [("Counted", {})])
    assert failure.value.message == "KeyError: 'by'"
    assert isinstance(failure.value.__cause__, KeyError)
    with pytest.raises(Failure, match="event version 1, of type Lent, does not match Lent"):
        testing.replay(book, [("Lent", {})])


def test_a_stored_state_that_does_not_fit_is_a_failure() -> None:
    with pytest.raises(Failure, match="the stream's state does not match BookState"):
        book._evolve_wire(b'{"borrower": 3}', [])


def test_describe_and_name_checks() -> None:
    info = book.info()
    assert (info.name, info.kind, info.category, info.categories, info.event_types) == (
        "book",
        "handler",
        "book",
        (),
        (),
    )
    with pytest.raises(ValueError, match="plugin name 'Book'"):
        Handler("Book", "book")
    with pytest.raises(ValueError, match="category 'book-shelf'"):
        Handler("book", "book-shelf")
    with pytest.raises(ValueError, match="has a decide function for Lend already"):
        book.decide(Lend)(lambda state, command: [])


def test_initial_values_are_copied_for_each_stream() -> None:
    tally = Handler("tally", "tally", initial={"names": []})

    @tally.evolve("Named")
    def named(state: dict[str, list[str]], data: Any) -> None:
        state["names"].append(data)

    assert testing.replay(tally, [("Named", "a")]) == {"names": ["a"]}
    assert testing.replay(tally, [("Named", "b")]) == {"names": ["b"]}
