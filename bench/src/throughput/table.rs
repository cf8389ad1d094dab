//! The throughput suite's tables: means with 95% confidence intervals over repetitions
//! (Student's t), ratios paired by repetition, and CPU per shard by process.

use std::fmt::Write;
use std::time::Duration;

use super::{Cell, Measured};

/// Student's t quantile for a two-sided 95% interval with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::NAN,
        1..=10 => T[df - 1],
        11..=30 => 2.1,
        _ => 1.96,
    }
}

/// Mean and the half-width of its 95% confidence interval (NaN with one value).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t95(n - 1) * (var / n as f64).sqrt())
}

fn fmt_ci((mean, half): (f64, f64), digits: usize) -> String {
    if half.is_nan() {
        format!("{mean:.digits$}")
    } else {
        format!("{mean:.digits$} ± {half:.digits$}")
    }
}

/// The `q` quantile (nearest rank) of `xs`.
pub fn percentile(xs: &[Duration], q: f64) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    let mut v = xs.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn shards_per_sec(c: &Cell) -> f64 {
    c.shards as f64 / c.elapsed.as_secs_f64().max(1e-9)
}

fn requests_per_sec(c: &Cell) -> f64 {
    c.requests as f64 / c.elapsed.as_secs_f64().max(1e-9)
}

/// CPU µs per shard of the processes whose name starts with `prefix`, summed.
fn cpu_per_shard(c: &Cell, prefix: &str) -> f64 {
    cpu_per_shard_of(c, |name| name.starts_with(prefix))
}

/// CPU µs per shard of the processes whose name passes `pick`, summed.
fn cpu_per_shard_of(c: &Cell, pick: impl Fn(&str) -> bool) -> f64 {
    let total: Duration = c
        .cpu
        .iter()
        .filter(|(name, _)| pick(name))
        .map(|(_, d)| *d)
        .sum();
    total.as_secs_f64() * 1e6 / c.shards.max(1) as f64
}

/// The whole report in Markdown.
pub fn markdown(m: &Measured) -> String {
    let mut out = String::new();
    ceilings(m, &mut out);
    cells(m, &mut out);
    ratios(m, &mut out);
    adaptive(m, &mut out);
    out
}

fn ceilings(m: &Measured, out: &mut String) {
    let broker: Vec<f64> = m.ceilings.iter().map(|c| c.broker.per_sec).collect();
    let redis: Vec<f64> = m.ceilings.iter().map(|c| c.redis.per_sec).collect();
    let cpu = |f: &dyn Fn(&super::Ceilings) -> &super::ceiling::Ceiling, who: &str| {
        let xs: Vec<f64> = m
            .ceilings
            .iter()
            .filter_map(|c| f(c).cpu_us.iter().find(|(n, _)| n == who).map(|(_, v)| *v))
            .collect();
        fmt_ci(mean_ci(&xs), 1)
    };
    let _ = writeln!(
        out,
        "### Ceilings ({} repetitions; mean ± 95% CI)\n\n\
         | loop | per second | broker CPU µs each | redis CPU µs each |\n|---|---:|---:|---:|\n\
         | lapin publish (confirms) + consume + ack, shard-sized messages | {} | {} | {} |\n\
         | redis pipelined EVALSHA of `return 1` | {} | {} | {} |\n",
        m.ceilings.len(),
        fmt_ci(mean_ci(&broker), 0),
        cpu(&|c| &c.broker, "broker"),
        cpu(&|c| &c.broker, "redis"),
        fmt_ci(mean_ci(&redis), 0),
        cpu(&|c| &c.redis, "broker"),
        cpu(&|c| &c.redis, "redis"),
    );
}

/// Cells grouped by (build, fan-out), in the order they first ran.
fn groups(m: &Measured) -> Vec<(String, u32, Vec<&Cell>)> {
    let mut groups: Vec<(String, u32, Vec<&Cell>)> = Vec::new();
    for c in &m.cells {
        match groups
            .iter_mut()
            .find(|(b, f, _)| *b == c.build && *f == c.fan_out)
        {
            Some((_, _, v)) => v.push(c),
            None => groups.push((c.build.clone(), c.fan_out, vec![c])),
        }
    }
    groups.sort_by_key(|(b, f, _)| (*f, b.clone()));
    groups
}

fn cells(m: &Measured, out: &mut String) {
    let _ = writeln!(
        out,
        "### Shardline, word count, one manager and real worker processes (mean ± 95% CI over repetitions)\n\n\
         Burst: requests sent at once, first send to last result. Sequential: one request at a time \
         (p50/p99 over every repetition's requests). CPU: µs per shard of each process during the burst \
         (workers: their sum, then each one's mean).\n\n\
         | build | fan-out | shards/s | requests/s | of broker ceiling | seq p50 ms | seq p99 ms | manager | workers | redis | broker | client | dashboard |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (build, fan_out, cs) in groups(m) {
        let of_ceiling: Vec<f64> = cs
            .iter()
            .filter_map(|c| {
                let ceil = m.ceilings.iter().find(|x| x.rep == c.rep)?;
                Some(100.0 * shards_per_sec(c) / ceil.broker.per_sec)
            })
            .collect();
        let seq: Vec<Duration> = cs.iter().flat_map(|c| c.sequential.clone()).collect();
        let per = |f: &dyn Fn(&Cell) -> f64, d: usize| {
            fmt_ci(mean_ci(&cs.iter().map(|c| f(c)).collect::<Vec<_>>()), d)
        };
        // Each worker's own mean next to their sum, so an uneven split shows.
        let mut names: Vec<&str> = cs
            .iter()
            .flat_map(|c| c.cpu.iter().map(|(n, _)| n.as_str()))
            .filter(|n| n.starts_with('w'))
            .collect();
        names.sort_unstable();
        names.dedup();
        let each: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "{:.0}",
                    mean_ci(
                        &cs.iter()
                            .map(|c| cpu_per_shard_of(c, |name| name == *n))
                            .collect::<Vec<_>>()
                    )
                    .0
                )
            })
            .collect();
        let workers = format!(
            "{} ({})",
            per(&|c| cpu_per_shard(c, "w"), 0),
            each.join(" / ")
        );
        let _ = writeln!(
            out,
            "| {build} | {fan_out} | {} | {} | {}% | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            per(&shards_per_sec, 0),
            per(&requests_per_sec, 0),
            fmt_ci(mean_ci(&of_ceiling), 1),
            percentile(&seq, 0.5).as_secs_f64() * 1e3,
            percentile(&seq, 0.99).as_secs_f64() * 1e3,
            per(&|c| cpu_per_shard(c, "manager"), 0),
            workers,
            per(&|c| cpu_per_shard(c, "redis"), 0),
            per(&|c| cpu_per_shard(c, "broker"), 0),
            per(&|c| cpu_per_shard(c, "client"), 0),
            per(&|c| cpu_per_shard(c, "dashboard"), 0),
        );
    }
    out.push('\n');
}

fn ratios(m: &Measured, out: &mut String) {
    let mut builds: Vec<&str> = Vec::new();
    for c in &m.cells {
        if !builds.contains(&c.build.as_str()) {
            builds.push(&c.build);
        }
    }
    if builds.len() < 2 {
        return;
    }
    let first = m
        .cells
        .iter()
        .map(|c| c.build.as_str())
        .next()
        .unwrap_or_default();
    let _ = writeln!(out, "### Ratios, paired by repetition (mean ± 95% CI)\n");
    let _ = writeln!(
        out,
        "| fan-out | vs | shards/s × | seq p50 × |\n|---:|---|---:|---:|"
    );
    let mut fan_outs: Vec<u32> = m.cells.iter().map(|c| c.fan_out).collect();
    fan_outs.sort_unstable();
    fan_outs.dedup();
    for other in builds.iter().filter(|b| **b != first) {
        for &f in &fan_outs {
            let pairs: Vec<(&Cell, &Cell)> = m
                .cells
                .iter()
                .filter(|c| c.build == first && c.fan_out == f)
                .filter_map(|a| {
                    let b = m
                        .cells
                        .iter()
                        .find(|b| b.build == *other && b.fan_out == f && b.rep == a.rep)?;
                    Some((a, b))
                })
                .collect();
            let tput: Vec<f64> = pairs
                .iter()
                .map(|(a, b)| shards_per_sec(a) / shards_per_sec(b))
                .collect();
            let p50: Vec<f64> = pairs
                .iter()
                .map(|(a, b)| {
                    percentile(&a.sequential, 0.5).as_secs_f64()
                        / percentile(&b.sequential, 0.5).as_secs_f64().max(1e-9)
                })
                .collect();
            let _ = writeln!(
                out,
                "| {f} | {first} / {other} | {} | {} |",
                fmt_ci(mean_ci(&tput), 2),
                fmt_ci(mean_ci(&p50), 2)
            );
        }
    }
    out.push('\n');
}

fn adaptive(m: &Measured, out: &mut String) {
    if m.adaptive.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Adaptive shard count on a {}-word count (after a warm-up of mixed sizes)\n\n\
         | build | shards chosen (min–max) | p50 ms | max ms |\n|---|---|---:|---:|",
        super::ADAPTIVE_WORDS
    );
    let mut builds: Vec<&str> = Vec::new();
    for a in &m.adaptive {
        if !builds.contains(&a.build.as_str()) {
            builds.push(&a.build);
        }
    }
    for b in builds {
        let rows: Vec<_> = m.adaptive.iter().filter(|a| a.build == b).collect();
        let shards: Vec<u32> = rows.iter().flat_map(|a| a.shards.clone()).collect();
        let lat: Vec<Duration> = rows.iter().flat_map(|a| a.latency.clone()).collect();
        let _ = writeln!(
            out,
            "| {b} | {}–{} | {:.1} | {:.1} |",
            shards.iter().min().copied().unwrap_or(0),
            shards.iter().max().copied().unwrap_or(0),
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 1.0).as_secs_f64() * 1e3,
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval of three equal values has no width; of spread values, the t interval.
    #[test]
    fn confidence_interval_uses_student_t() {
        assert_eq!(mean_ci(&[2.0, 2.0, 2.0]), (2.0, 0.0));
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        assert!((h - 4.303 * (1.0f64 / 3.0).sqrt()).abs() < 1e-9);
    }

    /// Nearest-rank percentiles: the median of 1..=4 is 2, the 99th is 4.
    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<Duration> = (1..=4).map(Duration::from_millis).collect();
        assert_eq!(percentile(&xs, 0.5), Duration::from_millis(2));
        assert_eq!(percentile(&xs, 0.99), Duration::from_millis(4));
    }
}
