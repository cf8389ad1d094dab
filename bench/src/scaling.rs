//! The scaling suite: does the manager's desired-replica signal rise before the queue does?
//!
//! One manager and [`ENGINES`] workers (in this process, the synthetic kind, [`SLOTS`] slots
//! each) take an arrival trace whose rate ramps from well below their capacity to past it, or
//! swings around it periodically. Every second the suite reads the manager's `/api/scale` and
//! counts the requests in flight (sent, not yet answered: the queue as a client sees it).
//! From each reading it also recomputes the signal without the forecast (the same formula on
//! the recent arrival rate alone), so the forecast and its ablation are measured on the same
//! run.
//!
//! What it reports: on the ramp, when each signal first asks for more replicas than are
//! running, against when the in-flight count first passes twice its early level; on the
//! periodic trace, the lag at which each signal best correlates with the in-flight count
//! (positive: the signal leads). A plot shows the three series.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::config::ConnectArgs;
use shardline::exporter::MetricsAddr;
use shardline::kind::synthetic::{Synthetic, Work};
use shardline::message::Options;
use shardline::scaling;
use shardline::store::Store;
use shardline_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::harness::{self, Running};
use crate::workload::{ENGINES, SLOTS};

/// Cost of one unit of work (one shard), µs.
pub const UNIT_US: u64 = 100_000;
/// Units (shards) per request.
pub const UNITS: u64 = 8;
/// The manager's scaling horizon.
pub const HORIZON: Duration = Duration::from_secs(15);
/// Time between two readings.
pub const EVERY: Duration = Duration::from_secs(1);
/// Largest lag tried when correlating a signal with the in-flight count, in readings.
pub const MAX_LAG: usize = 30;

/// The shape of an arrival trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// From 30% of the workers' capacity to 140% over 90 s, then 20 s of nothing.
    Ramp,
    /// 75% of capacity ± 45%, a sine of period 60 s, for 240 s.
    Periodic,
}

impl Shape {
    /// Both shapes.
    pub const ALL: [Shape; 2] = [Shape::Ramp, Shape::Periodic];

    /// Name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Ramp => "ramp",
            Shape::Periodic => "periodic",
        }
    }

    /// Length of the trace.
    pub fn length(self) -> Duration {
        match self {
            Shape::Ramp => Duration::from_secs(110),
            Shape::Periodic => Duration::from_secs(240),
        }
    }

    /// Arrival rate at `t` seconds, as a share of the workers' capacity.
    pub fn load_at(self, t: f64) -> f64 {
        match self {
            Shape::Ramp if t < 90.0 => 0.3 + 1.1 * t / 90.0,
            Shape::Ramp => 0.0,
            Shape::Periodic => 0.75 + 0.45 * (2.0 * std::f64::consts::PI * t / 60.0).sin(),
        }
    }
}

/// Requests per second at full capacity: every slot busy with one-unit shards.
pub fn capacity_per_sec() -> f64 {
    (ENGINES as f64 * f64::from(SLOTS)) * 1e6 / (UNIT_US * UNITS) as f64
}

/// Arrival times of a non-homogeneous Poisson trace of `shape` (thinning).
pub fn trace(shape: Shape, seed: u64) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    let peak = 1.5 * capacity_per_sec();
    let end = shape.length().as_secs_f64();
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        t += -(1.0 - rng.random::<f64>()).ln() / peak;
        if t >= end {
            return out;
        }
        let rate = shape.load_at(t) * capacity_per_sec();
        if rng.random::<f64>() < rate / peak {
            out.push(Duration::from_secs_f64(t));
        }
    }
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Seconds from the start of the trace.
    pub t: f64,
    /// Replicas the manager's signal asks for (with its forecast).
    pub desired: u32,
    /// Replicas the same formula asks for on the recent arrival rate alone.
    pub reactive: u32,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
}

/// The two signals compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The manager's signal, with its forecast.
    Forecast,
    /// The same formula on the recent arrival rate alone.
    RecentRate,
}

impl Variant {
    /// Both.
    pub const ALL: [Variant; 2] = [Variant::Forecast, Variant::RecentRate];

    /// Name for tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Forecast => "desired, with the forecast",
            Variant::RecentRate => "desired, recent rate only",
        }
    }

    /// This signal's value in `r`.
    pub fn of(self, r: &Reading) -> u32 {
        match self {
            Variant::Forecast => r.desired,
            Variant::RecentRate => r.reactive,
        }
    }
}

/// Run `shape` once on the servers of `base` (in a fresh namespace) and read the signal every
/// [`EVERY`].
///
/// # Errors
/// The servers are unreachable or the deployment does not start.
pub async fn run(base: &ConnectArgs, shape: Shape, seed: u64) -> anyhow::Result<Vec<Reading>> {
    let connect = ConnectArgs {
        namespace: format!("scale{}", &Uuid::new_v4().simple().to_string()[..10]),
        ..base.clone()
    };
    let names = connect.names()?;
    let store = Store::connect(&connect.redis_url, names.clone()).await?;
    let workers: Vec<Running> = (0..ENGINES)
        .map(|i| harness::start_worker(&connect, i, Synthetic::default()))
        .collect();
    harness::wait_until("engines registered", Duration::from_secs(20), || async {
        let live = store.live_engines(Duration::from_secs(10)).await.ok()?;
        (live.len() == ENGINES).then_some(())
    })
    .await?;
    let addr = free_port()?;
    let mut cfg = shardline_manager::Config::new(connect.clone());
    cfg.metrics_addr = MetricsAddr::On(addr);
    cfg.scale_horizon_s = HORIZON.as_secs();
    cfg.grace_ms = 500;
    let headroom = cfg.scale_headroom;
    let manager = harness::spawn_manager(cfg);
    let client = Arc::new(Client::connect(&connect).await?);
    harness::wait_until("the scaling signal", Duration::from_secs(20), || async {
        signal(addr).await.map(|_| ())
    })
    .await?;

    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let sends: Vec<_> = trace(shape, seed)
        .into_iter()
        .map(|at| {
            let (client, in_flight) = (client.clone(), in_flight.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until((start + at).into()).await;
                let work = Work {
                    units: UNITS,
                    unit_cost_us: UNIT_US,
                    spin: false,
                    noise_seed: None,
                    partition: None,
                };
                let payload = shardline::message::to_named_value(&work).ok()?;
                let (id, rx) = client
                    .send("synthetic", payload, Options::default())
                    .await
                    .ok()?;
                in_flight.fetch_add(1, Ordering::Relaxed);
                let answered = client.wait(id, rx, Duration::from_secs(600)).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                answered.ok()
            })
        })
        .collect();
    let mut readings = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    while start.elapsed() < shape.length() {
        tick.tick().await;
        if let Some(s) = signal(addr).await {
            readings.push(Reading {
                t: start.elapsed().as_secs_f64(),
                desired: s.desired_replicas,
                reactive: scaling::replicas_for(
                    scaling::need(s.arriving, s.backlog, s.horizon_s, headroom),
                    s.capacity_per_replica,
                ),
                in_flight: in_flight.load(Ordering::Relaxed),
            });
        }
    }
    for s in sends {
        s.abort();
    }
    manager.stop().await;
    for w in workers {
        w.stop().await;
    }
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    harness::cleanup(&connect, &names).await;
    Ok(readings)
}

async fn signal(addr: SocketAddr) -> Option<scaling::Signal> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let ask = format!("GET /api/scale HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(ask.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    serde_json::from_value(json.get("shardline")?.clone()).ok()
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Readings in a row the in-flight count must stay high for a rise to count.
pub const SUSTAINED: usize = 5;
/// How long before a queue rise a signal rise may come and still count as leading it.
pub const LEAD_WINDOW: f64 = 45.0;
/// Queue rises in the first seconds are left out: the signal needs [`shardline_manager::scale::RECENT`] seconds
/// of arrivals first.
pub const WARMUP: f64 = 20.0;

/// When the in-flight count rises: the first reading of each run of [`SUSTAINED`] or more
/// readings above a tenth of its maximum (at least 2), in seconds.
pub fn queue_rises(readings: &[Reading]) -> Vec<f64> {
    let most = readings.iter().map(|r| r.in_flight).max().unwrap_or(0);
    let threshold = (most / 10).max(2);
    let mut rises = Vec::new();
    let mut run = 0;
    for (i, r) in readings.iter().enumerate() {
        if r.in_flight > threshold {
            run += 1;
            if run == SUSTAINED {
                rises.push(readings[i + 1 - SUSTAINED].t);
            }
        } else {
            run = 0;
        }
    }
    rises
}

/// When signal `v` starts asking for more replicas than are running, in seconds.
pub fn signal_rises(readings: &[Reading], v: Variant) -> Vec<f64> {
    let mut above = false;
    let mut rises = Vec::new();
    for r in readings {
        let now = v.of(r) as usize > ENGINES;
        if now && !above {
            rises.push(r.t);
        }
        above = now;
    }
    rises
}

/// For each queue rise after [`WARMUP`], how long before it signal `v` started asking for
/// more replicas (its first rise within [`LEAD_WINDOW`] before; 0 when it did not rise first).
pub fn leads(readings: &[Reading], v: Variant) -> Vec<f64> {
    let signal = signal_rises(readings, v);
    queue_rises(readings)
        .into_iter()
        .filter(|&q| q >= WARMUP)
        .map(|q| {
            signal
                .iter()
                .find(|&&s| s <= q && q - s <= LEAD_WINDOW)
                .map_or(0.0, |s| q - s)
        })
        .collect()
}

/// The lag (in readings, within ±[`MAX_LAG`]) at which signal `v` best correlates with the
/// in-flight count later on, and that correlation: a positive lag means the signal moves
/// first. Readings before `skip` seconds are left out (the forecast's warm-up).
pub fn lead(readings: &[Reading], skip: f64, v: Variant) -> Option<(i64, f64)> {
    let used: Vec<&Reading> = readings.iter().filter(|r| r.t >= skip).collect();
    let x: Vec<f64> = used.iter().map(|r| f64::from(v.of(r))).collect();
    let y: Vec<f64> = used.iter().map(|r| r.in_flight as f64).collect();
    let lags = -(MAX_LAG as i64)..=(MAX_LAG as i64);
    lags.filter_map(|lag| {
        let (a, b): (Vec<f64>, Vec<f64>) = (0..x.len())
            .filter_map(|i| {
                let j = i as i64 + lag;
                (j >= 0 && (j as usize) < y.len()).then(|| (x[i], y[j as usize]))
            })
            .unzip();
        pearson(&a, &b).map(|c| (lag, c))
    })
    .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 10 {
        return None;
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    let c = cov / (va * vb).sqrt();
    c.is_finite().then_some(c)
}

/// The suite's table for runs of each shape.
pub fn report(runs: &[(Shape, Vec<Reading>)]) -> String {
    let mut out = format!(
        "## Scaling signal ({} workers × {} slots, horizon {} s, requests of {} shards × {} ms)\n\n",
        ENGINES,
        SLOTS,
        HORIZON.as_secs(),
        UNITS,
        UNIT_US / 1000
    );
    out.push_str(
        "Lead: for each rise of the requests in flight, how long before it the signal started \
         asking for more replicas than the running ones (0: it did not). Lag: the shift at which \
         the signal best correlates with the requests in flight (positive: the signal first).\n\n\
         Mean asked: the replicas the signal asked for, averaged over the run (its cost).\n\n\
         | trace | signal | queue rises at (s) | signal led by (s) | mean lead (s) | best lag (s) | correlation | mean asked |\n\
         |---|---|---|---|---:|---:|---:|---:|\n",
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (shape, readings) in runs {
        let rises: Vec<f64> = queue_rises(readings)
            .into_iter()
            .filter(|&q| q >= WARMUP)
            .collect();
        for v in Variant::ALL {
            let leads = leads(readings, v);
            let mean = if leads.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", leads.iter().sum::<f64>() / leads.len() as f64)
            };
            let skip = if *shape == Shape::Periodic { 60.0 } else { 0.0 };
            let (lag, corr) = lead(readings, skip, v).map_or(("-".into(), "-".into()), |(l, c)| {
                (l.to_string(), format!("{c:.2}"))
            });
            let asked = readings.iter().map(|r| f64::from(v.of(r))).sum::<f64>()
                / readings.len().max(1) as f64;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {mean} | {lag} | {corr} | {asked:.2} |\n",
                shape.name(),
                v.name(),
                list(&rises),
                list(&leads),
            ));
        }
    }
    out
}

/// Draw each run's desired replicas (both signals) and in-flight requests over time.
///
/// # Errors
/// No usable font, or the file cannot be written.
pub fn plot(runs: &[(Shape, Vec<Reading>)], path: &Path) -> anyhow::Result<()> {
    crate::report::register_font()?;
    let root = BitMapBackend::new(path, (1000, 360 * runs.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for ((shape, readings), area) in runs.iter().zip(root.split_evenly((runs.len().max(1), 1))) {
        let end = readings.last().map_or(1.0, |r| r.t);
        let top = readings
            .iter()
            .map(|r| r.desired.max(r.reactive) as f64)
            .fold(f64::from(ENGINES as u32) + 1.0, f64::max);
        let most = readings
            .iter()
            .map(|r| r.in_flight)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{}: desired replicas (left) and requests in flight (right, scaled)",
                    shape.name()
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("replicas")
            .draw()?;
        for (v, color) in Variant::ALL.into_iter().zip([BLUE, GREEN]) {
            chart
                .draw_series(LineSeries::new(
                    readings.iter().map(|r| (r.t, f64::from(v.of(r)))),
                    color.stroke_width(2),
                ))?
                .label(v.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .draw_series(LineSeries::new(
                readings
                    .iter()
                    .map(|r| (r.t, r.in_flight as f64 / most * top)),
                RED.stroke_width(2),
            ))?
            .label(format!("requests in flight (max {most:.0} at the top)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
        chart.draw_series(LineSeries::new(
            [(0.0, ENGINES as f64), (end, ENGINES as f64)],
            BLACK.mix(0.4),
        ))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The readings as CSV.
pub fn csv(runs: &[(Shape, Vec<Reading>)]) -> String {
    let mut out = String::from("trace,t,desired,reactive,in_flight\n");
    for (shape, readings) in runs {
        for r in readings {
            out.push_str(&format!(
                "{},{:.1},{},{},{}\n",
                shape.name(),
                r.t,
                r.desired,
                r.reactive,
                r.in_flight
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(desired: &[u32], in_flight: &[usize]) -> Vec<Reading> {
        desired
            .iter()
            .zip(in_flight)
            .enumerate()
            .map(|(i, (&d, &q))| Reading {
                t: i as f64,
                desired: d,
                reactive: d,
                in_flight: q,
            })
            .collect()
    }

    /// A signal that moves three readings before the queue leads by three.
    #[test]
    fn finds_how_far_a_signal_leads() {
        let wave: Vec<u32> = (0..80).map(|i| ((i / 10) % 2) as u32 * 4).collect();
        let queue: Vec<usize> = (0..80)
            .map(|i| if i < 3 { 0 } else { wave[i - 3] as usize * 10 })
            .collect();
        let (lag, corr) = lead(&readings(&wave, &queue), 0.0, Variant::Forecast).expect("a lag");
        assert_eq!(lag, 3);
        assert!(corr > 0.9, "{corr}");
    }

    /// A queue rise counts once it lasts; the signal's rise before it is its lead.
    #[test]
    fn finds_queue_rises_and_leads() {
        let desired: Vec<u32> = (0..60)
            .map(|i| match i {
                25 => 4, // an early rise that falls back: the first within the window counts
                i if i >= 30 => 5,
                _ => 2,
            })
            .collect();
        let queue: Vec<usize> = (0..60)
            .map(|i| match i {
                10 => 40, // one spike: not a rise
                i if i >= 40 => 30,
                _ => 1,
            })
            .collect();
        let r = readings(&desired, &queue);
        assert_eq!(queue_rises(&r), vec![40.0]);
        assert_eq!(signal_rises(&r, Variant::Forecast), vec![25.0, 30.0]);
        assert_eq!(leads(&r, Variant::Forecast), vec![15.0]);
        let late: Vec<u32> = (0..60).map(|i| if i >= 45 { 5 } else { 2 }).collect();
        assert_eq!(
            leads(&readings(&late, &queue), Variant::Forecast),
            vec![0.0]
        );
    }

    /// The traces follow their shapes: the ramp's arrivals thicken, then stop.
    #[test]
    fn traces_follow_their_shapes() {
        let t = trace(Shape::Ramp, 1);
        let count = |a: f64, b: f64| {
            t.iter()
                .filter(|d| (a..b).contains(&d.as_secs_f64()))
                .count()
        };
        assert!(count(70.0, 90.0) > 2 * count(0.0, 20.0));
        assert_eq!(count(90.0, 110.0), 0);
    }
}
