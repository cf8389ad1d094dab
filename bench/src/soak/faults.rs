//! Fault injection: at exponential intervals, one of
//!
//! - **kill-worker**: SIGKILL a random worker; after 0.5–5 s start a replacement under a new id
//!   (the dead engine's queue is left for the managers to reap);
//! - **term-worker**: SIGTERM a random worker (it finishes its running shards), then restart it
//!   under the same id after 0.5–3 s;
//! - **kill-manager**: SIGKILL a random manager, restart it after 0.5–3 s.
//!
//! Weights 40/30/30. Faults run one at a time; the fleet lock is not held during the pauses,
//! so the supervisor keeps watching the other processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::fleet::{Fleet, Role, TERM_WAIT};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    KillWorker,
    TermWorker,
    KillManager,
}

impl FaultKind {
    pub(crate) const ALL: [FaultKind; 3] = [
        FaultKind::KillWorker,
        FaultKind::TermWorker,
        FaultKind::KillManager,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker (SIGKILL, new id)",
            FaultKind::TermWorker => "term-worker (SIGTERM, same id)",
            FaultKind::KillManager => "kill-manager (SIGKILL)",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::TermWorker => "term-worker",
            FaultKind::KillManager => "kill-manager",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// Since the start of the load.
    pub(crate) at: Duration,
    pub(crate) kind: FaultKind,
    pub(crate) target: String,
    /// The process started in its place.
    pub(crate) replacement: String,
    /// Anything unusual (slow stop, failed restart).
    pub(crate) note: Option<String>,
}

impl std::fmt::Display for Fault {
    /// `kind: target → replacement (note)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} → {}",
            self.kind.short(),
            self.target,
            self.replacement
        )?;
        match &self.note {
            Some(n) => write!(f, " ({n})"),
            None => Ok(()),
        }
    }
}

/// Faults so far, shared with the progress lines and the report.
pub(crate) type FaultLog = Arc<Mutex<Vec<Fault>>>;

/// How many faults of each kind `log` holds.
pub(crate) fn counts(log: &FaultLog) -> Vec<(FaultKind, usize)> {
    let faults = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    FaultKind::ALL
        .iter()
        .map(|k| (*k, faults.iter().filter(|f| f.kind == *k).count()))
        .collect()
}

/// Inject faults with mean interval `mean` until `stop` turns true; a fault under way when it
/// does is finished (its restart included).
pub(crate) async fn inject(
    fleet: Arc<tokio::sync::Mutex<Fleet>>,
    log: FaultLog,
    seed: u64,
    mean: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_fa17);
    loop {
        let u: f64 = rng.random();
        let wait = mean.mul_f64(-(1.0 - u).ln());
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let roll: f64 = rng.random();
        let kind = if roll < 0.4 {
            FaultKind::KillWorker
        } else if roll < 0.7 {
            FaultKind::TermWorker
        } else {
            FaultKind::KillManager
        };
        let at = t0.elapsed();
        if let Some(f) = one(&fleet, kind, &mut rng, at).await {
            eprintln!("soak: +{:.0}s fault {f}", at.as_secs_f64());
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(f);
        }
    }
}

async fn one(
    fleet: &tokio::sync::Mutex<Fleet>,
    kind: FaultKind,
    rng: &mut StdRng,
    at: Duration,
) -> Option<Fault> {
    let role = if kind == FaultKind::KillManager {
        Role::Manager
    } else {
        Role::Worker
    };
    let victim = fleet.lock().await.take(role, rng)?;
    let target = victim.id.clone();
    let mut note = None;
    let pause = match kind {
        FaultKind::KillWorker => {
            victim.kill().await;
            rng.random_range(500..=5_000)
        }
        FaultKind::TermWorker => {
            let (status, killed) = victim.term(TERM_WAIT).await;
            if killed {
                note = Some(format!("ignored SIGTERM for {TERM_WAIT:?}; killed"));
            } else if let Some(s) = status.filter(|s| !s.success()) {
                note = Some(format!("exited with {s} after SIGTERM"));
            }
            rng.random_range(500..=3_000)
        }
        FaultKind::KillManager => {
            victim.kill().await;
            rng.random_range(500..=3_000)
        }
    };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let mut f = fleet.lock().await;
    let replacement = match kind {
        FaultKind::KillWorker => f.fresh_worker_id(),
        FaultKind::TermWorker | FaultKind::KillManager => target.clone(),
    };
    let started = match role {
        Role::Manager => f.start_manager(&replacement),
        Role::Worker => f.start_worker(&replacement),
    };
    if let Err(e) = started {
        note = Some(format!("restart failed: {e:#}"));
    }
    if let Some(n) = &note {
        f.note(format!("+{:.0}s {target}: {n}", at.as_secs_f64()));
    }
    Some(Fault {
        at,
        kind,
        target,
        replacement,
        note,
    })
}
