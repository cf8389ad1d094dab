//! Each built-in kind, end to end through a manager and three workers, equals the unsharded
//! answer.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use shardline::message::Options;
use shardline_tests::{Cluster, completed, unsharded};

const WAIT: Duration = Duration::from_secs(60);

fn words(rng: &mut StdRng, n: usize) -> String {
    const VOCAB: &[&str] = &[
        "alpha", "Beta", "gamma,", "délta", "ε", "zeta!", "eta", "θήτα", "iota", "kappa",
    ];
    (0..n)
        .map(|_| VOCAB[rng.random_range(0..VOCAB.len())])
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.5) { " " } else { "\n" })
}

async fn check(kind: &str, payload: rmpv::Value, scale: f64) {
    let c = Cluster::builder()
        .manager(move |m| m.shard_size_scale = scale)
        .start()
        .await;
    let r = c
        .client()
        .submit(kind, payload.clone(), Options::default(), WAIT)
        .await
        .expect("result");
    assert_eq!(completed(&r), unsharded(kind, payload));
    assert!(
        r.shards >= 3,
        "{kind} was cut into only {} shards",
        r.shards
    );
    let meta = c
        .store
        .meta(r.request_id)
        .await
        .expect("redis")
        .expect("meta kept after publish");
    assert_eq!(
        (meta.state.as_str(), meta.done, meta.total),
        ("published", r.shards, r.shards)
    );
    c.shutdown().await;
}

/// wordcount: sharded counts equal counting the whole text at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_end_to_end() {
    let mut rng = StdRng::seed_from_u64(1);
    check("wordcount", words(&mut rng, 20_000).into(), 0.01).await;
}

/// sort: the k-way merge of sorted shards equals sorting everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_end_to_end() {
    let mut rng = StdRng::seed_from_u64(2);
    let items: Vec<rmpv::Value> = (0..50_000).map(|_| rng.random::<i64>().into()).collect();
    check("sort", rmpv::Value::Array(items), 0.01).await;
}

/// checksum: the Merkle root over shards equals the root over the whole input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_end_to_end() {
    let mut rng = StdRng::seed_from_u64(3);
    let bytes: Vec<u8> = (0..1_500_000).map(|_| rng.random()).collect();
    check("checksum", rmpv::Value::Binary(bytes), 0.05).await;
}

/// synthetic: every unit runs exactly once (units and digest match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_end_to_end() {
    let work = shardline::kind::synthetic::Work {
        units: 120,
        unit_cost_us: 500,
        spin: false,
        noise_seed: None,
        partition: None,
    };
    let payload = shardline::message::to_named_value(&work).expect("value");
    check("synthetic", payload, 1.0).await;
}

/// Shards of one request are spread over every live engine (without late binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_over_all_workers() {
    let c = Cluster::builder().engine_queues().start().await;
    let work = shardline::kind::synthetic::Work {
        units: 30,
        unit_cost_us: 5_000,
        spin: false,
        noise_seed: None,
        partition: None,
    };
    let payload = shardline::message::to_named_value(&work).expect("value");
    // The manager learns of new engines within its refresh period; retry until it has.
    let engines = shardline_tests::eventually(
        "a request spread over 3 engines",
        Duration::from_secs(20),
        || {
            let (c, payload) = (&c, payload.clone());
            async move {
                let r = c
                    .client()
                    .submit("synthetic", payload, Options::default(), WAIT)
                    .await
                    .ok()?;
                let routes = c.store.routes(r.request_id).await.ok()?;
                let used: HashSet<String> = routes.into_values().collect();
                (used.len() == 3).then_some(used)
            }
        },
    )
    .await;
    assert_eq!(
        engines,
        ["w0", "w1", "w2"].iter().map(|s| s.to_string()).collect()
    );
    c.shutdown().await;
}
