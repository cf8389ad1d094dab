//! The supervisor loop shared by the manager and the worker, and the set of background tasks
//! one attempt runs.

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

    /// Whether this attempt has started.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// First pause before restarting after a lost connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Run `attempt` until it returns `Ok`, `stop` is cancelled, or it fails in a way that must not
/// be retried. A failure before the first successful start (broker or Redis unreachable, bad
/// settings) is returned at once, so a misconfigured process exits with a clear error; after
/// that, transient failures (a lost connection) are retried with exponential backoff, which
/// starts over after each attempt that got started: a process that loses a working connection
/// (its broker node went away) retries within [`FIRST_BACKOFF`], however many times that
/// happened before, and only attempts that keep failing to connect wait longer.
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
    let mut ever_started = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Started::default();
        let outcome = attempt(started.clone()).await;
        if started.get() {
            ever_started = true;
            backoff = FIRST_BACKOFF;
        }
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if ever_started && is_transient(&e) && !stop.is_cancelled() => {
                warn!(error = %e, ?backoff, "lost connections; restarting");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
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

/// The background tasks of one served attempt, started and stopped together and watched: a
/// task that ends before it is told to stop (it returned, or panicked) is reported by
/// [`Background::ended`], so that the attempt can end and be restarted instead of running on
/// without it. Dropping the set stops every task.
#[derive(Debug, Default)]
pub struct Background {
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<&'static str>,
}

impl Background {
    /// The token every task must watch, and return when it is cancelled.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Start a task under `name` (for the report when it ends early).
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            task.await;
            name
        });
    }

    /// Wait until a task ends on its own, and say which and how. Pending while every task
    /// runs (forever if there are none).
    pub async fn ended(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(Ok(name)) => format!("background task {name} returned"),
            Some(Err(e)) if e.is_panic() => format!(
                "a background task panicked: {}",
                crate::panic_message(&*e.into_panic())
            ),
            Some(Err(e)) => format!("a background task was cancelled: {e}"),
            None => std::future::pending().await,
        }
    }

    /// Tell every task to stop and wait for them, at most `within`; the rest are aborted.
    pub async fn stop(mut self, within: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            warn!(?within, "background tasks still running; aborting them");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backoff grows while attempts fail to start and starts over after an attempt that
    /// started: the pauses before attempts 2, 3 and 4 are 250, 500 and 250 ms.
    #[tokio::test(start_paused = true)]
    async fn backoff_starts_over_after_a_started_attempt() {
        let stop = CancellationToken::new();
        let calls = std::sync::Mutex::new(Vec::new());
        let outcome = supervise(
            &stop,
            |_: &String| true,
            |started| {
                let mut calls = calls.lock().expect("lock");
                calls.push(tokio::time::Instant::now());
                let n = calls.len();
                async move {
                    match n {
                        1 | 3 => {
                            started.set();
                            Err("lost".to_owned())
                        }
                        2 => Err("unreachable".to_owned()),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        assert!(outcome.is_ok());
        let calls = calls.lock().expect("lock");
        let gaps: Vec<u128> = calls
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(gaps, [250, 500, 250]);
    }

    /// A task that panics or returns before it is told to stop is reported, by name when it
    /// returned; tasks that watch the token stop when told.
    #[tokio::test]
    async fn a_task_that_ends_early_is_reported() {
        let mut set = Background::default();
        let token = set.token();
        set.spawn("watcher", async move { token.cancelled().await });
        set.spawn("quitter", async {});
        assert_eq!(set.ended().await, "background task quitter returned");
        set.spawn("crasher", async { panic!("boom") });
        let report = set.ended().await;
        assert!(report.contains("panicked: boom"), "{report}");
        let still = tokio::time::timeout(Duration::from_millis(50), set.ended()).await;
        assert!(still.is_err(), "the watcher ended on its own");
        set.stop(Duration::from_secs(5)).await;
    }
}
