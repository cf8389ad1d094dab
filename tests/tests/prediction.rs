//! The Load Prediction Engine against the real broker and Redis: learned speeds steer shards,
//! the history survives the manager, and the depth sampler survives missing queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shardline::amqp;
use shardline::message::{FinalResult, Options, Status};
use shardline_manager::depth::{Depths, Sampler};
use shardline_manager::dispatch::{HELD_ROUTE, SHARED_ROUTE};
use shardline_manager::engines::Engines;
use shardline_manager::history::History;
use shardline_manager::ledger::Ledger;
use shardline_manager::plan::ShardCount;
use shardline_tests::process::{signal, spawn_manager, spawn_worker_with};
use shardline_tests::{Cluster, eventually, patience, synthetic};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");
const MANAGER: &str = env!("CARGO_BIN_EXE_manager-under-test");

/// Shards sent to each engine by the next `n` requests (the shared queue and the hold count
/// under their route names).
async fn shares(c: &Cluster, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = c
            .client()
            .submit(
                "synthetic",
                synthetic(24, 2_000),
                Options {
                    max_shards: Some(6),
                    ..Options::default()
                },
                patience(Duration::from_secs(30)),
            )
            .await
            .expect("request completes");
        let routes = c.store.routes(r.request_id).await.expect("redis");
        for engine in routes.into_values() {
            *counts.entry(engine).or_default() += 1;
        }
    }
    counts
}

/// An engine ten times slower than its peers is learned from completions, even of shards it
/// took from the shared queue (where late binding sends every shard while the engines look
/// alike), and then gets a small share of the shards (an even spread would give it a third);
/// the learned speeds are saved in Redis and load into a fresh history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictive_routing_learns_a_slow_engine() {
    let mut c = Cluster::builder()
        .workers(2)
        .manager(|m| m.shard_count = ShardCount::Fixed(6))
        .start()
        .await;
    let mut slow = spawn_worker_with(
        WORKER,
        &c,
        "slow",
        2,
        &[("SHARDLINE_SYNTHETIC_SPEED", "0.1")],
    );
    c.wait_registered("slow").await;
    // Cold, every engine looks alike, so shards go to the shared queue; only once the slow
    // engine's completions of those are measured are shards routed, and it gets a small share.
    eventually(
        "the slow engine's share falls below 15%",
        patience(Duration::from_secs(60)),
        || {
            let c = &c;
            async move {
                let mut counts = shares(c, 5).await;
                counts.remove(SHARED_ROUTE);
                counts.remove(HELD_ROUTE);
                let total: usize = counts.values().sum();
                let slow = counts.get("slow").copied().unwrap_or(0);
                (counts.len() >= 2 && (slow as f64) < 0.15 * total as f64).then_some(())
            }
        },
    )
    .await;
    c.stop_manager().await; // saves the history one last time
    let warm = History::default();
    assert!(
        warm.load(&c.store).await.expect("redis"),
        "a history was saved"
    );
    let speeds = warm.speeds(&["w0", "slow"]);
    assert!(speeds[1] < 0.5 * speeds[0], "learned speeds {speeds:?}");
    assert!(
        warm.line("synthetic").is_some(),
        "the kind's cost line was saved"
    );
    let _ = slow.start_kill();
    c.shutdown().await;
}

/// Shards of `routes` sent to an engine (not to the shared queue, not held).
fn on_engines(routes: &BTreeMap<u32, String>) -> usize {
    routes
        .values()
        .filter(|r| *r != SHARED_ROUTE && *r != HELD_ROUTE)
        .count()
}

/// A burst of requests dispatched at once (the manager's prefetch) shares the predictive
/// policy's in-flight cap: each request sees the shards the others routed before they were
/// published, so the engines get at most `cap × slots` and the rest wait in the manager.
/// (When shards entered the ledger only at publish time, every request of the burst saw idle
/// engines and each put its shards on them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_shares_the_in_flight_cap() {
    const REQUESTS: usize = 12;
    let c = two_speeds(hold_all, 5_000_000.0).await;
    // Shards of 5 s: none finishes (and lets a held one go) while the burst is dispatched.
    let mut ids = Vec::new();
    for _ in 0..REQUESTS {
        let (id, _rx) = c
            .client()
            .send("synthetic", synthetic(4, 5_000_000), Options::default())
            .await
            .expect("published");
        ids.push(id);
    }
    let routed = eventually(
        "every request of the burst routed",
        patience(Duration::from_secs(30)),
        || {
            let (c, ids) = (&c, &ids);
            async move {
                let (mut total, mut held) = (0, 0);
                for id in ids {
                    let routes = c.client().routes(*id).await.ok()?;
                    if routes.len() < 4 {
                        return None;
                    }
                    total += on_engines(&routes);
                    held += routes.values().filter(|r| *r == HELD_ROUTE).count();
                }
                Some((total, held))
            }
        },
    )
    .await;
    // Two engines of two slots, a cap of one shard per slot; nothing went to the shared queue.
    let (routed, held) = routed;
    assert!(
        (1..=4).contains(&routed),
        "{routed} of {} shards went to the engines",
        REQUESTS * 4
    );
    assert_eq!(routed + held, REQUESTS * 4, "{held} held");
    for id in ids {
        let _ = c.client().cancel(id).await;
    }
    c.shutdown().await;
}

/// Shards held in the manager go to the engines as their slots free: with a cap of one shard
/// per slot, a burst of twice the engines' slots completes, and every shard ran on an engine
/// (none went to the shared queue after the hold limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shards_go_to_engines_as_slots_free() {
    let c = two_speeds(hold_all, 300_000.0).await;
    let burst = send_burst(&c, 300_000).await;
    wait_until_held(&c, &burst).await;
    for routes in completed_routes(&c, burst, Duration::from_secs(30)).await {
        assert_eq!(on_engines(&routes), 4, "{routes:?}");
    }
    c.shutdown().await;
}

/// A manager that stops with shards held sends them to the shared queue: every request of
/// the burst still completes, served by the workers through the shared queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_manager_lets_held_shards_go_to_the_shared_queue() {
    let mut c = two_speeds(hold_all, 500_000.0).await;
    let burst = send_burst(&c, 500_000).await;
    wait_until_held(&c, &burst).await;
    c.stop_manager().await;
    let shared: usize = completed_routes(&c, burst, Duration::from_secs(60))
        .await
        .iter()
        .map(|routes| routes.values().filter(|r| *r == SHARED_ROUTE).count())
        .sum();
    assert!(shared > 0, "no held shard went to the shared queue");
    c.shutdown().await;
}

/// A manager process killed with SIGKILL while it holds shards loses none of them: their
/// requests were never acked, the broker redelivers them to another manager, which routes the
/// shards without a stored result again, and every request completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_loses_no_held_shard() {
    let mut c = two_speeds_without_manager(300_000.0).await;
    let mut doomed = spawn_manager(
        MANAGER,
        &c,
        &[
            ("SHARDLINE_SHARD_COUNT", "4"),
            ("SHARDLINE_IN_FLIGHT_CAP", "1"),
            ("SHARDLINE_HOLD_MS", "600000"),
        ],
    );
    wait_for_engines(&c).await;
    let burst = send_burst(&c, 300_000).await;
    wait_until_held(&c, &burst).await;
    signal(&doomed, "KILL");
    let _ = doomed.wait().await;
    c.start_manager(|_| {});
    completed_routes(&c, burst, Duration::from_secs(60)).await;
    c.shutdown().await;
}

/// A request that ends early tells the managers so on the events channel (`ended <id>`): no
/// completion will come for its unfinished shards, and the ledger forgets them
/// (`events::tests::an_ended_request_leaves_the_ledger`). Without it they looked unfinished for
/// ten minutes, and held shards waited for engines that were free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_is_announced_to_the_managers() {
    let c = Cluster::builder().workers(0).start().await;
    let client = redis::Client::open(c.connect.redis_url.as_str()).expect("redis url");
    let mut events = client.get_async_pubsub().await.expect("pubsub");
    events
        .subscribe(c.names.events_channel())
        .await
        .expect("subscribe");
    // No worker: the request stays running until it is cancelled.
    let (id, _rx) = c
        .client()
        .send("synthetic", synthetic(4, 1_000), Options::default())
        .await
        .expect("published");
    eventually(
        "the request recorded",
        patience(Duration::from_secs(30)),
        || async { c.store.meta(id).await.ok()? },
    )
    .await;
    c.client().cancel(id).await.expect("cancelled");
    let want = format!("ended {id}");
    let mut messages = events.on_message();
    let seen = tokio::time::timeout(patience(Duration::from_secs(10)), async {
        while let Some(m) = messages.next().await {
            if m.get_payload::<String>().ok().as_deref() == Some(want.as_str()) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "no `{want}` event");
    drop(messages);
    c.shutdown().await;
}

/// Two in-process engines, `w0` at full speed and `w1` at a quarter (the hold waits only where
/// engines differ), with their speeds and the cost of a one-unit shard (`shard_us` on `w0`)
/// already in the saved history, and a manager tweaked by `tweak` that sees both.
async fn two_speeds(tweak: fn(&mut shardline_manager::Config), shard_us: f64) -> Cluster {
    let mut c = two_speeds_without_manager(shard_us).await;
    c.start_manager(tweak);
    wait_for_engines(&c).await;
    c
}

/// [`two_speeds`] before any manager starts.
async fn two_speeds_without_manager(shard_us: f64) -> Cluster {
    let c = Cluster::builder()
        .workers(2)
        .worker(|w| {
            if w.id.as_deref() == Some("w1") {
                w.synthetic_speed = 0.25;
            }
        })
        .without_manager()
        .start()
        .await;
    let history = History::default();
    for _ in 0..50 {
        history.observe("synthetic", 1.0, "w0", shard_us);
        history.observe("synthetic", 1.0, "w1", 4.0 * shard_us);
    }
    history.save(&c.store).await.expect("redis");
    c
}

/// Requests of four shards, a cap of one shard per slot, and a hold that never times out.
fn hold_all(m: &mut shardline_manager::Config) {
    m.shard_count = ShardCount::Fixed(4);
    m.in_flight_cap = 1.0;
    m.hold_ms = 600_000;
}

/// A request sent, and the receiver of its result.
type Sent = (Uuid, oneshot::Receiver<FinalResult>);

/// Four requests of four shards of `shard_us` each, sent at once: twice the slots of two
/// engines of two slots.
async fn send_burst(c: &Cluster, shard_us: u64) -> Vec<Sent> {
    let mut burst = Vec::new();
    for _ in 0..4 {
        let sent = c
            .client()
            .send("synthetic", synthetic(4, shard_us), Options::default())
            .await
            .expect("published");
        burst.push(sent);
    }
    burst
}

/// Wait until the manager holds a shard of `burst`.
async fn wait_until_held(c: &Cluster, burst: &[Sent]) {
    eventually(
        "some shards held",
        patience(Duration::from_secs(30)),
        || async move {
            for (id, _) in burst {
                let routes = c.client().routes(*id).await.ok()?;
                if routes.values().any(|r| r == HELD_ROUTE) {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
}

/// Wait for every request of `burst` to complete, and return their routes, none left held.
async fn completed_routes(
    c: &Cluster,
    burst: Vec<Sent>,
    within: Duration,
) -> Vec<BTreeMap<u32, String>> {
    let mut all = Vec::new();
    for (id, rx) in burst {
        let r = c
            .client()
            .wait(id, rx, patience(within))
            .await
            .expect("request completes");
        assert_eq!(r.status, Status::Completed, "{r:?}");
        let routes = c.client().routes(id).await.expect("redis");
        assert!(routes.values().all(|r| r != HELD_ROUTE), "{routes:?}");
        all.push(routes);
    }
    all
}

/// Until the manager sees both engines, everything goes to the shared queue: wait for a short
/// request routed to the engines.
async fn wait_for_engines(c: &Cluster) {
    eventually(
        "a short request routed to the engines",
        patience(Duration::from_secs(30)),
        || async move {
            let r = c
                .client()
                .submit(
                    "synthetic",
                    synthetic(4, 1_000),
                    Options::default(),
                    patience(Duration::from_secs(30)),
                )
                .await
                .ok()?;
            let routes = c.client().routes(r.request_id).await.ok()?;
            (on_engines(&routes) == 4).then_some(())
        },
    )
    .await;
}

/// The depth sampler reads ready counts with passive declares, and an engine whose queue is
/// missing (which closes the probe channel) does not stop the others from being sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_sampler_survives_a_missing_queue() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let ch = c.channel().await;
    amqp::declare_engine_queue(&ch, &c.names, "e1")
        .await
        .expect("queue");
    for i in 0..7 {
        amqp::publish(
            &ch,
            "",
            &c.names.engine_queue("e1"),
            format!("m{i}").as_bytes(),
            Default::default(),
            false,
        )
        .await
        .expect("publish");
    }
    // "a-ghost" sorts first and has no queue.
    for e in ["a-ghost", "e1"] {
        c.store
            .heartbeat(e, "concurrency=2", &[], Duration::from_secs(60))
            .await
            .expect("heartbeat");
    }
    let engines = Engines::default();
    engines
        .refresh(&c.store, Duration::from_secs(60))
        .await
        .expect("engines");
    let conn = Arc::new(
        amqp::connect(&c.connect.amqp_url, "depth test")
            .await
            .expect("connect"),
    );
    let depths = Arc::new(Depths::new(100));
    let stop = CancellationToken::new();
    tokio::spawn(
        Sampler {
            conn: conn.clone(),
            names: c.names.clone(),
            engines,
            ledger: Arc::new(Ledger::default()),
            depths: depths.clone(),
            every: Duration::from_millis(50),
        }
        .run(stop.clone()),
    );
    eventually("several samples of e1", Duration::from_secs(10), || async {
        let series = depths.series();
        let e1 = series.iter().find(|(e, _)| e == "e1")?;
        (e1.1.len() >= 3 && e1.1.iter().all(|v| *v == 7.0)).then_some(())
    })
    .await;
    assert!(depths.latest("a-ghost").is_none());
    stop.cancel();
    c.shutdown().await;
}
