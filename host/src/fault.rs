//! Fault points for crash tests: `HOST_FAULT=before_commit|after_commit|after_effects` makes
//! the process abort (no cleanup, like `kill -9`) the first time it reaches that point.
//!
//! Compiled in always and inert unless the variable is set, so the end-to-end tests drive the
//! very binary that ships. The points are the worst instants for a unit of work:
//!
//! - `before_commit`: a batch has been written inside its transaction, not committed.
//! - `after_commit`: the batch is committed; no caller has been answered and the dispatcher
//!   has not been woken.
//! - `after_effects`: a subscriber's handler succeeded; its effects and its inbox mark (one
//!   write) have not been submitted.

use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub const FAULT_ENV: &str = "HOST_FAULT";

/// Where the process may be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    BeforeCommit,
    AfterCommit,
    AfterEffects,
}

impl FaultPoint {
    const ALL: [Self; 3] = [Self::BeforeCommit, Self::AfterCommit, Self::AfterEffects];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BeforeCommit => "before_commit",
            Self::AfterCommit => "after_commit",
            Self::AfterEffects => "after_effects",
        }
    }
}

/// The armed fault point, read from [`FAULT_ENV`] once.
///
/// # Errors
/// Names the accepted values when the variable holds anything else.
pub fn armed() -> Result<Option<FaultPoint>, String> {
    static ARMED: OnceLock<Result<Option<FaultPoint>, String>> = OnceLock::new();
    ARMED
        .get_or_init(|| match std::env::var(FAULT_ENV) {
            Err(_) => Ok(None),
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => FaultPoint::ALL
                .into_iter()
                .find(|p| p.as_str() == value)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{FAULT_ENV}=`{value}` is not a fault point: expected one of {}",
                        FaultPoint::ALL.map(FaultPoint::as_str).join(", ")
                    )
                }),
        })
        .clone()
}

/// Aborts the process when `point` is the armed fault point; does nothing otherwise.
pub fn hit(point: FaultPoint) {
    if armed() == Ok(Some(point)) {
        eprintln!("{FAULT_ENV}={}: aborting the process", point.as_str());
        std::process::abort();
    }
}
