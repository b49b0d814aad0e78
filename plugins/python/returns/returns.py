"""72-hour returns, an example evhost plugin in Python: the policy `returns-py`, which notes on a
visit that its patient is back within 72 hours of an earlier visit's end.

It reads `PatientCheckedIn` and `PatientCheckedOut` of the category `visit` (the events of the
handler `visit`):

- `PatientCheckedIn` on `visit-<id>`: remembers the visit's patient and hospital
  (`visit/<id>` = `{"patient_id", "hospital"}`). If that patient's last visit ended less than
  72 hours before (by the events' `recorded_at`), sends `AddNote {"author": "returns-py",
  "text": "returned <h> h after visit <previous id> ended"}` (whole hours, rounded down) to the
  handler `visit` on the new visit's stream.
- `PatientCheckedOut` on `visit-<id>`: forgets the visit and keeps the patient's last check-out
  (`patient/<patient id>` = `{"visit_id", "hospital", "checked_out_ms"}`). A check-out without a
  check-in seen changes nothing and logs a warning.
- A rejected `AddNote` (the new visit was closed before the note reached it) is logged.
"""

from __future__ import annotations

from evhost import Action, Envelope, Policy, RejectedCommand, State, event, log, send

RETURN_WINDOW_MS = 72 * 3600 * 1000
HOUR_MS = 3600 * 1000


@event
class PatientCheckedIn:
    """The visit began; only the fields read here are declared."""

    patient_id: str
    hospital: str = "main"


@event
class PatientCheckedOut:
    """The visit ended."""


returns = Policy(
    "returns-py",
    "72-hour returns: notes a visit whose patient is back within 72 hours of a visit's end",
    categories=["visit"],
)


@returns.on(PatientCheckedIn)
def checked_in(state: State, event: Envelope[PatientCheckedIn]) -> list[Action]:
    visit_id = event.entity_id
    patient_id = event.data.patient_id
    state.put(f"visit/{visit_id}", {"patient_id": patient_id, "hospital": event.data.hospital})
    last = state.get(f"patient/{patient_id}")
    if last is None:
        return []
    since_ms = event.recorded_at_ms - last["checked_out_ms"]
    if not 0 <= since_ms < RETURN_WINDOW_MS:
        return []
    note = f"returned {since_ms // HOUR_MS} h after visit {last['visit_id']} ended"
    return [send("visit", event.stream, "AddNote", {"author": "returns-py", "text": note})]


@returns.on(PatientCheckedOut)
def checked_out(state: State, event: Envelope[PatientCheckedOut]) -> list[Action]:
    visit_id = event.entity_id
    visit = state.get(f"visit/{visit_id}")
    if visit is None:
        log.warn(f"visit {visit_id} checked out without a check-in seen")
        return []
    state.delete(f"visit/{visit_id}")
    state.put(
        f"patient/{visit['patient_id']}",
        {
            "visit_id": visit_id,
            "hospital": visit["hospital"],
            "checked_out_ms": event.recorded_at_ms,
        },
    )
    return []


@returns.on_rejected
def note_rejected(state: State, command: RejectedCommand, reason: str) -> list[Action]:
    log.warn(f"{command.type} on {command.stream} was rejected: {reason}")
    return []
