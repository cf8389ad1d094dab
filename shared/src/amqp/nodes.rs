//! The broker's addresses: one URL, or a RabbitMQ cluster's nodes as a comma-separated list.
//!
//! - **One URL**: lapin's automatic recovery reconnects to it and replays the topology.
//! - **Several**: a connection goes to the first node that answers, starting from a random
//!   one so that processes spread over the cluster. It does not recover by itself: when its
//!   node goes away the process's supervisor restarts its work (see
//!   [`crate::supervise::supervise`]), which connects again from the next node. Recovering on
//!   the same address would wait out a node that may stay down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::types::LongString;
use lapin::{Connection, ConnectionProperties};
use tracing::{info, warn};

use crate::Error;

/// The node the next connection tries first, per process (starts at a random node).
static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// How long a connection to one node of several may take before the next is tried (a node
/// behind a dropped route would otherwise hold the process for the system's TCP timeout).
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker URLs of `SHARDLINE_AMQP_URL`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers(Vec<String>);

impl Brokers {
    /// Parse one URL or a comma-separated list (spaces around entries are allowed).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty entry or a URL that is not `amqp://` or `amqps://`.
    pub fn parse(urls: &str) -> Result<Self, Error> {
        let list: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
        for url in &list {
            if url.is_empty() {
                return Err(Error::Config(format!(
                    "the broker URL list {urls:?} has an empty entry"
                )));
            }
            if url.parse::<lapin::uri::AMQPUri>().is_err() {
                return Err(Error::Config(format!(
                    "{url:?} in the broker URL list is not an amqp:// or amqps:// URL"
                )));
            }
        }
        Ok(Brokers(list))
    }

    /// The URLs, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// Connect to the first node that answers, starting after the one this process used last.
    ///
    /// # Errors
    /// No node answers or accepts the credentials (the last node's error).
    pub async fn connect(&self, name: &str) -> Result<Connection, Error> {
        if let [url] = self.0.as_slice() {
            return connect_recovering(url, name).await;
        }
        let n = self.0.len();
        let start = match NEXT.load(Ordering::Relaxed) {
            usize::MAX => rand::random_range(0..n),
            next => next,
        };
        let mut last = Error::Config("no broker URL".into());
        for i in 0..n {
            let at = (start + i) % n;
            let url = &self.0[at];
            let props = ConnectionProperties::default()
                .with_connection_name(LongString::from(name.to_owned()));
            let tried = tokio::time::timeout(NODE_CONNECT_TIMEOUT, Connection::connect(url, props));
            let error = match tried.await {
                Ok(Ok(conn)) => {
                    NEXT.store((at + 1) % n, Ordering::Relaxed);
                    info!(node = %redacted(url), "connected to the broker");
                    return Ok(conn);
                }
                Ok(Err(e)) => Error::from(e),
                Err(_) => Error::Unavailable(format!(
                    "no answer from {} in {NODE_CONNECT_TIMEOUT:?}",
                    redacted(url)
                )),
            };
            warn!(node = %redacted(url), %error, "broker node unreachable; trying the next");
            last = error;
        }
        NEXT.store((start + 1) % n, Ordering::Relaxed);
        Err(last)
    }
}

/// One node with lapin's automatic recovery on (it reconnects, then replays exchanges,
/// queues, bindings, consumers, QoS and confirm mode).
///
/// With recovery on, lapin also retries the *first* connect for minutes; a process started
/// against a wrong URL should fail at once instead, so one plain connection without retries
/// is tried (and closed) first.
async fn connect_recovering(url: &str, name: &str) -> Result<Connection, Error> {
    let probe = Connection::connect(url, ConnectionProperties::default()).await?;
    let _ = probe.close(200, "probe".into()).await;
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(name.to_owned()))
        .enable_auto_recover();
    Ok(Connection::connect(url, props).await?)
}

/// A URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One URL or a list parses; an empty entry or a URL of another scheme is a clear error.
    #[test]
    fn parses_lists_strictly() {
        let one = Brokers::parse("amqp://guest:guest@127.0.0.1:5672/%2f").expect("one");
        assert_eq!(one.urls().len(), 1);
        let three = Brokers::parse("amqp://a:5700, amqp://a:5701,amqp://a:5702").expect("three");
        assert_eq!(three.urls()[1], "amqp://a:5701");
        for bad in [
            "",
            "amqp://a:5700,",
            "redis://a:6379",
            "amqp://a:5700,,amqp://b",
        ] {
            let err = Brokers::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }

    /// Logs never carry the password.
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5700/%2f"),
            "amqp://guest@127.0.0.1:5700/%2f"
        );
        assert_eq!(redacted("amqp://127.0.0.1:5700"), "amqp://127.0.0.1:5700");
    }
}
