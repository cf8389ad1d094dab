//! Turning measurements into rows, ratios, a Markdown table, a CSV file and a PNG plot.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::harness::Measured;
use crate::workload::{Arrival, ENGINES};

/// One cell's figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload (or sharding case) name.
    pub workload: String,
    /// Load level, or 0 for batches.
    pub load: f64,
    /// Policy (or shard-count mode) name.
    pub policy: String,
    /// Requests measured (after warm-up).
    pub requests: usize,
    /// Requests without a correct result in time.
    pub lost: usize,
    /// Mean, ms.
    pub mean: f64,
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// Completed requests per second.
    pub throughput: f64,
    /// Latencies of each repetition after its warm-up, µs, in trace order (`None`: lost).
    pub runs: Vec<Vec<Option<u64>>>,
    /// Makespan over ideal of each repetition (batches).
    pub makespans: Vec<f64>,
}

/// A p99 that rests on fewer requests than this is marked: it is then set by the slowest two
/// or three requests of the cell.
pub const FEW_REQUESTS: usize = 200;

/// Seed of the bootstrap resampling, so that a report is reproducible.
const BOOTSTRAP_SEED: u64 = 0x5eed;

impl Row {
    /// Figures of `m` without its first `warmup` requests (by scheduled time).
    pub fn new(
        workload: &str,
        load: f64,
        policy: &str,
        m: &Measured,
        warmup: usize,
        ideal_us: Option<f64>,
    ) -> Row {
        let kept = &m.latencies[warmup.min(m.latencies.len())..];
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        for us in kept.iter().flatten() {
            let _ = h.record((*us).max(1));
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        let done = m.latencies.iter().flatten().count();
        Row {
            workload: workload.to_owned(),
            load,
            policy: policy.to_owned(),
            requests: kept.len(),
            lost: kept.iter().filter(|l| l.is_none()).count(),
            mean: h.mean() / 1_000.0,
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            throughput: done as f64 / (m.span_us.max(1) as f64 / 1e6),
            runs: vec![kept.to_vec()],
            makespans: ideal_us
                .map(|i| m.span_us as f64 / i.max(1.0))
                .into_iter()
                .collect(),
        }
    }

    /// Mean makespan over ideal over the repetitions (batches), else `None`.
    pub fn makespan_ratio(&self) -> Option<f64> {
        (!self.makespans.is_empty())
            .then(|| self.makespans.iter().sum::<f64>() / self.makespans.len() as f64)
    }

    /// The answered latencies of each repetition; `None` when a request was lost.
    fn answered(&self) -> Option<Vec<Vec<u64>>> {
        self.runs
            .iter()
            .map(|run| run.iter().copied().collect::<Option<Vec<u64>>>())
            .collect()
    }
}

/// The row of policy `baseline` on `r`'s workload and load.
fn baseline_of<'a>(rows: &'a [Row], r: &Row, baseline: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|b| b.workload == r.workload && b.load == r.load && b.policy == baseline)
}

/// A tail quantile the table compares.
#[derive(Debug, Clone, Copy)]
enum Tail {
    P99,
    P999,
}

impl Tail {
    fn q(self) -> f64 {
        match self {
            Tail::P99 => 0.99,
            Tail::P999 => 0.999,
        }
    }

    fn of(self, r: &Row) -> f64 {
        match self {
            Tail::P99 => r.p99,
            Tail::P999 => r.p999,
        }
    }
}

/// `r`'s `tail` latency over `baseline`'s on the same workload and load, with its paired
/// bootstrap interval: "0.93 (0.85–1.02)"; "–" when either lost requests.
fn ratio(rows: &[Row], r: &Row, baseline: &str, tail: Tail) -> String {
    let Some(b) =
        baseline_of(rows, r, baseline).filter(|b| b.lost == 0 && r.lost == 0 && tail.of(b) > 0.0)
    else {
        return "–".into();
    };
    let interval = r
        .answered()
        .zip(b.answered())
        .and_then(|(x, y)| crate::bootstrap::quantile_ratio(&x, &y, tail.q(), BOOTSTRAP_SEED));
    with_interval(tail.of(r) / tail.of(b), interval)
}

/// `r`'s mean makespan over `baseline`'s (batches), with its paired bootstrap interval.
fn makespan_ratio(rows: &[Row], r: &Row, baseline: &str) -> String {
    let Some(b) = baseline_of(rows, r, baseline) else {
        return "–".into();
    };
    let Some((mine, theirs)) = r.makespan_ratio().zip(b.makespan_ratio()) else {
        return "–".into();
    };
    let interval = crate::bootstrap::mean_ratio(&r.makespans, &b.makespans, BOOTSTRAP_SEED);
    with_interval(mine / theirs, interval)
}

fn with_interval(point: f64, interval: Option<crate::bootstrap::Interval>) -> String {
    match interval {
        Some(i) => format!("{point:.2} ({:.2}–{:.2})", i.low, i.high),
        None => format!("{point:.2}"),
    }
}

/// The policy whose p99.9 hedging is compared with, when both ran (the tail is what hedging
/// is for).
const HEDGED: (&str, &str) = ("predictive-hedged", "predictive-no-forecast");

/// Policies other rows are compared with, when they ran: (policy, column label).
const BASELINES: [(&str, &str); 4] = [
    ("round-robin", "RR"),
    ("jsq-depth", "JSQ-depth"),
    ("predictive-no-forecast", "no-forecast"),
    ("pull", "pull"),
];

/// A Markdown table of every row, with each p99 against each baseline policy that ran
/// ([`BASELINES`]) on the same workload and load, and each batch makespan against pull's, with
/// 95% paired bootstrap intervals. Cells with lost requests say "unstable"; a p99 resting on
/// fewer than [`FEW_REQUESTS`] requests is marked †. With the hedged arm and its baseline
/// ([`HEDGED`]), every row's p99.9 against that baseline too.
pub fn markdown(rows: &[Row]) -> String {
    let ran = |p: &str| rows.iter().any(|r| r.policy == p);
    let baselines: Vec<(&str, &str)> = BASELINES.into_iter().filter(|(p, _)| ran(p)).collect();
    let tail_column = ran(HEDGED.0) && ran(HEDGED.1);
    let mut s = String::from(
        "| workload | load | policy | requests | mean ms | p50 ms | p99 ms | p99.9 ms | req/s | makespan/ideal |",
    );
    for (_, label) in &baselines {
        let _ = write!(s, " p99 / {label} |");
    }
    if tail_column {
        let _ = write!(s, " p99.9 / {} |", HEDGED.1);
    }
    s.push_str(" makespan / pull |\n|---|---|---|");
    s.push_str(&"---:|".repeat(8 + baselines.len() + usize::from(tail_column)));
    s.push('\n');
    for r in rows {
        let load = if r.load > 0.0 {
            format!("{:.2}", r.load)
        } else {
            "batch".into()
        };
        let (mean, p50, p99, p999) = if r.lost > 0 {
            let u = format!("unstable ({} of {} late)", r.lost, r.requests);
            ("–".into(), u, "–".into(), "–".into())
        } else {
            (
                format!("{:.1}", r.mean),
                format!("{:.1}", r.p50),
                format!(
                    "{:.1}{}",
                    r.p99,
                    if r.requests < FEW_REQUESTS {
                        " †"
                    } else {
                        ""
                    }
                ),
                format!("{:.1}", r.p999),
            )
        };
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.workload,
            load,
            r.policy,
            r.requests,
            mean,
            p50,
            p99,
            p999,
            r.throughput,
            r.makespan_ratio().map_or("–".into(), |m| format!("{m:.2}")),
        );
        for (policy, _) in &baselines {
            let _ = write!(s, " {} |", ratio(rows, r, policy, Tail::P99));
        }
        if tail_column {
            let _ = write!(s, " {} |", ratio(rows, r, HEDGED.1, Tail::P999));
        }
        let _ = writeln!(s, " {} |", makespan_ratio(rows, r, "pull"));
    }
    let _ = writeln!(
        s,
        "\nRatios: point estimate (95% paired bootstrap interval over repetitions and requests). \
         † the p99 rests on fewer than {FEW_REQUESTS} requests."
    );
    s
}

/// Each row against the row of the same workload whose policy starts with `baseline` (the
/// shard-count suite's "adaptive (mean … shards)"): mean, p50 and p99 ratios with 95% paired
/// bootstrap intervals. Rows with lost requests have none.
pub fn against(rows: &[Row], baseline: &str) -> String {
    let mut s = format!(
        "| case | mode | mean / {baseline} | p50 / {baseline} | p99 / {baseline} |\n|---|---|---:|---:|---:|\n"
    );
    for r in rows.iter().filter(|r| !r.policy.starts_with(baseline)) {
        let Some(b) = rows
            .iter()
            .find(|b| b.workload == r.workload && b.policy.starts_with(baseline))
        else {
            continue;
        };
        let pair = r.answered().zip(b.answered());
        let cell = |point: f64, stat: &dyn Fn(&mut [u64]) -> f64| match &pair {
            Some((x, y)) => with_interval(
                point,
                crate::bootstrap::paired_ratio(x, y, BOOTSTRAP_SEED, stat),
            ),
            None => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.workload,
            r.policy,
            cell(r.mean / b.mean, &crate::bootstrap::mean),
            cell(r.p50 / b.p50, &|xs| crate::bootstrap::quantile(xs, 0.5)
                as f64),
            cell(r.p99 / b.p99, &|xs| crate::bootstrap::quantile(xs, 0.99)
                as f64),
        );
    }
    s
}

/// Each shard-count mode over every request size: the geometric means of its p50 and mean
/// latency across sizes, and their ratio to the adaptive count's (above 1: adaptive is
/// faster). A mode with lost requests at some size has no figures.
pub fn across_sizes(rows: &[Row]) -> String {
    let mode = |r: &Row| r.policy.split(" (").next().unwrap_or_default().to_owned();
    let mut modes: Vec<String> = Vec::new();
    for m in rows.iter().map(mode) {
        if !modes.contains(&m) {
            modes.push(m);
        }
    }
    let geo = |m: &str, f: fn(&Row) -> f64| -> Option<f64> {
        let of: Vec<&Row> = rows.iter().filter(|r| mode(r) == m).collect();
        if of.is_empty() || of.iter().any(|r| r.lost > 0) {
            return None;
        }
        Some((of.iter().map(|r| f(r).max(1e-3).ln()).sum::<f64>() / of.len() as f64).exp())
    };
    let p50: fn(&Row) -> f64 = |r| r.p50;
    let mean: fn(&Row) -> f64 = |r| r.mean;
    let base = (geo("adaptive", p50), geo("adaptive", mean));
    let mut s = String::from(
        "| mode | geo-mean p50 ms | geo-mean mean ms | p50 / adaptive | mean / adaptive |\n|---|---:|---:|---:|---:|\n",
    );
    let cell = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    let over = |v: Option<f64>, b: Option<f64>| match (v, b) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}", v / b),
        _ => "–".into(),
    };
    for m in &modes {
        let (p, a) = (geo(m, p50), geo(m, mean));
        let _ = writeln!(
            s,
            "| {m} | {} | {} | {} | {} |",
            cell(p),
            cell(a),
            over(p, base.0),
            over(a, base.1)
        );
    }
    s
}

/// The locality figures of one arm of a keyed workload (W9), pooled over repetitions.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    /// Workload name.
    pub workload: String,
    /// Policy name.
    pub policy: String,
    /// Latency of each request after the warm-up, µs, per repetition in trace order. A lost
    /// request counts as how long it was waited for: a lower bound of its latency, so the
    /// repetitions of every arm keep the same requests and still pair.
    pub runs: Vec<Vec<u64>>,
    /// Whether each request of `runs` was answered (`false`: its latency is a lower bound).
    pub answered: Vec<Vec<bool>>,
    /// The partition each request of `runs` read.
    pub partitions: Vec<Vec<u32>>,
    /// Settled shards of those requests by partition (row) and the engine that ran them
    /// (column); engine `i` holds partition `i`.
    pub shards: [[u64; ENGINES]; ENGINES],
}

impl Placed {
    /// An empty pool for `policy` on `workload`.
    pub fn new(workload: &str, policy: &str) -> Placed {
        Placed {
            workload: workload.to_owned(),
            policy: policy.to_owned(),
            ..Placed::default()
        }
    }

    /// Add one repetition: `m` measured on `trace`, whose results were awaited until `drain`
    /// after its last arrival, without its first `warmup` requests.
    pub fn add(
        &mut self,
        m: &Measured,
        trace: &[Arrival],
        drain: std::time::Duration,
        warmup: usize,
    ) {
        let end = trace.last().map_or(std::time::Duration::ZERO, |a| a.at) + drain;
        let mut run = Vec::new();
        let mut answered = Vec::new();
        let mut partitions = Vec::new();
        for (i, a) in trace.iter().enumerate().skip(warmup) {
            let latency = m.latencies.get(i).copied().flatten();
            let waited = end.saturating_sub(a.at).as_micros() as u64;
            run.push(latency.unwrap_or(waited));
            answered.push(latency.is_some());
            let p = a.work.partition.unwrap_or_default();
            partitions.push(p);
            if let (Some(row), Some(ran)) = (self.shards.get_mut(p as usize), m.ran_on.get(i)) {
                for (cell, n) in row.iter_mut().zip(ran) {
                    *cell += u64::from(*n);
                }
            }
        }
        self.runs.push(run);
        self.answered.push(answered);
        self.partitions.push(partitions);
    }

    /// Share of the settled shards that ran on the engine holding their partition: "83%".
    pub fn local_share(&self) -> String {
        let total: u64 = self.shards.iter().flatten().sum();
        let local: u64 = (0..ENGINES).map(|i| self.shards[i][i]).sum();
        percent(local, total)
    }

    /// Requests pooled, and how many of them were lost.
    fn counts(&self) -> (usize, usize) {
        let all = self.answered.iter().map(Vec::len).sum();
        let lost = self.answered.iter().flatten().filter(|a| !**a).count();
        (all, lost)
    }

    /// The pooled `q` quantile of the requests `keep` accepts (by partition), µs, and whether
    /// it is exact: it is a lower bound when lost requests could lie below it. `None` without
    /// requests.
    fn quantile(&self, q: f64, keep: impl Fn(u32) -> bool) -> Option<(u64, bool, usize)> {
        let mut all: Vec<(u64, bool)> = Vec::new();
        for ((run, answered), partitions) in
            self.runs.iter().zip(&self.answered).zip(&self.partitions)
        {
            for ((us, a), p) in run.iter().zip(answered).zip(partitions) {
                if keep(*p) {
                    all.push((*us, *a));
                }
            }
        }
        if all.is_empty() {
            return None;
        }
        let mut values: Vec<u64> = all.iter().map(|(us, _)| *us).collect();
        let value = crate::bootstrap::quantile(&mut values, q);
        let rank = (q * all.len() as f64).ceil() as usize;
        // At least `rank` answered requests at or below it: the lost ones cannot move it.
        let exact = all.iter().filter(|(us, a)| *a && *us <= value).count() >= rank;
        Some((value, exact, all.len()))
    }
}

/// Baselines of the locality table: (policy, column label).
const LOCALITY_BASELINES: [(&str, &str); 2] =
    [("predictive-no-locality", "no-locality"), ("pull", "pull")];

/// A Markdown table of the locality arms (W9): p50 and p99, each against the locality ablation
/// and pull with its 95% paired bootstrap interval, the share of shards that ran on the engine
/// holding their partition, the share each engine ran, and the p99 of each partition's
/// requests. Lost requests count as how long they were waited for, so a figure they could
/// raise is a bound, marked ≥ (≤ for a ratio over such a figure).
pub fn locality(placed: &[Placed]) -> String {
    let mut s = String::from("| workload | policy | requests | late | p50 ms | p99 ms |");
    for (_, label) in LOCALITY_BASELINES {
        let _ = write!(s, " p50 / {label} | p99 / {label} |");
    }
    let engines: Vec<String> = (0..ENGINES).map(|i| format!("e{i}")).collect();
    let partitions: Vec<String> = (0..ENGINES).map(|i| format!("p{i}")).collect();
    let _ = writeln!(
        s,
        " local shards | shards on {} | p99 of {} ms |",
        engines.join(" / "),
        partitions.join(" / ")
    );
    s.push_str("|---|---|");
    s.push_str(&"---:|".repeat(7 + 2 * LOCALITY_BASELINES.len()));
    s.push('\n');
    // A quantile in ms; a p99 (`tail`) over few requests is marked †.
    let ms = |q: Option<(u64, bool, usize)>, tail: bool| match q {
        Some((us, exact, n)) => format!(
            "{}{:.1}{}",
            if exact { "" } else { "≥ " },
            us as f64 / 1_000.0,
            if tail && n < FEW_REQUESTS { " †" } else { "" }
        ),
        None => "–".into(),
    };
    for r in placed {
        let (requests, lost) = r.counts();
        let (p50, p99) = (r.quantile(0.5, |_| true), r.quantile(0.99, |_| true));
        let _ = write!(
            s,
            "| {} | {} | {requests} | {lost} | {} | {} |",
            r.workload,
            r.policy,
            ms(p50, false),
            ms(p99, true)
        );
        for (baseline, _) in LOCALITY_BASELINES {
            let b = placed
                .iter()
                .find(|b| b.workload == r.workload && b.policy == baseline && b.policy != r.policy);
            for q in [0.5, 0.99] {
                let cell = b.map_or("–".into(), |b| bounded_ratio(r, b, q));
                let _ = write!(s, " {cell} |");
            }
        }
        let total: u64 = r.shards.iter().flatten().sum();
        let by_engine: Vec<String> = (0..ENGINES)
            .map(|e| percent(r.shards.iter().map(|row| row[e]).sum(), total))
            .collect();
        let by_partition: Vec<String> = (0..ENGINES as u32)
            .map(|p| ms(r.quantile(0.99, |x| x == p), true))
            .collect();
        let _ = writeln!(
            s,
            " {} | {} | {} |",
            r.local_share(),
            by_engine.join(" / "),
            by_partition.join(" / ")
        );
    }
    let _ = writeln!(
        s,
        "\nLate: requests without a correct result when the run stopped waiting; they count as how \
         long they were waited for, so ≥ marks a figure they could raise (a lower bound) and a \
         ratio over such a figure is an upper bound (≤). Ratios: point estimate (95% paired \
         bootstrap interval over repetitions and requests). Local shards: settled shards that ran \
         on the engine holding their partition. † the p99 rests on fewer than {FEW_REQUESTS} \
         requests."
    );
    s
}

/// `part` of `total` in whole percent: "83%".
fn percent(part: u64, total: u64) -> String {
    format!("{:.0}%", 100.0 * part as f64 / total.max(1) as f64)
}

/// `a`'s `q` quantile over `b`'s with its paired bootstrap interval, marked as a bound when
/// either quantile is one: "≤ 0.12 (0.10–0.14)"; "–" when both are bounds.
fn bounded_ratio(a: &Placed, b: &Placed, q: f64) -> String {
    let (Some((x, x_exact, _)), Some((y, y_exact, _))) =
        (a.quantile(q, |_| true), b.quantile(q, |_| true))
    else {
        return "–".into();
    };
    let mark = match (x_exact, y_exact) {
        (true, true) => "",
        (true, false) => "≤ ",
        (false, true) => "≥ ",
        (false, false) => return "–".into(),
    };
    if y == 0 {
        return "–".into();
    }
    let interval = crate::bootstrap::quantile_ratio(&a.runs, &b.runs, q, BOOTSTRAP_SEED);
    format!("{mark}{}", with_interval(x as f64 / y as f64, interval))
}

/// The rows as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "workload,load,policy,requests,lost,mean_ms,p50_ms,p99_ms,p999_ms,throughput,makespan_ratio\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{}",
            r.workload,
            r.load,
            r.policy,
            r.requests,
            r.lost,
            r.mean,
            r.p50,
            r.p99,
            r.p999,
            r.throughput,
            r.makespan_ratio()
                .map_or(String::new(), |m| format!("{m:.3}"))
        );
    }
    s
}

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Load a font for the plots' labels as `sans-serif` (once per process).
///
/// # Errors
/// No usable font on this machine.
pub(crate) fn register_font() -> anyhow::Result<()> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .is_some_and(|font| {
                plotters::style::register_font(
                    "sans-serif",
                    FontStyle::Normal,
                    Box::leak(font.into_boxed_slice()),
                )
                .is_ok()
            })
    });
    anyhow::ensure!(loaded, "no DejaVuSans.ttf found for the plot's labels");
    Ok(())
}

/// Draw p99 by policy (bars) for each workload and load (groups) into a PNG.
///
/// # Errors
/// No usable font on this machine, or the file cannot be written.
pub fn plot(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let mut groups: Vec<(String, f64)> = Vec::new();
    let mut policies: Vec<String> = Vec::new();
    for r in rows {
        if !groups.contains(&(r.workload.clone(), r.load)) {
            groups.push((r.workload.clone(), r.load));
        }
        if !policies.contains(&r.policy) {
            policies.push(r.policy.clone());
        }
    }
    let max = rows
        .iter()
        .filter(|r| r.lost == 0)
        .map(|r| r.p99)
        .fold(1.0, f64::max);
    let width = 160 + groups.len() as u32 * (policies.len() as u32 * 14 + 30);
    let root = BitMapBackend::new(path, (width.max(900), 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "p99 latency by policy (ms; unstable cells drawn at the top in grey)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .right_y_label_area_size(0)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..max * 1.1)?;
    let names: Vec<String> = groups
        .iter()
        .map(|(w, l)| {
            if *l > 0.0 {
                format!("{w} @{l}")
            } else {
                w.clone()
            }
        })
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            names.get(i as usize).cloned().unwrap_or_default()
        })
        .y_desc("p99 ms")
        .draw()?;
    let k = policies.len().max(1) as f64;
    for (pi, p) in policies.iter().enumerate() {
        let color = Palette99::pick(pi).to_rgba();
        let bars = rows.iter().filter(|r| &r.policy == p).filter_map(|r| {
            let g = groups
                .iter()
                .position(|x| x.0 == r.workload && x.1 == r.load)? as f64;
            let x0 = g - 0.4 + 0.8 * pi as f64 / k;
            let (h, c) = if r.lost > 0 {
                (max * 1.05, RGBAColor(160, 160, 160, 1.0))
            } else {
                (r.p99, color)
            };
            Some(Rectangle::new([(x0, 0.0), (x0 + 0.8 / k, h)], c.filled()))
        });
        chart
            .draw_series(bars)?
            .label(p.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(lat: &[Option<u64>]) -> Measured {
        Measured {
            latencies: lat.to_vec(),
            span_us: 1_000_000,
            ..Measured::default()
        }
    }

    /// Percentiles skip the warm-up; a lost request marks the cell unstable in the table.
    #[test]
    fn rows_skip_warmup_and_flag_losses() {
        let lat: Vec<Option<u64>> = (1..=100).map(|i| Some(i * 1_000)).collect();
        let r = Row::new("W1", 0.5, "pull", &measured(&lat), 10, None);
        assert_eq!(r.requests, 90);
        assert!((r.p50 - 55.0).abs() < 1.0, "{}", r.p50);
        assert!((r.mean - 55.0).abs() < 1.0, "{}", r.mean);
        let mut lost = lat.clone();
        lost[50] = None;
        let rr = Row::new("W1", 0.5, "round-robin", &measured(&lost), 10, None);
        let table = markdown(&[r, rr]);
        assert!(table.contains("unstable (1 of 90 late)"), "{table}");
    }

    /// The p99.9 column appears when the hedged arm ran beside its baseline, and compares with
    /// that baseline.
    #[test]
    fn hedged_runs_compare_the_far_tail() {
        // The same requests, but the slowest 0.5% ten times slower without hedging: the p99s
        // match, the p99.9s differ tenfold.
        let lat = |slow: u64| -> Vec<Option<u64>> {
            (1..=1_000)
                .map(|i| Some(if i > 995 { i * slow } else { i * 1_000 }))
                .collect()
        };
        let base = Row::new("W7", 0.7, HEDGED.1, &measured(&lat(10_000)), 0, None);
        let without = markdown(std::slice::from_ref(&base));
        assert!(!without.contains("p99.9 /"), "{without}");
        let hedged = Row::new("W7", 0.7, HEDGED.0, &measured(&lat(1_000)), 0, None);
        let table = markdown(&[base, hedged]);
        assert!(table.contains("p99.9 / predictive-no-forecast"), "{table}");
        let row = table.lines().nth(3).expect("the hedged row");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // The cells end with p99.9 / no-forecast, makespan / pull, and the empty tail.
        let tail = cells[cells.len() - 3];
        assert!(tail.starts_with("0.10"), "{row}");
    }

    /// Modes are compared over every size by geometric mean, against the adaptive count.
    #[test]
    fn modes_compare_across_sizes() {
        let at = |ms: u64| -> Vec<Option<u64>> { vec![Some(ms * 1_000); 10] };
        let rows = [
            Row::new("small", 0.5, "fixed 1", &measured(&at(10)), 0, None),
            Row::new(
                "small",
                0.5,
                "adaptive (mean 1.0 shards)",
                &measured(&at(10)),
                0,
                None,
            ),
            Row::new("large", 0.5, "fixed 1", &measured(&at(1_000)), 0, None),
            Row::new(
                "large",
                0.5,
                "adaptive (mean 60.0 shards)",
                &measured(&at(250)),
                0,
                None,
            ),
        ];
        let table = across_sizes(&rows);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(
            table.contains("| fixed 1 | 100.1 | 100.0 | 2.00 | 2.00 |"),
            "{table}"
        );
        assert!(
            table.contains("| adaptive | 50.0 | 50.0 | 1.00 | 1.00 |"),
            "{table}"
        );
    }
}
