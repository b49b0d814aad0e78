//! Room occupancy, an example evhost plugin: the projection `rooms`, which room of which hospital
//! holds which visit now, from the events of the handler `visit`.
//!
//! Keys (values are JSON):
//!
//! - `room/<hospital>/<room>` → [`Room`]: the hospital, the room, and the visit, patient and
//!   time (`recorded-at`) it was taken, or `occupied: false` with the time it was freed.
//! - `visit/<visit id>` → [`VisitPlace`]: the hospital and patient of a visit, which its room
//!   events do not carry; removed once the checked-out visit has released its room.
//!
//! Query: `rooms?hospital=<h>[&free=true]`: the hospital's rooms (those it has seen), in room
//! order; with `free=true` only the free ones.

use evhost_sdk::{Envelope, Failure, Params, Projection, State, StateView};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The projection `rooms`.
pub struct Rooms;

/// The events of the `visit` handler this projection reads, with the fields it reads.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitEvent {
    PatientCheckedIn {
        patient_id: String,
        patient_name: String,
        #[serde(default = "main_hospital")]
        hospital: String,
    },
    RoomAssigned {
        room: String,
    },
    RoomReleased {
        room: String,
    },
    PatientCheckedOut,
    #[serde(other)]
    Other,
}

fn main_hospital() -> String {
    "main".to_owned()
}

/// A room, as `room/<hospital>/<room>` holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub hospital: String,
    pub room: String,
    pub occupied: bool,
    /// The visit in the room, if occupied.
    pub visit: Option<String>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    /// When it was taken (occupied) or freed.
    pub since: String,
}

/// Where a visit is, as `visit/<visit id>` holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitPlace {
    pub hospital: String,
    pub patient_id: String,
    pub patient_name: String,
    #[serde(default)]
    pub checked_out: bool,
}

/// The key of a room.
pub fn room_key(hospital: &str, room: &str) -> String {
    format!("room/{hospital}/{room}")
}

/// Most rooms the `rooms` query lists.
const MAX_ROOMS: u32 = 10_000;

impl Projection for Rooms {
    const NAME: &'static str = "rooms";
    const DESCRIPTION: &'static str = "Which visit occupies each room of each hospital";
    const CATEGORIES: &'static [&'static str] = &["visit"];
    const EVENT_TYPES: &'static [&'static str] = &[
        "PatientCheckedIn",
        "RoomAssigned",
        "RoomReleased",
        "PatientCheckedOut",
    ];
    type Event = VisitEvent;

    fn apply(state: &mut State<'_>, event: Envelope<'_, VisitEvent>) -> Result<(), Failure> {
        let visit_id = event.entity_id().to_owned();
        let visit_key = format!("visit/{visit_id}");
        let since = event.recorded_at().to_owned();
        match event.into_event() {
            VisitEvent::PatientCheckedIn {
                patient_id,
                patient_name,
                hospital,
            } => state.put(
                &visit_key,
                VisitPlace {
                    hospital,
                    patient_id,
                    patient_name,
                    checked_out: false,
                },
            ),
            VisitEvent::RoomAssigned { room } => {
                let place = state
                    .get::<VisitPlace>(&visit_key)?
                    .unwrap_or_else(|| VisitPlace {
                        hospital: main_hospital(),
                        ..VisitPlace::default()
                    });
                state.put(
                    &room_key(&place.hospital, &room),
                    Room {
                        hospital: place.hospital,
                        room,
                        occupied: true,
                        visit: Some(visit_id),
                        patient_id: Some(place.patient_id),
                        patient_name: Some(place.patient_name),
                        since,
                    },
                );
            }
            VisitEvent::RoomReleased { room } => {
                let Some(place) = state.get::<VisitPlace>(&visit_key)? else {
                    return Ok(());
                };
                let key = room_key(&place.hospital, &room);
                state.alter(&key, |entry: &mut Option<Room>| {
                    // Only the visit in the room frees it.
                    if let Some(entry) = entry
                        && entry.visit.as_deref() == Some(visit_id.as_str())
                    {
                        *entry = Room {
                            hospital: place.hospital.clone(),
                            room,
                            occupied: false,
                            since,
                            ..Room::default()
                        };
                    }
                })?;
                if place.checked_out {
                    state.delete(&visit_key);
                }
            }
            VisitEvent::PatientCheckedOut => {
                state.alter(&visit_key, |place: &mut Option<VisitPlace>| {
                    if let Some(place) = place {
                        place.checked_out = true;
                    }
                })?;
            }
            VisitEvent::Other => {}
        }
        Ok(())
    }

    fn query(state: &StateView<'_>, path: &str, params: &Params<'_>) -> Result<Value, Failure> {
        if path != "rooms" {
            return Err(Failure::new(format!(
                "unknown query {path}; expected rooms"
            )));
        }
        let hospital = params.required("hospital")?;
        let only_free = params.parse::<bool>("free")?.unwrap_or(false);
        let rooms: Vec<Room> = state
            .scan::<Room>(&room_key(hospital, ""), None, MAX_ROOMS)?
            .into_iter()
            .map(|(_, room)| room)
            .filter(|room| !(only_free && room.occupied))
            .collect();
        Ok(json!({"hospital": hospital, "rooms": rooms}))
    }
}

evhost_sdk::export_projection!(Rooms);

#[cfg(test)]
mod tests {
    use evhost_sdk::testing::{self, EventRecord, MemoryState};
    use serde_json::{Value, json};

    use super::{Room, Rooms};

    fn records(events: &[(&str, &str, Value)]) -> Vec<EventRecord> {
        events
            .iter()
            .enumerate()
            .map(|(index, (stream, event_type, data))| {
                EventRecord::new(index as u64 + 1, stream, event_type, data)
            })
            .collect()
    }

    fn checked_in(patient: &str, hospital: &str) -> Value {
        json!({"patient_id": format!("p-{patient}"), "patient_name": patient, "hospital": hospital,
               "complaint": "x", "triage_level": 3})
    }

    fn room(state: &MemoryState, hospital: &str, room: &str) -> Room {
        state
            .get_as(&super::room_key(hospital, room))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn rooms_are_taken_moved_out_of_and_freed() {
        let log = records(&[
            ("visit-1", "PatientCheckedIn", checked_in("ana", "north")),
            ("visit-1", "RoomAssigned", json!({"room": "A-1"})),
            ("visit-2", "PatientCheckedIn", checked_in("bo", "north")),
            ("visit-2", "RoomAssigned", json!({"room": "A-2"})),
            ("visit-1", "RoomReleased", json!({"room": "A-1"})),
            ("visit-1", "RoomAssigned", json!({"room": "A-3"})),
            (
                "visit-2",
                "PatientCheckedOut",
                json!({"disposition": "discharged"}),
            ),
            ("visit-2", "RoomReleased", json!({"room": "A-2"})),
        ]);
        let mut state = MemoryState::new();
        testing::apply::<Rooms>(&mut state, &log).unwrap();
        let a1 = room(&state, "north", "A-1");
        assert!(!a1.occupied);
        assert_eq!(a1.since, "2026-01-01T00:00:05.000000Z");
        let a3 = room(&state, "north", "A-3");
        assert_eq!(
            (a3.visit.as_deref(), a3.patient_name.as_deref()),
            (Some("1"), Some("ana"))
        );
        assert!(!room(&state, "north", "A-2").occupied);
        assert_eq!(
            state.get("visit/2"),
            None,
            "forgotten once checked out and released"
        );
        let all = testing::query::<Rooms>(&state, "rooms", &[("hospital", "north")]).unwrap();
        let names: Vec<&str> = all["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["A-1", "A-2", "A-3"]);
        let free =
            testing::query::<Rooms>(&state, "rooms", &[("hospital", "north"), ("free", "true")])
                .unwrap();
        assert_eq!(free["rooms"].as_array().unwrap().len(), 2);
        let other = testing::query::<Rooms>(&state, "rooms", &[("hospital", "south")]).unwrap();
        assert_eq!(other["rooms"], json!([]));
    }

    #[test]
    fn a_release_by_another_visit_leaves_the_room_taken() {
        let log = records(&[
            ("visit-1", "PatientCheckedIn", checked_in("ana", "main")),
            ("visit-1", "RoomAssigned", json!({"room": "A-1"})),
            ("visit-2", "PatientCheckedIn", checked_in("bo", "main")),
            ("visit-2", "RoomAssigned", json!({"room": "A-1"})),
            ("visit-1", "RoomReleased", json!({"room": "A-1"})),
        ]);
        let mut state = MemoryState::new();
        testing::apply::<Rooms>(&mut state, &log).unwrap();
        assert_eq!(room(&state, "main", "A-1").visit.as_deref(), Some("2"));
    }
}
