//! The Markdown report: verdict and counts first, then the details a failed run needs (lost and
//! duplicated ids with what Redis said, wrong outputs, log warnings), then the fault log.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Config;
use super::check::{Check, FanOuts, STATUSES};
use super::drive::Driven;
use super::faults::FaultKind;
use super::logs::Logs;

/// Rows shown of long lists.
const LIST: usize = 50;

/// What the report is made of.
pub(crate) struct Input<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) namespace: &'a str,
    pub(crate) started: SystemTime,
    pub(crate) driven: &'a Driven,
    pub(crate) check: &'a Check,
    /// Unexpected exits and slow stops noted by the fleet.
    pub(crate) exits: &'a [String],
    pub(crate) logs: &'a Logs,
    pub(crate) log_dir: &'a Path,
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The whole report.
pub(crate) fn render(i: &Input<'_>) -> String {
    let mut s = String::new();
    summary(&mut s, i);
    details(&mut s, i);
    s
}

fn summary(s: &mut String, i: &Input<'_>) {
    let (c, d, cfg) = (i.check, i.driven, i.cfg);
    let passed = c.lost.is_empty() && c.duplicates.is_empty() && c.wrong.is_empty();
    let faults: usize = d.faults.len();
    let _ = writeln!(
        s,
        "# Shardline soak {}: {}\n",
        timestamp(i.started),
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(
        s,
        "{:.1} min of load at {} req/s (seed {}), {} managers and {} workers × {} slots \
         (release binaries), namespace `{}`{}.\n",
        d.load.as_secs_f64() / 60.0,
        cfg.rate,
        cfg.seed,
        cfg.managers,
        cfg.workers,
        cfg.concurrency,
        i.namespace,
        if d.interrupted {
            ", **load cut short by Ctrl-C**"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| ledger | count |\n| --- | ---: |");
    let rows = [
        ("requests submitted", c.submitted.to_string()),
        ("result deliveries", c.deliveries.to_string()),
        ("faults injected", faults.to_string()),
        ("results lost (must be 0)", format!("**{}**", c.lost.len())),
        (
            "duplicates (must be 0)",
            format!("**{}**", c.duplicates.len()),
        ),
        (
            "re-driven copies (marked, identical; deduplicated on message_id)",
            c.redriven.len().to_string(),
        ),
        (
            "wrong outputs (must be 0)",
            format!("**{}**", c.wrong.len()),
        ),
        ("publishes failed", c.publish_failed.len().to_string()),
        ("results for unknown ids", c.strays.len().to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\n| status | results |\n| --- | ---: |");
    for (st, n) in STATUSES.iter().zip(c.by_status) {
        let _ = writeln!(s, "| {} | {n} |", st.as_str());
    }
    let _ = writeln!(s, "| (none) | {} |", c.lost.len());
    let _ = writeln!(s, "\n| fault | count |\n| --- | ---: |");
    for k in FaultKind::ALL {
        let n = d.faults.iter().filter(|f| f.kind == k).count();
        let _ = writeln!(s, "| {} | {n} |", k.name());
    }
    let _ = writeln!(s, "| unexpected exits (restarted) | {} |", i.exits.len());
    let struck = d
        .faults
        .iter()
        .filter(|f| c.fan_outs.in_flight(f.at.as_secs_f64()))
        .count();
    let _ = writeln!(
        s,
        "\n{struck} of the {faults} faults struck while a request cut into at least {} shards \
         was in flight (from its send to its result); {} answered requests were cut so wide.",
        FanOuts::threshold(),
        c.fan_outs.count()
    );
    if let Some(l) = c.latency {
        let _ = writeln!(
            s,
            "\nLatency of the {} completed requests, from their scheduled send time: p50 {:.0} ms, \
             p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms.",
            l.n, l.p50, l.p90, l.p99, l.max
        );
    }
    let _ = writeln!(
        s,
        "\nThe load started at {} UTC; `+N s` times below count from it.",
        timestamp(d.t0_wall)
    );
    let _ = writeln!(
        s,
        "\nDrain: last result {:.1} s after the load (allowed {:.0} s); in-flight index {}.",
        d.drain.as_secs_f64(),
        d.drain_bound.as_secs_f64(),
        if d.settled {
            "empty at the end"
        } else {
            "**not empty** at the end of the settle time"
        }
    );
}

fn details(s: &mut String, i: &Input<'_>) {
    let (c, d) = (i.check, i.driven);
    let _ = writeln!(
        s,
        "\n## By class\n\n| class | sent | {} | none | shards (mean, min, max) |\n| --- | ---: \
         |{} ---: | ---: |",
        STATUSES.map(|x| x.as_str()).join(" | "),
        " ---: |".repeat(STATUSES.len())
    );
    for r in &c.by_class {
        let cells = r.statuses.map(|n| n.to_string()).join(" | ");
        let shards = match (r.shards.mean(), r.shards.min) {
            (Some(mean), Some(min)) => format!("{mean:.1}, {min}, {}", r.shards.max),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {cells} | {} | {shards} |",
            r.class.name(),
            r.submitted,
            r.none,
        );
    }
    if !c.unexpected.is_empty() {
        let _ = writeln!(
            s,
            "\nPlain, kinds, policy and wide requests should complete; these did not:\n\n\
             | class | status | error code | count | sample ids |\n| --- | --- | --- | ---: | --- |"
        );
        for ((class, status, code), (n, ids)) in &c.unexpected {
            let ids = ids.iter().map(ToString::to_string).collect::<Vec<_>>();
            let _ = writeln!(
                s,
                "| {class} | {status} | {code} | {n} | {} |",
                ids.join(" ")
            );
        }
    }
    if !c.cancel_answers.is_empty() {
        let _ = writeln!(s, "\n| cancel answered | count |\n| --- | ---: |");
        for (a, n) in &c.cancel_answers {
            let _ = writeln!(s, "| {a} | {n} |");
        }
    }
    let redis = |id: uuid::Uuid| {
        d.redis
            .iter()
            .find(|(x, _)| *x == id)
            .map_or("-", |(_, r)| r.as_str())
    };
    if !c.odd.is_empty() {
        let _ = writeln!(s, "\n## Unexpected endings\n");
        for o in &c.odd {
            let _ = writeln!(
                s,
                "- `{}` {} {} sent at +{:.1}s, ended {} after {:.1} s ({}); Redis: {}",
                o.id,
                o.class.name(),
                o.kind,
                o.sent_s,
                o.status,
                o.took_s,
                o.error,
                redis(o.id)
            );
        }
    }
    if !c.lost.is_empty() {
        let _ = writeln!(s, "\n## Lost ids\n");
        for l in c.lost.iter().take(LIST) {
            let redis = redis(l.id);
            let _ = writeln!(
                s,
                "- `{}` {} {} sent at +{:.1}s, cancel: {}; Redis: {redis}",
                l.id,
                l.class.name(),
                l.kind,
                l.sent_s,
                l.cancel.as_deref().unwrap_or("-")
            );
        }
    }
    for (title, list) in [
        ("Duplicated ids", &c.duplicates),
        ("Re-driven copies", &c.redriven),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n## {title}\n");
        for x in list.iter().take(LIST) {
            let _ = writeln!(
                s,
                "- `{}` {} {} sent at +{:.1}s: {} deliveries [{}] attempts [{}] over {:.1} s, {}, \
                 {} flagged redelivered; Redis: {}",
                x.id,
                x.class.name(),
                x.kind,
                x.sent_s,
                x.statuses.len(),
                x.statuses.join(", "),
                x.attempts.join(", "),
                x.spread_s,
                if x.identical {
                    "identical bodies"
                } else {
                    "**different bodies**"
                },
                x.redelivered,
                redis(x.id)
            );
        }
    }
    if !c.wrong.is_empty() {
        let _ = writeln!(s, "\n## Wrong outputs\n");
        for w in c.wrong.iter().take(LIST) {
            let _ = writeln!(s, "- `{}` {} {}: {}", w.id, w.kind, w.status, w.why);
        }
    }
    other_findings(s, i);
    log_findings(s, i);
    let _ = writeln!(s, "\n## Faults\n");
    if d.faults.is_empty() {
        let _ = writeln!(s, "None.");
    }
    for f in &d.faults {
        let _ = writeln!(s, "- +{:.0}s {f}", f.at.as_secs_f64());
    }
}

fn other_findings(s: &mut String, i: &Input<'_>) {
    let (c, d) = (i.check, i.driven);
    let mut notes: Vec<String> = d.notes.clone();
    notes.extend(i.exits.iter().cloned());
    for (id, why, answered) in c.publish_failed.iter().take(LIST) {
        notes.push(format!(
            "publish of `{id}` failed ({why}); {}",
            if *answered {
                "it was answered anyway"
            } else {
                "no result"
            }
        ));
    }
    for x in c.strays.iter().take(LIST) {
        notes.push(format!("result for unknown id `{}`: {}", x.id, x.detail));
    }
    let _ = writeln!(
        s,
        "\n## Queues at the end\n\n| queue | ready | consumers |\n| --- | ---: | ---: |"
    );
    for (q, ready, consumers) in &d.queues {
        let _ = writeln!(s, "| `{q}` | {ready} | {consumers} |");
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
}

fn log_findings(s: &mut String, i: &Input<'_>) {
    let l = i.logs;
    let _ = writeln!(
        s,
        "\n## Process logs\n\nIn `{}` (`RUST_LOG={}`).\n\n| process | starts | WARN | ERROR | \
         other lines |\n| --- | ---: | ---: | ---: | ---: |",
        i.log_dir.display(),
        i.cfg.process_log
    );
    for p in &l.processes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            p.name, p.starts, p.warn, p.error, p.other
        );
    }
    let mut top: Vec<_> = l.messages.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    if !top.is_empty() {
        let _ = writeln!(
            s,
            "\nMost frequent messages (fields stripped, numbers as `#`; the poison class makes \
             shards fail on purpose):\n"
        );
        for ((level, m), n) in top.into_iter().take(20) {
            let _ = writeln!(s, "- {n}× {level} {m}");
        }
    }
    let mut others: Vec<_> = l.others.iter().collect();
    others.sort_by(|a, b| b.1.cmp(a.1));
    if !others.is_empty() {
        let _ = writeln!(s, "\nOther lines:\n");
        for (m, n) in others.into_iter().take(10) {
            let _ = writeln!(s, "- {n}× {m}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps are UTC calendar dates.
    #[test]
    fn timestamps_are_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661); // 2000-02-29 01:01:01
        assert_eq!(timestamp(t), "20000229-010101");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101-000000");
    }
}
