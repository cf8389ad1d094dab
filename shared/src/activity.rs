//! Activity over time, for the dashboard's charts: requests accepted, rejected and ended (by
//! outcome) per [`BUCKET`], kept in Redis so that a restarted dashboard or manager loses none
//! of the last hours.
//!
//! Each process counts in memory, per namespace (an atomic increment, nothing on the way to
//! Redis), and every [`BUCKET`] appends one entry with its counts to the stream
//! `<ns>:activity`, trimmed to [`KEEP`] by entry time. The dashboard reads the stream's last
//! hour and adds up the entries of each bucket across processes.
//!
//! The ids of the requests a process finished go along in the same flush, into the index of
//! recently finished requests (`<ns>:finished`, scored by time, trimmed to [`FINISHED_FOR`]),
//! so the dashboard can list them without a keyspace scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use uuid::Uuid;

use crate::message::Status;
use crate::now_ms;
use crate::store::Store;

/// Length of one point of the series.
pub const BUCKET: Duration = Duration::from_secs(10);
/// How long entries are kept.
pub const KEEP: Duration = Duration::from_secs(2 * 3600);
/// How long finished requests stay in their index (as long as their records live).
pub const FINISHED_FOR: Duration = Store::DEFAULT_GRACE;
/// Finished ids one process keeps between two flushes; more are left out of the index (they
/// still count in the series).
pub const FINISHED_PER_FLUSH: usize = 20_000;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A manager accepted a request.
    Accepted,
    /// A manager rejected a request.
    Rejected,
    /// A result was published `completed`.
    Completed,
    /// A result was published `partial`.
    Partial,
    /// A result was published `failed`.
    Failed,
    /// A result was published `timed_out`.
    TimedOut,
    /// A result was published `cancelled`.
    Cancelled,
}

impl Event {
    /// Every event, in the order of the counters.
    pub const ALL: [Event; 7] = [
        Event::Accepted,
        Event::Rejected,
        Event::Completed,
        Event::Partial,
        Event::Failed,
        Event::TimedOut,
        Event::Cancelled,
    ];

    /// The field name in the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::Rejected => "rejected",
            Event::Completed => "completed",
            Event::Partial => "partial",
            Event::Failed => "failed",
            Event::TimedOut => "timed_out",
            Event::Cancelled => "cancelled",
        }
    }

    /// The event of a field name; `None` for anything else.
    pub fn from_field(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a published result's status (`rejected` answers count as rejections).
    pub fn of(status: Status) -> Event {
        match status {
            Status::Completed => Event::Completed,
            Status::Partial => Event::Partial,
            Status::Failed => Event::Failed,
            Status::TimedOut => Event::TimedOut,
            Status::Cancelled => Event::Cancelled,
            Status::Rejected => Event::Rejected,
        }
    }
}

/// One namespace's counts in this process since the last flush. Shared by everything in the
/// process that serves the namespace ([`Counters::of`]), so that services embedded side by
/// side in one process (tests, benchmarks) count each namespace apart.
#[derive(Debug, Default)]
pub struct Counters {
    counts: [AtomicU64; 7],
    finished: Mutex<Vec<(Uuid, u64)>>,
}

impl Counters {
    /// The counters of `namespace` in this process.
    pub fn of(namespace: &str) -> Arc<Counters> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Counters>>>> = OnceLock::new();
        ALL.get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(namespace.to_owned())
            .or_default()
            .clone()
    }

    /// Count one `event`.
    pub fn count(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Request `id` was finished (its result published) now.
    pub fn finished(&self, id: Uuid) {
        let mut f = self.lock_finished();
        if f.len() < FINISHED_PER_FLUSH {
            f.push((id, now_ms()));
        }
    }

    fn lock_finished(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, u64)>> {
        self.finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take the counts since the last call (zeroing them), as (event, count) for those above 0.
    fn take(&self) -> Vec<(Event, u64)> {
        Event::ALL
            .into_iter()
            .filter_map(|e| {
                let n = self.counts[e as usize].swap(0, Ordering::Relaxed);
                (n > 0).then_some((e, n))
            })
            .collect()
    }

    fn put_back(&self, counts: Vec<(Event, u64)>, finished: Vec<(Uuid, u64)>) {
        for (e, n) in counts {
            self.counts[e as usize].fetch_add(n, Ordering::Relaxed);
        }
        let mut f = self.lock_finished();
        let room = FINISHED_PER_FLUSH.saturating_sub(f.len());
        f.extend(finished.into_iter().take(room));
    }
}

/// Append this process's counts of the store's namespace every [`BUCKET`] until cancelled
/// (and once more then). Counts that cannot be written are put back for the next try.
pub async fn keep_flushing(store: Store, stop: CancellationToken) {
    let counters = Counters::of(store.names().namespace());
    let mut tick = tokio::time::interval(BUCKET);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let counts = counters.take();
        let finished = std::mem::take(&mut *counters.lock_finished());
        if !(counts.is_empty() && finished.is_empty())
            && let Err(error) = store
                .append_activity(bucket_of(now_ms()), &counts, &finished)
                .await
        {
            debug!(%error, "writing the activity counts failed; keeping them for the next try");
            counters.put_back(counts, finished);
        }
        if stopping {
            return;
        }
    }
}

/// The start (epoch s) of the bucket holding `ms`.
pub fn bucket_of(ms: u64) -> u64 {
    let width = BUCKET.as_secs();
    ms / 1000 / width * width
}

/// One point of the series: a bucket's start (epoch s) and its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Bucket start, epoch seconds.
    pub t: u64,
    /// Counts by event.
    pub counts: BTreeMap<Event, u64>,
}

/// Add up `entries` (bucket start, counts) into one point per bucket from `from` to `to`
/// (epoch s, both bucket starts), empty buckets included.
pub fn series(entries: &[(u64, Vec<(Event, u64)>)], from: u64, to: u64) -> Vec<Point> {
    let width = BUCKET.as_secs();
    let mut points: BTreeMap<u64, Point> = (from / width..=to / width)
        .map(|i| {
            (
                i * width,
                Point {
                    t: i * width,
                    counts: BTreeMap::new(),
                },
            )
        })
        .collect();
    for (t, counts) in entries {
        if let Some(p) = points.get_mut(t) {
            for (e, n) in counts {
                *p.counts.entry(*e).or_default() += n;
            }
        }
    }
    points.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of one bucket from several processes add up; empty buckets are points of zero;
    /// entries outside the range are left out.
    #[test]
    fn adds_up_buckets_across_processes() {
        let entries = vec![
            (100, vec![(Event::Completed, 2)]),
            (100, vec![(Event::Completed, 3), (Event::Failed, 1)]),
            (120, vec![(Event::Accepted, 4)]),
            (500, vec![(Event::Accepted, 9)]),
        ];
        let s = series(&entries, 100, 120);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].t, 100);
        assert_eq!(s[0].counts.get(&Event::Completed), Some(&5));
        assert_eq!(s[0].counts.get(&Event::Failed), Some(&1));
        assert!(s[1].counts.is_empty());
        assert_eq!(s[2].counts.get(&Event::Accepted), Some(&4));
    }

    /// Every event reads back from its field name, and every status maps to an event.
    #[test]
    fn events_round_trip_and_cover_every_status() {
        for e in Event::ALL {
            assert_eq!(Event::from_field(e.as_str()), Some(e));
        }
        assert_eq!(Event::from_field("t"), None);
        assert_eq!(Event::of(Status::TimedOut), Event::TimedOut);
        assert_eq!(bucket_of(1_234_567), 1_230);
    }
}
