"""Timestamps as the host records them (RFC 3339 in UTC with microseconds,
`2026-11-23T19:35:53.123456Z`) and as timers take them (milliseconds since the Unix epoch).

Time inside a plugin is frozen, so projections and policies take their time from events'
`recorded_at`, which these functions turn into numbers and back. The parsing is done here rather
than by `datetime.fromisoformat`, whose accepted forms differ between Python versions.
"""

from __future__ import annotations

import datetime
import re

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"  # date and time
    r"(?:\.(\d+))?"  # fraction of a second
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"  # UTC, or an offset
)
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def millis_from_rfc3339(text: str) -> int:
    """Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
    `2026-11-23T19:35:53.123456Z` (any number of fraction digits, `Z` or a `+HH:MM` offset);
    digits beyond the millisecond are dropped, so the result is the floor.

    >>> millis_from_rfc3339("2026-11-23T19:35:53.123456Z")
    1795462553123
    """
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(_not_rfc3339(text))
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10, 11)
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError(_not_rfc3339(text)) from None
    # A leap second (60) is allowed by RFC 3339 and counts as the next minute's first second.
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(_not_rfc3339(text))
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second
    if not zulu:
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        seconds -= offset if sign == "+" else -offset
    millis = seconds * 1000 + int((fraction or "0")[:3].ljust(3, "0"))
    if millis < 0:
        raise ValueError(_not_rfc3339(text))
    return millis


def rfc3339_from_millis(millis: int) -> str:
    """The RFC 3339 UTC timestamp, with microseconds as the host writes them, of `millis` since
    the Unix epoch.

    >>> rfc3339_from_millis(1795462553123)
    '2026-11-23T19:35:53.123000Z'
    """
    seconds, remainder = divmod(millis, 1000)
    days, second_of_day = divmod(seconds, 86_400)
    date = datetime.date.fromordinal(_EPOCH_ORDINAL + days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{date.isoformat()}T{hour:02}:{minute:02}:{second:02}.{remainder * 1000:06}Z"


def _not_rfc3339(text: object) -> str:
    return (
        f"timestamp {text!r} is not RFC 3339 (expected e.g. 2026-11-23T19:35:53.123456Z) "
        "at or after 1970"
    )
