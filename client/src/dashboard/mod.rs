//! `shardline dashboard`: a web page and a small JSON API over what the deployment already
//! keeps in Redis: live engines, requests in flight, one request's record, and cancelling.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the page (it polls the API every 2 s) |
//! | `GET /api/overview?page=N` | engines and one page of in-flight requests |
//! | `GET /api/activity?minutes=N` | requests accepted, rejected and ended per 10 s, last `N` minutes (60) |
//! | `GET /api/engines/series?minutes=N` | each engine's queue depth, unfinished shards and forecast with its interval, per 5 s, last `N` minutes (10) |
//! | `GET /api/scale` | the deployment's scaling signal, every manager's combined (KEDA's metrics-api shape) |
//! | `GET /api/finished?page=N` | requests finished in the last 10 minutes, newest first |
//! | `GET /api/requests/{id}` | one request: record, shards per engine, failed shards, or its rejection |
//! | `POST /api/requests/{id}/cancel` | cancel it; needs `Authorization: Bearer <token>` |
//! | `GET /api/targets` | the workers' metrics endpoints, in Prometheus HTTP service-discovery format |
//! | `GET /api/dead?page=N` | recent dead letters, newest first |
//! | `POST /api/dead/{entry}/resubmit` | publish a dead-lettered request again; needs the token |
//!
//! Without `--token` the dashboard is read-only: actions answer 403. Errors are JSON
//! (`{"error": …}`) with a status that says what went wrong: 400 for a malformed id, 404 for
//! an unknown request, 401 for a missing or wrong token, 503 while Redis is unreachable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shardline::amqp;
use shardline::message::Status;
use shardline::now_ms;
use shardline::scaling::{self, Signal};
use shardline::store::{
    DEAD_KEPT, DeadKind, Ended, EngineInfo, EnginePoint, SERIES_KEEP, SERIES_STEP, SeriesEntry,
    Store,
};
use uuid::Uuid;

/// In-flight requests per page.
pub const PAGE: usize = 50;
/// Requests of at most this many shards get their shards listed one by one.
pub const SHARDS_LISTED: u32 = 1000;
/// An engine whose heartbeat is older than this is not listed (the managers' default TTL).
pub const LIVE_WITHIN: Duration = Duration::from_secs(6);

const PAGE_HTML: &str = include_str!("page.html");

/// What every handler reads.
#[derive(Clone)]
struct Shared {
    store: Store,
    token: Option<Arc<str>>,
    broker: Arc<Broker>,
}

/// The broker connection for re-submitting, opened on first use.
struct Broker {
    url: String,
    channel: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

impl Broker {
    /// Publish `body` to the requests exchange with confirms, reconnecting when the last
    /// connection is gone.
    async fn publish(
        &self,
        names: &shardline::Names,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), shardline::Error> {
        let mut slot = self.channel.lock().await;
        if !slot.as_ref().is_some_and(|(c, _)| c.status().connected()) {
            let conn = amqp::connect(&self.url, "shardline-dashboard").await?;
            let ch = amqp::confirm_channel(&conn).await?;
            *slot = Some((conn, ch));
        }
        let Some((_, ch)) = slot.as_ref() else {
            return Err(shardline::Error::Config("no broker channel".into()));
        };
        amqp::publish(ch, &names.requests_exchange(), "", body, props, false).await?;
        Ok(())
    }
}

/// A JSON error with its status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json_response(self.0, &json!({ "error": self.1 }))
    }
}

impl From<shardline::Error> for Failure {
    fn from(e: shardline::Error) -> Self {
        Failure(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}"))
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The dashboard's routes over `store` (and the broker at `amqp_url`, for re-submitting);
/// actions need `token` (none: read-only).
pub fn router(store: Store, amqp_url: &str, token: Option<String>) -> Router {
    let shared = Shared {
        store,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
        broker: Arc::new(Broker {
            url: amqp_url.to_owned(),
            channel: tokio::sync::Mutex::new(None),
        }),
    };
    Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
        .route("/api/activity", get(activity))
        .route("/api/engines/series", get(engine_series))
        .route("/api/scale", get(scale))
        .route("/api/requests/{id}", get(request))
        .route("/api/requests/{id}/cancel", post(cancel))
        .route("/api/targets", get(targets))
        .route("/api/finished", get(finished))
        .route("/api/dead", get(dead))
        .route("/api/dead/{entry}/resubmit", post(resubmit))
        .with_state(shared)
}

/// Serve the dashboard on `listen` until `shutdown` resolves.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    store: Store,
    amqp_url: &str,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mode = if token.as_deref().is_some_and(|t| !t.is_empty()) {
        "actions need the token"
    } else {
        "read-only"
    };
    eprintln!("dashboard: http://{addr}/ ({mode})");
    axum::serve(listener, router(store, amqp_url, token))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn page() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], PAGE_HTML)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
}

/// The page number in `q` (0 when absent) and the rank its first item has.
fn page_of(q: &PageQuery) -> Result<(usize, usize), Failure> {
    let page: usize = match q.page.as_deref() {
        None => 0,
        Some(p) => p.parse().map_err(|_| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("page {p:?} is not a page number"),
            )
        })?,
    };
    // A page past the end is empty, not an error (the store saturates far ranks).
    Ok((page, page.saturating_mul(PAGE)))
}

async fn overview(
    State(s): State<Shared>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Failure> {
    let (page, start) = page_of(&q)?;
    let engines = engines(&s.store).await?;
    let ids = s.store.inflight_page(start, PAGE).await?;
    let mut requests = Vec::with_capacity(ids.len());
    for (id, deadline) in ids {
        match s.store.meta(id).await {
            Ok(Some(m)) => requests.push(json!({
                "id": id,
                "kind": m.kind,
                "state": m.state.as_str(),
                "done": m.done,
                "total": m.total,
                "created": m.created,
                "deadline": m.deadline,
            })),
            Ok(None) => requests.push(json!({ "id": id, "state": "gone", "deadline": deadline })),
            // One unreadable record must not take the page down.
            Err(e @ shardline::Error::Corrupt { .. }) => {
                requests.push(json!({ "id": id, "state": "corrupt", "error": e.to_string() }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "namespace": s.store.names().namespace(),
            "now": now_ms(),
            "read_only": s.token.is_none(),
            "engines": engines,
            "page": page,
            "page_size": PAGE,
            "requests": requests,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct MinutesQuery {
    minutes: Option<String>,
}

/// Longest window `/api/activity` answers for, minutes (the stream keeps two hours).
pub const MAX_MINUTES: u64 = 120;

/// The window in `q`, minutes: `default` when absent, 1 to `max` otherwise.
fn minutes_of(q: &MinutesQuery, default: u64, max: u64) -> Result<u64, Failure> {
    match q.minutes.as_deref() {
        None => Ok(default),
        Some(m) => m
            .parse()
            .ok()
            .filter(|m| (1..=max).contains(m))
            .ok_or_else(|| {
                Failure(
                    StatusCode::BAD_REQUEST,
                    format!("minutes {m:?} is not a number from 1 to {max}"),
                )
            }),
    }
}

async fn activity(
    State(s): State<Shared>,
    Query(q): Query<MinutesQuery>,
) -> Result<Response, Failure> {
    let minutes = minutes_of(&q, 60, MAX_MINUTES)?;
    let now = now_ms();
    let since = now.saturating_sub(minutes * 60_000);
    let entries = s.store.activity_since(since).await?;
    let points = shardline::activity::series(
        &entries,
        shardline::activity::bucket_of(since),
        shardline::activity::bucket_of(now),
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "bucket_s": shardline::activity::BUCKET.as_secs(),
            "points": points,
        }),
    ))
}

/// Longest window `/api/engines/series` answers for, minutes (the stream keeps a little more).
pub const SERIES_MAX_MINUTES: u64 = 60;
const _: () = assert!(SERIES_MAX_MINUTES * 60 <= SERIES_KEEP.as_secs());

/// Each engine's points over the last `minutes` (10 by default, at most an hour), one per
/// [`SERIES_STEP`]: the managers' points in one step put together like [`reported`] does
/// (unfinished shards added up over managers, the largest depth and forecast).
async fn engine_series(
    State(s): State<Shared>,
    Query(q): Query<MinutesQuery>,
) -> Result<Response, Failure> {
    let minutes = minutes_of(&q, 10, SERIES_MAX_MINUTES)?;
    let since = now_ms().saturating_sub(minutes * 60_000);
    let entries = s.store.engine_series_since(since).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "step_s": SERIES_STEP.as_secs(),
            "since": since,
            "engines": combine_series(&entries),
        }),
    ))
}

/// Engine id → points oldest first, each `{t, depth, unfinished, forecast, lower, upper}` with
/// `t` the step's start (epoch ms). A manager's later point in the same step replaces its
/// earlier one.
fn combine_series(entries: &[SeriesEntry]) -> BTreeMap<String, Vec<Value>> {
    let step_ms = SERIES_STEP.as_millis() as u64;
    // engine → step → manager → point
    let mut steps: BTreeMap<&str, BTreeMap<u64, BTreeMap<&str, EnginePoint>>> = BTreeMap::new();
    for e in entries {
        let step = e.at - e.at % step_ms;
        for (engine, p) in &e.engines {
            steps
                .entry(engine)
                .or_default()
                .entry(step)
                .or_default()
                .insert(&e.manager, *p);
        }
    }
    steps
        .into_iter()
        .map(|(engine, by_step)| {
            let points = by_step
                .into_iter()
                .map(|(t, managers)| {
                    let mut c = EnginePoint::default();
                    for p in managers.values() {
                        c.unfinished += p.unfinished;
                        c.depth = c.depth.max(p.depth);
                        c.forecast = larger(c.forecast, p.forecast);
                        c.lower = larger(c.lower, p.lower);
                        c.upper = larger(c.upper, p.upper);
                    }
                    json!({
                        "t": t,
                        "depth": c.depth,
                        "unfinished": c.unfinished,
                        "forecast": c.forecast,
                        "lower": c.lower,
                        "upper": c.upper,
                    })
                })
                .collect();
            (engine.to_owned(), points)
        })
        .collect()
}

/// The larger of two readings, or whichever one there is.
fn larger(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The deployment's scaling signal: every reporting manager's need added up over one
/// replica's capacity ([`shardline::scaling::combine`]), as `{"shardline": {…}}` for KEDA's
/// metrics-api scaler (`valueLocation: shardline.desired_replicas`), with the managers counted.
/// 503 while no manager reports one: an autoscaler should keep its replicas, not scale to 0.
async fn scale(State(s): State<Shared>) -> Result<Response, Failure> {
    let reports = s.store.scale_reports(REPORT_WITHIN).await?;
    if reports.is_empty() {
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no manager reported a scaling signal in the last {} s",
                REPORT_WITHIN.as_secs()
            ),
        ));
    }
    let signals: Vec<Signal> = reports.iter().map(|(_, s)| *s).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "shardline": scaling::combine(&signals),
            "managers": reports.len(),
        }),
    ))
}

/// Most locality keys listed per engine (`locality_count` says how many it holds).
pub const LOCALITY_SHOWN: usize = 20;

/// Managers' reports older than this are not used.
pub const REPORT_WITHIN: Duration = Duration::from_secs(5);

/// What the managers report of one engine, put together: unfinished shards added up over
/// managers (each counts its own), the largest sampled depth and forecast (and bounds), the
/// mean speed.
#[derive(Debug, Default)]
struct Reported {
    unfinished: Option<u64>,
    depth: Option<u64>,
    forecast: Option<f64>,
    lower: Option<f64>,
    upper: Option<f64>,
    speeds: Vec<f64>,
}

async fn reported(store: &Store) -> Result<BTreeMap<String, Reported>, shardline::Error> {
    let mut by_engine: BTreeMap<String, Reported> = BTreeMap::new();
    for (_, readings) in store.engine_reports(REPORT_WITHIN).await? {
        for (engine, doc) in readings {
            let Ok(v) = serde_json::from_str::<Value>(&doc) else {
                continue;
            };
            let r = by_engine.entry(engine).or_default();
            if let Some(n) = v["unfinished"].as_u64() {
                r.unfinished = Some(r.unfinished.unwrap_or(0) + n);
            }
            if let Some(d) = v["depth"].as_u64() {
                r.depth = Some(r.depth.map_or(d, |x| x.max(d)));
            }
            r.forecast = larger(r.forecast, v["forecast_hidden"].as_f64());
            r.lower = larger(r.lower, v["forecast_lower"].as_f64());
            r.upper = larger(r.upper, v["forecast_upper"].as_f64());
            if let Some(s) = v["speed"].as_f64() {
                r.speeds.push(s);
            }
        }
    }
    Ok(by_engine)
}

/// Live engines with their slots, kinds, heartbeat age, metrics address, and what the managers report
/// of them.
async fn engines(store: &Store) -> Result<Vec<Value>, shardline::Error> {
    let ids = store.live_engines(LIVE_WITHIN).await?;
    let details = store.engine_details(&ids).await?;
    let held = store.localities(&ids).await?;
    let beats: BTreeMap<String, u64> = store.engine_beats().await?.into_iter().collect();
    let mut reported = reported(store).await?;
    let now = now_ms();
    Ok(ids
        .into_iter()
        .zip(details)
        .zip(held)
        .map(|((id, d), keys)| {
            let info = d.as_deref().map(EngineInfo::parse).unwrap_or_default();
            let age = beats
                .get(&id)
                .map(|&at| now.saturating_sub(at) as f64 / 1e3);
            let r = reported.remove(&id).unwrap_or_default();
            let speed = (!r.speeds.is_empty())
                .then(|| r.speeds.iter().sum::<f64>() / r.speeds.len() as f64);
            json!({
                "id": id,
                "slots": info.concurrency,
                "kinds": info.kinds,
                "locality_count": keys.len(),
                "locality": keys.into_iter().take(LOCALITY_SHOWN).collect::<Vec<_>>(),
                "metrics": info.metrics,
                "heartbeat_age_s": age,
                "unfinished": r.unfinished,
                "queue_depth": r.depth,
                "forecast_hidden": r.forecast,
                "forecast_lower": r.lower,
                "forecast_upper": r.upper,
                "speed": speed,
            })
        })
        .collect())
}

fn parse_id(raw: &str) -> Result<Uuid, Failure> {
    raw.parse().map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("{raw:?} is not a request id (a UUID is expected)"),
        )
    })
}

async fn request(State(s): State<Shared>, Path(raw): Path<String>) -> Result<Response, Failure> {
    let id = parse_id(&raw)?;
    if let Some(m) = s.store.meta(id).await? {
        let routes = s.store.routes(id).await?;
        let mut spread: BTreeMap<String, u32> = BTreeMap::new();
        for route in routes.values() {
            *spread.entry(route.clone()).or_default() += 1;
        }
        let failed = s.store.failures(id).await?;
        let attempts = s.store.attempts(id).await?;
        let took = s.store.timings(id).await?;
        let finished = s.store.finished_at(id).await?;
        // Shard by shard for requests small enough to show that way.
        let shards: Option<Vec<Value>> = (m.total <= SHARDS_LISTED).then(|| {
            (0..m.total)
                .map(|i| {
                    json!({
                        "index": i,
                        "route": routes.get(&i),
                        "attempts": attempts.get(&i).copied().unwrap_or(1),
                        "took_ms": took.get(&i).map(|d| d.as_secs_f64() * 1e3),
                        "failure": failed.get(&i),
                    })
                })
                .collect()
        });
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "kind": m.kind,
                "state": m.state.as_str(),
                "status": m.status.map(Status::as_str),
                "done": m.done,
                "total": m.total,
                "created": m.created,
                "finished": finished,
                "deadline": m.deadline,
                "shard_ms": spread_of(took.values()),
                "policy": m.policy,
                "error": m.error,
                "shards_per_route": spread,
                "failed_shards": failed,
                "shards": shards,
            }),
        ));
    }
    if let Some(r) = s.store.rejection(id).await? {
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "kind": r.kind,
                "state": "rejected",
                "status": Status::Rejected.as_str(),
                "created": r.at,
                "error": { "code": r.reason.code(), "message": r.message },
            }),
        ));
    }
    Err(Failure(
        StatusCode::NOT_FOUND,
        format!(
            "no request {id}: not in flight, and not finished or rejected in the last {} minutes",
            Store::DEFAULT_GRACE.as_secs() / 60
        ),
    ))
}

/// Processing times of the settled shards in ms: count, min, median, p95 and max (nearest
/// rank); `null` before any shard settled.
fn spread_of<'a>(took: impl Iterator<Item = &'a Duration>) -> Value {
    let mut ms: Vec<f64> = took.map(|d| d.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return Value::Null;
    }
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({
        "count": ms.len(),
        "min": ms[0],
        "median": rank(0.5),
        "p95": rank(0.95),
        "max": ms[ms.len() - 1],
    })
}

/// Whether `headers` carry the dashboard's token; equal lengths compared in full, so the time
/// taken says nothing of how much of a guess was right.
fn authorized(s: &Shared, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(token) = &s.token else {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "the dashboard is read-only: start it with --token to allow actions".into(),
        ));
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::UNAUTHORIZED,
            "a missing or wrong token".into(),
        ))
    }
}

async fn cancel(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let id = parse_id(&raw)?;
    let outcome = match s.store.cancel(id, "cancelled from the dashboard").await? {
        Ended::Claimed | Ended::Marked => "cancelled",
        Ended::NotRunning => "not_running",
        Ended::Remembered => "remembered",
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": id, "outcome": outcome }),
    ))
}

/// Prometheus HTTP service discovery: one target group per worker that serves metrics.
async fn targets(State(s): State<Shared>) -> Result<Response, Failure> {
    let groups: Vec<Value> = engines(&s.store)
        .await?
        .into_iter()
        .filter_map(|e| {
            let addr = e["metrics"].as_str()?.to_owned();
            Some(json!({
                "targets": [addr],
                "labels": { "job": "shardline-worker", "engine": e["id"] },
            }))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(groups)))
}

async fn dead(State(s): State<Shared>, Query(q): Query<PageQuery>) -> Result<Response, Failure> {
    let (page, start) = page_of(&q)?;
    let entries: Vec<Value> = s
        .store
        .dead_letters(start, PAGE)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "entry": d.id,
                "at": d.at,
                "what": d.what,
                "reason": d.reason,
                "detail": d.detail,
                "request_id": d.request_id,
                "resubmittable": d.what == DeadKind::Request && d.body.is_some(),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "page": page, "page_size": PAGE, "dead_letters": entries }),
    ))
}

/// Publish a dead-lettered request again, with its original id, reply target and encoding.
async fn resubmit(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    authorized(&s, &headers)?;
    let entry = parse_id(&raw)?;
    let all = s.store.dead_letters(0, DEAD_KEPT as usize).await?;
    let Some(d) = all.into_iter().find(|d| d.id == entry) else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no dead letter {entry} among the newest {DEAD_KEPT}"),
        ));
    };
    let Some(body) = d.body.filter(|_| d.what == DeadKind::Request) else {
        return Err(Failure(
            StatusCode::CONFLICT,
            "only a rejected request whose body was kept can be re-submitted".into(),
        ));
    };
    let mut props = lapin::BasicProperties::default();
    if let Some(v) = d.content_type {
        props = props.with_content_type(v.into());
    }
    if let Some(v) = d.reply_to {
        props = props.with_reply_to(v.into());
    }
    if let Some(v) = d.correlation_id {
        props = props.with_correlation_id(v.into());
    }
    if let Some(v) = d.message_id {
        props = props.with_message_id(v.into());
    }
    s.broker
        .publish(s.store.names(), &body, props)
        .await
        .map_err(|e| Failure(StatusCode::SERVICE_UNAVAILABLE, format!("broker: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "entry": entry, "request_id": d.request_id, "outcome": "resubmitted" }),
    ))
}

async fn finished(
    State(s): State<Shared>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Failure> {
    let (page, start) = page_of(&q)?;
    let mut requests = Vec::new();
    for (id, at) in s.store.finished_page(start, PAGE).await? {
        let meta = match s.store.meta(id).await {
            Ok(m) => m,
            Err(shardline::Error::Corrupt { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        requests.push(match meta {
            Some(m) => json!({
                "id": id,
                "finished": at,
                "kind": m.kind,
                "status": m.status.map(Status::as_str),
                "total": m.total,
                "created": m.created,
            }),
            None => json!({ "id": id, "finished": at }),
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "page": page, "page_size": PAGE, "requests": requests }),
    ))
}
