//! How many shards the worker takes from the broker ahead of its slots (the channel's AMQP
//! prefetch, shared by its queues on classic queues).
//!
//! - **Shallow**, one per slot (the default, and whenever a shard runs on a blocking thread):
//!   a shard the worker cannot start yet stays ready in its queue, where the managers' depth
//!   samples see it and, on the shared queue, another worker can take it.
//! - **Deep**, [`DEEP_FACTOR`] per slot, once [`DEEPEN_AFTER`] shards in a row ran inline
//!   (each took microseconds, see [`shardline::inline`]): a slot then mostly waits for the broker
//!   round trip between an ack and the next delivery, and a shard waiting here behind a few
//!   microsecond shards delays nobody. One shard on a blocking thread makes it shallow again.
//!
//! On quorum queues the prefetch is per consumer (they refuse a channel-wide one) and a new
//! value would only reach consumers started after it, so it stays shallow: [`Prefetch::fixed`].
//! Each of the worker's queues (its engine queue, each kind's shared queue) then has its own
//! window of one per slot, so the worker may hold up to slots × (1 + kinds) shards; its slots
//! still bound how many run.

use std::sync::Mutex;

use tokio::sync::watch;

/// Prefetch per slot while shards run inline.
pub const DEEP_FACTOR: u16 = 4;
/// Inline shards in a row before the prefetch deepens.
pub const DEEPEN_AFTER: u32 = 32;

/// Decides the prefetch from the shards the worker runs; the serve loop applies what it
/// publishes on the receiver.
#[derive(Debug)]
pub struct Prefetch {
    adapts: bool,
    shallow: u16,
    deep: u16,
    state: Mutex<State>,
    tx: watch::Sender<u16>,
}

#[derive(Debug, Default)]
struct State {
    inline_streak: u32,
    deep: bool,
}

impl Prefetch {
    /// A controller for `slots` slots, starting shallow; the receiver sees each new prefetch.
    pub fn new(slots: u16) -> (Self, watch::Receiver<u16>) {
        Self::build(slots, true)
    }

    /// A controller that keeps the shallow prefetch whatever the shards do.
    pub fn fixed(slots: u16) -> (Self, watch::Receiver<u16>) {
        Self::build(slots, false)
    }

    fn build(slots: u16, adapts: bool) -> (Self, watch::Receiver<u16>) {
        let (tx, rx) = watch::channel(slots);
        let p = Prefetch {
            adapts,
            shallow: slots,
            deep: slots.saturating_mul(DEEP_FACTOR),
            state: Mutex::default(),
            tx,
        };
        (p, rx)
    }

    /// The prefetch to start with.
    pub fn initial(&self) -> u16 {
        self.shallow
    }

    /// A shard ran, inline or not.
    pub fn observe(&self, inline: bool) {
        if !self.adapts {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let want_deep = if inline {
            s.inline_streak = s.inline_streak.saturating_add(1);
            s.deep || s.inline_streak >= DEEPEN_AFTER
        } else {
            s.inline_streak = 0;
            false
        };
        if want_deep != s.deep {
            s.deep = want_deep;
            let n = if want_deep { self.deep } else { self.shallow };
            self.tx.send_replace(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deep only after a run of inline shards; one shard on the pool makes it shallow at once.
    #[test]
    fn deepens_after_a_streak_and_not_before() {
        let (p, rx) = Prefetch::new(2);
        assert_eq!((p.initial(), *rx.borrow()), (2, 2));
        for _ in 1..DEEPEN_AFTER {
            p.observe(true);
        }
        assert_eq!(*rx.borrow(), 2);
        p.observe(true);
        assert_eq!(*rx.borrow(), 2 * DEEP_FACTOR);
        p.observe(false);
        assert_eq!(*rx.borrow(), 2);
        p.observe(true);
        assert_eq!(*rx.borrow(), 2, "the streak starts over");
    }

    /// A fixed prefetch stays shallow through any run of inline shards.
    #[test]
    fn fixed_stays_shallow() {
        let (p, rx) = Prefetch::fixed(2);
        for _ in 0..DEEPEN_AFTER * 2 {
            p.observe(true);
        }
        assert_eq!(*rx.borrow(), 2);
    }

    /// Nothing is published while the prefetch stays what it is.
    #[test]
    fn publishes_only_changes() {
        let (p, mut rx) = Prefetch::new(3);
        rx.mark_unchanged();
        p.observe(false);
        assert!(!rx.has_changed().expect("open"));
    }
}
