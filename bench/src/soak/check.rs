//! The ledger check: for every submitted id, how many terminal results arrived.
//!
//! - **lost**: an id whose publish was confirmed and that got no result;
//! - **duplicate**: an id with more than one result a consumer would accept: any second copy,
//!   except copies that say they may repeat an earlier one (`x-shardline-attempt` above 1) and
//!   repeat it byte for byte, which a consumer deduplicates on `message_id` (those are counted
//!   apart as **re-driven copies**, with the same detail);
//! - **wrong**: a first delivery whose output differs from the local computation.
//!
//! Also: statuses overall and per class, shards per request per class, statuses a class should
//! not end in (with error codes and sample ids), what the cancels answered, when requests cut
//! into wide fan-outs were in flight (to tell which faults struck one), and the latency of
//! completed requests from their scheduled send time.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use shardline::message::Status;
use tokio::time::Instant;
use uuid::Uuid;

use super::ledger::{Delivery, Ledger, Stray};
use super::mix::{Class, WIDE_SHARDS};

/// Statuses in report order.
pub(crate) const STATUSES: [Status; 6] = [
    Status::Completed,
    Status::Partial,
    Status::Failed,
    Status::TimedOut,
    Status::Cancelled,
    Status::Rejected,
];

/// Whether a consumer following the contract keeps exactly one of these copies: they are all
/// the same bytes, and all but at most one say they may repeat an earlier copy.
fn deduplicable(copies: &[Delivery], identical: bool) -> bool {
    identical
        && copies
            .iter()
            .filter(|d| d.attempt.is_none_or(|n| n <= 1))
            .count()
            <= 1
}

fn slot(s: Status) -> usize {
    STATUSES.iter().position(|x| *x == s).unwrap_or(0)
}

/// One class's outcomes.
#[derive(Debug, Clone)]
pub(crate) struct ClassRow {
    pub(crate) class: Class,
    pub(crate) submitted: usize,
    /// First-delivery statuses, indexed like [`STATUSES`].
    pub(crate) statuses: [usize; 6],
    pub(crate) none: usize,
    /// Shards of the answered requests.
    pub(crate) shards: Shards,
}

/// How many shards a set of requests was cut into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shards {
    /// Requests counted.
    pub(crate) requests: usize,
    /// Their shards in all.
    pub(crate) total: u64,
    /// Fewest of one request (`None` before any).
    pub(crate) min: Option<u32>,
    /// Most of one request.
    pub(crate) max: u32,
}

impl Shards {
    /// Count one request cut into `n` shards.
    pub(crate) fn add(&mut self, n: u32) {
        self.requests += 1;
        self.total += u64::from(n);
        self.min = Some(self.min.map_or(n, |m| m.min(n)));
        self.max = self.max.max(n);
    }

    /// Mean shards per request, once any was counted.
    pub(crate) fn mean(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.total as f64 / self.requests as f64)
    }
}

/// When requests cut into a wide fan-out (at least the least of [`WIDE_SHARDS`], whatever
/// their class) were in flight: from the scheduled send to the first result, in seconds after
/// the start of the load.
#[derive(Debug, Clone, Default)]
pub(crate) struct FanOuts {
    windows: Vec<(f64, f64)>,
}

impl FanOuts {
    /// Fewest shards of a wide fan-out.
    pub(crate) fn threshold() -> u32 {
        *WIDE_SHARDS.start()
    }

    /// Record a request in flight from `sent_s` to `ended_s`, cut into `shards`.
    fn add(&mut self, sent_s: f64, ended_s: f64, shards: u32) {
        if shards >= Self::threshold() {
            self.windows.push((sent_s, ended_s));
        }
    }

    /// Requests recorded.
    pub(crate) fn count(&self) -> usize {
        self.windows.len()
    }

    /// Whether one was in flight `at_s` seconds after the start of the load.
    pub(crate) fn in_flight(&self, at_s: f64) -> bool {
        self.windows
            .iter()
            .any(|(sent, ended)| (*sent..=*ended).contains(&at_s))
    }
}

/// An id without a result.
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    pub(crate) id: Uuid,
    pub(crate) class: Class,
    pub(crate) kind: &'static str,
    /// Seconds after the start of the load it was sent.
    pub(crate) sent_s: f64,
    pub(crate) cancel: Option<String>,
}

/// An id with several deliveries.
#[derive(Debug, Clone)]
pub(crate) struct Duplicate {
    pub(crate) id: Uuid,
    pub(crate) class: Class,
    pub(crate) kind: &'static str,
    pub(crate) statuses: Vec<&'static str>,
    /// Every copy has the same body.
    pub(crate) identical: bool,
    /// Copies the broker flagged as redelivered to the soak consumer.
    pub(crate) redelivered: usize,
    /// The publication attempt each copy carried (`-` for none).
    pub(crate) attempts: Vec<String>,
    /// Seconds from the first copy to the last.
    pub(crate) spread_s: f64,
    pub(crate) sent_s: f64,
}

/// A request that ended other than `completed` in a class that should complete.
#[derive(Debug, Clone)]
pub(crate) struct Odd {
    pub(crate) id: Uuid,
    pub(crate) class: Class,
    pub(crate) kind: &'static str,
    pub(crate) sent_s: f64,
    /// Seconds from the scheduled send to the result.
    pub(crate) took_s: f64,
    pub(crate) status: &'static str,
    pub(crate) error: String,
}

/// An output that differs from the local computation.
#[derive(Debug, Clone)]
pub(crate) struct Wrong {
    pub(crate) id: Uuid,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    pub(crate) why: String,
}

/// Latency of completed requests, ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) n: u64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// Everything the ledger says.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) submitted: usize,
    pub(crate) deliveries: usize,
    /// Publishes that failed: (id, why, got a result anyway).
    pub(crate) publish_failed: Vec<(Uuid, String, bool)>,
    pub(crate) by_status: [usize; 6],
    pub(crate) by_class: Vec<ClassRow>,
    /// The answered requests cut into wide fan-outs.
    pub(crate) fan_outs: FanOuts,
    pub(crate) lost: Vec<Lost>,
    pub(crate) duplicates: Vec<Duplicate>,
    /// Ids whose extra copies are all marked re-driven and identical (deduplicable).
    pub(crate) redriven: Vec<Duplicate>,
    pub(crate) wrong: Vec<Wrong>,
    pub(crate) strays: Vec<Stray>,
    /// (class, status, error code) a class should not end in → (count, sample ids).
    pub(crate) unexpected: BTreeMap<(&'static str, &'static str, String), (usize, Vec<Uuid>)>,
    /// The first of those requests, one by one.
    pub(crate) odd: Vec<Odd>,
    /// What cancel calls answered → count.
    pub(crate) cancel_answers: BTreeMap<String, usize>,
    pub(crate) latency: Option<Latency>,
}

impl Check {
    /// Check the ledger; `t0` is the start of the load.
    pub(crate) fn of(ledger: &Ledger, t0: Instant) -> Self {
        let mut c = Check {
            submitted: 0,
            deliveries: 0,
            publish_failed: Vec::new(),
            by_status: [0; 6],
            by_class: Class::ALL
                .iter()
                .map(|class| ClassRow {
                    class: *class,
                    submitted: 0,
                    statuses: [0; 6],
                    none: 0,
                    shards: Shards::default(),
                })
                .collect(),
            fan_outs: FanOuts::default(),
            lost: Vec::new(),
            duplicates: Vec::new(),
            redriven: Vec::new(),
            wrong: Vec::new(),
            strays: Vec::new(),
            unexpected: BTreeMap::new(),
            odd: Vec::new(),
            cancel_answers: BTreeMap::new(),
            latency: None,
        };
        let mut hist = Histogram::<u64>::new_with_bounds(1, 24 * 3_600_000_000, 3).ok();
        let mut strays = Vec::new();
        ledger.visit(
            |id, e| {
                c.submitted += 1;
                c.deliveries += e.deliveries.len();
                let sent_s = e.at.saturating_duration_since(t0).as_secs_f64();
                let row = c.by_class.iter_mut().find(|r| r.class == e.class);
                if let Some(why) = &e.publish_error {
                    c.publish_failed
                        .push((id, why.clone(), !e.deliveries.is_empty()));
                }
                if let Some(a) = &e.cancel {
                    *c.cancel_answers.entry(a.clone()).or_default() += 1;
                }
                let Some(first) = e.deliveries.first() else {
                    if let Some(r) = row {
                        r.submitted += 1;
                        r.none += 1;
                    }
                    if e.publish_error.is_none() {
                        c.lost.push(Lost {
                            id,
                            class: e.class,
                            kind: e.kind,
                            sent_s,
                            cancel: e.cancel.clone(),
                        });
                    }
                    return;
                };
                if let Some(r) = row {
                    r.submitted += 1;
                    r.statuses[slot(first.status)] += 1;
                    r.shards.add(first.shards);
                }
                c.fan_outs.add(
                    sent_s,
                    first.at.saturating_duration_since(t0).as_secs_f64(),
                    first.shards,
                );
                c.by_status[slot(first.status)] += 1;
                if first.status != Status::Completed && e.class.expects_completion() {
                    let key = (
                        e.class.name(),
                        first.status.as_str(),
                        first.error_code.clone().unwrap_or_default(),
                    );
                    let (n, ids) = c.unexpected.entry(key).or_default();
                    *n += 1;
                    if ids.len() < 5 {
                        ids.push(id);
                    }
                    if c.odd.len() < 50 {
                        c.odd.push(Odd {
                            id,
                            class: e.class,
                            kind: e.kind,
                            sent_s,
                            took_s: first.at.saturating_duration_since(e.at).as_secs_f64(),
                            status: first.status.as_str(),
                            error: format!(
                                "{}: {}",
                                first.error_code.as_deref().unwrap_or("-"),
                                first.error_message.as_deref().unwrap_or("-")
                            ),
                        });
                    }
                }
                if let Some(why) = &first.wrong {
                    c.wrong.push(Wrong {
                        id,
                        kind: e.kind,
                        status: first.status.as_str(),
                        why: why.clone(),
                    });
                }
                if first.status == Status::Completed
                    && let Some(h) = hist.as_mut()
                {
                    let us = first.at.saturating_duration_since(e.at).as_micros();
                    let _ = h.record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                }
                if e.deliveries.len() > 1 {
                    let last = e.deliveries.iter().map(|d| d.at).max().unwrap_or(first.at);
                    let identical = e
                        .deliveries
                        .iter()
                        .all(|d| d.fingerprint == first.fingerprint);
                    let dup = Duplicate {
                        id,
                        class: e.class,
                        kind: e.kind,
                        statuses: e.deliveries.iter().map(|d| d.status.as_str()).collect(),
                        identical,
                        redelivered: e.deliveries.iter().filter(|d| d.redelivered).count(),
                        attempts: e
                            .deliveries
                            .iter()
                            .map(|d| d.attempt.map_or("-".to_owned(), |n| n.to_string()))
                            .collect(),
                        spread_s: last.saturating_duration_since(first.at).as_secs_f64(),
                        sent_s,
                    };
                    if deduplicable(&e.deliveries, identical) {
                        c.redriven.push(dup);
                    } else {
                        c.duplicates.push(dup);
                    }
                }
            },
            &mut strays,
        );
        c.strays = strays;
        c.latency = hist.filter(|h| !h.is_empty()).map(|h| {
            let ms = |v: u64| v as f64 / 1_000.0;
            Latency {
                n: h.len(),
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            }
        });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(attempt: Option<u64>, fingerprint: u64) -> Delivery {
        Delivery {
            status: Status::Completed,
            at: Instant::now(),
            redelivered: false,
            fingerprint,
            attempt,
            error_code: None,
            error_message: None,
            shards: 1,
            wrong: None,
        }
    }

    /// A first copy plus identical copies marked re-driven is what a consumer deduplicates.
    #[test]
    fn marked_identical_copies_are_deduplicable() {
        let copies = [copy(Some(1), 7), copy(Some(2), 7), copy(Some(3), 7)];
        assert!(deduplicable(&copies, true));
    }

    /// Shard counts keep their mean and extremes; an empty set has no mean or minimum.
    #[test]
    fn shard_counts_keep_mean_and_extremes() {
        let mut s = Shards::default();
        assert_eq!((s.mean(), s.min, s.max), (None, None, 0));
        for n in [64, 0, 256] {
            s.add(n);
        }
        assert_eq!((s.mean(), s.min, s.max), (Some(320.0 / 3.0), Some(0), 256));
    }

    /// A time is inside a wide fan-out only between the send and the result of a request cut
    /// into enough shards.
    #[test]
    fn fan_outs_cover_their_flight_only() {
        let mut f = FanOuts::default();
        f.add(10.0, 12.5, FanOuts::threshold());
        f.add(20.0, 30.0, FanOuts::threshold() - 1);
        assert_eq!(f.count(), 1);
        assert!(f.in_flight(10.0) && f.in_flight(12.5));
        assert!(!f.in_flight(9.9) && !f.in_flight(12.6) && !f.in_flight(25.0));
    }

    /// Two copies that both claim to be first, or that differ, are real duplicates.
    #[test]
    fn unmarked_or_different_copies_are_duplicates() {
        assert!(!deduplicable(&[copy(Some(1), 7), copy(Some(1), 7)], true));
        assert!(!deduplicable(&[copy(Some(1), 7), copy(None, 7)], true));
        assert!(!deduplicable(&[copy(Some(1), 7), copy(Some(2), 8)], false));
    }
}
