//! CPU time of processes, read from `/proc/<pid>/stat` (user + system, all threads), so that a
//! throughput figure can say which process spent the time.

use std::time::Duration;

use anyhow::Context;

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 on Linux unless the kernel
/// was built otherwise).
fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User + system CPU time a process has used so far.
///
/// # Errors
/// The process does not exist or its stat line cannot be read.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat(&stat, ticks_per_sec()).with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// User + system time from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted from the last `)`: utime and stime
/// are fields 14 and 15 of the line.
fn parse_stat(line: &str, ticks: u64) -> Option<Duration> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Every process on this machine: its pid and its `/proc/<pid>` directory.
fn processes() -> anyhow::Result<impl Iterator<Item = (u32, std::path::PathBuf)>> {
    let dir = std::fs::read_dir("/proc").context("listing /proc")?;
    Ok(dir.flatten().filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        Some((pid, entry.path()))
    }))
}

/// The pid of the one process whose command name (`/proc/<pid>/comm`) is `comm`.
///
/// # Errors
/// None or several such processes.
pub fn pid_of(comm: &str) -> anyhow::Result<u32> {
    let found: Vec<u32> = processes()?
        .filter(|(_, dir)| {
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|name| name.trim_end() == comm)
        })
        .map(|(pid, _)| pid)
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => anyhow::bail!("no process named {comm} on this machine"),
        many => anyhow::bail!("{} processes named {comm}: {many:?}", many.len()),
    }
}

/// The pid of the process listening on TCP `port` on this machine (a broker node, found by
/// its AMQP port: several RabbitMQ nodes are all named `beam.smp`).
///
/// # Errors
/// Nothing listens there, or the listener's process cannot be seen.
pub fn listening_pid(port: u16) -> anyhow::Result<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| listening_inode(&table, port))
        .with_context(|| format!("nothing listens on port {port}"))?;
    let socket = format!("socket:[{inode}]");
    let holds = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str())
            })
        })
    };
    processes()?
        .find(|(_, dir)| holds(dir))
        .map(|(pid, _)| pid)
        .with_context(|| format!("no visible process holds the socket listening on port {port}"))
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table (state `0A`).
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    let want = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1)?.ends_with(&want) && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
    })
}

/// CPU time of a fixed set of named processes, read at two moments.
#[derive(Debug, Clone)]
pub struct Meter {
    procs: Vec<(String, u32)>,
}

/// CPU time each process used between [`Meter::start`] and [`Reading::stop`].
#[derive(Debug, Clone)]
pub struct Reading {
    procs: Vec<(String, u32)>,
    before: Vec<Duration>,
}

impl Meter {
    /// Meter these `(name, pid)` pairs.
    pub fn new(procs: Vec<(String, u32)>) -> Self {
        Meter { procs }
    }

    /// Read every process's CPU time now.
    ///
    /// # Errors
    /// A process is gone.
    pub fn start(&self) -> anyhow::Result<Reading> {
        let before = self
            .procs
            .iter()
            .map(|(_, pid)| cpu_time(*pid))
            .collect::<anyhow::Result<_>>()?;
        Ok(Reading {
            procs: self.procs.clone(),
            before,
        })
    }
}

impl Reading {
    /// CPU time each process used since the reading started, by name.
    ///
    /// # Errors
    /// A process is gone.
    pub fn stop(&self) -> anyhow::Result<Vec<(String, Duration)>> {
        self.procs
            .iter()
            .zip(&self.before)
            .map(|((name, pid), before)| {
                Ok((name.clone(), cpu_time(*pid)?.saturating_sub(*before)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener is found by its local port and LISTEN state, not by a connection's.
    #[test]
    fn finds_the_listening_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 4242 1
   1: 0100007F:D2F0 0100007F:1628 01 00000000:00000000 00:00000000 00000000     0        0 777 1";
        assert_eq!(listening_inode(table, 5672), Some(4242));
        assert_eq!(listening_inode(table, 53_999), None);
    }

    /// utime and stime are read after the command name, even one with spaces and parentheses.
    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(parse_stat(line, 100), Some(Duration::from_secs(3)));
    }

    /// This process's own CPU time is readable and grows with work.
    #[test]
    fn own_cpu_time_grows() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("own stat");
        let until = std::time::Instant::now() + Duration::from_millis(60);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(cpu_time(pid).expect("own stat") > before);
    }
}
