//! Log lines in the host's log, tagged there with the plugin's name and version.
//!
//! In a component these call the `log.write` import (every world has it); natively (unit tests,
//! benchmarks) they write `[level] message` to standard error.

/// How severe a line is.
#[derive(Debug, Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes a step-by-step detail.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Writes a detail for diagnosing.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes a normal event worth a line.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes something unexpected that the plugin handled.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes something that failed.
pub fn error(message: &str) {
    write(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn write(level: Level, message: &str) {
    use crate::__private::bindings::handler::evhost::plugin::log::{
        self as host, Level as HostLevel,
    };
    let level = match level {
        Level::Trace => HostLevel::Trace,
        Level::Debug => HostLevel::Debug,
        Level::Info => HostLevel::Info,
        Level::Warn => HostLevel::Warn,
        Level::Error => HostLevel::Error,
    };
    host::write(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    let level = match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    eprintln!("[{level}] {message}");
}
