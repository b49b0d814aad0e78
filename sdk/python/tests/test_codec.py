"""Typed events and commands: type names, decoding JSON data into dataclasses, encoding back."""

from __future__ import annotations

import dataclasses
import enum
from typing import Literal

import pytest

from evhost import command, event, type_name_of
from evhost._codec import DataMismatch, decode_data, encode_json, event_data_json


class Disposition(enum.Enum):
    DISCHARGED = "discharged"
    ADMITTED = "admitted"


@dataclasses.dataclass
class Room:
    name: str
    floor: int = 0


@event
class PatientCheckedIn:
    patient_id: str
    triage_level: int
    hospital: str = "main"
    expected_stay_seconds: int | None = None
    tests: list[str] = dataclasses.field(default_factory=list)
    room: Room | None = None


@event
class PatientCheckedOut:
    disposition: Disposition
    mood: Literal["calm", "upset"] = "calm"


@event(name="visit.closed")
class Closed:
    pass


@command
class CheckIn:
    patient_id: str


def test_type_names_are_class_names_unless_given() -> None:
    assert type_name_of(PatientCheckedIn) == "PatientCheckedIn"
    assert type_name_of(Closed) == "visit.closed"
    assert type_name_of(CheckIn) == "CheckIn"
    assert type_name_of(Room) == "Room"  # a plain dataclass

    @dataclasses.dataclass
    class SubClosed(Closed):
        pass

    assert type_name_of(SubClosed) == "SubClosed", "a subclass does not inherit its parent's name"


def test_declared_names_follow_the_hosts_rules() -> None:
    with pytest.raises(ValueError, match="is not 1 to 128 characters"):

        @event(name="Checked In")
        class Spaced:
            pass


def test_data_decodes_with_defaults_and_ignores_unknown_fields() -> None:
    checked_in = decode_data(
        PatientCheckedIn,
        {
            "patient_id": "p-1",
            "triage_level": 2,
            "complaint": "ignored",
            "tests": ["xray"],
            "room": {"name": "A-1"},
        },
    )
    assert checked_in == PatientCheckedIn(
        patient_id="p-1", triage_level=2, tests=["xray"], room=Room("A-1")
    )
    assert decode_data(PatientCheckedOut, {"disposition": "admitted"}).disposition is (
        Disposition.ADMITTED
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"triage_level": 2}, "missing field `patient_id`"),
        (None, "expected an object, found null"),
        (
            {"patient_id": 7, "triage_level": 2},
            "field `patient_id`: expected a string, found the number 7",
        ),
        (
            {"patient_id": "p", "triage_level": True},
            "field `triage_level`: expected an integer, found the boolean true",
        ),
        (
            {"patient_id": "p", "triage_level": 1, "expected_stay_seconds": "long"},
            'field `expected_stay_seconds`: expected an integer, found the string "long"',
        ),
        (
            {"patient_id": "p", "triage_level": 1, "tests": "xray"},
            "field `tests`: expected an array",
        ),
        (
            {"patient_id": "p", "triage_level": 1, "tests": [1]},
            "field `tests.0`: expected a string",
        ),
        ({"patient_id": "p", "triage_level": 1, "room": {}}, "missing field `room.name`"),
        ([1, 2], "expected an object, found an array"),
    ],
)
def test_data_that_does_not_fit_says_where(data: object, message: str) -> None:
    with pytest.raises(DataMismatch) as mismatch:
        decode_data(PatientCheckedIn, data)
    assert str(mismatch.value).startswith(message)


def test_enums_and_literals_are_checked() -> None:
    with pytest.raises(
        DataMismatch, match='expected "discharged" or "admitted", found the string "home"'
    ):
        decode_data(PatientCheckedOut, {"disposition": "home"})
    with pytest.raises(DataMismatch, match="field `mood`"):
        decode_data(PatientCheckedOut, {"disposition": "admitted", "mood": "happy"})


def test_a_class_without_fields_accepts_any_data_and_encodes_as_null() -> None:
    assert decode_data(Closed, {"by": "ana"}) == Closed()
    assert decode_data(Closed, None) == Closed()
    assert event_data_json(Closed()) == "null"


def test_encoding_is_compact_json_of_the_fields() -> None:
    out = PatientCheckedOut(disposition=Disposition.DISCHARGED)
    assert event_data_json(out) == '{"disposition":"discharged","mood":"calm"}'
    assert encode_json({"room": Room("B", 2), "names": ("a", "é")}) == (
        '{"room":{"name":"B","floor":2},"names":["a","é"]}'
    )
    with pytest.raises(TypeError, match="is not JSON"):
        encode_json({"tags": {"a"}})
