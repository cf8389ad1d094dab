//! The states of a request's record (`meta.state`), as the Lua scripts write them.

use std::fmt;
use std::str::FromStr;

/// Where a request is in its life.
///
/// `running` → `finalizing` (the last shard is in; a worker holds the finalizer lease) →
/// `published`; or `running` → `failing` (a shard failed for good, the deadline passed, a
/// cancel) → `published`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Shards are being processed.
    Running,
    /// Every shard is in; the final result is being merged and published.
    Finalizing,
    /// The request ends early; its terminal result is being published.
    Failing,
    /// The final result was published (confirmed by the broker).
    Published,
}

impl RequestState {
    /// The stored form, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Running => "running",
            RequestState::Finalizing => "finalizing",
            RequestState::Failing => "failing",
            RequestState::Published => "published",
        }
    }

    /// Whether the request is closing: its result is being published by a lease holder.
    pub fn is_closing(self) -> bool {
        matches!(self, RequestState::Finalizing | RequestState::Failing)
    }
}

/// A `meta.state` value that is not one of [`RequestState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for RequestState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(RequestState::Running),
            "finalizing" => Ok(RequestState::Finalizing),
            "failing" => Ok(RequestState::Failing),
            "published" => Ok(RequestState::Published),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state reads back from its stored form, and nothing else parses.
    #[test]
    fn states_parse_strictly() {
        for s in [
            RequestState::Running,
            RequestState::Finalizing,
            RequestState::Failing,
            RequestState::Published,
        ] {
            assert_eq!(s.as_str().parse(), Ok(s));
        }
        for bad in ["", "Running", "stored", "done"] {
            assert_eq!(
                bad.parse::<RequestState>(),
                Err(UnknownState(bad.to_owned()))
            );
        }
    }
}
