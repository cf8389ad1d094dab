//! What the manager and worker services share: their error type and how it maps to an exit
//! code.

use std::process::ExitCode;

use crate::Error;

/// Exit code for invalid settings (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Why a service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Broker, Redis or encoding failure.
    #[error(transparent)]
    Shared(#[from] Error),
    /// The broker closed a consumer.
    #[error("a consumer was closed by the broker")]
    ConsumerClosed,
    /// A background task ended before it was told to (see [`crate::supervise::Background`]).
    #[error("{0}")]
    TaskEnded(String),
}

impl ServiceError {
    /// True for failures worth reconnecting after.
    pub fn is_transient(&self) -> bool {
        match self {
            ServiceError::Shared(e) => e.is_transient(),
            ServiceError::ConsumerClosed | ServiceError::TaskEnded(_) => true,
            ServiceError::Config(_) => false,
        }
    }

    /// True for invalid settings, found by the service itself or by the shared library (a
    /// bad URL list, a queue of another type than `--queue-type`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ServiceError::Config(_) | ServiceError::Shared(Error::Config(_))
        )
    }
}

impl From<lapin::Error> for ServiceError {
    fn from(e: lapin::Error) -> Self {
        ServiceError::Shared(e.into())
    }
}

/// Report how a service ended on stderr and turn it into an exit code: 0 after a clean stop,
/// 64 for invalid settings, 1 otherwise.
pub fn exit_code(program: &str, outcome: Result<(), ServiceError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_config() => {
            eprintln!("{program}: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}
