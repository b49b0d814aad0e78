//! Crash points for tests of what the host promises across a crash: when the environment
//! variable `EVHOST_CRASH_AT` names a point, the process aborts there, as a `kill -9` would stop
//! it at that moment. Unset (always, outside such tests), a crash point costs one comparison.

use std::sync::OnceLock;

/// Aborts the process if `EVHOST_CRASH_AT` names `point`.
pub fn crash_point(point: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let crash_at = CRASH_AT.get_or_init(|| std::env::var("EVHOST_CRASH_AT").ok());
    if crash_at.as_deref() == Some(point) {
        tracing::error!("crashing at {point}, as EVHOST_CRASH_AT asks");
        std::process::abort();
    }
}
