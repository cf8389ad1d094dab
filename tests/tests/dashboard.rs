//! The web dashboard as a person meets it: the real `shardline dashboard` process, its page in
//! headless Chromium, its actions behind the token, and clear errors for bad input.

use std::net::SocketAddr;
use std::time::Duration;

use shardline::message::FinalResult;
use shardline::message::{Options, Status};
use shardline_tests::private_redis::PrivateRedis;
use shardline_tests::process::{cli, spawn_worker_with};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::webdriver::Browser;
use shardline_tests::{Cluster, eventually, http, patience, request_body, synthetic};
use tokio::process::Child;
use tokio::sync::oneshot::Receiver;

const CLI: &str = env!("CARGO_BIN_EXE_shardline-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "s3cret-token";

/// Start `shardline dashboard` on a free port (with `token`, if any) and wait until it answers.
async fn dashboard(c: &Cluster, token: Option<&str>) -> (Child, SocketAddr) {
    let addr = http::free_addr();
    let mut cmd = cli(CLI, c);
    cmd.args(["dashboard", "--listen", &addr.to_string()])
        .env_remove("SHARDLINE_DASHBOARD_TOKEN")
        .stdout(std::process::Stdio::null());
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let child = cmd.spawn().expect("start the dashboard");
    eventually("the dashboard answers", WAIT, || async {
        (http::get(addr, "/api/overview").await?.status == 200).then_some(())
    })
    .await;
    (child, addr)
}

/// A long request, sent and left running: its id and where its result will arrive.
async fn long_request(c: &Cluster) -> (uuid::Uuid, Receiver<FinalResult>) {
    let (id, rx) = c
        .client()
        .send("synthetic", synthetic(8, 2_000_000), Options::default())
        .await
        .expect("sent");
    eventually("the request in flight", WAIT, || async {
        let m = c.store.meta(id).await.ok()??;
        (m.total > 0).then_some(())
    })
    .await;
    (id, rx)
}

/// Headless Chromium (from `scripts/browser.sh`, or `$CHROMIUM`): the page's DOM after its
/// scripts ran.
async fn rendered(url: &str) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = std::env::temp_dir().join(format!("shardline-chromium-{}", uuid::Uuid::new_v4()));
    let out = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("chromium finishes")
        .unwrap_or_else(|e| {
            panic!("cannot run {chromium:?} ({e}): run scripts/browser.sh to install Chromium")
        });
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In a real browser, the page lists both engines and the request in flight, and a request's
/// page (its id in the address) shows its record and its shards one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_engines_and_requests_in_a_browser() {
    let c = Cluster::builder().workers(2).start().await;
    let (id, _rx) = long_request(&c).await;
    let (mut dash, addr) = dashboard(&c, Some(TOKEN)).await;

    let dom = rendered(&format!("http://{addr}/")).await;
    let engines = c
        .store
        .live_engines(Duration::from_secs(10))
        .await
        .expect("redis");
    assert_eq!(engines.len(), 2);
    for e in &engines {
        assert!(
            dom.contains(e.as_str()),
            "engine {e} not on the page:\n{dom}"
        );
    }
    assert!(
        dom.contains("<td class=\"kinds\">checksum, sort, synthetic, wordcount</td>"),
        "the kinds the engines serve are not on the page:\n{dom}"
    );
    assert!(
        dom.contains(&id.to_string()),
        "request {id} not on the page:\n{dom}"
    );

    let detail = http::get(addr, &format!("/api/requests/{id}"))
        .await
        .expect("an answer")
        .json();
    let total = detail["total"].as_u64().expect("a shard count");
    let shards = detail["shards"].as_array().expect("shards listed");
    assert_eq!(shards.len() as u64, total);
    assert!(
        shards.iter().all(|s| s["attempts"].as_u64() >= Some(1)),
        "{detail}"
    );
    let dom = rendered(&format!("http://{addr}/#{id}")).await;
    assert!(
        dom.contains("id=\"request-detail\"") && dom.contains("id=\"request-shards\""),
        "no request detail or shard list:\n{dom}"
    );
    assert!(
        dom.contains("synthetic") && dom.contains(">running<"),
        "{dom}"
    );

    let dom = rendered(&format!("http://{addr}/#{}", uuid::Uuid::new_v4())).await;
    assert!(
        dom.contains("id=\"request-error\"") && dom.contains("no request"),
        "{dom}"
    );

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Cancel needs the token: none or a wrong one is refused (401) and the request runs on; the
/// right one ends it with one `cancelled` result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_needs_the_token() {
    let c = Cluster::builder().workers(1).start().await;
    let (id, rx) = long_request(&c).await;
    let (mut dash, addr) = dashboard(&c, Some(TOKEN)).await;
    let path = format!("/api/requests/{id}/cancel");

    for headers in [vec![], vec![("Authorization", "Bearer wrong-token!")]] {
        let a = http::request(addr, "POST", &path, &headers)
            .await
            .expect("an answer");
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.json()["error"].as_str().is_some());
    }
    let m = c.store.meta(id).await.expect("redis").expect("recorded");
    assert_eq!(m.state.as_str(), "running");

    let bearer = format!("Bearer {TOKEN}");
    let a = http::request(addr, "POST", &path, &[("Authorization", &bearer)])
        .await
        .expect("an answer");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["outcome"], "cancelled");
    let r = c
        .client()
        .wait(id, rx, patience(WAIT))
        .await
        .expect("a result");
    assert_eq!(r.status, Status::Cancelled);

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Without a token the dashboard is read-only: actions answer 403, even with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_actions_are_refused() {
    let c = Cluster::builder().workers(1).start().await;
    let (id, _rx) = long_request(&c).await;
    let (mut dash, addr) = dashboard(&c, None).await;
    let overview = http::get(addr, "/api/overview")
        .await
        .expect("an answer")
        .json();
    assert_eq!(overview["read_only"], true);

    let path = format!("/api/requests/{id}/cancel");
    let a = http::request(addr, "POST", &path, &[("Authorization", "Bearer anything")])
        .await
        .expect("an answer");
    assert_eq!(a.status, 403, "{}", a.body);
    let m = c.store.meta(id).await.expect("redis").expect("recorded");
    assert_eq!(m.state.as_str(), "running");

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Bad input gets a clear JSON error with a fitting status, never a crash: a malformed id
/// (400), an unknown request (404), a page that is not a number (400); a page far past the end
/// is simply empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let (mut dash, addr) = dashboard(&c, Some(TOKEN)).await;
    let cases = [
        ("/api/requests/not-a-uuid", 400, "UUID"),
        (
            &*format!("/api/requests/{}", uuid::Uuid::new_v4()),
            404,
            "no request",
        ),
        ("/api/overview?page=abc", 400, "page"),
        ("/api/overview?page=99999999999999999999999", 400, "page"),
    ];
    for (path, status, says) in cases {
        let a = http::get(addr, path).await.expect("an answer");
        assert_eq!(a.status, status, "{path}: {}", a.body);
        let error = a.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{path}: {error}");
    }
    let a = http::get(addr, "/api/overview?page=1000000000000")
        .await
        .expect("an answer");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["requests"], serde_json::json!([]));
    // Still serving after all that.
    assert_eq!(http::get(addr, "/").await.expect("an answer").status, 200);

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// `/api/targets` lists each worker that serves metrics, in Prometheus HTTP service-discovery
/// format, at the address it registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_list_the_workers_metrics_endpoints() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut worker = spawn_worker_with(WORKER, &c, "tw1", 1, &[("SHARDLINE_METRICS_ADDR", "0")]);
    let (mut dash, addr) = dashboard(&c, None).await;
    let groups = eventually("the worker among the targets", WAIT, || async {
        let groups = http::get(addr, "/api/targets").await?.json();
        (groups.as_array()?.len() == 1).then_some(groups)
    })
    .await;
    let group = &groups[0];
    assert_eq!(group["labels"]["engine"], "tw1");
    let target: SocketAddr = group["targets"][0]
        .as_str()
        .expect("a target")
        .parse()
        .expect("an address");
    let a = http::get(target, "/metrics")
        .await
        .expect("the worker's metrics");
    assert_eq!(a.status, 200);

    let _ = dash.kill().await;
    let _ = worker.kill().await;
    c.shutdown().await;
}

/// While Redis is down the API answers 503 with a JSON error and the page still loads; once
/// Redis is back the API answers again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_outlives_a_redis_outage() {
    let mut redis = PrivateRedis::start().await;
    let addr = http::free_addr();
    let mut dash = tokio::process::Command::new(CLI)
        .args(["dashboard", "--listen", &addr.to_string()])
        .env("SHARDLINE_REDIS_URL", redis.url())
        .env("SHARDLINE_NAMESPACE", "dash-outage")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the dashboard");
    let status = |path: &'static str| async move { Some(http::get(addr, path).await?.status) };
    eventually("the dashboard answers", WAIT, || async {
        (status("/api/overview").await? == 200).then_some(())
    })
    .await;

    redis.kill().await;
    let down = eventually("a 503 while Redis is down", WAIT, || async {
        let a = http::get(addr, "/api/overview").await?;
        (a.status == 503).then_some(a)
    })
    .await;
    assert!(
        down.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("redis")),
        "{}",
        down.body
    );
    assert_eq!(status("/").await, Some(200), "the page still loads");

    redis.restart().await;
    eventually("answers again once Redis is back", WAIT, || async {
        (status("/api/overview").await? == 200).then_some(())
    })
    .await;
    let _ = dash.kill().await;
}

/// The activity chart's series counts what happened: three completed requests and one
/// rejected one appear in the last hour's buckets (within one flush period), and the page
/// draws the chart's lines in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_chart_counts_what_happened() {
    let c = Cluster::builder().workers(1).start().await;
    for _ in 0..3 {
        let r = c
            .client()
            .submit(
                "wordcount",
                "to be or not".into(),
                Options::default(),
                patience(WAIT),
            )
            .await
            .expect("a result");
        assert_eq!(r.status, Status::Completed);
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
    let (mut dash, addr) = dashboard(&c, None).await;

    let total = |json: &serde_json::Value, event: &str| -> u64 {
        json["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["counts"][event].as_u64())
            .sum()
    };
    let series = eventually("the counts in the activity series", WAIT, || async {
        let json = http::get(addr, "/api/activity?minutes=10").await?.json();
        (total(&json, "completed") == 3).then_some(json)
    })
    .await;
    assert_eq!(total(&series, "accepted"), 3, "{series}");
    assert_eq!(total(&series, "rejected"), 1, "{series}");
    assert_eq!(total(&series, "failed"), 0, "{series}");
    assert_eq!(
        series["points"].as_array().map(Vec::len),
        Some(61),
        "one point per 10 s"
    );
    let bad = http::get(addr, "/api/activity?minutes=100000")
        .await
        .expect("an answer");
    assert_eq!(bad.status, 400, "{}", bad.body);

    let dom = rendered(&format!("http://{addr}/")).await;
    for line in [
        "accepted",
        "completed",
        "failed, timed out or cancelled",
        "rejected",
    ] {
        assert!(
            dom.contains(&format!("data-name=\"{line}\"")),
            "no {line} line in the chart"
        );
    }
    assert!(dom.contains("completed 3"), "the legend's totals are wrong");

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// A rejected request is listed among the dead letters with its reason, in the API and on
/// the page; re-submitting it needs the token and publishes it again under the same id and
/// reply queue (here it is rejected again: a second answer and a second dead letter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_resubmitted() {
    let c = Cluster::builder().workers(1).start().await;
    let mut replies = Replies::new(&c).await;
    let id = uuid::Uuid::new_v4();
    let body = request_body("no-such-kind", "x".into(), &[]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let first = replies.next(WAIT).await;
    assert_eq!((first.request_id, first.status), (id, Status::Rejected));
    let (mut dash, addr) = dashboard(&c, Some(TOKEN)).await;

    let listed = eventually("the dead letter listed", WAIT, || async {
        let json = http::get(addr, "/api/dead").await?.json();
        let entry = json["dead_letters"].as_array()?.first()?.clone();
        (entry["request_id"] == id.to_string()).then_some(entry)
    })
    .await;
    assert_eq!(listed["reason"], "unknown_kind");
    assert_eq!(listed["resubmittable"], true);
    let dom = rendered(&format!("http://{addr}/")).await;
    assert!(
        dom.contains("data-entry=") && dom.contains("unknown_kind"),
        "no dead letter on the page"
    );

    let path = format!(
        "/api/dead/{}/resubmit",
        listed["entry"].as_str().expect("an entry id")
    );
    let refused = http::request(addr, "POST", &path, &[])
        .await
        .expect("an answer");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let bearer = format!("Bearer {TOKEN}");
    let done = http::request(addr, "POST", &path, &[("Authorization", &bearer)])
        .await
        .expect("an answer");
    assert_eq!(done.status, 200, "{}", done.body);
    let again = replies.next(WAIT).await;
    assert_eq!((again.request_id, again.status), (id, Status::Rejected));
    eventually("a second dead letter", WAIT, || async {
        let json = http::get(addr, "/api/dead").await?.json();
        (json["dead_letters"].as_array()?.len() == 2).then_some(())
    })
    .await;

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Requests finished in the last minutes are listed, newest first, with their kind and status
/// (within one flush period of their result), in the API and on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_requests_are_listed() {
    let c = Cluster::builder().workers(1).start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = c
            .client()
            .submit(
                "wordcount",
                "to be or not".into(),
                Options::default(),
                patience(WAIT),
            )
            .await
            .expect("a result");
        assert_eq!(r.status, Status::Completed);
        ids.push(r.request_id.to_string());
    }
    let (mut dash, addr) = dashboard(&c, None).await;
    let listed = eventually("the finished requests listed", WAIT, || async {
        let json = http::get(addr, "/api/finished").await?.json();
        let requests = json["requests"].as_array()?.clone();
        (requests.len() == 3).then_some(requests)
    })
    .await;
    let mut got: Vec<String> = listed
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert!(
        listed
            .iter()
            .all(|r| r["status"] == "completed" && r["kind"] == "wordcount")
    );
    let dom = rendered(&format!("http://{addr}/")).await;
    assert!(
        ids.iter().all(|id| dom.contains(id.as_str())),
        "finished requests not on the page"
    );

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// The engines list carries what the managers report of each engine: a learned speed and a
/// sampled queue depth, and the unfinished shards a long request left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_show_what_the_managers_report() {
    // An engine's unfinished shards are those routed to it (late binding would send a lone
    // engine's shards to the shared queue).
    let c = Cluster::builder().engine_queues().workers(1).start().await;
    let (mut dash, addr) = dashboard(&c, None).await;
    let engine = |json: serde_json::Value| json["engines"].as_array()?.first().cloned();
    // Once the manager reports the engine, it routes to it (rather than the shared queue).
    eventually("the manager's report of the engine", WAIT, || async {
        let e = engine(http::get(addr, "/api/overview").await?.json())?;
        (e["speed"].is_f64() && e["queue_depth"].is_u64()).then_some(())
    })
    .await;
    let (id, _rx) = long_request(&c).await;
    let meta = c.store.meta(id).await.expect("redis").expect("recorded");
    let busy = eventually("unfinished shards on the engine", WAIT, || async {
        let e = engine(http::get(addr, "/api/overview").await?.json())?;
        (e["unfinished"].as_u64()? > 0).then_some(e)
    })
    .await;
    assert!(
        busy["unfinished"].as_u64() <= Some(u64::from(meta.total)),
        "{busy}"
    );

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Clicking in a real browser: cancel without the token is refused on the page and the request
/// runs on; with the token typed in, the click ends the request with one `cancelled` result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_clicking_in_a_browser() {
    let c = Cluster::builder().workers(1).start().await;
    let (id, rx) = long_request(&c).await;
    let (mut dash, addr) = dashboard(&c, Some(TOKEN)).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#{id}")).await;

    eventually("the refusal on the page", WAIT, || async {
        browser.click("#cancel").await;
        let said = browser.text("#cancel-result").await?;
        said.contains("missing or wrong token").then_some(())
    })
    .await;
    let m = c.store.meta(id).await.expect("redis").expect("recorded");
    assert_eq!(m.state.as_str(), "running");

    eventually("the token typed and cancel clicked", WAIT, || async {
        (browser.type_into("#token", TOKEN).await && browser.click("#cancel").await).then_some(())
    })
    .await;
    let r = c
        .client()
        .wait(id, rx, patience(WAIT))
        .await
        .expect("a result");
    assert_eq!(r.status, Status::Cancelled);

    browser.quit().await;
    let _ = dash.kill().await;
    c.shutdown().await;
}

/// Each engine gets a small chart over the last minutes: the managers' points reach
/// `/api/engines/series` under the engine's id (the unfinished shards of a long request among
/// them), and the page draws a chart with a depth line for the engine in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_are_charted_over_time() {
    // See `engines_show_what_the_managers_report`.
    let c = Cluster::builder().engine_queues().workers(1).start().await;
    let (mut dash, addr) = dashboard(&c, None).await;
    let engines = c
        .store
        .live_engines(Duration::from_secs(10))
        .await
        .expect("redis");
    let [engine] = engines.as_slice() else {
        panic!("one engine expected: {engines:?}");
    };
    // Once the manager reports the engine, it routes to it (rather than the shared queue).
    eventually("the manager's report of the engine", WAIT, || async {
        let json = http::get(addr, "/api/overview").await?.json();
        json["engines"][0]["speed"].is_f64().then_some(())
    })
    .await;
    let (_id, _rx) = long_request(&c).await;
    let points = eventually("a point with the request's shards", WAIT, || async {
        let json = http::get(addr, "/api/engines/series?minutes=5")
            .await?
            .json();
        let points = json["engines"][engine.as_str()].as_array()?.clone();
        points
            .iter()
            .any(|p| p["unfinished"].as_u64() > Some(0))
            .then_some(points)
    })
    .await;
    assert!(
        points
            .iter()
            .all(|p| p["t"].as_u64().is_some_and(|t| t % 5_000 == 0)),
        "points start on 5 s steps: {points:?}"
    );
    assert!(
        points.iter().any(|p| p["depth"].is_u64()),
        "a sampled depth among the points: {points:?}"
    );
    let bad = http::get(addr, "/api/engines/series?minutes=61")
        .await
        .expect("an answer");
    assert_eq!(bad.status, 400, "{}", bad.body);

    let dom = rendered(&format!("http://{addr}/")).await;
    assert!(
        dom.contains("class=\"spark\"")
            && dom.contains(
                "class=\"depth\" fill=\"none\" stroke=\"#3b82f6\" stroke-width=\"1.5\" d=\"M"
            ),
        "no drawn engine chart on the page:\n{dom}"
    );

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// `/api/scale` on the dashboard combines every manager's signal, in the shape KEDA's
/// metrics-api scaler reads; with no manager reporting it answers 503, not a count of zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaling_signal_combines_every_manager() {
    let mut c = Cluster::builder().workers(2).start().await;
    c.start_manager(|_| {});
    let (mut dash, addr) = dashboard(&c, None).await;
    let json = eventually("both managers' signals", WAIT, || async {
        let answer = http::get(addr, "/api/scale").await?;
        let json = answer.json();
        (answer.status == 200 && json["managers"] == 2 && json["shardline"]["replicas"] == 2)
            .then_some(json)
    })
    .await;
    let s = &json["shardline"];
    assert!(s["desired_replicas"].is_u64(), "{json}");
    assert!(s["capacity_per_replica"].as_f64() > Some(0.0), "{json}");
    assert!(s["horizon_s"].as_f64() > Some(0.0), "{json}");

    c.stop_manager().await;
    eventually("no signal once the managers stopped", WAIT, || async {
        let answer = http::get(addr, "/api/scale").await?;
        (answer.status == 503 && answer.json()["error"].is_string()).then_some(())
    })
    .await;

    let _ = dash.kill().await;
    c.shutdown().await;
}

/// A finished request's page tells how long it took and how long each shard took to process,
/// with the spread of those times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shows_its_timings() {
    let c = Cluster::builder().workers(2).start().await;
    let r = c
        .client()
        .submit(
            "synthetic",
            synthetic(6, 20_000),
            Options::default(),
            patience(WAIT),
        )
        .await
        .expect("a result");
    assert_eq!(r.status, Status::Completed);
    let (mut dash, addr) = dashboard(&c, None).await;
    let detail = eventually("the request's finish time", WAIT, || async {
        let json = http::get(addr, &format!("/api/requests/{}", r.request_id))
            .await?
            .json();
        json["finished"].is_u64().then_some(json)
    })
    .await;
    let total = detail["total"].as_u64().expect("a shard count");
    assert!(
        detail["finished"].as_u64() >= detail["created"].as_u64(),
        "{detail}"
    );
    let shards = detail["shards"].as_array().expect("shards listed");
    assert!(
        shards.iter().all(|s| s["took_ms"].as_f64() > Some(0.0)),
        "every shard has its processing time: {detail}"
    );
    let ms = &detail["shard_ms"];
    assert_eq!(ms["count"].as_u64(), Some(total), "{detail}");
    assert!(
        ms["min"].as_f64() <= ms["median"].as_f64()
            && ms["median"].as_f64() <= ms["p95"].as_f64()
            && ms["p95"].as_f64() <= ms["max"].as_f64(),
        "{detail}"
    );

    let dom = rendered(&format!("http://{addr}/#{}", r.request_id)).await;
    assert!(
        dom.contains("id=\"request-shard-ms\">median"),
        "no shard timings on the request page:\n{dom}"
    );

    let _ = dash.kill().await;
    c.shutdown().await;
}
