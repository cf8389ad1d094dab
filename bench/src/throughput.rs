//! # Throughput suite
//!
//! What one shard costs, end to end, against what the broker and Redis can do on their own.
//! Everything runs side by side in one invocation, on the same broker and Redis:
//!
//! 1. the ceilings ([`ceiling`]): a bare lapin publish-with-confirms + consume + ack loop with
//!    messages the size of a shard, and pipelined `EVALSHA` of a trivial script;
//! 2. for each fan-out (shards per request) and each build of the binaries (`--bins`, and
//!    `--baseline-bins` to compare two builds in the same run), a real manager process (its
//!    shard count fixed to the fan-out) and real worker processes at their default
//!    concurrency, on a fresh namespace ([`deploy`]):
//!    - sequential: one `wordcount` request at a time (p50, p99);
//!    - burst: enough requests at once to make ~`burst_shards` shards, from the first send to
//!      the last result (requests/s, shards/s), with the CPU time each process spent
//!      ([`cpu`]: manager, each worker, redis-server, the broker, this client), per shard;
//! 3. the adaptive shard count on a 64,000-word request after a warm-up of mixed sizes: the
//!    count it chose and the latency.
//!
//! A build may run on another Redis than the suite's (`--redis-cluster-url`: the current
//! binaries on a Redis Cluster), its Redis CPU then summed over the cluster's nodes; the
//! ceilings stay those of the suite's Redis.
//!
//! Each shard holds `words_per_shard` words, so a request's size grows with its fan-out. The
//! repetitions are interleaved (rep 1 of every cell, then rep 2, …, builds alternating first)
//! so that drift on a noisy machine spreads over every cell; [`table`] reports means with
//! 95% confidence intervals over the repetitions, and ratios paired by repetition.

pub mod ceiling;
pub mod churn;
pub mod cpu;
pub mod deploy;
pub mod table;
pub mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::config::ConnectArgs;
use shardline::message::{FinalResult, Options, Shard, Status};
use shardline_client::Client;
use uuid::Uuid;

use self::cpu::Meter;
use self::deploy::{Build, Deployment};

/// Requests a burst keeps in the client's publish pipeline at once.
const SEND_CONCURRENCY: usize = 256;
/// Longest wait for one result.
const RESULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Words of the adaptive row's request.
pub const ADAPTIVE_WORDS: usize = 64_000;
/// Requests of mixed sizes the adaptive row sends before it measures, so that the manager has
/// learned the kind's cost.
const ADAPTIVE_WARMUP: usize = 40;
/// Measured requests of the adaptive row, per build and repetition.
const ADAPTIVE_SAMPLES: usize = 8;
/// Messages of the broker ceiling loop, and script calls of the Redis one.
const BROKER_CEILING_MESSAGES: usize = 20_000;
const REDIS_CEILING_CALLS: usize = 100_000;

/// Settings of one run of the suite.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Broker and Redis (each deployment gets a fresh namespace).
    pub connect: ConnectArgs,
    /// The builds to compare; the first is the one the ratios are taken of.
    pub builds: Vec<Build>,
    /// Shards per request.
    pub fan_outs: Vec<u32>,
    /// Interleaved repetitions.
    pub reps: u32,
    /// Shards one burst makes (rounded up to whole requests).
    pub burst_shards: usize,
    /// Requests of the sequential measurement.
    pub sequential: usize,
    /// Words in one shard.
    pub words_per_shard: usize,
    /// Worker processes.
    pub workers: usize,
    /// Run the adaptive row.
    pub adaptive: bool,
    /// Where the processes' logs go.
    pub log_dir: PathBuf,
    /// Seed of the text.
    pub seed: u64,
}

/// The ceilings of one repetition.
#[derive(Debug, Clone)]
pub struct Ceilings {
    /// Repetition.
    pub rep: u32,
    /// The broker loop.
    pub broker: ceiling::Ceiling,
    /// The Redis loop.
    pub redis: ceiling::Ceiling,
}

/// One build at one fan-out in one repetition.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Build label.
    pub build: String,
    /// Shards per request.
    pub fan_out: u32,
    /// Repetition.
    pub rep: u32,
    /// Latency of each sequential request.
    pub sequential: Vec<Duration>,
    /// Requests of the burst.
    pub requests: usize,
    /// Shards of the burst.
    pub shards: u64,
    /// First send to last result.
    pub elapsed: Duration,
    /// CPU time each process spent during the burst.
    pub cpu: Vec<(String, Duration)>,
}

/// The adaptive count on the large request, one build, one repetition.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Build label.
    pub build: String,
    /// The shard count of each measured request.
    pub shards: Vec<u32>,
    /// The latency of each measured request.
    pub latency: Vec<Duration>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The ceilings, per repetition.
    pub ceilings: Vec<Ceilings>,
    /// The Shardline cells.
    pub cells: Vec<Cell>,
    /// The adaptive rows.
    pub adaptive: Vec<Adaptive>,
}

/// Run the suite.
///
/// # Errors
/// A server or process that cannot be reached or started, or a wrong result.
pub async fn run(t: &Throughput) -> anyhow::Result<Measured> {
    anyhow::ensure!(!t.builds.is_empty(), "no build to measure");
    std::fs::create_dir_all(&t.log_dir)
        .with_context(|| format!("creating {}", t.log_dir.display()))?;
    let servers = server_procs(&t.connect.amqp_url, &t.connect.redis_url).await?;
    let text = Text::new(t.seed);
    let shard_bytes = shard_size(&text.words(t.words_per_shard))?;
    let mut m = Measured::default();
    for rep in 0..t.reps {
        let meter = Meter::new(servers.clone());
        let queue = format!("bench-ceiling-{}", Uuid::new_v4().simple());
        let broker = ceiling::broker(
            &t.connect.amqp_url,
            &queue,
            shard_bytes,
            BROKER_CEILING_MESSAGES,
            &meter,
        )
        .await?;
        let redis = ceiling::redis(&t.connect.redis_url, REDIS_CEILING_CALLS, &meter).await?;
        eprintln!(
            "throughput rep {}: broker ceiling {:.0} msg/s, redis ceiling {:.0} calls/s",
            rep + 1,
            broker.per_sec,
            redis.per_sec
        );
        m.ceilings.push(Ceilings { rep, broker, redis });
        for &fan_out in &t.fan_outs {
            for build in rotated(&t.builds, rep) {
                let cell = cell(t, build, fan_out, rep, &text, &servers).await?;
                eprintln!(
                    "  {} fan-out {fan_out}: {:.0} shards/s, {:.0} requests/s, seq p50 {:.2} ms",
                    build.label,
                    cell.shards as f64 / cell.elapsed.as_secs_f64(),
                    cell.requests as f64 / cell.elapsed.as_secs_f64(),
                    table::percentile(&cell.sequential, 0.5).as_secs_f64() * 1e3
                );
                m.cells.push(cell);
            }
        }
        if t.adaptive {
            for build in rotated(&t.builds, rep) {
                let a = adaptive(t, build, &text).await?;
                eprintln!(
                    "  {} adaptive {ADAPTIVE_WORDS} words: shards {:?}, p50 {:.1} ms",
                    build.label,
                    a.shards,
                    table::percentile(&a.latency, 0.5).as_secs_f64() * 1e3
                );
                m.adaptive.push(a);
            }
        }
    }
    Ok(m)
}

/// The builds, starting with a different one each repetition.
fn rotated(builds: &[Build], rep: u32) -> impl Iterator<Item = &Build> {
    let k = rep as usize % builds.len();
    builds[k..].iter().chain(&builds[..k])
}

/// The broker's and Redis's processes (every node of a cluster), and this one (the client).
async fn server_procs(amqp_urls: &str, redis_urls: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let mut procs = Vec::new();
    let brokers = shardline::amqp::Brokers::parse(amqp_urls)?;
    for (i, url) in brokers.urls().iter().enumerate() {
        let uri: lapin::uri::AMQPUri = url.parse().map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        // By the listening port (several nodes are all `beam.smp`); reading other users'
        // sockets needs root, so one broker falls back to its process name.
        let pid = match cpu::listening_pid(uri.authority.port) {
            Ok(pid) => pid,
            Err(_) if brokers.urls().len() == 1 => cpu::pid_of("beam.smp")?,
            Err(e) => return Err(e.context(format!("finding the RabbitMQ node of {url}"))),
        };
        // Summed by the `broker` prefix in the table.
        let name = if i == 0 {
            "broker".to_owned()
        } else {
            format!("broker{i}")
        };
        procs.push((name, pid));
    }
    let nodes = shardline::store::Nodes::parse(redis_urls)?;
    for (i, url) in nodes.urls().iter().enumerate() {
        let client = redis::Client::open(url.as_str())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("INFO server of {url} has no process_id"))?;
        // Summed by the `redis` prefix in the table.
        let name = if i == 0 {
            "redis".to_owned()
        } else {
            format!("redis{i}")
        };
        procs.push((name, pid));
    }
    procs.push(("client".to_owned(), std::process::id()));
    Ok(procs)
}

/// The encoded size of a shard message holding `text`.
fn shard_size(text: &str) -> anyhow::Result<usize> {
    let shard = Shard {
        request_id: Uuid::nil(),
        index: 0,
        total: 1,
        kind: "wordcount".into(),
        attempt: 1,
        deadline: 0,
        payload: rmp_serde::to_vec_named(&rmpv::Value::from(text))?,
    };
    Ok(rmp_serde::to_vec_named(&shard)?.len())
}

/// Fresh connection settings for one deployment of `build` (on its own broker and Redis, if
/// it has them).
fn fresh(connect: &ConnectArgs, build: &Build) -> ConnectArgs {
    ConnectArgs {
        namespace: format!("tput{}", &Uuid::new_v4().simple().to_string()[..10]),
        redis_url: build
            .redis_url
            .clone()
            .unwrap_or_else(|| connect.redis_url.clone()),
        redis_wait_replicas: build.redis_wait_replicas,
        amqp_url: build
            .amqp_url
            .clone()
            .unwrap_or_else(|| connect.amqp_url.clone()),
        queue_type: build.queue_type,
    }
}

async fn cell(
    t: &Throughput,
    build: &Build,
    fan_out: u32,
    rep: u32,
    text: &Text,
    servers: &[(String, u32)],
) -> anyhow::Result<Cell> {
    let connect = fresh(&t.connect, build);
    let servers = if build.redis_url.is_some() || build.amqp_url.is_some() {
        server_procs(&connect.amqp_url, &connect.redis_url).await?
    } else {
        servers.to_vec()
    };
    let deployment =
        Deployment::start(build, &connect, &fan_out.to_string(), t.workers, &t.log_dir).await?;
    let measured = async {
        let client = Client::connect(&connect).await?;
        let words = t.words_per_shard * fan_out as usize;
        let payload = text.words(words);
        let expect = Expect {
            words,
            shards: Some(fan_out),
        };
        // Warm-up: connections, the manager's engine list, the workers' code paths.
        for _ in 0..3 {
            submit(&client, &payload, expect).await?;
        }
        let mut sequential = Vec::with_capacity(t.sequential);
        for _ in 0..t.sequential {
            sequential.push(submit(&client, &payload, expect).await?.1);
        }
        let requests = t.burst_shards.div_ceil(fan_out as usize).max(4);
        let mut procs = deployment.pids();
        procs.extend_from_slice(&servers);
        let reading = Meter::new(procs).start()?;
        let began = Instant::now();
        burst(&client, &payload, expect, requests).await?;
        let elapsed = began.elapsed();
        let cpu = reading.stop()?;
        client.close().await;
        anyhow::Ok(Cell {
            build: build.label.clone(),
            fan_out,
            rep,
            sequential,
            requests,
            shards: requests as u64 * u64::from(fan_out),
            elapsed,
            cpu,
        })
    }
    .await;
    deployment.stop().await;
    deploy::remove(&connect).await;
    measured
}

async fn adaptive(t: &Throughput, build: &Build, text: &Text) -> anyhow::Result<Adaptive> {
    let connect = fresh(&t.connect, build);
    let deployment = Deployment::start(build, &connect, "adaptive", t.workers, &t.log_dir).await?;
    let measured = async {
        let client = Client::connect(&connect).await?;
        let sizes = [500, 4_000, 16_000, ADAPTIVE_WORDS];
        for i in 0..ADAPTIVE_WARMUP {
            let words = sizes[i % sizes.len()];
            let expect = Expect {
                words,
                shards: None,
            };
            submit(&client, &text.words(words), expect).await?;
        }
        let payload = text.words(ADAPTIVE_WORDS);
        let expect = Expect {
            words: ADAPTIVE_WORDS,
            shards: None,
        };
        let mut a = Adaptive {
            build: build.label.clone(),
            shards: Vec::new(),
            latency: Vec::new(),
        };
        for _ in 0..ADAPTIVE_SAMPLES {
            let (result, took) = submit(&client, &payload, expect).await?;
            a.shards.push(result.shards);
            a.latency.push(took);
        }
        client.close().await;
        anyhow::Ok(a)
    }
    .await;
    deployment.stop().await;
    deploy::remove(&connect).await;
    measured
}

/// What a correct word-count result looks like.
#[derive(Debug, Clone, Copy)]
struct Expect {
    words: usize,
    shards: Option<u32>,
}

impl Expect {
    fn check(self, r: &FinalResult) -> anyhow::Result<()> {
        anyhow::ensure!(
            r.status == Status::Completed,
            "request {} ended {:?}: {:?}",
            r.request_id,
            r.status,
            r.error
        );
        if let Some(n) = self.shards {
            anyhow::ensure!(r.shards == n, "{} shards, not {n}", r.shards);
        }
        let counted: u64 = match &r.output {
            Some(rmpv::Value::Map(m)) => m.iter().filter_map(|(_, v)| v.as_u64()).sum(),
            other => anyhow::bail!("not a word count: {other:?}"),
        };
        anyhow::ensure!(
            counted == self.words as u64,
            "counted {counted} words, sent {}",
            self.words
        );
        Ok(())
    }
}

async fn submit(
    client: &Client,
    payload: &str,
    expect: Expect,
) -> anyhow::Result<(FinalResult, Duration)> {
    let began = Instant::now();
    let result = client
        .submit(
            "wordcount",
            payload.into(),
            Options::default(),
            RESULT_TIMEOUT,
        )
        .await?;
    let took = began.elapsed();
    expect.check(&result)?;
    Ok((result, took))
}

/// Send `requests` requests as fast as the publish pipeline takes them; wait for every result.
async fn burst(
    client: &Client,
    payload: &str,
    expect: Expect,
    requests: usize,
) -> anyhow::Result<()> {
    let sent: Vec<_> = futures::stream::iter(0..requests)
        .map(|_| client.send("wordcount", payload.into(), Options::default()))
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    for s in sent {
        let (id, rx) = s?;
        expect.check(&client.wait(id, rx, RESULT_TIMEOUT).await?)?;
    }
    Ok(())
}

/// Seeded text of made-up words of 2 to 9 letters from a vocabulary of 4,096.
#[derive(Debug, Clone)]
struct Text {
    vocabulary: Vec<String>,
    seed: u64,
}

impl Text {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let vocabulary = (0..4096)
            .map(|_| {
                let len = rng.random_range(2..10);
                (0..len)
                    .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                    .collect()
            })
            .collect();
        Text { vocabulary, seed }
    }

    /// `n` words separated by spaces (the same `n` always gives the same text).
    fn words(&self, n: usize) -> String {
        let mut rng = StdRng::seed_from_u64(self.seed ^ n as u64);
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&self.vocabulary[rng.random_range(0..self.vocabulary.len())]);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated text has exactly the words asked for, the same each time.
    #[test]
    fn text_is_seeded_and_exact() {
        let t = Text::new(7);
        let a = t.words(500);
        assert_eq!(a.split_whitespace().count(), 500);
        assert_eq!(a, Text::new(7).words(500));
    }

    /// A result whose counts do not add up to the words sent is refused.
    #[test]
    fn a_short_count_is_refused() {
        let mut r = FinalResult::rejected(
            Uuid::nil(),
            "wordcount",
            shardline::RejectReason::Malformed,
            "",
        );
        r.status = Status::Completed;
        r.shards = 2;
        r.output = Some(rmpv::Value::Map(vec![("a".into(), 3.into())]));
        let e = Expect {
            words: 4,
            shards: Some(2),
        };
        assert!(e.check(&r).is_err());
        assert!(
            Expect {
                words: 3,
                shards: Some(2)
            }
            .check(&r)
            .is_ok()
        );
    }
}
