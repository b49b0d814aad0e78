//! The engine of evhost: what the host does with stored events and deployed plugins.
//!
//! [`commands`] runs commands through handlers; [`plugins`] keeps the deployed plugins and their
//! versions; [`projections`] and [`policies`] run the background work of those plugins;
//! [`replays`] dry-runs a version over history. The engine reaches events through the store
//! contract (`evhost-store`) and plugins through the runtime (`evhost-runtime`); it knows nothing
//! of HTTP or of which storage engine holds the data.

pub mod commands;
pub mod delivery;
pub mod faults;
pub mod metadata;
pub mod placement;
pub mod plugins;
pub mod policies;
pub mod projections;
pub mod replays;
pub mod wait;
