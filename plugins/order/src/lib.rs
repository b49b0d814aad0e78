//! Orders, an example evhost plugin: the command handler `order`, which owns the streams
//! `order-<order id>`. The policy `order-loyalty` pays an order's points with the customer's
//! loyalty points, and cancels the order when they do not suffice.
//!
//! - `PlaceOrder {customer_id, total_cents, points}` → `OrderPlaced {customer_id, total_cents,
//!   points}`; rejected once placed (`order is already placed`).
//! - `ConfirmOrder` → `OrderConfirmed`; rejected unless placed, and once cancelled or confirmed.
//! - `CancelOrder {reason}` → `OrderCancelled {reason}`; rejected unless placed
//!   (`order is not placed`), once cancelled (`order is already cancelled`) and once confirmed.

use evhost_sdk::{CommandContext, Handler, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// The handler `order`.
pub struct OrderHandler;

/// A command to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderCommand {
    /// Places the order; `points` of it are to be paid with loyalty points.
    PlaceOrder {
        customer_id: String,
        total_cents: u64,
        #[serde(default)]
        points: u64,
    },
    ConfirmOrder,
    CancelOrder {
        reason: String,
    },
}

/// An event of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    OrderPlaced {
        customer_id: String,
        total_cents: u64,
        points: u64,
    },
    OrderConfirmed,
    OrderCancelled {
        reason: String,
    },
}

/// Where an order stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    #[default]
    New,
    Placed,
    Confirmed,
    Cancelled,
}

impl Handler for OrderHandler {
    const NAME: &'static str = "order";
    const CATEGORY: &'static str = "order";
    const DESCRIPTION: &'static str = "Orders: placed, then confirmed or cancelled";
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn evolve(state: &mut OrderState, event: OrderEvent) {
        *state = match event {
            OrderEvent::OrderPlaced { .. } => OrderState::Placed,
            OrderEvent::OrderConfirmed => OrderState::Confirmed,
            OrderEvent::OrderCancelled { .. } => OrderState::Cancelled,
        };
    }

    fn decide(
        state: &OrderState,
        command: OrderCommand,
        _context: &CommandContext,
    ) -> Result<Vec<OrderEvent>, Rejection> {
        match (command, *state) {
            (
                OrderCommand::PlaceOrder {
                    customer_id,
                    total_cents,
                    points,
                },
                OrderState::New,
            ) => {
                ensure!(
                    !customer_id.trim().is_empty(),
                    "customer_id is empty; expected a value"
                );
                Ok(vec![OrderEvent::OrderPlaced {
                    customer_id,
                    total_cents,
                    points,
                }])
            }
            (OrderCommand::PlaceOrder { .. }, _) => reject!("order is already placed"),
            (_, OrderState::New) => reject!("order is not placed"),
            (_, OrderState::Cancelled) => reject!("order is already cancelled"),
            (OrderCommand::ConfirmOrder, OrderState::Placed) => {
                Ok(vec![OrderEvent::OrderConfirmed])
            }
            (OrderCommand::ConfirmOrder, _) => reject!("order is already confirmed"),
            (OrderCommand::CancelOrder { reason }, OrderState::Placed) => {
                Ok(vec![OrderEvent::OrderCancelled { reason }])
            }
            (OrderCommand::CancelOrder { .. }, _) => {
                reject!("order is confirmed; it cannot be cancelled")
            }
        }
    }
}

evhost_sdk::export_handler!(OrderHandler);

#[cfg(test)]
mod tests {
    use evhost_sdk::{CommandContext, Handler, replay};

    use super::{OrderCommand, OrderEvent, OrderHandler, OrderState};

    fn decide(events: Vec<OrderEvent>, command: OrderCommand) -> Result<Vec<OrderEvent>, String> {
        let state = replay::<OrderHandler>(events);
        OrderHandler::decide(&state, command, &CommandContext::new("c", "order-1"))
            .map_err(|rejection| rejection.into_reason())
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            customer_id: "c-1".into(),
            total_cents: 1250,
            points: 300,
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::CancelOrder {
            reason: "not enough points".into(),
        }
    }

    #[test]
    fn orders_are_placed_then_confirmed_or_cancelled() {
        let place = OrderCommand::PlaceOrder {
            customer_id: "c-1".into(),
            total_cents: 1250,
            points: 300,
        };
        assert_eq!(decide(vec![], place.clone()).unwrap(), [placed()]);
        assert_eq!(
            decide(vec![placed()], place).unwrap_err(),
            "order is already placed"
        );
        assert_eq!(
            decide(vec![placed()], OrderCommand::ConfirmOrder).unwrap(),
            [OrderEvent::OrderConfirmed]
        );
        assert_eq!(
            decide(vec![placed()], cancel()).unwrap(),
            [OrderEvent::OrderCancelled {
                reason: "not enough points".into()
            }]
        );
        assert_eq!(replay::<OrderHandler>([placed()]), OrderState::Placed);
    }

    #[test]
    fn cancellations_need_a_placed_order() {
        assert_eq!(decide(vec![], cancel()).unwrap_err(), "order is not placed");
        let cancelled = OrderEvent::OrderCancelled { reason: "x".into() };
        assert_eq!(
            decide(vec![placed(), cancelled.clone()], cancel()).unwrap_err(),
            "order is already cancelled"
        );
        assert_eq!(
            decide(vec![placed(), cancelled], OrderCommand::ConfirmOrder).unwrap_err(),
            "order is already cancelled"
        );
        let confirmed = vec![placed(), OrderEvent::OrderConfirmed];
        assert_eq!(
            decide(confirmed.clone(), cancel()).unwrap_err(),
            "order is confirmed; it cannot be cancelled"
        );
        assert_eq!(
            decide(confirmed, OrderCommand::ConfirmOrder).unwrap_err(),
            "order is already confirmed"
        );
    }
}
