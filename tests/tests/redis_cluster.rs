//! The whole pipeline on a real Redis Cluster (3 primaries, 3 replicas, from
//! `scripts/redis-cluster.sh`): every built-in kind, end to end, equals the unsharded answer,
//! every key a request leaves is cleaned up on every primary, and writes wait for replicas
//! (and stop waiting when none answers).

use std::time::Duration;

use shardline::store::{RequestState, Settled};
use shardline_tests::{Cluster, eventually, redis_cluster};

const WAIT: Duration = Duration::from_secs(60);

/// Held by a test while it has a replica stopped, so that two tests of this binary never
/// stop (and resume) the same replica at once.
static REPLICA_STOPPED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Each built-in kind, cut into several shards whose records spread over the cluster's
/// primaries, completes with the unsharded answer, and its record says published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_kind_completes_on_a_redis_cluster() {
    let c = Cluster::builder()
        .redis_url(redis_cluster::urls())
        .redis_wait_replicas(1)
        .manager(|m| m.shard_size_scale = 0.02)
        .start()
        .await;
    for (kind, r) in shardline_tests::each_builtin_kind_sharded(&c, 20, WAIT).await {
        // The record says published once the broker has confirmed the result, which can be
        // just after the client has it.
        let meta = eventually("the record marked published", WAIT, || async {
            let meta = c.store.meta(r.request_id).await.ok()??;
            (meta.state == RequestState::Published).then_some(meta)
        })
        .await;
        assert_eq!((meta.done, meta.total), (r.shards, r.shards), "{kind}");
    }
    c.shutdown().await;
}

/// Deleting a namespace on a cluster removes its keys from every primary, not only from the
/// node the connection happens to ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_reaches_every_primary() {
    use redis::AsyncCommands;
    let c = Cluster::builder()
        .redis_url(redis_cluster::urls())
        .workers(0)
        .without_manager()
        .start()
        .await;
    let keys: Vec<String> = (0..64)
        .map(|_| c.names.meta_key(uuid::Uuid::new_v4()))
        .collect();
    let client = redis::cluster::ClusterClient::new(redis_cluster::urls().split(','))
        .expect("cluster client");
    let mut conn = client.get_async_connection().await.expect("cluster");
    for k in &keys {
        let () = conn.set(k, 1).await.expect("set");
    }
    let mut primaries = std::collections::BTreeSet::new();
    for k in &keys {
        primaries.insert(redis_cluster::primary_of(k).await.expect("served"));
    }
    assert_eq!(
        primaries.len(),
        3,
        "64 random request keys land on all 3 primaries"
    );
    c.store.delete_namespace().await.expect("delete");
    for k in &keys {
        let left: bool = conn.exists(k).await.expect("exists");
        assert!(!left, "{k} survived deleting its namespace");
    }
}

/// A store on `urls` in a namespace of its own whose writes wait for one replica.
async fn waiting_store(urls: &str) -> (shardline::Names, shardline::store::Store) {
    let names = shardline::Names::try_new(format!(
        "t{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .expect("namespace");
    let store = shardline::store::Store::connect(urls, names.clone())
        .await
        .expect("Redis reachable")
        .with_replicas(1);
    (names, store)
}

/// On the cluster, a write waits until its primary's replica has it: with the replica
/// running the wait says replicated, and with the replica stopped (SIGSTOP) it comes back
/// short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_its_replica() {
    let (names, store) = waiting_store(&redis_cluster::urls()).await;
    let id = uuid::Uuid::new_v4();
    let key = names.meta_key(id);
    store.set_routes(id, &[(0, "w0")]).await.expect("write");
    assert_eq!(
        store.settle_replicas(&key).await.expect("WAIT"),
        Settled::Replicated(1)
    );

    let primary = redis_cluster::primary_of(&key).await.expect("served");
    let replica = redis_cluster::replica_of(primary).await;
    let replica = redis_cluster::NodeProcess::of(replica).await;
    let _stopped = REPLICA_STOPPED.lock().await;
    replica.signal("STOP");
    let written = store.set_routes(id, &[(1, "w1")]).await;
    let settled = store.settle_replicas(&key).await;
    replica.signal("CONT");
    written.expect("write");
    assert_eq!(settled.expect("WAIT"), Settled::Short(0));
    store.delete_namespace().await.expect("clean up");
}

/// Recording a shard's result sends its wait in the same round trip: with the replica
/// stopped, the wait comes back short, so the writes after it stop waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_result_waits_for_its_replica() {
    let (names, store) = waiting_store(&redis_cluster::urls()).await;
    let id = uuid::Uuid::new_v4();
    let key = names.meta_key(id);
    let primary = redis_cluster::primary_of(&key).await.expect("served");
    let replica = redis_cluster::NodeProcess::of(redis_cluster::replica_of(primary).await).await;
    let record = || {
        store.record(
            id,
            0,
            b"part",
            shardline::now_ms() + 60_000,
            "w0",
            Duration::from_secs(1),
            "w0",
            Duration::ZERO,
        )
    };
    // Running replica: the record (of a request never created, so it writes nothing) waits,
    // and the next wait still waits.
    record().await.expect("record");
    assert_eq!(
        store.settle_replicas(&key).await.expect("WAIT"),
        Settled::Replicated(1)
    );
    let _stopped = REPLICA_STOPPED.lock().await;
    replica.signal("STOP");
    let written = store.set_routes(id, &[(0, "w0")]).await;
    let recorded = record().await;
    replica.signal("CONT");
    written.expect("write");
    recorded.expect("record");
    assert_eq!(
        store.settle_replicas(&key).await.expect("WAIT"),
        Settled::Skipped,
        "the record's wait came back short"
    );
    store.delete_namespace().await.expect("clean up");
}

/// A Redis without replicas answers the wait short once, and the writes after it stop
/// waiting instead of each paying the whole wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_stops_the_waiting() {
    let services = shardline_tests::services::Services::get().await;
    let (names, store) = waiting_store(&services.redis_url).await;
    let key = names.meta_key(uuid::Uuid::new_v4());
    assert_eq!(
        store.settle_replicas(&key).await.expect("WAIT"),
        Settled::Short(0)
    );
    assert_eq!(
        store.settle_replicas(&key).await.expect("WAIT"),
        Settled::Skipped
    );
    let not_asked = store.clone().with_replicas(0);
    assert_eq!(
        not_asked.settle_replicas(&key).await.expect("WAIT"),
        Settled::NotAsked
    );
}
