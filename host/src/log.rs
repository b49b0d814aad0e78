//! The host's log: one line per record on standard error, with a UTC timestamp and a level.
//!
//! `EVHOST_LOG` (`error`, `warn`, `info`, `debug`) sets the least severe level written; `info` by
//! default. Standard output is kept for what the CLI prints for people and scripts.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

fn threshold() -> Level {
    static THRESHOLD: OnceLock<Level> = OnceLock::new();
    *THRESHOLD.get_or_init(|| match std::env::var("EVHOST_LOG").as_deref() {
        Ok("error") => Level::Error,
        Ok("warn") => Level::Warn,
        Ok("debug") => Level::Debug,
        _ => Level::Info,
    })
}

pub(crate) fn enabled(level: Level) -> bool {
    level <= threshold()
}

pub(crate) fn write(level: Level, message: std::fmt::Arguments<'_>) {
    if enabled(level) {
        eprintln!(
            "{} {:5} {message}",
            crate::store::now_rfc3339(),
            level.label()
        );
    }
}

macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}
#[allow(unused_macros)]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}

#[allow(unused_imports)]
pub(crate) use {debug, error, info, warning};
