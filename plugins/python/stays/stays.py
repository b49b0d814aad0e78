"""Lengths of stay, an example evhost plugin in Python: the projection `stays-py`, the average
length of stay per hospital, from the visits that the handler `visit` records.

The same projection is written in Rust (`plugins/stays`, `stays`) and in JavaScript
(`plugins/js/stays`, `stays-js`); the three must keep equal state over the same events, which
the host's tests check. So what it keeps is stated exactly:

- `PatientCheckedIn` on `visit-<id>`: `visit/<id>` = `{"hospital", "checked_in_ms"}` (the
  hospital is `main` if the event names none; the time is the event's `recorded_at`).
- `PatientCheckedOut` on `visit-<id>`: the stay is the check-out's time minus the check-in's, in
  milliseconds; `visit/<id>` is deleted and `hospital/<hospital>` = `{"hospital", "visits",
  "total_stay_ms", "average_stay_ms"}` counts it (the average rounded down). A check-out without
  a check-in seen changes nothing and logs a warning.
- Query `hospitals` -> `{"hospitals": [...]}`, every hospital in name order; `hospital?name=<h>`
  -> one hospital, or an error if no visit has ended there.
"""

from __future__ import annotations

from typing import Any

from evhost import Envelope, Failure, Params, Projection, State, StateView, event, log


# The events it folds, with only the fields it reads: other fields are ignored, so the other
# languages' versions and this one accept exactly the same events.
@event
class PatientCheckedIn:
    """The visit began."""

    hospital: str = "main"


@event
class PatientCheckedOut:
    """The visit ended (its disposition and summary do not matter here)."""


stays = Projection(
    "stays-py",
    "Average length of stay per hospital",
    categories=["visit"],
    event_types=["PatientCheckedIn", "PatientCheckedOut"],
)


def visit_key(visit_id: str) -> str:
    return f"visit/{visit_id}"


def hospital_key(hospital: str) -> str:
    return f"hospital/{hospital}"


@stays.on(PatientCheckedIn)
def checked_in(state: State, event: Envelope[PatientCheckedIn]) -> None:
    state.put(
        visit_key(event.entity_id),
        {"hospital": event.data.hospital, "checked_in_ms": event.recorded_at_ms},
    )


@stays.on(PatientCheckedOut)
def checked_out(state: State, event: Envelope[PatientCheckedOut]) -> None:
    visit_id = event.entity_id
    visit = state.get(visit_key(visit_id))
    if visit is None:
        log.warn(f"visit {visit_id} checked out without a check-in seen")
        return
    # A check-out recorded before its check-in (clocks moved) counts as a stay of 0.
    stay_ms = max(0, event.recorded_at_ms - visit["checked_in_ms"])
    state.delete(visit_key(visit_id))
    hospital = visit["hospital"]
    stays_at = state.get(
        hospital_key(hospital),
        {"hospital": hospital, "visits": 0, "total_stay_ms": 0, "average_stay_ms": 0},
    )
    stays_at["visits"] += 1
    stays_at["total_stay_ms"] += stay_ms
    stays_at["average_stay_ms"] = stays_at["total_stay_ms"] // stays_at["visits"]
    state.put(hospital_key(hospital), stays_at)
    log.info(f"visit {visit_id} at {hospital} stayed {stay_ms} ms")


@stays.query("hospitals")
def hospitals(state: StateView, params: Params) -> dict[str, Any]:
    return {"hospitals": [value for _key, value in state.scan("hospital/")]}


@stays.query("hospital")
def hospital(state: StateView, params: Params) -> Any:
    name = params.get("name")
    if name is None:
        raise Failure("query hospital needs the parameter name")
    found = state.get(hospital_key(name))
    if found is None:
        raise Failure(f"no visit has ended at hospital {name}")
    return found
