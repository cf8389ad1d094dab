//! Prometheus metrics of real manager and worker processes: after known traffic, each
//! process's `/metrics`, read with a Prometheus text parser, counts exactly that traffic.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use shardline::message::{Options, Status};
use shardline_manager::dispatch::SHARED_ROUTE;
use shardline_tests::process::{spawn_manager, spawn_worker_with};
use shardline_tests::{Cluster, eventually, http, patience, synthetic};

const MANAGER: &str = env!("CARGO_BIN_EXE_manager-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");
const WAIT: Duration = Duration::from_secs(30);
/// Shards per request (the manager's fixed shard count).
const SHARDS: u32 = 4;
/// Requests that complete.
const REQUESTS: u32 = 3;

/// `GET /metrics` from `addr`, parsed.
async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let a = http::get(addr, "/metrics").await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.content_type.contains("text/plain; version=0.0.4"),
        "{}",
        a.content_type
    );
    Some(Scrape::parse(a.body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text"))
}

/// The value of the sample named `metric` whose labels include `labels` (a histogram's
/// `_count` and `_sum` are plain samples).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Wait until `metric{labels}` at `addr` reads `want`.
async fn expect(addr: SocketAddr, metric: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{metric}{labels:?} = {want} at {addr}");
    eventually(&what, WAIT, || async {
        let got = value(&scrape(addr).await?, metric, labels)?;
        (got == want).then_some(())
    })
    .await;
}

/// The metrics address a worker recorded in its registration.
async fn registered_metrics(c: &Cluster, id: &str) -> SocketAddr {
    eventually("the worker's metrics address", WAIT, || async {
        let details = c.store.engine_details(&[id.to_owned()]).await.ok()?;
        details
            .into_iter()
            .flatten()
            .next()?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("metrics="))?
            .parse()
            .ok()
    })
    .await
}

/// Three completed word counts of four shards and one request of an unknown kind show up as
/// exactly that in the manager's and the worker's metrics: requests by kind and status,
/// shards by outcome, histograms with one observation per request or shard, the rejection and
/// its dead letter by reason, and the manager's gauges for the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let c = Cluster::builder()
        .without_manager()
        .workers(0)
        .start()
        .await;
    let worker = spawn_worker_with(WORKER, &c, "mw1", 2, &[("SHARDLINE_METRICS_ADDR", "0")]);
    let manager_addr = http::free_addr();
    let manager = spawn_manager(
        MANAGER,
        &c,
        &[
            ("SHARDLINE_METRICS_ADDR", &manager_addr.to_string()),
            ("SHARDLINE_SHARD_COUNT", &SHARDS.to_string()),
        ],
    );
    let worker_addr = registered_metrics(&c, "mw1").await;

    for _ in 0..REQUESTS {
        let r = c
            .client()
            .submit(
                "wordcount",
                "to be or not to be that is the question".into(),
                Options::default(),
                patience(WAIT),
            )
            .await
            .expect("a result");
        assert_eq!((r.status, r.shards), (Status::Completed, SHARDS));
    }
    let r = c
        .client()
        .submit(
            "no-such-kind",
            "x".into(),
            Options::default(),
            patience(WAIT),
        )
        .await
        .expect("a result");
    assert_eq!(r.status, Status::Rejected);

    let (n, shards) = (f64::from(REQUESTS), f64::from(REQUESTS * SHARDS));
    let wc = [("kind", "wordcount")];
    expect(manager_addr, "shardline_requests_accepted_total", &wc, n).await;
    expect(manager_addr, "shardline_request_shards_count", &wc, n).await;
    expect(manager_addr, "shardline_request_shards_sum", &wc, shards).await;
    let unknown = [("reason", "unknown_kind")];
    expect(
        manager_addr,
        "shardline_requests_rejected_total",
        &unknown,
        1.0,
    )
    .await;
    expect(manager_addr, "shardline_dead_letters_total", &unknown, 1.0).await;
    expect(manager_addr, "shardline_engines_live", &[], 1.0).await;
    let engine = [("engine", "mw1")];
    expect(manager_addr, "shardline_engine_slots", &engine, 2.0).await;
    expect(
        manager_addr,
        "shardline_engine_unfinished_shards",
        &engine,
        0.0,
    )
    .await;

    let stored = [
        ("kind", "wordcount"),
        ("engine", "mw1"),
        ("outcome", "stored"),
    ];
    expect(worker_addr, "shardline_shards_total", &stored, shards).await;
    expect(
        worker_addr,
        "shardline_shard_duration_seconds_count",
        &wc,
        shards,
    )
    .await;
    let completed = [("kind", "wordcount"), ("status", "completed")];
    expect(worker_addr, "shardline_requests_total", &completed, n).await;
    expect(
        worker_addr,
        "shardline_request_duration_seconds_count",
        &wc,
        n,
    )
    .await;
    let worker_scrape = scrape(worker_addr).await.expect("a scrape");
    for outcome in ["duplicate", "failed", "retried", "skipped"] {
        let other = [("kind", "wordcount"), ("outcome", outcome)];
        assert_eq!(
            value(&worker_scrape, "shardline_shards_total", &other),
            None,
            "no shard was {outcome}"
        );
    }

    for mut child in [worker, manager] {
        let _ = child.kill().await;
    }
    c.shutdown().await;
}

/// The signal at `/api/scale` (the shape KEDA's metrics-api scaler reads: the desired count
/// at `shardline.desired_replicas`), and the desired-replicas gauge.
async fn signal(addr: SocketAddr) -> Option<(serde_json::Value, f64)> {
    let a = http::get(addr, "/api/scale").await?;
    assert!(
        a.content_type.contains("application/json"),
        "{}",
        a.content_type
    );
    let json = a.json();
    let gauge = value(&scrape(addr).await?, "shardline_desired_replicas", &[])?;
    Some((json["shardline"].clone(), gauge))
}

/// Whether the signal asks for `n` replicas, in the JSON and the gauge alike.
fn asks_for(signal: &(serde_json::Value, f64), n: u64) -> bool {
    signal.0["desired_replicas"].as_u64() == Some(n) && signal.1 == n as f64
}

/// Shards waiting on the shared queue count in the scaling signal's backlog (one worker is
/// alike to itself, so every shard goes there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaling_signal_counts_the_shared_backlog() {
    let c = Cluster::builder()
        .without_manager()
        .workers(0)
        .start()
        .await;
    let worker = spawn_worker_with(WORKER, &c, "sb1", 1, &[]);
    let addr = http::free_addr();
    let manager = spawn_manager(
        MANAGER,
        &c,
        &[
            ("SHARDLINE_METRICS_ADDR", &addr.to_string()),
            ("SHARDLINE_SCALE_FORECAST", "false"),
            ("SHARDLINE_SHARD_COUNT", "8"),
        ],
    );
    c.wait_registered("sb1").await;
    let (id, _rx) = c
        .client()
        .send("synthetic", synthetic(8, 2_000_000), Options::default())
        .await
        .expect("sent");
    let routes = eventually("the request routed", WAIT, || async {
        let routes = c.client().routes(id).await.ok()?;
        (routes.len() == 8).then_some(routes)
    })
    .await;
    assert!(
        routes.values().all(|r| r == SHARED_ROUTE),
        "every shard on the shared queue: {routes:?}"
    );
    eventually("the shared shards in the backlog", WAIT, || async {
        let s = signal(addr).await?;
        (s.0["backlog"].as_f64()? > 0.0).then_some(())
    })
    .await;
    let _ = c.client().cancel(id).await;
    for mut child in [worker, manager] {
        let _ = child.kill().await;
    }
    c.shutdown().await;
}

/// The scaling signal asks for no replicas while nothing arrives, for some while work arrives
/// faster than one worker runs it, and for none again once it has drained; `/api/scale` and
/// the gauge agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaling_signal_follows_arriving_work() {
    let c = Cluster::builder()
        .without_manager()
        .workers(0)
        .start()
        .await;
    let worker = spawn_worker_with(WORKER, &c, "sw1", 1, &[]);
    let addr = http::free_addr();
    let manager = spawn_manager(
        MANAGER,
        &c,
        &[
            ("SHARDLINE_METRICS_ADDR", &addr.to_string()),
            ("SHARDLINE_SCALE_HORIZON_S", "2"),
            ("SHARDLINE_SCALE_FORECAST", "false"),
        ],
    );
    eventually("no replicas asked for while idle", WAIT, || async {
        asks_for(&signal(addr).await?, 0).then_some(())
    })
    .await;

    let sends: Vec<_> = (0..12)
        .map(|_| {
            c.client()
                .send("synthetic", synthetic(40, 5_000), Options::default())
        })
        .collect();
    let sent = futures::future::try_join_all(sends).await.expect("sent");
    let busy = eventually("replicas asked for as work arrives", WAIT, || async {
        let s = signal(addr).await?;
        let n = s.0["desired_replicas"].as_u64()?;
        let arriving = s.0["arriving"].as_f64()?;
        (n >= 1 && asks_for(&s, n) && arriving > 0.0).then_some(s.0)
    })
    .await;
    for (id, rx) in sent {
        let r = c
            .client()
            .wait(id, rx, patience(WAIT * 2))
            .await
            .expect("a result");
        assert_eq!(r.status, Status::Completed);
    }
    eventually("no replicas asked for once drained", WAIT, || async {
        asks_for(&signal(addr).await?, 0).then_some(())
    })
    .await;
    eprintln!("the signal under load: {busy}");

    for mut child in [worker, manager] {
        let _ = child.kill().await;
    }
    c.shutdown().await;
}
