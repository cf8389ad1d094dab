//! Long-running children for command kinds in `serve` mode: instead of a process per shard,
//! the worker keeps one child per running shard (started on first use, reused after) and talks
//! to it in frames, so a shard costs a round trip through a pipe rather than a process start.
//!
//! The framing, on the child's stdin and stdout:
//!
//! - a shard: its length as 4 bytes big-endian, then its bytes;
//! - the answer: 1 status byte (0 = the partial result follows, anything else = an error
//!   message follows), the length as 4 bytes big-endian, then the bytes.
//!
//! A child that answers an error stays in use; one that exits, breaks the framing or answers
//! more than the output limit is dropped (the shard fails with the tail of its stderr), and a
//! child whose shard is stopped gets SIGTERM, then SIGKILL, with its process group.
//! `examples/kinds/shardline_serve.py` implements the child's side in Python.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardline::kind::{KindError, Stop};

use crate::command::{keep_tail, spawn, terminate};
use crate::kinds_file::Argv;

/// How often a waiting shard checks its stop flag.
const POLL: Duration = Duration::from_millis(5);

/// One answer frame.
enum Frame {
    Ok(Vec<u8>),
    Err(String),
}

/// A running child.
struct Server {
    child: Child,
    stdin: ChildStdin,
    frames: Receiver<io::Result<Frame>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    grace: Duration,
}

impl Server {
    fn tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).trim_end().to_owned()
    }

    fn send(&mut self, input: &[u8]) -> io::Result<()> {
        let len = u32::try_from(input.len())
            .map_err(|_| io::Error::other("a shard over 4 GiB cannot be framed"))?;
        self.stdin.write_all(&len.to_be_bytes())?;
        self.stdin.write_all(input)?;
        self.stdin.flush()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child, self.grace);
    }
}

/// The children of one command kind.
pub struct Pool {
    name: String,
    argv: Argv,
    max_output: u64,
    grace: Duration,
    idle: Mutex<Vec<Server>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("argv", &self.argv)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `argv` children for kind `name`; none runs until a shard needs one.
    pub fn new(name: &str, argv: Argv, max_output: u64, grace: Duration) -> Self {
        Pool {
            name: name.to_owned(),
            argv,
            max_output,
            grace,
            idle: Mutex::default(),
        }
    }

    /// Run one shard on an idle child (or a new one) and return its partial result.
    ///
    /// # Errors
    /// The child answered an error, died, broke the framing or answered too much
    /// ([`KindError::Failed`]), or `stop` was raised ([`KindError::Stopped`]).
    pub fn run(&self, input: &[u8], stop: &Stop) -> Result<Vec<u8>, KindError> {
        let mut server = self.take()?;
        if let Err(e) = server.send(input) {
            return Err(self.broken(&server, &e.to_string()));
        }
        loop {
            match server.frames.recv_timeout(POLL) {
                Ok(Ok(Frame::Ok(out))) => {
                    self.put(server);
                    return Ok(out);
                }
                Ok(Ok(Frame::Err(message))) => {
                    self.put(server);
                    return Err(KindError::Failed(format!("{}: {message}", self.name)));
                }
                Ok(Err(e)) => return Err(self.broken(&server, &e.to_string())),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.broken(&server, "it closed its output"));
                }
                Err(RecvTimeoutError::Timeout) if stop.requested() => {
                    // Dropping the server stops it.
                    return Err(KindError::Stopped);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The failure of a child that cannot go on (it is dropped, and so stopped, by the caller).
    fn broken(&self, server: &Server, why: &str) -> KindError {
        // Give its stderr a moment to arrive: a child that died usually said why.
        std::thread::sleep(POLL * 4);
        KindError::Failed(format!(
            "{}: {} stopped serving ({why}); stderr: {}",
            self.name,
            self.argv.program.display(),
            server.tail()
        ))
    }

    fn take(&self) -> Result<Server, KindError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => self.start(),
        }
    }

    fn put(&self, server: Server) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(server);
    }

    /// Start a child with its readers.
    fn start(&self) -> Result<Server, KindError> {
        let mut child = spawn(&self.name, &self.argv, &[])?;
        let (stdin, stdout, err) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    return Err(KindError::Failed(format!(
                        "{}: no pipes to the child",
                        self.name
                    )));
                }
            };
        let (tx, frames) = mpsc::channel();
        let limit = self.max_output;
        std::thread::spawn(move || read_frames(stdout, limit, &tx));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr.clone();
        std::thread::spawn(move || keep_tail(err, &tail));
        Ok(Server {
            child,
            stdin,
            frames,
            stderr,
            grace: self.grace,
        })
    }
}

/// Read answer frames until the child's stdout closes or breaks the framing.
fn read_frames(mut out: impl Read, limit: u64, tx: &mpsc::Sender<io::Result<Frame>>) {
    loop {
        let mut head = [0u8; 5];
        if let Err(e) = out.read_exact(&mut head) {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                let _ = tx.send(Err(e));
            }
            return;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if u64::from(len) > limit {
            let _ = tx.send(Err(io::Error::other(format!(
                "an answer of {len} bytes is over the {limit}-byte limit (max_output_bytes)"
            ))));
            return;
        }
        let mut body = vec![0; len as usize];
        if let Err(e) = out.read_exact(&mut body) {
            let _ = tx.send(Err(e));
            return;
        }
        let frame = if head[0] == 0 {
            Frame::Ok(body)
        } else {
            Frame::Err(String::from_utf8_lossy(&body).into_owned())
        };
        if tx.send(Ok(frame)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Instant;

    /// A child in Python: upper-cases each shard; "fail" answers an error, "die" exits with a
    /// message on stderr, "hang" sleeps.
    const CHILD: &str = r#"
import struct, sys, time
i, o = sys.stdin.buffer, sys.stdout.buffer
while True:
    h = i.read(4)
    if len(h) < 4: break
    s = i.read(struct.unpack(">I", h)[0])
    if s == b"die": sys.stderr.write("dying on purpose\n"); sys.stderr.flush(); sys.exit(4)
    if s == b"hang": time.sleep(60)
    st, b = (1, b"no thanks") if s == b"fail" else (0, s.upper())
    o.write(struct.pack(">BI", st, len(b)) + b); o.flush()
"#;

    fn pool() -> Pool {
        let argv = Argv {
            program: PathBuf::from("python3"),
            args: vec!["-c".into(), CHILD.into()],
            dir: PathBuf::from("/"),
        };
        Pool::new("upper", argv, 1_000, Duration::from_millis(200))
    }

    /// One child serves shard after shard, and answers an error without being replaced.
    #[test]
    fn a_child_serves_many_shards() {
        let p = pool();
        assert_eq!(p.run(b"abc", &Stop::new()).expect("runs"), b"ABC");
        let e = p.run(b"fail", &Stop::new()).expect_err("fails");
        assert!(e.to_string().contains("no thanks"), "{e}");
        assert_eq!(p.run(b"x", &Stop::new()).expect("runs"), b"X");
        assert_eq!(p.idle.lock().expect("lock").len(), 1, "one child reused");
    }

    /// A child that dies fails its shard with its stderr, and the next shard gets a new one.
    #[test]
    fn a_dead_child_is_replaced() {
        let p = pool();
        let e = p.run(b"die", &Stop::new()).expect_err("died");
        assert!(e.to_string().contains("dying on purpose"), "{e}");
        assert_eq!(p.run(b"ok", &Stop::new()).expect("runs"), b"OK");
    }

    /// A stopped shard stops its child at once rather than waiting for it.
    #[test]
    fn a_stopped_shard_stops_its_child() {
        let p = pool();
        let stop = Stop::new();
        let raise = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            raise.request();
        });
        let started = Instant::now();
        assert_eq!(
            p.run(b"hang", &stop).expect_err("stopped"),
            KindError::Stopped
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            p.idle.lock().expect("lock").is_empty(),
            "the child was not kept"
        );
    }
}
