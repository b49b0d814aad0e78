//! v2 against v1, fed the same events: the same keys, v1's fields as they are, and the length
//! of stay besides.

use evhost_sdk::Projection;
use evhost_sdk::testing::{self, MemoryState};
use serde_json::{Value, json};
use visits_model::fixtures::Log;

use crate::{VisitWithStay, Visits};

type V1 = visits::Visits;

/// Visit 1 from check-in (position 1) to check-out (position 7) in `north`; visit 2 still in
/// `main`; visit 3 checked out, its check-in before the log begins.
fn hospital_log() -> Log {
    let mut log = Log::new();
    log.check_in("1", "ana", Some("north"), "A-12")
        .check_in("2", "bo", None, "B-1")
        .add("visit-1", "TestOrdered", json!({"test": "ecg"}))
        .add(
            "visit-1",
            "TestResultRecorded",
            json!({"test": "ecg", "result": "normal"}),
        )
        .check_out("1", "discharged")
        .add("visit-1", "RoomReleased", json!({"room": "A-12"}))
        .add("visit-2", "RoomAssigned", json!({"room": "B-2"}))
        .check_out("3", "admitted");
    log
}

/// The state `P` folds from `log`, in batches of three events as a host might deliver them.
fn folded<P: Projection>(log: &Log) -> MemoryState {
    let mut state = MemoryState::new();
    for batch in log.records.chunks(3) {
        testing::apply::<P>(&mut state, batch).unwrap();
    }
    state
}

fn stored(state: &MemoryState, key: &str) -> Value {
    serde_json::from_str(state.get(key).unwrap()).unwrap()
}

#[test]
fn describes_itself_as_v1_does() {
    assert_eq!(Visits::NAME, V1::NAME);
    assert_eq!(Visits::CATEGORIES, V1::CATEGORIES);
    assert_eq!(Visits::EVENT_TYPES, V1::EVENT_TYPES);
}

#[test]
fn keeps_v1_keys_and_fields_and_adds_the_length_of_stay() {
    let log = hospital_log();
    let (v1, v2) = (folded::<V1>(&log), folded::<Visits>(&log));
    let v1_keys: Vec<&str> = v1.iter().map(|(key, _)| key).collect();
    let v2_keys: Vec<&str> = v2.iter().map(|(key, _)| key).collect();
    assert_eq!(v2_keys, v1_keys);
    for key in v1_keys {
        let mut value = stored(&v2, key);
        if key.starts_with("visit/") {
            let object = value.as_object_mut().unwrap();
            assert!(object.remove("length_of_stay_seconds").is_some(), "{key}");
        }
        assert_eq!(value, stored(&v1, key), "{key}");
    }
    let stay = |id: &str| stored(&v2, &format!("visit/{id}"))["length_of_stay_seconds"].clone();
    assert_eq!(stay("1"), json!(6), "checked in at position 1, out at 7");
    assert_eq!(stay("2"), Value::Null, "still in the hospital");
    assert_eq!(stay("3"), Value::Null, "its check-in is not in the log");
}

#[test]
fn queries_answer_as_v1_with_the_length_of_stay_in_a_visit() {
    let log = hospital_log();
    let (v1, v2) = (folded::<V1>(&log), folded::<Visits>(&log));
    for hospital in ["north", "main"] {
        let params = [("hospital", hospital)];
        assert_eq!(
            testing::query::<Visits>(&v2, "in-hospital", &params).unwrap(),
            testing::query::<V1>(&v1, "in-hospital", &params).unwrap()
        );
    }
    let visit = testing::query::<Visits>(&v2, "visit", &[("id", "1")]).unwrap();
    let visit: VisitWithStay = serde_json::from_value(visit).unwrap();
    assert_eq!(visit.length_of_stay_seconds, Some(6));
    assert_eq!(visit.visit.disposition.as_deref(), Some("discharged"));
}

#[test]
fn the_length_of_stay_is_in_whole_seconds_of_the_recorded_times() {
    let mut log = Log::new();
    log.check_in("7", "cy", None, "C-1")
        .check_out("7", "left_against_advice");
    log.records[0].recorded_at = "2026-11-23T19:35:53.900000Z".into();
    log.records[2].recorded_at = "2026-11-23T21:05:53.100000Z".into();
    let state = folded::<Visits>(&log);
    let visit: VisitWithStay = state.get_as("visit/7").unwrap().unwrap();
    assert_eq!(visit.length_of_stay_seconds, Some(90 * 60 - 1));
}
