//! What the processes logged: WARN and ERROR lines per process, and the most frequent
//! messages (timestamps, fields and numbers stripped), so the report points at what went
//! wrong.

use std::collections::BTreeMap;
use std::path::Path;

/// Counts of one process's log.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessLog {
    pub(crate) name: String,
    pub(crate) warn: usize,
    pub(crate) error: usize,
    /// Lines that are neither tracing events nor soak markers (panics, exit messages).
    pub(crate) other: usize,
    /// Starts (the soak writes a marker line before each).
    pub(crate) starts: usize,
}

/// All logs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Logs {
    pub(crate) processes: Vec<ProcessLog>,
    /// (level, message) → count, over every process.
    pub(crate) messages: BTreeMap<(String, String), usize>,
    /// Non-tracing lines → count.
    pub(crate) others: BTreeMap<String, usize>,
}

/// Read every `*.log` in `dir`.
pub(crate) fn scan(dir: &Path) -> Logs {
    let mut logs = Logs::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return logs;
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut p = ProcessLog {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..ProcessLog::default()
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with("--- soak:") {
                p.starts += 1;
            } else if let Some((level, message)) = event(line) {
                match level {
                    "WARN" => p.warn += 1,
                    "ERROR" => p.error += 1,
                    _ => continue,
                }
                *logs
                    .messages
                    .entry((level.to_owned(), message))
                    .or_default() += 1;
            } else {
                p.other += 1;
                *logs.others.entry(shorten(line)).or_default() += 1;
            }
        }
        logs.processes.push(p);
    }
    logs
}

/// `<timestamp>  WARN target: message key=value` → (`WARN`, `target: message`).
fn event(line: &str) -> Option<(&'static str, String)> {
    let mut words = line.split_whitespace();
    let _timestamp = words.next()?;
    let level = match words.next()? {
        "TRACE" => "TRACE",
        "DEBUG" => "DEBUG",
        "INFO" => "INFO",
        "WARN" => "WARN",
        "ERROR" => "ERROR",
        _ => return None,
    };
    let rest: Vec<&str> = words.collect();
    // Drop `key=value` fields (they carry ids and numbers that make every line unique).
    let message: Vec<&str> = rest
        .into_iter()
        .filter(|w| !w.contains('=') || w.ends_with(':'))
        .collect();
    Some((level, shorten(&digits(&message.join(" ")))))
}

/// Runs of digits → `#`, so messages differing only in numbers count together.
fn digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !in_run {
                out.push('#');
            }
            in_run = true;
        } else {
            out.push(ch);
            in_run = false;
        }
    }
    out
}

fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s.to_owned()
    }
}
