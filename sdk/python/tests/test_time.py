"""Timestamps: the host's RFC 3339 with microseconds to milliseconds, and back."""

from __future__ import annotations

import pytest

from evhost.time import millis_from_rfc3339, rfc3339_from_millis


def test_microseconds_are_floored_to_milliseconds() -> None:
    assert millis_from_rfc3339("2026-11-23T19:35:53.123456Z") == 1_795_462_553_123
    assert millis_from_rfc3339("2026-11-23T19:35:53.123999Z") == 1_795_462_553_123
    assert millis_from_rfc3339("2026-12-02T03:22:37.000999Z") == 1_796_181_757_000


def test_other_fractions_and_offsets() -> None:
    assert millis_from_rfc3339("1970-01-01T00:00:01.5Z") == 1_500
    assert millis_from_rfc3339("1970-01-01T00:00:01Z") == 1_000
    assert millis_from_rfc3339("1970-01-01T02:00:00+02:00") == 0
    assert millis_from_rfc3339("1969-12-31T23:00:00-01:00") == 0
    assert millis_from_rfc3339("2024-02-29T00:00:00.000000Z") == 1_709_164_800_000


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2026-11-23",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-23T24:00:00Z",
        "1969-12-31T23:59:59Z",
        "2026-11-23T19:35:53.123456",
    ],
)
def test_what_is_not_a_timestamp_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not RFC 3339"):
        millis_from_rfc3339(text)


def test_milliseconds_format_as_the_host_writes_them() -> None:
    assert rfc3339_from_millis(1_795_462_553_123) == "2026-11-23T19:35:53.123000Z"
    assert millis_from_rfc3339(rfc3339_from_millis(1_767_225_600_001)) == 1_767_225_600_001
