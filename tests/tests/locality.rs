//! Data locality: shards that name where their data lives run on the engine that holds it,
//! as long as its queue is shorter than a remote read; workers declare their keys at start and
//! change them at run time; bad keys are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use shardline::locality::LocalityKey;
use shardline::message::{Options, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, unsharded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn key(k: &str) -> LocalityKey {
    LocalityKey::parse(k).expect("a valid key")
}

/// Worker `w0` holds `p0`, `w1` holds `p1`.
fn holding_own_partition(cfg: &mut shardline_worker::Config) {
    let id = cfg.id.clone().unwrap_or_default();
    cfg.locality = vec![key(&id.replace('w', "p"))];
}

/// Send a word count in `pieces`, each keyed by `keys`; return its routes once it completed.
async fn routes_of(c: &Cluster, pieces: &[&str], keys: &[Option<&str>]) -> BTreeMap<u32, String> {
    let (id, rx) = c
        .client()
        .send_shards_at(
            "wordcount",
            pieces.iter().map(|p| (*p).into()).collect(),
            keys.iter().map(|k| k.map(key)).collect(),
            Options::default(),
        )
        .await
        .expect("sent");
    let r = c.client().wait(id, rx, WAIT).await.expect("a result");
    assert_eq!(r.status, Status::Completed, "{r:?}");
    assert_eq!(
        completed(&r),
        unsharded("wordcount", pieces.join(" ").into())
    );
    c.store.routes(id).await.expect("redis")
}

/// Routes with shard `i` on `engines[i]`.
fn routes_for(engines: &[&str]) -> BTreeMap<u32, String> {
    (0..).zip(engines.iter().map(|e| (*e).to_owned())).collect()
}

fn on(routes: &BTreeMap<u32, String>, engine: &str) -> usize {
    routes.values().filter(|e| *e == engine).count()
}

/// Each piece runs on the worker that holds its key. (Without locality, engines with free
/// slots take consecutive shards in turn, so `w1, w1, w0, w0` cannot come out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_shards_run_where_their_data_is() {
    let c = Cluster::builder()
        .workers(2)
        .worker(holding_own_partition)
        .start()
        .await;
    c.wait_seen(&["w0", "w1"]).await;
    let routes = routes_of(
        &c,
        &["to be", "or not", "to be that", "is the question"],
        &[Some("p1"), Some("p1"), Some("p0"), Some("p0")],
    )
    .await;
    assert_eq!(routes, routes_for(&["w1", "w1", "w0", "w0"]));
    c.shutdown().await;
}

/// Eight shards keyed to one worker's data do not all queue there: once its queue is longer
/// than a remote read the other worker takes some, and the holder still takes the most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_holder_shares_its_keyed_shards() {
    let c = Cluster::builder()
        .workers(2)
        .worker(holding_own_partition)
        .start()
        .await;
    c.wait_seen(&["w0", "w1"]).await;
    let pieces = ["a b", "c d", "e f", "g h", "i j", "k l", "m n", "o p"];
    let routes = routes_of(&c, &pieces, &[Some("p0"); 8]).await;
    let (holder, other) = (on(&routes, "w0"), on(&routes, "w1"));
    assert!(holder > other && other >= 1, "{routes:?}");
    assert_eq!(holder + other, 8, "{routes:?}");
    c.shutdown().await;
}

/// Keys added to running workers through Redis draw the shards that name them once the
/// managers' view has them (refreshed every 500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_added_at_run_time_draw_their_shards() {
    let c = Cluster::builder().workers(2).start().await;
    for (engine, k) in [("w1", "hot"), ("w0", "cold")] {
        let added = c
            .client()
            .add_locality(engine, &[key(k)])
            .await
            .expect("redis");
        assert_eq!(added, 1);
        assert_eq!(
            c.client().locality(engine).await.expect("redis"),
            [k.to_owned()]
        );
    }
    c.wait_keys("w1", 1).await;
    c.wait_keys("w0", 1).await;
    let routes = routes_of(
        &c,
        &["x y", "z w", "u v", "s t"],
        &[Some("hot"), Some("hot"), Some("cold"), Some("cold")],
    )
    .await;
    assert_eq!(routes, routes_for(&["w1", "w1", "w0", "w0"]));
    let removed = c
        .client()
        .remove_locality("w1", &[key("hot")])
        .await
        .expect("redis");
    assert_eq!(removed, 1);
    c.wait_keys("w1", 0).await;
    c.shutdown().await;
}

/// A worker that stops gracefully takes its keys with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_leaves_no_keys() {
    let mut c = Cluster::builder()
        .workers(2)
        .worker(holding_own_partition)
        .start()
        .await;
    assert_eq!(
        c.client().locality("w0").await.expect("redis"),
        ["p0".to_owned()]
    );
    c.stop_worker("w0").await;
    assert!(c.client().locality("w0").await.expect("redis").is_empty());
    assert_eq!(
        c.client().locality("w1").await.expect("redis"),
        ["p1".to_owned()]
    );
    c.shutdown().await;
}

/// Misused locality fields, from any AMQP client, are answered `malformed` with the reason and
/// run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_locality_fields_are_malformed() {
    let c = Cluster::builder().workers(1).start().await;
    let cases: [(&[u8], &str); 4] = [
        (
            br#"{"kind":"wordcount","shards":["a","b"],"localities":["p0"]}"#,
            "1 entries for 2 pieces",
        ),
        (
            br#"{"kind":"wordcount","payload":"a b","localities":["p0"]}"#,
            "goes with `shards`",
        ),
        (
            br#"{"kind":"wordcount","payload":"a b","locality":"p 0"}"#,
            "whitespace",
        ),
        (
            br#"{"kind":"wordcount","shards":["a"],"locality":"p0","localities":["p0"]}"#,
            "not both",
        ),
    ];
    for (body, why) in cases {
        let mut replies = Replies::new(&c).await;
        let id = Uuid::new_v4();
        publish_request(
            &c,
            body,
            Some("application/json"),
            &id.to_string(),
            Some(&replies.queue),
        )
        .await;
        let r = replies.next(WAIT).await;
        assert_eq!(r.request_id, id);
        assert_eq!(r.status, Status::Rejected);
        let error = r.error.expect("an error");
        assert_eq!(error.code, "malformed", "{error:?}");
        assert!(error.message.contains(why), "{why:?} in {error:?}");
        assert!(c.store.meta(id).await.expect("redis").is_none());
    }
    c.shutdown().await;
}
