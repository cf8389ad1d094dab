//! Command kinds: a kind whose shards are processed, and whose partials are merged, by
//! commands in any language (declared in the kinds file, see [`crate::kinds_file`]), like
//! Hadoop Streaming.
//!
//! - `process` runs once per shard: the shard on stdin, its partial result on stdout. A shard
//!   of text (`words`, `lines`) or bytes arrives as it is; any other (a `list` run, a `none`
//!   value) as JSON.
//! - `merge` gets the partials in shard order: one after another on stdin (`concat`), or one
//!   file per part with the paths appended to its arguments (`files`). Its stdout is the result
//!   (`output`: parsed as JSON, or a string). Without `merge`, the partials are concatenated.
//! - Request data reaches a command only on stdin, never in its arguments or environment, and
//!   no shell runs unless the file says `shell = true`: a request cannot choose what runs.
//! - A non-zero exit fails the attempt, with the tail of stderr in the error; stdout over the
//!   output limit fails it too. A command still running when its shard is stopped (its request
//!   ended, or the shard passed the worker's time limit) gets SIGTERM, then SIGKILL after the
//!   stop grace.
//! - With `mode = "serve"`, `process` starts once per running shard and stays, answering shard
//!   after shard in frames ([`crate::serve`]): for commands whose start-up outweighs a shard.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rmpv::Value;
use shardline::kind::{DynKind, KindError, Splitter, Stop};

use crate::kinds_file::{Argv, MergeInput, Output};
use crate::serve::Pool;

/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL: usize = 2_048;
/// How often a running command is checked for exit or stop, at most: the checks start
/// [`FIRST_POLL`] apart and double up to this, so that a command that takes a millisecond is
/// not charged a whole period.
const POLL: Duration = Duration::from_millis(5);
/// The first pause between checks of a running command.
const FIRST_POLL: Duration = Duration::from_micros(50);

/// A kind run by commands. Built by [`crate::kinds_file::load`].
#[derive(Debug, Clone)]
pub struct CommandKind {
    /// The kind's name (kinds live for the whole process: it is leaked once, at load).
    pub name: &'static str,
    /// How a manager cuts its input.
    pub splitter: Splitter,
    /// Preferred work per shard, in the splitter's unit.
    pub shard_size: u64,
    /// Runs once per shard (in `serve` mode, once per slot: see [`crate::serve`]).
    pub process: Argv,
    /// In `serve` mode, the long-running children that run `process`.
    pub server: Option<Arc<Pool>>,
    /// Joins the partials; `None` concatenates them.
    pub merge: Option<Argv>,
    /// How `merge` gets the partials.
    pub merge_input: MergeInput,
    /// How the merged output becomes the result.
    pub output: Output,
    /// Tries before a shard counts as poison.
    pub max_attempts: u32,
    /// Whether a late shard may be sent a second time (the file's `hedge`).
    pub hedge: bool,
    /// Longest stdout a command may write, bytes.
    pub max_output: u64,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Longest a merge may run.
    pub merge_timeout: Duration,
}

impl CommandKind {
    /// Run `argv` (plus `extra` arguments) with `input` on stdin; its stdout when it exits 0.
    /// It is stopped when `stop` is raised, or at `until`.
    fn run(
        &self,
        argv: &Argv,
        extra: &[String],
        input: &[u8],
        stop: &Stop,
        until: Option<Instant>,
    ) -> Result<Vec<u8>, KindError> {
        let what = argv.program.display().to_string();
        let mut child = spawn(self.name, argv, extra)?;
        let feeder = feed(&mut child, input.to_vec());
        let limit = self.max_output;
        let over = Arc::new(AtomicBool::new(false));
        let stdout = child.stdout.take().map(|mut out| {
            let over = over.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let read = (&mut out).take(limit + 1).read_to_end(&mut buf);
                if buf.len() as u64 > limit {
                    over.store(true, Ordering::Relaxed);
                }
                read.map(|_| buf)
            })
        });
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().map(|err| {
            let tail = tail.clone();
            std::thread::spawn(move || keep_tail(err, &tail))
        });
        let ended = self.wait(&mut child, stop, until, &over);
        // Whatever it started goes with it, so that nothing holds its pipes open.
        kill_group(&child);
        let out = stdout.map(join_output).transpose()?.unwrap_or_default();
        if let Some(h) = stderr {
            let _ = h.join();
        }
        let tail = {
            let buf = tail.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&buf).into_owned()
        };
        if let Some(h) = feeder {
            // A command may exit without reading all of its input: that is its business.
            let _ = h.join();
        }
        if over.load(Ordering::Relaxed) {
            // Over the limit, whether it was stopped for it or died of the closed pipe first.
            return Err(KindError::Failed(format!(
                "{}: {what} wrote more than {limit} bytes (max_output_bytes)",
                self.name
            )));
        }
        match ended {
            Ended::Killed => Err(KindError::Stopped),
            Ended::TimedOut(after) => Err(KindError::Failed(format!(
                "{}: {what} did not finish within {after:?} (merge_timeout_ms)",
                self.name
            ))),
            Ended::Lost(e) => Err(KindError::Failed(format!(
                "{}: waiting for {what}: {e}",
                self.name
            ))),
            Ended::Exited(status) if status.success() => Ok(out),
            Ended::Exited(status) => Err(KindError::Failed(format!(
                "{}: {what} {status}; stderr: {}",
                self.name,
                tail.trim_end()
            ))),
        }
    }

    /// Wait for the child to exit, stopping it (SIGTERM, then SIGKILL after the grace) when
    /// `stop` is raised or its stdout passed the limit (`over`).
    fn wait(
        &self,
        child: &mut Child,
        stop: &Stop,
        until: Option<Instant>,
        over: &AtomicBool,
    ) -> Ended {
        let started = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ended::Exited(status),
                Ok(None) => {}
                Err(e) => {
                    terminate(child, self.stop_grace);
                    return Ended::Lost(e);
                }
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                terminate(child, self.stop_grace);
                return Ended::TimedOut(started.elapsed());
            }
            if stop.requested() {
                terminate(child, self.stop_grace);
                return Ended::Killed;
            }
            if over.load(Ordering::Relaxed) {
                terminate(child, self.stop_grace);
                return Ended::Killed;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL);
        }
    }
}

/// How a command ended.
enum Ended {
    /// By itself.
    Exited(ExitStatus),
    /// Terminated: its shard was stopped, or its output passed the limit.
    Killed,
    /// Terminated at its time limit, after this long.
    TimedOut(Duration),
    /// Waiting for it failed; it was terminated.
    Lost(std::io::Error),
}

/// Write `input` to the child's stdin on a thread (a command may write output before it has
/// read all its input), then close it.
fn feed(child: &mut Child, input: Vec<u8>) -> Option<JoinHandle<()>> {
    let mut stdin = child.stdin.take()?;
    Some(std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    }))
}

fn join_output(h: JoinHandle<std::io::Result<Vec<u8>>>) -> Result<Vec<u8>, KindError> {
    h.join()
        .map_err(|_| KindError::Failed("reading a command's output panicked".into()))?
        .map_err(|e| KindError::Failed(format!("reading a command's output: {e}")))
}

/// Start `argv` (plus `extra` arguments) for kind `kind`: in the kinds file's directory, in a
/// process group of its own (so that stopping it stops what it started too), with all three
/// standard streams piped.
pub(crate) fn spawn(kind: &str, argv: &Argv, extra: &[String]) -> Result<Child, KindError> {
    Command::new(&argv.program)
        .process_group(0)
        .current_dir(&argv.dir)
        .args(&argv.args)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KindError::Failed(format!("{kind}: starting {}: {e}", argv.program.display())))
}

/// SIGKILL to what is left of a child's process group (the child runs in its own group:
/// its id is the group's).
fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Keep the last [`STDERR_TAIL`] bytes of a child's stderr, reading it in chunks so that a
/// flood costs no memory.
pub(crate) fn keep_tail(mut err: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = err.read(&mut chunk) {
        if n == 0 {
            return;
        }
        let mut buf = tail.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(&chunk[..n]);
        let excess = buf.len().saturating_sub(STDERR_TAIL);
        buf.drain(..excess);
    }
}

/// SIGTERM to the child's process group, then SIGKILL if the child has not exited within
/// `grace`; then reap it. The group goes too, so nothing it started keeps its pipes open.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    let group = i32::try_from(child.id()).ok().map(Pid::from_raw);
    if let Some(g) = group {
        let _ = killpg(g, Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }
    if let Some(g) = group {
        let _ = killpg(g, Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A shard as a command reads it: text and bytes as they are, anything else as JSON.
fn stdin_bytes(kind: &'static str, shard: &[u8]) -> Result<Vec<u8>, KindError> {
    let value = rmpv::decode::read_value(&mut &shard[..]).map_err(|e| KindError::Corrupt {
        kind,
        what: "shard",
        detail: e.to_string(),
    })?;
    Ok(match value {
        Value::String(s) => s.into_bytes(),
        Value::Binary(b) => b,
        other => serde_json::to_vec(&other).map_err(|e| KindError::Failed(e.to_string()))?,
    })
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

impl DynKind for CommandKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn split(
        &self,
        payload: Value,
        decide: &mut dyn FnMut(u64, u64) -> usize,
    ) -> Result<Vec<Vec<u8>>, KindError> {
        self.splitter
            .split(payload, self.shard_size, decide)
            .map(|(shards, _)| shards)
    }

    fn split_pieces(&self, pieces: Vec<Value>) -> Result<(Vec<Vec<u8>>, u64), KindError> {
        self.splitter.split_pieces(pieces)
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    fn hedge_safe(&self) -> bool {
        self.hedge
    }

    fn shard_size_hint(&self) -> u64 {
        self.shard_size
    }

    fn splitter(&self) -> Splitter {
        self.splitter
    }

    /// A process start-up is never microseconds: every shard runs on a blocking thread, where
    /// the worker can stop it.
    fn cost_follows_size(&self) -> bool {
        false
    }

    fn process(&self, shard: &[u8], stop: &Stop) -> Result<Vec<u8>, KindError> {
        let input = stdin_bytes(self.name(), shard)?;
        let out = match &self.server {
            Some(pool) => pool.run(&input, stop)?,
            None => self.run(&self.process, &[], &input, stop, None)?,
        };
        Ok(encode(&Value::Binary(out)))
    }

    fn merge(&self, parts: Vec<Vec<u8>>) -> Result<Value, KindError> {
        let kind = self.name();
        let parts = parts
            .iter()
            .map(|p| match rmpv::decode::read_value(&mut &p[..]) {
                Ok(Value::Binary(b)) => Ok(b),
                Ok(other) => Err(format!("expected binary, got {other}")),
                Err(e) => Err(e.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|detail| KindError::Corrupt {
                kind,
                what: "partial",
                detail,
            })?;
        let until = Instant::now() + self.merge_timeout;
        let merged = match &self.merge {
            None => parts.concat(),
            Some(argv) => match self.merge_input {
                MergeInput::Concat => {
                    self.run(argv, &[], &parts.concat(), &Stop::new(), Some(until))?
                }
                MergeInput::Files => {
                    let dir = tempfile::tempdir().map_err(|e| {
                        KindError::Failed(format!("{}: a directory for the parts: {e}", self.name))
                    })?;
                    let mut paths = Vec::with_capacity(parts.len());
                    for (i, part) in parts.iter().enumerate() {
                        let path = dir.path().join(format!("part-{i:06}"));
                        std::fs::write(&path, part).map_err(|e| {
                            KindError::Failed(format!("{}: writing part {i}: {e}", self.name))
                        })?;
                        paths.push(path.display().to_string());
                    }
                    self.run(argv, &paths, &[], &Stop::new(), Some(until))?
                }
            },
        };
        match self.output {
            Output::Text => String::from_utf8(merged).map(Value::from).map_err(|e| {
                KindError::Failed(format!(
                    "{}: the merged output is not UTF-8 text: {e}",
                    self.name
                ))
            }),
            Output::Json => serde_json::from_slice::<Value>(&merged).map_err(|e| {
                KindError::Failed(format!("{}: the merged output is not JSON: {e}", self.name))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sh(script: &str) -> Argv {
        Argv {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into(), "sh".into()],
            dir: PathBuf::from("/"),
        }
    }

    fn kind(process: &str, merge: Option<&str>, input: MergeInput, output: Output) -> CommandKind {
        CommandKind {
            name: "test-kind",
            splitter: Splitter::Lines,
            shard_size: 1,
            process: sh(process),
            server: None,
            merge: merge.map(sh),
            merge_input: input,
            output,
            max_attempts: 3,
            hedge: false,
            max_output: 1_000,
            stop_grace: Duration::from_millis(200),
            merge_timeout: Duration::from_secs(10),
        }
    }

    fn shard(text: &str) -> Vec<u8> {
        encode(&Value::from(text))
    }

    /// Sorting shards with `sort -n` and merging them with `sort -m` over one file per part
    /// gives what sorting the whole input gives.
    #[test]
    fn sort_and_merge_by_files_equals_unsharded() {
        let k = kind(
            "sort -n",
            Some("sort -n -m \"$@\""),
            MergeInput::Files,
            Output::Text,
        );
        let text = "5\n3\n10\n1\n4\n9\n2\n";
        let (shards, _) = Splitter::Lines
            .split(Value::from(text), 1, &mut |_, _| 3)
            .expect("split");
        let parts = shards
            .iter()
            .map(|s| k.process(s, &Stop::new()).expect("process"))
            .collect();
        assert_eq!(
            k.merge(parts).expect("merge"),
            Value::from("1\n2\n3\n4\n5\n9\n10\n")
        );
    }

    /// A `list` shard reaches the command as JSON; a JSON merge output becomes a value.
    #[test]
    fn lists_go_in_as_json_and_json_comes_out() {
        let k = kind(
            "cat",
            Some("tr -d '\\n' | sed 's/\\]\\[/,/g'"),
            MergeInput::Concat,
            Output::Json,
        );
        let a = encode(&Value::Array(vec![1.into(), 2.into()]));
        let b = encode(&Value::Array(vec![3.into()]));
        let parts = vec![
            k.process(&a, &Stop::new()).expect("a"),
            k.process(&b, &Stop::new()).expect("b"),
        ];
        assert_eq!(
            k.merge(parts).expect("merge"),
            Value::Array(vec![1.into(), 2.into(), 3.into()])
        );
    }

    /// A non-zero exit fails with the tail of stderr in the error.
    #[test]
    fn a_failing_command_reports_its_stderr() {
        let k = kind(
            "echo 'bad row 7' >&2; exit 3",
            None,
            MergeInput::Concat,
            Output::Text,
        );
        let e = k.process(&shard("x\n"), &Stop::new()).expect_err("fails");
        let msg = e.to_string();
        assert!(
            msg.contains("bad row 7") && msg.contains("exit status: 3"),
            "{msg}"
        );
    }

    /// Output over the limit fails the shard, even from a command that never stops writing.
    #[test]
    fn output_over_the_limit_fails() {
        let k = kind("yes", None, MergeInput::Concat, Output::Text);
        let e = k
            .process(&shard("x\n"), &Stop::new())
            .expect_err("too long");
        assert!(e.to_string().contains("more than 1000 bytes"), "{e}");
    }

    /// A command that ignores SIGTERM is killed after the grace once its shard is stopped.
    #[test]
    fn a_hanging_command_is_stopped() {
        let k = kind(
            "trap '' TERM; sleep 30",
            None,
            MergeInput::Concat,
            Output::Text,
        );
        let stop = Stop::new();
        let raise = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            raise.request();
        });
        let started = Instant::now();
        let e = k.process(&shard("x\n"), &stop).expect_err("stopped");
        assert_eq!(e, KindError::Stopped);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// Request data reaches the command only on stdin: its arguments and environment are the
    /// file's alone.
    #[test]
    fn request_data_reaches_the_command_only_on_stdin() {
        let k = kind(
            "echo \"$# $*\"; env | grep -c INJECTED || true",
            None,
            MergeInput::Concat,
            Output::Text,
        );
        let out = k
            .process(&shard("$(touch /tmp/pwned) INJECTED=1\n"), &Stop::new())
            .expect("runs");
        let text = String::from_utf8(
            k.merge(vec![out])
                .expect("merge")
                .as_str()
                .expect("text")
                .into(),
        )
        .expect("utf8");
        assert_eq!(text, "0 \n0\n");
    }
}
