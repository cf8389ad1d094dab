//! Logging set-up for the binaries. Libraries only emit `tracing` events.
//!
//! Two kinds of broker-client (lapin) events are kept out of the log, because the processes
//! handle what they report and log it themselves at the level it deserves:
//!
//! - lapin warns of every message the broker returns as unroutable (target
//!   `lapin::returned_messages`). Every publish that can be returned is to an engine queue,
//!   and the manager sends a returned shard on to the shared queue; those warnings stay off
//!   unless `RUST_LOG` names the target ([`QUIET`]);
//! - lapin logs an error whenever the broker closes a channel. A close with `NOT_FOUND` always
//!   answers one of the process's own calls (a declare, bind, get or consume naming a queue
//!   that does not exist), and that call returns the error to its caller, which knows whether
//!   a missing queue is expected (an engine queue already handed off) or not
//!   ([`ExpectedNotFound`]). Closes with any other code are still logged.

use std::fmt;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Filter directives that come before `RUST_LOG` (or the default `info`), so that `RUST_LOG`
/// can still override them target by target.
const QUIET: &str = "lapin::returned_messages=error";

/// Install a subscriber: filter from `RUST_LOG` (default `info`), format from
/// `SHARDLINE_LOG_FORMAT` (`plain`, the default, or `json`), written to stderr.
pub fn init() {
    let json = std::env::var("SHARDLINE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter(
            std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref(),
        ))
        .with(ExpectedNotFound);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

/// The filter for `RUST_LOG` set to `user` ([`QUIET`] first); `info` when it is unset, empty
/// or invalid.
fn filter(user: Option<&str>) -> EnvFilter {
    let default = || EnvFilter::new(format!("{QUIET},info"));
    match user {
        Some(user) if !user.trim().is_empty() => {
            EnvFilter::try_new(format!("{QUIET},{user}")).unwrap_or_else(|_| default())
        }
        _ => default(),
    }
}

/// Drops lapin's error event for a channel the broker closed with `NOT_FOUND` (see the module
/// documentation). It reads the event's `error` field, which lapin fills with the
/// `AMQPError`'s `Debug`; should that format ever change, the events are kept, not lost.
#[derive(Debug, Clone, Copy)]
struct ExpectedNotFound;

impl<S: Subscriber> Layer<S> for ExpectedNotFound {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if event.metadata().target() != "lapin::channel" {
            return true;
        }
        let mut error = ErrorField(None);
        event.record(&mut error);
        let not_found = format!("kind: {:?}", AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
        !error.0.is_some_and(|e| e.contains(&not_found))
    }
}

/// The `Debug` of an event's `error` field.
struct ErrorField(Option<String>);

impl Visit for ErrorField {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "error" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use lapin::protocol::{AMQPError, AMQPHardError};
    use tracing::Level;

    use super::*;

    /// Messages of the events that reached it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message.0);
        }
    }

    impl Seen {
        fn messages(&self) -> Vec<String> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    /// lapin's report of a channel closed with `NOT_FOUND` is dropped; one closed for another
    /// reason is kept.
    #[test]
    fn drops_channel_closes_for_missing_queues_only() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(ExpectedNotFound)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let missing = AMQPError::new(AMQPSoftError::NOTFOUND.into(), "no queue".into());
            tracing::event!(target: "lapin::channel", Level::ERROR, channel = 1, error = ?missing, "not found");
            let refused = AMQPError::new(AMQPHardError::NOTALLOWED.into(), "refused".into());
            tracing::event!(target: "lapin::channel", Level::ERROR, channel = 1, error = ?refused, "refused");
        });
        assert_eq!(seen.messages(), ["refused"]);
    }

    /// lapin's warning of a returned message is off by default and when `RUST_LOG` does not
    /// name its target, on when it does; other lapin warnings stay on.
    #[test]
    fn quiets_returned_message_warnings_unless_asked() {
        for (user, want) in [
            (None, vec!["other"]),
            (Some("debug"), vec!["other"]),
            (
                Some("info,lapin::returned_messages=warn"),
                vec!["returned", "other"],
            ),
        ] {
            let seen = Seen::default();
            let subscriber = tracing_subscriber::registry()
                .with(filter(user))
                .with(seen.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::event!(target: "lapin::returned_messages", Level::WARN, "returned");
                tracing::event!(target: "lapin::channel", Level::WARN, "other");
            });
            assert_eq!(seen.messages(), want, "RUST_LOG={user:?}");
        }
    }
}
