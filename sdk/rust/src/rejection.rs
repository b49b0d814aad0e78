//! `Rejection`: the reason a handler refuses a command, shown to whoever sent it.

use std::fmt;

/// A handler's refusal of a command: the reason is shown to the caller, and nothing is appended.
///
/// Build one with [`Rejection::new`], from a `&str` or `String` (so `Err("...".into())` works), or
/// return one with [`reject!`](crate::reject) and [`ensure!`](crate::ensure).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rejection {
    reason: String,
}

impl Rejection {
    /// A rejection with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
        }
    }

    /// The reason shown to the caller.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The reason, taken out of the rejection.
    pub fn into_reason(self) -> String {
        self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {}

impl From<&str> for Rejection {
    fn from(reason: &str) -> Self {
        Rejection::new(reason)
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection::new(reason)
    }
}

/// Returns `Err(Rejection)` from the enclosing function, with a reason formatted like
/// [`format!`].
///
/// ```
/// # use evhost_sdk::{reject, Rejection};
/// fn check_in(room: &str) -> Result<(), Rejection> {
///     if room.is_empty() {
///         reject!("room is empty; expected a room such as {:?}", "A-12");
///     }
///     Ok(())
/// }
/// assert_eq!(check_in("").unwrap_err().reason(), r#"room is empty; expected a room such as "A-12""#);
/// ```
#[macro_export]
macro_rules! reject {
    ($($reason:tt)+) => {
        return ::core::result::Result::Err($crate::Rejection::new(::std::format!($($reason)+)))
    };
}

/// Rejects the command, like [`reject!`](crate::reject), unless the condition holds.
///
/// ```
/// # use evhost_sdk::{ensure, Rejection};
/// fn set_triage(level: u8) -> Result<u8, Rejection> {
///     ensure!((1..=5).contains(&level), "triage level is {level}; expected 1 to 5");
///     Ok(level)
/// }
/// assert_eq!(set_triage(7).unwrap_err().reason(), "triage level is 7; expected 1 to 5");
/// ```
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($reason:tt)+) => {
        if !$condition {
            $crate::reject!($($reason)+);
        }
    };
}
