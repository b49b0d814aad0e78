//! The saga, natively: the policy's commands decided by the real `order` and `loyalty`
//! handlers, and its compensation when a reservation is rejected.

use evhost_sdk::testing::{self, EventRecord, MemoryState};
use evhost_sdk::{Action, SendCommand};
use serde_json::json;

use crate::{LoyaltyCommand, OrderCommand, OrderLoyalty};

fn placed(points: u64) -> EventRecord {
    EventRecord::new(
        1,
        "order-o-7",
        "OrderPlaced",
        &json!({"customer_id": "c-1", "total_cents": 1250, "points": points}),
    )
}

fn only_send(actions: &[Action]) -> &SendCommand {
    match actions {
        [Action::Send(command)] => command,
        _ => panic!("expected one command: {actions:?}"),
    }
}

/// What the handler `H` decides for `command` on a stream with the events `history`.
fn decided<H: evhost_sdk::Handler>(
    history: &[(String, String)],
    command: &SendCommand,
) -> Result<Vec<(String, String)>, String> {
    let pairs = history.iter().map(|(t, d)| (t.as_str(), d.as_str()));
    let state = evhost_sdk::__private::evolve::<H>(None, pairs).unwrap();
    evhost_sdk::__private::decide::<H>(
        Some(&state),
        "c",
        &command.stream_id,
        &command.command_type,
        &command.data,
        "{}",
    )
    .unwrap()
}

#[test]
fn a_placed_order_reserves_its_points() {
    let mut state = MemoryState::new();
    let actions = testing::react::<OrderLoyalty>(&mut state, &placed(300)).unwrap();
    let expected = LoyaltyCommand::ReservePoints {
        order_id: "o-7".into(),
        points: 300,
        order_stream: "order-o-7".into(),
    };
    assert_eq!(
        actions,
        [Action::send("loyalty", "loyalty-c-1", &expected).unwrap()]
    );
}

#[test]
fn an_order_without_points_is_confirmed_at_once() {
    let actions = testing::react::<OrderLoyalty>(&mut MemoryState::new(), &placed(0)).unwrap();
    assert_eq!(
        actions,
        [Action::send("order", "order-o-7", &OrderCommand::ConfirmOrder).unwrap()]
    );
}

#[test]
fn reserved_points_confirm_the_order() {
    let mut state = MemoryState::new();
    let reserve = testing::react::<OrderLoyalty>(&mut state, &placed(300)).unwrap();
    let earned = [(
        "PointsEarned".to_owned(),
        r#"{"points":500,"balance":500}"#.to_owned(),
    )];
    let reserved = decided::<loyalty::LoyaltyHandler>(&earned, only_send(&reserve)).unwrap();
    assert_eq!(reserved[0].0, "PointsReserved");
    let record = EventRecord::new(
        2,
        "loyalty-c-1",
        &reserved[0].0,
        &serde_json::from_str::<serde_json::Value>(&reserved[0].1).unwrap(),
    );
    let confirm = testing::react::<OrderLoyalty>(&mut state, &record).unwrap();
    let order_history = [(
        "OrderPlaced".to_owned(),
        r#"{"customer_id":"c-1","total_cents":1250,"points":300}"#.to_owned(),
    )];
    let confirmed = decided::<order::OrderHandler>(&order_history, only_send(&confirm)).unwrap();
    assert_eq!(
        confirmed,
        [("OrderConfirmed".to_owned(), "null".to_owned())]
    );
}

#[test]
fn a_rejected_reservation_cancels_the_order_with_the_reason() {
    let mut state = MemoryState::new();
    let reserve = testing::react::<OrderLoyalty>(&mut state, &placed(900)).unwrap();
    let earned = [(
        "PointsEarned".to_owned(),
        r#"{"points":500,"balance":500}"#.to_owned(),
    )];
    let reason = decided::<loyalty::LoyaltyHandler>(&earned, only_send(&reserve)).unwrap_err();
    assert_eq!(
        reason,
        "not enough points: balance is 500, order o-7 needs 900"
    );
    let compensation =
        testing::reject::<OrderLoyalty>(&mut state, only_send(&reserve), &reason).unwrap();
    let cancel = OrderCommand::CancelOrder {
        reason: reason.clone(),
    };
    assert_eq!(
        compensation,
        [Action::send("order", "order-o-7", &cancel).unwrap()]
    );
    let order_history = [(
        "OrderPlaced".to_owned(),
        r#"{"customer_id":"c-1","total_cents":1250,"points":900}"#.to_owned(),
    )];
    let cancelled =
        decided::<order::OrderHandler>(&order_history, only_send(&compensation)).unwrap();
    assert_eq!(cancelled[0].0, "OrderCancelled");
}

#[test]
fn other_rejections_are_only_logged() {
    let confirm = Action::send("order", "order-o-7", &OrderCommand::ConfirmOrder).unwrap();
    let Action::Send(confirm) = confirm else {
        unreachable!()
    };
    let actions = testing::reject::<OrderLoyalty>(
        &mut MemoryState::new(),
        &confirm,
        "order is already cancelled",
    )
    .unwrap();
    assert_eq!(actions, []);
}
