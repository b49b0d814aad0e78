//! Loyalty points, an example evhost plugin: the command handler `loyalty`, which owns the
//! streams `loyalty-<customer id>`, one balance per customer.
//!
//! - `EarnPoints {points}` (at least 1) → `PointsEarned {points, balance}`.
//! - `ReservePoints {order_id, points, order_stream?}` → `PointsReserved {order_id, points,
//!   balance, order_stream?}`: takes the points off the balance for the order. Rejected with
//!   `not enough points: balance is B, order O needs P` when the balance is short, and with
//!   `points for order O are already reserved` the second time for an order. `order_stream` is
//!   the order's stream, carried for the policy that asked (so that it can confirm or cancel).

use std::collections::BTreeMap;

use evhost_sdk::{CommandContext, Handler, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// The handler `loyalty`.
pub struct LoyaltyHandler;

/// A command to a customer's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LoyaltyCommand {
    EarnPoints {
        points: u64,
    },
    ReservePoints {
        order_id: String,
        points: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_stream: Option<String>,
    },
}

/// An event of a customer's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LoyaltyEvent {
    PointsEarned {
        points: u64,
        balance: u64,
    },
    PointsReserved {
        order_id: String,
        points: u64,
        balance: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_stream: Option<String>,
    },
}

/// A customer's points.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyState {
    pub balance: u64,
    /// Points reserved, by order.
    pub reserved: BTreeMap<String, u64>,
}

impl Handler for LoyaltyHandler {
    const NAME: &'static str = "loyalty";
    const CATEGORY: &'static str = "loyalty";
    const DESCRIPTION: &'static str = "Loyalty points per customer: earned, reserved for orders";
    type State = LoyaltyState;
    type Command = LoyaltyCommand;
    type Event = LoyaltyEvent;

    fn evolve(state: &mut LoyaltyState, event: LoyaltyEvent) {
        match event {
            LoyaltyEvent::PointsEarned { balance, .. } => state.balance = balance,
            LoyaltyEvent::PointsReserved {
                order_id,
                points,
                balance,
                ..
            } => {
                state.balance = balance;
                state.reserved.insert(order_id, points);
            }
        }
    }

    fn decide(
        state: &LoyaltyState,
        command: LoyaltyCommand,
        _context: &CommandContext,
    ) -> Result<Vec<LoyaltyEvent>, Rejection> {
        match command {
            LoyaltyCommand::EarnPoints { points } => {
                ensure!(points > 0, "points is 0; expected at least 1");
                let Some(balance) = state.balance.checked_add(points) else {
                    reject!(
                        "balance {} plus {points} does not fit in 64 bits",
                        state.balance
                    );
                };
                Ok(vec![LoyaltyEvent::PointsEarned { points, balance }])
            }
            LoyaltyCommand::ReservePoints {
                order_id,
                points,
                order_stream,
            } => {
                ensure!(
                    !order_id.trim().is_empty(),
                    "order_id is empty; expected a value"
                );
                ensure!(
                    !state.reserved.contains_key(&order_id),
                    "points for order {order_id} are already reserved"
                );
                ensure!(
                    state.balance >= points,
                    "not enough points: balance is {}, order {order_id} needs {points}",
                    state.balance
                );
                Ok(vec![LoyaltyEvent::PointsReserved {
                    balance: state.balance - points,
                    order_id,
                    points,
                    order_stream,
                }])
            }
        }
    }
}

evhost_sdk::export_handler!(LoyaltyHandler);

#[cfg(test)]
mod tests {
    use evhost_sdk::{CommandContext, Handler, replay};

    use super::{LoyaltyCommand, LoyaltyEvent, LoyaltyHandler};

    fn decide(
        events: Vec<LoyaltyEvent>,
        command: LoyaltyCommand,
    ) -> Result<Vec<LoyaltyEvent>, String> {
        let state = replay::<LoyaltyHandler>(events);
        LoyaltyHandler::decide(&state, command, &CommandContext::new("c", "loyalty-c-1"))
            .map_err(|rejection| rejection.into_reason())
    }

    fn reserve(order_id: &str, points: u64) -> LoyaltyCommand {
        LoyaltyCommand::ReservePoints {
            order_id: order_id.into(),
            points,
            order_stream: Some(format!("order-{order_id}")),
        }
    }

    const EARNED: LoyaltyEvent = LoyaltyEvent::PointsEarned {
        points: 500,
        balance: 500,
    };

    #[test]
    fn points_are_earned_and_reserved_once_per_order() {
        assert_eq!(
            decide(vec![], LoyaltyCommand::EarnPoints { points: 500 }).unwrap(),
            [EARNED]
        );
        let reserved = decide(vec![EARNED], reserve("o-1", 300)).unwrap();
        assert_eq!(
            reserved,
            [LoyaltyEvent::PointsReserved {
                order_id: "o-1".into(),
                points: 300,
                balance: 200,
                order_stream: Some("order-o-1".into())
            }]
        );
        let history: Vec<LoyaltyEvent> = [EARNED].into_iter().chain(reserved).collect();
        assert_eq!(
            decide(history.clone(), reserve("o-1", 100)).unwrap_err(),
            "points for order o-1 are already reserved"
        );
        assert_eq!(replay::<LoyaltyHandler>(history).balance, 200);
    }

    #[test]
    fn a_short_balance_rejects_the_reservation() {
        assert_eq!(
            decide(vec![EARNED], reserve("o-2", 501)).unwrap_err(),
            "not enough points: balance is 500, order o-2 needs 501"
        );
        assert_eq!(
            decide(vec![], LoyaltyCommand::EarnPoints { points: 0 }).unwrap_err(),
            "points is 0; expected at least 1"
        );
    }
}
