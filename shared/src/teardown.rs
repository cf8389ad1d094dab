//! Removing a whole namespace: every queue, exchange and Redis key of one deployment.
//!
//! For tests, benchmarks and retiring a deployment; never while its services run (their
//! in-flight requests would be lost).

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

use std::collections::BTreeSet;

use crate::Error;
use crate::kind::Registry;
use crate::store::Store;

/// Delete the namespace's queues (fixed ones, the shared queue of every built-in or advertised
/// kind, every engine queue Redis knows of, and
/// `extra_queues`), its exchanges, then its Redis keys. Queues and exchanges that do not
/// exist are skipped.
///
/// # Errors
/// The broker or Redis unreachable.
pub async fn remove_namespace(
    conn: &lapin::Connection,
    store: &Store,
    extra_queues: &[String],
) -> Result<(), Error> {
    let n = store.names();
    let engines = store.known_engines().await?;
    let kinds: BTreeSet<String> = Registry::builtin()
        .names()
        .into_iter()
        .map(str::to_owned)
        .chain(store.adverts().await?.into_keys())
        .filter(|k| crate::kind::check_name(k).is_ok())
        .collect();
    let queues = [n.requests_queue(), n.dead_queue()]
        .into_iter()
        .chain(kinds.iter().map(|k| n.kind_queue(k)))
        .chain(engines.iter().map(|e| n.engine_queue(e)))
        .chain(extra_queues.iter().cloned());
    for q in queues {
        // A failed delete closes the channel: use a fresh one for each.
        let ch = conn.create_channel().await?;
        if ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .is_ok()
        {
            let _ = ch.close(200, "done".into()).await;
        }
    }
    for x in [
        n.requests_exchange(),
        n.results_exchange(),
        n.dead_exchange(),
        n.engines_exchange(),
    ] {
        let ch = conn.create_channel().await?;
        if ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .is_ok()
        {
            let _ = ch.close(200, "done".into()).await;
        }
    }
    store.delete_namespace().await
}
