//! Integration-test support: real RabbitMQ and Redis, one namespace per test.
//!
//! Services come from `TEST_AMQP_URL` / `TEST_REDIS_URL` when set (CI and the local machine),
//! else from testcontainers when Docker is available; with neither, tests fail loudly.

pub mod cluster;
pub mod http;
pub mod private_redis;
pub mod rabbitmq_cluster;
pub mod redis_cluster;
pub mod services;
pub mod webdriver;

use std::future::Future;
use std::time::Duration;

pub use cluster::{Cluster, ClusterBuilder};
pub use services::Services;

/// Scale factor for every wait, from `SHARDLINE_TEST_PATIENCE` (default 1.0); raise it on slow
/// machines instead of editing tests.
pub fn patience(base: Duration) -> Duration {
    let factor = std::env::var("SHARDLINE_TEST_PATIENCE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| *f > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(factor)
}

/// Poll `check` every 50 ms until it returns `Some`, or panic after `within` (scaled by
/// [`patience`]) saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let within = patience(within);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log to the test's captured output (once per process).
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub mod raw;

/// Implement `shardline::kind::Kind` for `$t`: a kind named `$name` that sums lists of numbers,
/// cut in even chunks, with its own `process` (a closure from the shard to its sum) and, as a
/// fourth argument, its own `max_attempts` (3 when left out).
#[macro_export]
macro_rules! summing_kind {
    ($t:ty, $name:literal, $process:expr) => {
        $crate::summing_kind!($t, $name, $process, 3);
    };
    ($t:ty, $name:literal, $process:expr, $attempts:expr) => {
        impl ::shardline::kind::Kind for $t {
            type Input = Vec<i64>;
            type Shard = Vec<i64>;
            type Partial = i64;
            type Output = i64;
            fn name(&self) -> &'static str {
                $name
            }
            fn size(&self, input: &Vec<i64>) -> u64 {
                input.len() as u64
            }
            fn max_attempts(&self) -> u32 {
                $attempts
            }
            fn split(&self, input: Vec<i64>, n: usize) -> Vec<Vec<i64>> {
                ::shardline::kind::even_chunks(&input, n)
                    .into_iter()
                    .map(<[i64]>::to_vec)
                    .collect()
            }
            fn process(&self, shard: Vec<i64>) -> Result<i64, ::shardline::kind::KindError> {
                $process(shard)
            }
            fn merge(&self, parts: Vec<i64>) -> Result<i64, ::shardline::kind::KindError> {
                Ok(parts.iter().sum())
            }
        }
    };
}

use shardline::message::{FinalResult, Status};

/// The output of a completed result, or a panic showing the error.
pub fn completed(result: &FinalResult) -> rmpv::Value {
    assert_eq!(
        result.status,
        Status::Completed,
        "request did not complete: {:?}",
        result.error
    );
    result
        .output
        .clone()
        .expect("completed results carry output")
}

/// What the kind computes on one machine without sharding: the reference answer.
pub fn unsharded(kind: &str, payload: rmpv::Value) -> rmpv::Value {
    let k = shardline::Registry::builtin()
        .get(kind)
        .expect("built-in kind");
    let shards = k.split(payload, &mut |_, _| 1).expect("split");
    let parts = shards
        .iter()
        .map(|s| {
            k.process(s, &shardline::kind::Stop::new())
                .expect("process")
        })
        .collect();
    k.merge(parts).expect("merge")
}

pub mod process;

/// A request body (MessagePack) with optional integer options such as `max_shards`.
pub fn request_body(kind: &str, payload: rmpv::Value, options: &[(&str, u64)]) -> Vec<u8> {
    let options = (!options.is_empty()).then(|| {
        rmpv::Value::Map(
            options
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    });
    shardline::message::Format::MsgPack
        .encode(&shardline::message::RequestBody {
            kind: kind.into(),
            payload,
            options,
            locality: None,
        })
        .expect("encode request")
}

/// The payload of a `synthetic` request.
pub fn synthetic(units: u64, unit_cost_us: u64) -> rmpv::Value {
    let w = shardline::kind::synthetic::Work {
        units,
        unit_cost_us,
        spin: false,
        noise_seed: None,
        partition: None,
    };
    shardline::message::to_named_value(&w).expect("value")
}

/// How many times shard `index` of request `id` was started (its `attempts.<i>` field).
pub async fn attempts(cluster: &Cluster, id: uuid::Uuid, index: u32) -> u32 {
    use redis::AsyncCommands;
    let client = redis::Client::open(cluster.connect.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let n: Option<u32> = conn
        .hget(cluster.names.meta_key(id), format!("attempts.{index}"))
        .await
        .expect("hget");
    n.unwrap_or(0)
}

/// Messages ready in `queue` (a passive declare), `None` when it cannot be read.
pub async fn ready(cluster: &Cluster, queue: &str) -> Option<u32> {
    Some(declared(cluster, queue).await?.message_count())
}

/// Consumers attached to `queue` (a passive declare), `None` when it cannot be read.
pub async fn consumers(cluster: &Cluster, queue: &str) -> Option<u32> {
    Some(declared(cluster, queue).await?.consumer_count())
}

/// `queue` as a passive declare reports it, `None` when it does not exist.
async fn declared(cluster: &Cluster, queue: &str) -> Option<lapin::Queue> {
    let ch = cluster.channel().await;
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions::default().passive(),
            lapin::types::FieldTable::default(),
        )
        .await
        .ok()?;
    let _ = ch.close(200, "done".into()).await;
    Some(q)
}

/// Whether all `shards` shards of request `id` have reached a worker: each is routed and no
/// queue it was routed to holds a ready message. (A first delivery goes to work without a word
/// to Redis, so nothing there says a shard started.)
pub async fn delivered(cluster: &Cluster, id: uuid::Uuid, shards: u32) -> bool {
    let Ok(routes) = cluster.store.routes(id).await else {
        return false;
    };
    let Ok(Some(meta)) = cluster.store.meta(id).await else {
        return false;
    };
    if routes.len() < shards as usize {
        return false;
    }
    let mut queues: Vec<String> = routes
        .values()
        .map(|r| match r.as_str() {
            "(shared)" | "(held)" => cluster.names.kind_queue(&meta.kind),
            engine => cluster.names.engine_queue(engine),
        })
        .collect();
    queues.sort();
    queues.dedup();
    for q in queues {
        if ready(cluster, &q).await != Some(0) {
            return false;
        }
    }
    true
}

/// Wait until the requests together have at least `shards` shards done.
pub async fn wait_progress(cluster: &Cluster, ids: &[uuid::Uuid], shards: u32) {
    eventually(
        &format!("{shards} shards done"),
        Duration::from_secs(20),
        || async {
            let mut done = 0;
            for id in ids {
                done += cluster.store.meta(*id).await.ok()?.map_or(0, |m| m.done);
            }
            (done >= shards).then_some(())
        },
    )
    .await;
}

/// Record a `kind` request with these encoded partial results already stored, as workers
/// would have written them, the last write claiming the finalizer lease for a holder that then
/// "crashes" (never finalizes; its lease lasts 300 ms). Its result goes to `reply_queue`.
pub async fn stage_unfinalized(
    cluster: &Cluster,
    kind: &str,
    parts: &[Vec<u8>],
    reply_queue: &str,
) -> uuid::Uuid {
    use shardline::now_ms;
    use shardline::store::{NewRequest, Recorded};
    let id = uuid::Uuid::new_v4();
    cluster
        .store
        .create(&NewRequest {
            id,
            kind: kind.into(),
            total: u32::try_from(parts.len()).expect("a few parts"),
            created: now_ms(),
            deadline: now_ms() + 60_000,
            reply_to: Some(reply_queue.to_owned()),
            correlation_id: None,
            format: shardline::message::Format::MsgPack,
            policy: Default::default(),
            quorum: None,
            manager: "test".into(),
            cut: shardline::kind::Splitter::Custom,
        })
        .await
        .expect("create");
    let mut last = Recorded::Duplicate;
    for (i, part) in parts.iter().enumerate() {
        last = cluster
            .store
            .record(
                id,
                i as u32,
                part,
                now_ms() + 60_000,
                "crashed",
                Duration::from_millis(300),
                "w",
                Duration::ZERO,
            )
            .await
            .expect("record");
    }
    assert!(matches!(last, Recorded::Claimed { .. }), "{last:?}");
    id
}

/// A payload of each built-in kind, large enough to be cut into several shards, drawn from
/// `seed`: 20,000 words, 20,000 integers, 600,000 bytes, 60 synthetic units of 0.5 ms.
pub fn builtin_payloads(seed: u64) -> Vec<(&'static str, rmpv::Value)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words: Vec<&str> = (0..20_000)
        .map(|_| ["alpha", "Beta", "gamma,", "délta", "ε"][rng.random_range(0..5)])
        .collect();
    let items: Vec<rmpv::Value> = (0..20_000).map(|_| rng.random::<i64>().into()).collect();
    let bytes: Vec<u8> = (0..600_000).map(|_| rng.random()).collect();
    vec![
        ("wordcount", words.join(" ").into()),
        ("sort", rmpv::Value::Array(items)),
        ("checksum", rmpv::Value::Binary(bytes)),
        ("synthetic", synthetic(60, 500)),
    ]
}

/// Submits [`builtin_payloads`]`(seed)` through `c`'s client, all at once, and checks that
/// each kind's answer equals its unsharded answer and was cut into at least 2 shards; returns
/// the results in the same order.
pub async fn each_builtin_kind_sharded(
    c: &Cluster,
    seed: u64,
    wait: Duration,
) -> Vec<(&'static str, FinalResult)> {
    let runs = builtin_payloads(seed)
        .into_iter()
        .map(|(kind, payload)| async move {
            let r = c
                .client()
                .submit(
                    kind,
                    payload.clone(),
                    shardline::message::Options::default(),
                    wait,
                )
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(completed(&r), unsharded(kind, payload), "{kind}");
            assert!(
                r.shards >= 2,
                "{kind} was cut into only {} shards",
                r.shards
            );
            (kind, r)
        });
    futures::future::join_all(runs).await
}

/// A "ghost" engine: registered with a heartbeat of `ttl` renewed every 200 ms, with its
/// queue declared, but nothing consuming it. Abort the task to make it vanish.
pub async fn ghost_engine(
    c: &Cluster,
    id: &'static str,
    ttl: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let ch = c.channel().await;
    shardline::amqp::declare_engine_queue(&ch, &c.names, id)
        .await
        .expect("queue");
    let store = c.store.clone();
    let beat = tokio::spawn(async move {
        loop {
            let _ = store.heartbeat(id, "concurrency=64 pid=0", &[], ttl).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    c.wait_registered(id).await;
    beat
}
