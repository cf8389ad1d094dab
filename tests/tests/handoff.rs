//! Handing a stopping engine's queue to its kinds' shared queues while managers still route
//! shards to it: every shard the broker confirmed must be found afterwards, in its kind's queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use shardline::amqp::{self, Published};
use shardline::handoff::By;
use shardline_tests::Cluster;

/// Rounds of publish-while-handing-off; each round stops a fresh engine.
const ROUNDS: usize = 4;
/// Pause between a publisher's shards: slower than the drain, so the queue empties and the
/// hand-off reaches its delete while shards are still arriving.
const PACE: Duration = Duration::from_millis(2);

/// What one publisher saw: the ids the broker confirmed as stored, and those it returned.
#[derive(Default)]
struct Sent {
    stored: BTreeSet<u64>,
    returned: BTreeSet<u64>,
}

/// Publish numbered shards to `engine` every [`PACE`] until `stop` is set, as a manager whose
/// view of the engines is stale would.
async fn publish_until(c: &Cluster, engine: &str, first: u64, stop: Arc<AtomicBool>) -> Sent {
    let ch = c.channel().await;
    let mut sent = Sent::default();
    let mut tick = tokio::time::interval(PACE);
    let mut id = first;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let props = BasicProperties::default()
            .with_message_id(id.to_string().into())
            .with_type("wordcount".into());
        let published = amqp::publish_to_engine(&ch, &c.names, engine, &id.to_be_bytes(), props)
            .await
            .expect("publish");
        match published {
            Published::Stored => sent.stored.insert(id),
            Published::Returned(_) => sent.returned.insert(id),
        };
        id += 1;
    }
    sent
}

/// A cluster with neither manager nor worker, its topology declared, a channel to set up
/// engine queues on and a connection to hand them off with.
async fn bare_cluster() -> (Cluster, lapin::Channel, lapin::Connection) {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let setup = c.channel().await;
    amqp::declare_topology(&setup, &c.names)
        .await
        .expect("topology");
    let conn = amqp::connect(&c.connect.amqp_url, "hand-off test")
        .await
        .expect("connect");
    (c, setup, conn)
}

/// Shards a manager publishes to an engine queue during its hand-off are either confirmed and
/// then found in the shared queue, or returned to the publisher; the broker never confirms a
/// shard that the queue's deletion dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_under_publishing_loses_no_confirmed_shard() {
    let (mut c, setup, conn) = bare_cluster().await;
    let mut engines = Vec::new();
    let mut all = Sent::default();
    for round in 0..ROUNDS {
        let engine = format!("e{round}");
        amqp::declare_engine_queue(&setup, &c.names, &engine)
            .await
            .expect("engine queue");
        engines.push(c.names.engine_queue(&engine));
        let stop = Arc::new(AtomicBool::new(false));
        let first = round as u64 * 1_000_000;
        let publisher = publish_until(&c, &engine, first, stop.clone());
        let hand_off = async {
            // Some shards queued first, then the hand-off runs under the stream.
            tokio::time::sleep(PACE * 50).await;
            let outcome = shardline::handoff::handoff(&conn, &c.names, &engine, By::Engine).await;
            // A few more shards after the queue is gone: they must come back.
            tokio::time::sleep(PACE * 50).await;
            stop.store(true, Ordering::SeqCst);
            outcome
        };
        let (sent, outcome) = tokio::join!(publisher, hand_off);
        let (_, deleted) = outcome.expect("hand-off");
        assert!(deleted, "round {round}: the engine queue was left in place");
        assert!(
            !sent.returned.is_empty(),
            "round {round}: no shard published after the delete came back"
        );
        all.stored.extend(sent.stored);
        all.returned.extend(sent.returned);
    }
    let found: BTreeSet<u64> = c
        .drain(&c.names.kind_queue("wordcount"))
        .await
        .iter()
        .filter_map(|d| Some(u64::from_be_bytes(d.data.as_slice().try_into().ok()?)))
        .collect();
    let lost: Vec<_> = all.stored.difference(&found).collect();
    assert!(
        lost.is_empty(),
        "{} of {} confirmed shards vanished with the engine queue: {lost:?}",
        lost.len(),
        all.stored.len()
    );
    let _ = conn.close(200, "done".into()).await;
    c.cleanup(&engines).await;
}

/// Handing off an engine whose queue is already gone (its own hand-off deleted it) is done:
/// nothing moved, and the queue counts as deleted rather than the hand-off failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_of_a_queue_already_gone_is_done() {
    let (mut c, _, conn) = bare_cluster().await;
    let outcome = shardline::handoff::handoff(&conn, &c.names, "gone", By::Engine).await;
    assert_eq!(outcome.expect("hand-off"), (0, true));
    let _ = conn.close(200, "done".into()).await;
    c.cleanup(&[]).await;
}

/// A hand-off sends each shard to its own kind's shared queue (by its `type`), and
/// dead-letters a message that names no valid kind instead of guessing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_sorts_shards_by_kind() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let ch = c.channel().await;
    amqp::declare_topology(&ch, &c.names)
        .await
        .expect("topology");
    amqp::declare_engine_queue(&ch, &c.names, "going")
        .await
        .expect("engine queue");
    for (body, kind) in [
        ("a", Some("sort")),
        ("b", Some("wordcount")),
        ("c", None),
        ("d", Some("Bad Kind")),
    ] {
        let props = kind.map_or_else(BasicProperties::default, |k| {
            BasicProperties::default().with_type(k.into())
        });
        let published = amqp::publish_to_engine(&ch, &c.names, "going", body.as_bytes(), props)
            .await
            .expect("publish");
        assert!(matches!(published, Published::Stored));
    }
    let conn = amqp::connect(&c.connect.amqp_url, "hand-off test")
        .await
        .expect("connect");
    let (moved, deleted) = shardline::handoff::handoff(&conn, &c.names, "going", By::Engine)
        .await
        .expect("hand-off");
    assert_eq!((moved, deleted), (2, true));
    let bodies = |ds: Vec<lapin::message::Delivery>| -> Vec<Vec<u8>> {
        ds.into_iter().map(|d| d.data).collect()
    };
    assert_eq!(
        bodies(c.drain(&c.names.kind_queue("sort")).await),
        [b"a".to_vec()]
    );
    assert_eq!(
        bodies(c.drain(&c.names.kind_queue("wordcount")).await),
        [b"b".to_vec()]
    );
    let mut dead = bodies(c.drain(&c.names.dead_queue()).await);
    dead.sort();
    assert_eq!(dead, [b"c".to_vec(), b"d".to_vec()]);
    c.shutdown().await;
}
