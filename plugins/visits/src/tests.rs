//! What v1 stores: the fields a reader of `visit/<visit id>` sees, which later versions keep.

use evhost_sdk::Projection;
use evhost_sdk::testing::{self, MemoryState};
use serde_json::{Value, json};
use visits_model::fixtures::Log;

use crate::Visits;

#[test]
fn describes_itself_as_the_projection_visits() {
    assert_eq!(Visits::NAME, "visits");
    assert_eq!(Visits::CATEGORIES, ["visit"]);
    assert_eq!(Visits::EVENT_TYPES.len(), 9);
}

#[test]
fn stores_each_visit_with_v1_fields() {
    let mut log = Log::new();
    log.check_in("1", "ana", Some("north"), "A-12")
        .check_out("1", "discharged");
    let mut state = MemoryState::new();
    testing::apply::<Visits>(&mut state, &log.records).unwrap();
    let stored: Value = serde_json::from_str(state.get("visit/1").unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({
            "visit_id": "1", "patient_id": "p-ana", "patient_name": "ana", "hospital": "north",
            "room": "A-12", "physician": null, "tests": {}, "status": "checked_out",
            "overdue": false, "checked_in_at": "2026-01-01T00:00:01.000000Z",
            "checked_out_at": "2026-01-01T00:00:03.000000Z", "disposition": "discharged",
            "last_position": 3,
        })
    );
}
