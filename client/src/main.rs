//! `shardline`: submit requests, follow their progress, list what is in flight.
//!
//! Exit codes: 0 completed; 1 the request failed or was rejected; 2 no result in time;
//! 3 broker or Redis unreachable; 64 bad usage or input.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shardline::config::ConnectArgs;
use shardline::locality::LocalityKey;
use shardline::message::{FailurePolicy, FinalResult, Input, Options, Status};
use shardline::store::{Ended, Meta, Rejected};
use shardline_client::{Client, Error, InputFormat, parse_payload};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "shardline",
    version,
    about = "Submit and inspect Shardline requests"
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a request and print its result.
    Submit {
        /// Kind of work: wordcount, sort, checksum, synthetic, or your own.
        #[arg(long, short)]
        kind: String,
        /// Input file; `-` or absent reads stdin.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// The payload inline instead of a file.
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// Send the request already cut: each file is one shard, in the order given (read like
        /// --file; for data already held in pieces). Repeat it for each shard.
        #[arg(long, conflicts_with_all = ["file", "data", "max_shards"])]
        shard_file: Vec<PathBuf>,
        /// Where every shard's data lives (a partition, a file, a zone): the manager prefers
        /// engines that hold this locality key.
        #[arg(long)]
        locality: Option<LocalityKey>,
        /// With --shard-file: where each shard's data lives, one per --shard-file in the same
        /// order (`-` for none).
        #[arg(long, requires = "shard_file", conflicts_with = "locality")]
        shard_locality: Vec<String>,
        /// How to read the input.
        #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
        input: InputFormat,
        /// Cut at most this many shards.
        #[arg(long)]
        max_shards: Option<u32>,
        /// Request deadline in milliseconds.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// What a failed shard does: fail-fast (default), partial, or quorum.
        #[arg(long, value_parser = ["fail-fast", "partial", "quorum"])]
        failure_policy: Option<String>,
        /// With --failure-policy quorum: shards that must succeed.
        #[arg(long)]
        quorum: Option<u32>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Shorten long lists and maps in the printed output.
        #[arg(long)]
        summary: bool,
    },
    /// State and progress of one request (or why it was rejected).
    Status {
        /// Request id.
        #[arg(value_parser = request_id)]
        id: Uuid,
        /// Print JSON with raw values (epoch milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// Send many generated requests at once, verify every answer, report throughput and the
    /// spread of shards over engines.
    Load {
        /// Built-in kind to generate: sort, wordcount, checksum, synthetic.
        #[arg(long, short, default_value = "sort")]
        kind: String,
        /// Number of requests.
        #[arg(long, short = 'n', default_value_t = 100)]
        requests: usize,
        /// Size of each request in the kind's unit (items, words, bytes, units).
        #[arg(long, default_value_t = 10_000)]
        size: usize,
        /// Seed of the generated inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Cancel a running request: one `cancelled` result is published to its reply target.
    Cancel {
        /// Request id.
        #[arg(value_parser = request_id)]
        id: Uuid,
    },
    /// Serve the web dashboard: engines, requests in flight, one request's record, cancel.
    /// Read-only unless a token is set; binds to loopback by default.
    Dashboard {
        /// Address to listen on.
        #[arg(
            long,
            env = "SHARDLINE_DASHBOARD_ADDR",
            default_value = "127.0.0.1:8080"
        )]
        listen: std::net::SocketAddr,
        /// Token that actions (cancel) must present as `Authorization: Bearer <token>`.
        #[arg(long, env = "SHARDLINE_DASHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Delete every queue, exchange and Redis key of the namespace: for demos, tests and
    /// retired deployments. Stop its managers and workers first (refused while a worker runs).
    Teardown {
        /// Confirm: everything in the namespace, in flight or not, is deleted.
        #[arg(long)]
        yes: bool,
    },
    /// The locality keys engines hold (what the manager routes keyed shards by), and changes
    /// to them at run time.
    Locality {
        #[command(subcommand)]
        action: LocalityAction,
    },
    /// In-flight requests, earliest deadline first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines with raw values (epoch milliseconds).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LocalityAction {
    /// Print each live engine's keys (or one engine's, live or not).
    List {
        /// Only this engine.
        #[arg(long)]
        engine: Option<String>,
    },
    /// Add keys to what an engine holds (until the worker restarts with its --locality).
    Add {
        /// Engine id.
        #[arg(long)]
        engine: String,
        /// Keys to add.
        #[arg(required = true)]
        keys: Vec<LocalityKey>,
    },
    /// Take keys out of what an engine holds.
    Remove {
        /// Engine id.
        #[arg(long)]
        engine: String,
        /// Keys to remove.
        #[arg(required = true)]
        keys: Vec<LocalityKey>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        shardline::telemetry::init();
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardline: {e}");
            ExitCode::from(match e {
                Error::Timeout { .. } => 2,
                Error::Broker(_) | Error::Redis(_) | Error::RepliesClosed => 3,
                Error::Input(_) => 64,
            })
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Submit {
            kind,
            file,
            data,
            shard_file,
            locality,
            shard_locality,
            input,
            max_shards,
            deadline_ms,
            failure_policy,
            quorum,
            timeout_secs,
            quiet,
            summary,
        } => {
            let shard_file_count = shard_file.len();
            let payload = if shard_file.is_empty() {
                Input::Payload(parse_payload(&kind, input, read_input(file, data)?)?)
            } else {
                Input::Shards(
                    shard_file
                        .into_iter()
                        .map(|f| parse_payload(&kind, input, read_input(Some(f), None)?))
                        .collect::<Result<_, _>>()?,
                )
            };
            let client = Client::connect(&cli.connect).await?;
            let options = Options {
                max_shards,
                deadline_ms,
                failure_policy: failure_policy
                    .map(|p| FailurePolicy::try_from(p.replace('-', "_")))
                    .transpose()
                    .map_err(Error::Input)?,
                quorum,
            };
            let localities = shard_localities(&shard_locality, shard_file_count)?;
            let (id, rx) = match (payload, locality) {
                (Input::Payload(p), None) => client.send(&kind, p, options).await?,
                (Input::Payload(p), Some(key)) => client.send_at(&kind, p, &key, options).await?,
                (Input::Shards(s), key) => match (localities, key) {
                    (None, None) => client.send_shards(&kind, s, options).await?,
                    (keys, key) => {
                        let keys = keys.unwrap_or_else(|| vec![key; s.len()]);
                        client.send_shards_at(&kind, s, keys, options).await?
                    }
                },
            };
            eprintln!("request {id}");
            let bar = (!quiet).then(progress_bar);
            let result = {
                let wait = client.wait(id, rx, Duration::from_secs(timeout_secs));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        r = &mut wait => break r,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if let (Some(bar), Ok(Some(meta))) = (&bar, client.status(id).await) {
                                bar.set_length(u64::from(meta.total));
                                bar.set_position(u64::from(meta.done));
                            }
                        }
                    }
                }
            };
            let result = result?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            client.close().await;
            let mut result = result;
            if summary {
                result.output = result.output.map(summarize);
            }
            Ok(print_result(&result))
        }
        Command::Status { id, json } => {
            let client = Client::connect(&cli.connect).await?;
            let code = match client.status(id).await? {
                Some(m) => {
                    let spread = spread(client.routes(id).await?.into_values());
                    print_status(&m, &spread, json);
                    ExitCode::SUCCESS
                }
                None => match client.rejection(id).await? {
                    Some(r) => {
                        print_rejection(id, &r, json);
                        ExitCode::SUCCESS
                    }
                    None => {
                        eprintln!(
                            "shardline: no request {id}: not in flight, not finished or rejected in the last {} minutes",
                            shardline::store::Store::DEFAULT_GRACE.as_secs() / 60
                        );
                        ExitCode::FAILURE
                    }
                },
            };
            client.close().await;
            Ok(code)
        }
        Command::Load {
            kind,
            requests,
            size,
            seed,
            timeout_secs,
        } => {
            let client = Client::connect(&cli.connect).await?;
            let r = shardline_client::load::run(
                &client,
                &kind,
                requests,
                size,
                seed,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            client.close().await;
            println!(
                "{kind}: {} requests, {} shards in {:.2}s = {:.1} requests/s, {:.1} shards/s; {}/{} correct",
                r.requests,
                r.shards,
                r.elapsed.as_secs_f64(),
                r.requests_per_sec(),
                r.shards_per_sec(),
                r.correct,
                r.requests
            );
            print_spread(&r.spread);
            Ok(if r.correct == r.requests {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Cancel { id } => {
            let client = Client::connect(&cli.connect).await?;
            let ended = client.cancel(id).await?;
            client.close().await;
            match ended {
                Ended::NotRunning => {
                    eprintln!("shardline: {id} is not running (finished or already ending)");
                    Ok(ExitCode::FAILURE)
                }
                Ended::Remembered => {
                    println!(
                        "{id}: not seen yet; the cancel is remembered for {} minutes and applies if it arrives",
                        shardline::store::CANCEL_TOMBSTONE_TTL.as_secs() / 60
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ended::Claimed | Ended::Marked => {
                    println!("{id}: cancelled; its cancelled result will be published");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Dashboard { listen, token } => {
            cli.connect
                .names()
                .map_err(|e| Error::Input(e.to_string()))?;
            let store = cli.connect.store().await.map_err(Error::Redis)?;
            shardline_client::dashboard::serve(
                listen,
                store,
                &cli.connect.amqp_url,
                token,
                shardline::signal::shutdown(),
            )
            .await
            .map_err(|e| Error::Input(format!("cannot serve the dashboard on {listen}: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Teardown { yes } => {
            if !yes {
                return Err(Error::Input(format!(
                    "teardown deletes everything in namespace {:?}; add --yes to confirm",
                    cli.connect.namespace
                )));
            }
            let client = Client::connect(&cli.connect).await?;
            let removed = client.remove_namespace().await;
            client.close().await;
            removed?;
            println!("namespace {} removed", cli.connect.namespace);
            Ok(ExitCode::SUCCESS)
        }
        Command::Locality { action } => {
            let client = Client::connect(&cli.connect).await?;
            let code = locality(&client, action).await?;
            client.close().await;
            Ok(code)
        }
        Command::List { limit, json } => {
            let client = Client::connect(&cli.connect).await?;
            let ids = client.list(limit).await?;
            if ids.is_empty() && !json {
                println!("no requests in flight");
            }
            for (id, deadline) in ids {
                match (client.status(id).await?, json) {
                    (Some(m), true) => println!("{}", status_json(&m)),
                    (Some(m), false) => println!(
                        "{id}  {:<10} {:<10} {}/{}  deadline {}",
                        m.kind,
                        m.state,
                        m.done,
                        m.total,
                        when(m.deadline)
                    ),
                    (None, true) => println!(
                        "{}",
                        serde_json::json!({"request_id": id, "state": null, "deadline": deadline})
                    ),
                    (None, false) => println!("{id}  (finished or expired since the listing)"),
                }
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--shard-locality` values, one per shard file (`-` for none); `None` when not given.
fn shard_localities(
    given: &[String],
    shards: usize,
) -> Result<Option<Vec<Option<LocalityKey>>>, Error> {
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() != shards {
        return Err(Error::Input(format!(
            "{} --shard-locality for {shards} --shard-file: give one per shard file (`-` for none)",
            given.len()
        )));
    }
    given
        .iter()
        .map(|k| match k.as_str() {
            "-" => Ok(None),
            k => LocalityKey::parse(k)
                .map(Some)
                .map_err(|e| Error::Input(format!("--shard-locality {k:?}: {e}"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `shardline locality …`.
async fn locality(client: &Client, action: LocalityAction) -> Result<ExitCode, Error> {
    match action {
        LocalityAction::List { engine } => {
            let engines = match engine {
                Some(e) => vec![e],
                None => client.live_engines().await?,
            };
            if engines.is_empty() {
                println!("no live engines");
            }
            for e in engines {
                let keys = client.locality(&e).await?;
                println!(
                    "{e}  {}",
                    if keys.is_empty() {
                        "-".to_owned()
                    } else {
                        keys.join(",")
                    }
                );
            }
        }
        LocalityAction::Add { engine, keys } => {
            warn_unless_live(client, &engine).await?;
            let added = client.add_locality(&engine, &keys).await?;
            println!(
                "{engine}: {added} key(s) added, {} already held",
                (keys.len() as u64).saturating_sub(added)
            );
        }
        LocalityAction::Remove { engine, keys } => {
            let removed = client.remove_locality(&engine, &keys).await?;
            println!(
                "{engine}: {removed} key(s) removed, {} not held",
                (keys.len() as u64).saturating_sub(removed)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Say so when `engine` is not running: its keys apply once it is, until it restarts.
async fn warn_unless_live(client: &Client, engine: &str) -> Result<(), Error> {
    if !client.live_engines().await?.iter().any(|e| e == engine) {
        eprintln!(
            "shardline: engine {engine} is not running; the keys are kept, but a worker that \
             starts as {engine} replaces them with its --locality"
        );
    }
    Ok(())
}

/// A request id from the command line, with a message that says what is expected.
fn request_id(s: &str) -> Result<Uuid, String> {
    s.trim().parse().map_err(|_| {
        format!("{s:?} is not a request id: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")
    })
}

/// An epoch-ms time as a person reads it: `2026-12-01T18:50:00Z (in 59m 58s)`.
fn when(epoch_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(epoch_ms);
    let now = std::time::SystemTime::now();
    let seconds = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    let relative = match at.duration_since(now) {
        Ok(ahead) => format!("in {}", seconds(ahead)),
        Err(e) => format!("{} ago", seconds(e.duration())),
    };
    format!("{} ({relative})", humantime::format_rfc3339_seconds(at))
}

/// Shards per route (engine id, `(shared)` or `(held)`).
fn spread(routes: impl Iterator<Item = String>) -> BTreeMap<String, u32> {
    let mut spread = BTreeMap::new();
    for route in routes {
        *spread.entry(route).or_default() += 1;
    }
    spread
}

/// `engine=n …`, with what the manager's own routes mean when they appear.
fn print_spread(spread: &BTreeMap<String, impl std::fmt::Display>) {
    let parts: Vec<String> = spread.iter().map(|(e, n)| format!("{e}={n}")).collect();
    println!("  shards per engine: {}", parts.join(" "));
    if spread.contains_key("(shared)") {
        println!("    (shared): sent to the shared queue, where the first free worker took them");
    }
    if spread.contains_key("(held)") {
        println!("    (held): waiting in the manager for an engine with room");
    }
}

fn status_json(m: &Meta) -> serde_json::Value {
    serde_json::json!({
        "request_id": m.id,
        "kind": m.kind,
        "state": m.state.to_string(),
        "status": m.status.map(Status::as_str),
        "done": m.done,
        "total": m.total,
        "created": m.created,
        "deadline": m.deadline,
        "error": m.error,
    })
}

fn print_status(m: &Meta, spread: &BTreeMap<String, u32>, json: bool) {
    if json {
        let mut v = status_json(m);
        v["shards_per_route"] = serde_json::json!(spread);
        println!("{v}");
        return;
    }
    println!(
        "{}  kind={} state={} status={} done={}/{}",
        m.id,
        m.kind,
        m.state,
        m.status.map_or("-", Status::as_str),
        m.done,
        m.total,
    );
    println!("  accepted {}", when(m.created));
    println!("  deadline {}", when(m.deadline));
    if !spread.is_empty() {
        print_spread(spread);
    }
    if let Some(e) = &m.error {
        println!("error: {}: {}", e.code, e.message);
    }
}

fn print_rejection(id: Uuid, r: &Rejected, json: bool) {
    if json {
        let v = serde_json::json!({
            "request_id": id,
            "kind": r.kind,
            "state": "rejected",
            "status": Status::Rejected.as_str(),
            "rejected": r.at,
            "error": {"code": r.reason.code(), "message": r.message},
        });
        println!("{v}");
        return;
    }
    println!(
        "{id}  kind={} state=rejected status=rejected",
        if r.kind.is_empty() { "-" } else { &r.kind }
    );
    println!("  rejected {}", when(r.at));
    println!("error: {}: {}", r.reason.code(), r.message);
}

fn read_input(file: Option<PathBuf>, data: Option<String>) -> Result<Vec<u8>, Error> {
    if let Some(d) = data {
        return Ok(d.into_bytes());
    }
    let mut buf = Vec::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            buf = std::fs::read(&p).map_err(|e| Error::Input(format!("{}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Error::Input(format!("stdin: {e}")))?;
        }
    }
    Ok(buf)
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} shards {pos}/{len} {wide_bar} {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

/// Keep the first and last few items of long arrays and maps, noting how many were left out.
fn summarize(v: rmpv::Value) -> rmpv::Value {
    const KEEP: usize = 4;
    match v {
        rmpv::Value::Array(items) if items.len() > 2 * KEEP => {
            let n = items.len();
            let mut out: Vec<rmpv::Value> = items[..KEEP].to_vec();
            out.push(format!("... {} more ...", n - 2 * KEEP).into());
            out.extend_from_slice(&items[n - KEEP..]);
            rmpv::Value::Array(out)
        }
        rmpv::Value::Map(entries) if entries.len() > 2 * KEEP => {
            let n = entries.len();
            let mut out = entries[..2 * KEEP].to_vec();
            out.push((
                "...".into(),
                format!("{} more entries", n - 2 * KEEP).into(),
            ));
            rmpv::Value::Map(out)
        }
        rmpv::Value::Binary(b) if b.len() > 16 => format!("<{} bytes>", b.len()).into(),
        other => other,
    }
}

fn print_result(result: &FinalResult) -> ExitCode {
    use std::io::Write;
    let text = serde_json::to_string_pretty(result).unwrap_or_else(|e| format!("{result:?} ({e})"));
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    if let Some(e) = &result.error {
        eprintln!(
            "shardline: {}: {}: {}",
            result.status.as_str(),
            e.code,
            e.message
        );
    }
    match result.status {
        Status::Completed | Status::Partial => ExitCode::SUCCESS,
        Status::Failed | Status::Rejected | Status::TimedOut | Status::Cancelled => {
            ExitCode::FAILURE
        }
    }
}
