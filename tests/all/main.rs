//! End-to-end tests of evhost. Every test starts the real `evhost` binary on a free port with a
//! fresh data directory and talks to it over HTTP, the way a client application would.
//!
//! All topics are compiled into one test binary (one module per topic) so that the binary and the
//! helpers are built once. Run them with `cargo test -p evhost --test all`.

mod auth;
mod bad_input;
mod cli;
mod commands;
mod compatibility;
mod demo;
mod durability;
mod guides;
mod hardening;
mod harness;
mod hostile;
mod idempotency;
mod languages;
mod logs;
mod model;
mod plugins;
mod policies;
mod postgres;
mod projections;
mod race;
mod reads;
mod replays;
mod sdk_guests;
mod sse;
mod versions;
