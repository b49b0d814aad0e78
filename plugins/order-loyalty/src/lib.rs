//! Paying orders with loyalty points, an example evhost plugin: the policy `order-loyalty`, a
//! small saga between the handlers `order` and `loyalty`.
//!
//! - `OrderPlaced` with `points` > 0 on `order-<order id>`: sends `ReservePoints {order_id,
//!   points, order_stream}` to the handler `loyalty` on `loyalty-<customer id>`. The order's
//!   stream travels in the command's data, because a rejected command is all `on_rejected` gets.
//!   An order without points needs nothing from loyalty: it sends `ConfirmOrder` at once.
//! - `PointsReserved` on `loyalty-*` (with an `order_stream`): sends `ConfirmOrder` to the
//!   handler `order` on that stream.
//! - A rejected `ReservePoints` (not enough points, say): compensates by sending
//!   `CancelOrder {reason}` to `order` on the order's stream, with the rejection's reason.
//!   Other rejections are logged.

use evhost_sdk::{Action, Envelope, Failure, Policy, RejectedCommand, State, log};
use serde::{Deserialize, Serialize};

/// The policy `order-loyalty`.
pub struct OrderLoyalty;

/// The events it reacts to, from the categories `order` and `loyalty`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderLoyaltyEvent {
    OrderPlaced {
        customer_id: String,
        #[serde(default)]
        points: u64,
    },
    PointsReserved {
        #[serde(default)]
        order_stream: Option<String>,
    },
    #[serde(other)]
    Other,
}

/// The commands it sends to `loyalty`; it decodes its own rejected commands with it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LoyaltyCommand {
    ReservePoints {
        order_id: String,
        points: u64,
        order_stream: String,
    },
}

/// The commands it sends to `order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderCommand {
    ConfirmOrder,
    CancelOrder { reason: String },
}

impl Policy for OrderLoyalty {
    const NAME: &'static str = "order-loyalty";
    const DESCRIPTION: &'static str = "Reserves an order's loyalty points; confirms the order, or cancels it when they fall short";
    const CATEGORIES: &'static [&'static str] = &["order", "loyalty"];
    const EVENT_TYPES: &'static [&'static str] = &["OrderPlaced", "PointsReserved"];
    type Event = OrderLoyaltyEvent;

    fn react(
        _state: &mut State<'_>,
        event: Envelope<'_, OrderLoyaltyEvent>,
    ) -> Result<Vec<Action>, Failure> {
        let stream = event.stream().to_owned();
        let order_id = event.entity_id().to_owned();
        match event.into_event() {
            OrderLoyaltyEvent::OrderPlaced { points: 0, .. } => Ok(vec![Action::send(
                "order",
                stream,
                &OrderCommand::ConfirmOrder,
            )?]),
            OrderLoyaltyEvent::OrderPlaced {
                customer_id,
                points,
            } => Ok(vec![Action::send(
                "loyalty",
                format!("loyalty-{customer_id}"),
                &LoyaltyCommand::ReservePoints {
                    order_id,
                    points,
                    order_stream: stream,
                },
            )?]),
            OrderLoyaltyEvent::PointsReserved {
                order_stream: Some(order_stream),
            } => Ok(vec![Action::send(
                "order",
                order_stream,
                &OrderCommand::ConfirmOrder,
            )?]),
            // Points reserved by someone else, for an order of their own.
            OrderLoyaltyEvent::PointsReserved { order_stream: None } | OrderLoyaltyEvent::Other => {
                Ok(Vec::new())
            }
        }
    }

    fn on_rejected(
        _state: &mut State<'_>,
        command: RejectedCommand<'_>,
        reason: &str,
    ) -> Result<Vec<Action>, Failure> {
        if command.command_type() != "ReservePoints" {
            log::warn(&format!(
                "{} on {} was rejected: {reason}",
                command.command_type(),
                command.stream_id()
            ));
            return Ok(Vec::new());
        }
        let LoyaltyCommand::ReservePoints { order_stream, .. } = command.decode()?;
        Ok(vec![Action::send(
            "order",
            order_stream,
            &OrderCommand::CancelOrder {
                reason: reason.to_owned(),
            },
        )?])
    }
}

evhost_sdk::export_policy!(OrderLoyalty);

#[cfg(test)]
mod tests;
