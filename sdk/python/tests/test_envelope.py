"""Envelopes (what projections and policies get with an event) and query parameters."""

from __future__ import annotations

from evhost import Envelope, Params, Projection, State, entity_id_of, testing


def envelope_of(record: testing.EventRecord) -> Envelope[object]:
    seen: list[Envelope[object]] = []
    probe = Projection("probe")

    @probe.on_any
    def keep(state: State, event: Envelope[object]) -> None:
        seen.append(event)

    testing.apply(probe, testing.MemoryState(), [record])
    return seen[0]


def test_an_envelope_carries_the_record_and_its_time_in_milliseconds() -> None:
    event = envelope_of(
        testing.record(
            42,
            "visit-7-b",
            "PatientCheckedIn",
            {"patient_id": "p-1"},
            version=3,
            id="e-42",
            metadata={"correlation_id": "c-1", "causation-id": "k-1"},
            recorded_at="2026-12-02T03:22:37.123456Z",
        )
    )
    assert (event.position, event.stream, event.version, event.id, event.type) == (
        42,
        "visit-7-b",
        3,
        "e-42",
        "PatientCheckedIn",
    )
    assert event.data == {"patient_id": "p-1"}
    assert event.data_json == '{"patient_id":"p-1"}'
    assert event.recorded_at == "2026-12-02T03:22:37.123456Z"
    assert event.recorded_at_ms == 1_796_181_757_123
    assert event.category == "visit"
    assert event.entity_id == "7-b", "the entity id is everything after the first '-'"
    assert event.metadata == {"correlation_id": "c-1", "causation-id": "k-1"}
    assert (event.correlation_id, event.causation_id) == ("c-1", "k-1")


def test_a_stream_without_a_dash_has_an_empty_entity_id() -> None:
    event = envelope_of(testing.record(1, "singleton", "Happened"))
    assert event.entity_id == "" and event.category == "singleton"
    assert event.data is None and event.metadata == {}


def test_records_default_to_one_second_per_position() -> None:
    assert testing.record(5, "x-1", "T").recorded_at == "2026-01-01T00:00:05.000000Z"
    assert testing.record(5, "x-1", "T", recorded_at=1_500).recorded_at_ms == 1_500


def test_params_are_a_dict_of_first_values_with_every_pair_kept() -> None:
    params = Params([("name", "north"), ("tag", "a"), ("tag", "b")])
    assert params == {"name": "north", "tag": "a"}
    assert params.all("tag") == ["a", "b"]
    assert params.pairs[-1] == ("tag", "b")


def test_the_entity_id_of_a_stream_is_what_follows_the_first_dash() -> None:
    assert entity_id_of("visit-42") == "42"
    assert entity_id_of("counter-a-b") == "a-b"
    assert entity_id_of("singleton") == ""
