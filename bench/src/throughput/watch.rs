//! A dashboard kept open during a measurement: the `shardline dashboard` process of the build
//! under test, and a poller that asks it what its page asks, on the page's schedule (every 2 s
//! the overview, the finished requests, the dead letters and the scaling signal; every 5 s the
//! engine charts; every 10 s the activity chart). The dashboard's reads then land on the same
//! Redis as the pipeline's writes, which is what the comparison is for.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// What the page polls, and how often.
const SCHEDULE: &[(&str, Duration)] = &[
    ("/api/overview", Duration::from_secs(2)),
    ("/api/finished", Duration::from_secs(2)),
    ("/api/dead", Duration::from_secs(2)),
    ("/api/scale", Duration::from_secs(2)),
    ("/api/engines/series?minutes=10", Duration::from_secs(5)),
    ("/api/activity?minutes=60", Duration::from_secs(10)),
];
/// How long the dashboard may take to answer its first request.
const START_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for one answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// A running dashboard and the page polling it.
#[derive(Debug)]
pub struct Watch {
    /// The dashboard process.
    pub child: Child,
    polls: Vec<JoinHandle<()>>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Watch {
    /// Start the dashboard with `cmd` (the build's binary in the deployment's environment),
    /// its stderr to `log`, and begin polling once it answers.
    ///
    /// # Errors
    /// The binary cannot start, or the dashboard does not answer within [`START_WAIT`].
    pub async fn open(cmd: Command, log: std::fs::File) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = cmd;
        cmd.args(["dashboard", "--listen", &addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the dashboard")?;
        let until = tokio::time::Instant::now() + START_WAIT;
        while get(addr, "/api/overview").await != Some(200) {
            anyhow::ensure!(
                tokio::time::Instant::now() < until,
                "the dashboard did not answer within {START_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let polls = SCHEDULE
            .iter()
            .map(|&(path, every)| {
                let (answered, failed) = (answered.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        // 503 from /api/scale before the first signal is an answer too.
                        match get(addr, path).await {
                            Some(200 | 503) => answered.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Ok(Watch {
            child,
            polls,
            answered,
            failed,
        })
    }

    /// Stop polling; the answers and failures counted.
    pub fn close(&self) -> (u64, u64) {
        for p in &self.polls {
            p.abort();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The dashboard binary of a build directory.
pub fn binary(dir: &Path) -> std::path::PathBuf {
    dir.join("shardline")
}

/// `GET path` with the whole answer read; its status, or `None` when the exchange failed.
async fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let ask = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(ask.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let head = std::str::from_utf8(answer.get(..12)?).ok()?;
        head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    };
    tokio::time::timeout(ANSWER_WAIT, exchange).await.ok()?
}
