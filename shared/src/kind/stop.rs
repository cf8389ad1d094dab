//! Asking a running shard to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::KindError;

/// A flag the worker raises when a running shard's work is no longer wanted (its request was
/// cancelled or ended, its deadline passed) or when the shard ran past the worker's time limit.
///
/// Kinds that run long check it between steps with [`Stop::check`] and return its error; a
/// kind that never checks simply runs to the end. Cheap to clone; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that is not raised.
    pub fn new() -> Self {
        Stop::default()
    }

    /// Raise the flag.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the flag is raised.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(KindError::Stopped)` once the flag is raised: `stop.check()?` between steps.
    ///
    /// # Errors
    /// [`KindError::Stopped`] when the flag is raised.
    pub fn check(&self) -> Result<(), KindError> {
        if self.requested() {
            Err(KindError::Stopped)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clones share the flag, and `check` turns it into the kind error.
    #[test]
    fn clones_share_the_flag() {
        let stop = Stop::new();
        let seen = stop.clone();
        assert!(seen.check().is_ok());
        stop.request();
        assert!(seen.requested());
        assert_eq!(seen.check(), Err(KindError::Stopped));
    }
}
