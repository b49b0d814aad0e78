"""The state of projections and policies: reads see writes, writes reach the backend once per
key when a call ends well, and scans page through the host's 1000-entry pages."""

from __future__ import annotations

import dataclasses

import pytest

from evhost import Failure, State, StateView
from evhost.testing import MemoryState


@dataclasses.dataclass
class Visit:
    room: str
    moves: int = 0


def test_reads_see_the_calls_writes_and_reach_the_backend_once() -> None:
    memory = MemoryState({"visit/1": {"room": "A"}, "visit/2": {"room": "B"}})
    state = State(memory)
    for _ in range(100):
        visit = state.get("visit/1")
        visit["moves"] = visit.get("moves", 0) + 1
        state.put("visit/1", visit)
    state.delete("visit/2")
    assert state.get("visit/2") is None and "visit/2" not in state
    assert state.get("visit/1", as_type=Visit) == Visit("A", 100)
    state.put("visit/3", Visit("C"))
    assert memory.get("visit/1") == {"room": "A"}, "nothing is written before the call ends"
    state._commit()
    assert memory.write_count == 3
    assert dict(memory.items()) == {
        "visit/1": {"room": "A", "moves": 100},
        "visit/3": {"room": "C", "moves": 0},
    }


def test_a_value_read_is_a_copy() -> None:
    state = State(MemoryState({"list": [1]}))
    state.get("list").append(2)
    assert state.get("list") == [1]


def test_a_call_that_is_not_committed_writes_nothing() -> None:
    memory = MemoryState({"a": 1})
    state = State(memory)
    state.put("b", 2)
    state.delete("a")
    assert dict(memory.items()) == {"a": 1}


def test_writes_the_host_would_refuse_fail_at_once() -> None:
    state = State(MemoryState())
    with pytest.raises(Failure, match="expected 1 to 1024"):
        state.put("", 1)
    with pytest.raises(Failure, match="expected 1 to 1024"):
        state.put("k" * 1025, 1)
    with pytest.raises(Failure, match="is not JSON"):
        state.put("k", object())
    with pytest.raises(Failure, match="expected at most 1048576"):
        state.put("k", "x" * (1 << 20))
    with pytest.raises(Failure, match="does not hold a Visit: missing field `room`"):
        State(MemoryState({"v": {}})).get("v", as_type=Visit)


def test_a_scan_pages_past_the_hosts_page_size() -> None:
    memory = MemoryState()
    seeding = State(memory)
    for index in range(2500):
        seeding.put(f"k/{index:05}", index)
    seeding.put("l/0", "another prefix")
    seeding._commit()

    state = State(memory)
    for index in range(0, 2500, 2):
        state.delete(f"k/{index:05}")
    state.put("k/99999", -1)
    memory.page_reads = 0
    found = list(state.scan("k/"))
    assert len(found) == 1251
    assert [value for _, value in found[:3]] == [1, 3, 5]
    assert found[-1] == ("k/99999", -1)
    assert memory.page_reads == 3, "2500 stored entries take three pages of at most 1000"

    after = list(state.scan("k/", after="k/02000"))
    assert [key for key, _ in after][:2] == ["k/02001", "k/02003"]
    assert len(after) == 251


def test_a_scan_stops_reading_pages_when_the_iteration_stops() -> None:
    memory = MemoryState({f"k/{index:05}": index for index in range(2500)})
    first = next(State(memory).scan("k/"))
    assert first == ("k/00000", 0)
    assert memory.page_reads == 1


def test_a_scan_merges_the_calls_writes_in_key_order() -> None:
    memory = MemoryState({key: Visit("x") for key in ["p/1", "p/2", "p/3", "p/5", "q/1"]})
    state = State(memory)
    state.delete("p/2")
    state.put("p/4", Visit("new"))
    state.put("p/5", Visit("moved", 5))
    state.put("p/0", Visit("first"))
    assert [key for key, _ in state.scan("p/")] == ["p/0", "p/1", "p/3", "p/4", "p/5"]
    assert [key for key, _ in state.scan("p/", after="p/1")] == ["p/3", "p/4", "p/5"]
    assert list(state.scan("p/", after="p/5")) == []
    typed = dict(state.scan("p/", as_type=Visit))
    assert typed["p/5"] == Visit("moved", 5)


def test_a_query_sees_the_state_read_only() -> None:
    view = StateView(MemoryState({"count": 3}))
    assert view.get("count") == 3 and view.get("missing", 0) == 0
    with pytest.raises(Failure, match="read-only"):
        view.put("count", 4)


def test_memory_state_keeps_the_hosts_rules() -> None:
    memory = MemoryState()
    with pytest.raises(Failure, match="is not JSON text"):
        memory.commit([("a", "not json {")])
    with pytest.raises(Failure, match="expected 1 to 1024"):
        memory.commit([("ok", "1"), ("", "1")])
    assert len(memory) == 0, "a refused write refuses the whole call"
    memory.put("a", [1])
    assert memory.text("a") == "[1]" and memory["a"] == [1]
    assert len(memory.read_page("", None, 5000)) == 1
