//! The one error type of the shared crate, and the typed reasons a request is rejected.

use std::fmt;

/// Errors raised by the shared library: wire decoding, kinds of work, brokers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request could not be accepted; it is answered with an error result and dead-lettered.
    #[error("request rejected ({reason}): {message}")]
    Rejected {
        /// Why, as a stable code.
        reason: RejectReason,
        /// Human-readable detail.
        message: String,
    },
    /// A kind's `split`, `process` or `merge` failed.
    #[error(transparent)]
    Kind(#[from] crate::kind::KindError),
    /// MessagePack could not be encoded.
    #[error("encoding MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// MessagePack could not be decoded.
    #[error("decoding MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// JSON could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The AMQP broker failed or refused an operation.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker did not confirm (nacked) a publish.
    #[error("broker nacked a publish to {0}")]
    Nacked(String),
    /// Redis failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Stored state did not have the expected shape.
    #[error("corrupt state for request {id}: {detail}")]
    Corrupt {
        /// The request whose Redis keys are malformed.
        id: uuid::Uuid,
        /// What was wrong.
        detail: String,
    },
    /// A Lua script answered with something it never returns (a script and a binary of
    /// different versions, or a bug).
    #[error("unexpected reply from the {script} script: {reply}")]
    Script {
        /// Which script.
        script: &'static str,
        /// What it returned.
        reply: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Something this step needs is missing for now (a recorded request's kind that no live
    /// worker serves, a broker node that does not answer); a later try may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Build a rejection.
    pub fn rejected(reason: RejectReason, message: impl Into<String>) -> Self {
        Error::Rejected {
            reason,
            message: message.into(),
        }
    }

    /// True when retrying the same operation later may succeed (broker or Redis trouble),
    /// false when the input itself is at fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Amqp(_) | Error::Nacked(_) | Error::Redis(_) | Error::Unavailable(_) => true,
            Error::Join(e) => e.is_cancelled(),
            _ => false,
        }
    }
}

/// Why a request was rejected; the code is stable and appears in error results and in the
/// `x-shardline-reason` header of dead-lettered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The body is not valid MessagePack/JSON, or a required field is missing.
    Malformed,
    /// No kind of that name is registered.
    UnknownKind,
    /// The payload has nothing to work on.
    EmptyPayload,
    /// The message body is larger than the configured limit, or carries more shards than the
    /// manager runs for one request.
    Oversized,
    /// The options are out of range or of the wrong type.
    BadOptions,
    /// The payload does not fit the kind's input type.
    InvalidPayload,
    /// The request was valid but could not be handled (corrupt state, a bug); see the detail.
    Internal,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Malformed,
        RejectReason::UnknownKind,
        RejectReason::EmptyPayload,
        RejectReason::Oversized,
        RejectReason::BadOptions,
        RejectReason::InvalidPayload,
        RejectReason::Internal,
    ];

    /// The reason of a stable code; `None` for anything else.
    pub fn from_code(code: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The stable code, e.g. `unknown_kind`.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::EmptyPayload => "empty_payload",
            RejectReason::Oversized => "oversized",
            RejectReason::BadOptions => "bad_options",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::Internal => "internal",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason reads back from its code, and nothing else reads as a reason.
    #[test]
    fn reasons_round_trip_through_their_codes() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
        assert_eq!(RejectReason::from_code("Unknown_Kind"), None);
        assert_eq!(RejectReason::from_code(""), None);
    }
}
