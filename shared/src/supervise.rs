//! The supervisor loop shared by the manager and the worker.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Set by a served attempt once it is connected and working.
#[derive(Debug, Clone, Default)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    /// Mark the service as started.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether any attempt has started.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Run `attempt` until it returns `Ok`, `stop` is cancelled, or it fails in a way that must not
/// be retried. A failure before the first successful start (broker or Redis unreachable, bad
/// settings) is returned at once, so a misconfigured process exits with a clear error; after
/// that, transient failures (a lost connection) are retried with exponential backoff.
///
/// # Errors
/// The first non-retryable failure.
pub async fn supervise<E, F, Fut>(
    stop: &CancellationToken,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<(), E>
where
    E: std::fmt::Display,
    F: FnMut(Started) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let started = Started::default();
    let mut backoff = Duration::from_millis(250);
    loop {
        match attempt(started.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if started.get() && is_transient(&e) && !stop.is_cancelled() => {
                warn!(error = %e, ?backoff, "lost connections; restarting");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run `work` (which watches `stop`) until it ends; when `shutdown` resolves first, cancel
/// `stop` and wait for `work` to wind down.
pub async fn until_shutdown<T>(
    stop: CancellationToken,
    shutdown: impl Future<Output = ()>,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        () = shutdown => {
            stop.cancel();
            work.await
        }
    }
}
