//! The kinds file (`--kinds-file`, `SHARDLINE_KINDS_FILE`): kinds whose work is done by
//! commands in any language, declared in TOML. A stock manager serves them through the generic
//! splitter each names (see [`crate::command`] for how the commands are run).
//!
//! ```toml
//! [kinds.csv-sum]
//! splitter = "lines"                  # words, lines, list, bytes or none
//! shard_size = 65536                  # preferred work per shard, in the splitter's unit
//! process = ["python3", "csv_sum.py", "process"]
//! merge = ["python3", "csv_sum.py", "merge"]
//! merge_input = "concat"              # or "files": one file per part, paths appended to `merge`
//! output = "json"                     # how the merge's stdout becomes the result: json or text
//! mode = "spawn"                      # or "serve": long-running children, see `crate::serve`
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shardline::kind::{DEFAULT_MAX_ATTEMPTS, Splitter, check_name};

use crate::command::CommandKind;
use crate::serve::Pool;

/// Why a kinds file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KindsFileError {
    /// The file cannot be read.
    #[error("reading the kinds file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("the kinds file {path} does not parse: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// One kind is declared wrongly.
    #[error("kind {kind:?} in {path}: {detail}")]
    Kind {
        /// The file.
        path: PathBuf,
        /// The kind.
        kind: String,
        /// What is wrong.
        detail: String,
    },
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    kinds: BTreeMap<String, Declared>,
}

/// One kind as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    splitter: Splitter,
    shard_size: Option<u64>,
    process: Vec<String>,
    merge: Option<Vec<String>>,
    #[serde(default)]
    merge_input: MergeInput,
    #[serde(default)]
    output: Output,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    merge_timeout_ms: Option<u64>,
    #[serde(default)]
    mode: Mode,
    /// Run `process` and `merge` (each then one string) with `sh -c`.
    #[serde(default)]
    shell: bool,
    max_output_bytes: Option<u64>,
    stop_grace_ms: Option<u64>,
    /// `process` may run twice at once with no harm (see [`shardline::kind::Kind::hedge_safe`]).
    #[serde(default)]
    hedge: bool,
}

fn default_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

/// How `process` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A process per shard.
    #[default]
    Spawn,
    /// Long-running children answering shard after shard in frames ([`crate::serve`]).
    Serve,
}

/// How a merge command gets the partial results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeInput {
    /// One after another on stdin, in shard order.
    #[default]
    Concat,
    /// One file per part, the paths appended to the command's arguments in shard order.
    Files,
}

/// How the merged stdout becomes the request's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Parsed as JSON.
    Json,
    /// A UTF-8 string.
    #[default]
    Text,
}

/// A command line, checked at load: its program exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    /// The program.
    pub program: PathBuf,
    /// Its fixed arguments (never request data).
    pub args: Vec<String>,
    /// Where it runs: the kinds file's directory.
    pub dir: PathBuf,
}

/// Longest stdout a command may write, by default.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// Time between SIGTERM and SIGKILL for a command being stopped, by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest a merge command may run, by default (a shard's limit is the worker's
/// `--shard-time-limit-ms`).
pub const DEFAULT_MERGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Read the kinds in `path`.
///
/// # Errors
/// The file is missing or does not parse, a kind name or splitter is not allowed, or a
/// command's program cannot be found.
pub fn load(path: &Path) -> Result<Vec<CommandKind>, KindsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KindsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: File = toml::from_str(&text).map_err(|source| KindsFileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    file.kinds
        .into_iter()
        .map(|(name, declared)| {
            let wrong = |detail: String| KindsFileError::Kind {
                path: path.to_owned(),
                kind: name.clone(),
                detail,
            };
            build(&name, declared, base).map_err(wrong)
        })
        .collect()
}

/// Check one declaration and build its kind.
fn build(name: &str, d: Declared, base: &Path) -> Result<CommandKind, String> {
    check_name(name)?;
    if !d.splitter.is_generic() {
        return Err(
            "a command kind needs a generic splitter: words, lines, list, bytes or none".into(),
        );
    }
    if d.max_attempts == 0 {
        return Err("max_attempts must be at least 1".into());
    }
    let process = argv(&d.process, d.shell, base).map_err(|e| format!("process: {e}"))?;
    let merge = d
        .merge
        .as_deref()
        .map(|m| argv(m, d.shell, base).map_err(|e| format!("merge: {e}")))
        .transpose()?;
    if merge.is_none() && d.merge_input != MergeInput::Concat {
        return Err("merge_input = \"files\" needs a merge command".into());
    }
    let max_output = d.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
    let stop_grace = d
        .stop_grace_ms
        .map_or(DEFAULT_STOP_GRACE, Duration::from_millis);
    let server = (d.mode == Mode::Serve)
        .then(|| Arc::new(Pool::new(name, process.clone(), max_output, stop_grace)));
    Ok(CommandKind {
        name: Box::leak(name.to_owned().into_boxed_str()),
        splitter: d.splitter,
        shard_size: d
            .shard_size
            .unwrap_or(default_shard_size(d.splitter))
            .max(1),
        process,
        server,
        merge,
        merge_input: d.merge_input,
        output: d.output,
        max_attempts: d.max_attempts,
        hedge: d.hedge,
        max_output,
        stop_grace,
        merge_timeout: d
            .merge_timeout_ms
            .map_or(DEFAULT_MERGE_TIMEOUT, Duration::from_millis),
    })
}

/// The default work per shard: 64 KiB of text or bytes, 1,000 items of a list.
fn default_shard_size(splitter: Splitter) -> u64 {
    match splitter {
        Splitter::List => 1_000,
        _ => 64 * 1024,
    }
}

/// A command line from the file: an argument list whose first word is a program found on
/// `PATH` or a path (relative paths are taken from the kinds file's directory, where the
/// command also runs), or with `shell`, one string run by `sh -c`.
fn argv(words: &[String], shell: bool, base: &Path) -> Result<Argv, String> {
    if shell {
        let [script] = words else {
            return Err("with shell = true, give the command as one string in a list".into());
        };
        return Ok(Argv {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.clone(), "sh".into()],
            dir: base.to_owned(),
        });
    }
    let (first, rest) = words.split_first().ok_or("the command is empty")?;
    Ok(Argv {
        program: resolve(first, base)?,
        args: rest.to_vec(),
        dir: base.to_owned(),
    })
}

/// Find a program: a path with a `/` is taken from `base` when relative; a bare name is looked
/// up on `PATH`. It must be an executable file.
fn resolve(program: &str, base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        let p = base.join(program);
        if p.is_file() && !executable(&p) {
            return Err(format!("program {program:?} is not executable"));
        }
        executable(&p).then_some(p)
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| executable(p))
        })
    };
    found.ok_or_else(|| format!("program {program:?} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` in a kinds file of a fresh directory.
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kinds.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn load_text(text: &str) -> Result<Vec<CommandKind>, KindsFileError> {
        let (_dir, path) = file(text);
        load(&path)
    }

    /// A full declaration loads with its settings; omitted ones take their defaults.
    #[test]
    fn loads_a_declaration() {
        let kinds = load_text(
            r#"
            [kinds.upper]
            splitter = "lines"
            process = ["tr", "a-z", "A-Z"]

            [kinds.sorted]
            splitter = "list"
            shard_size = 10
            process = ["sort -n"]
            merge = ["sort -n -m \"$@\""]
            merge_input = "files"
            output = "text"
            shell = true
            max_attempts = 5
            hedge = true
            "#,
        )
        .expect("loads");
        let sorted = &kinds[0];
        assert_eq!(sorted.name, "sorted");
        assert_eq!((sorted.shard_size, sorted.max_attempts), (10, 5));
        assert_eq!(sorted.merge_input, MergeInput::Files);
        assert!(sorted.hedge);
        assert_eq!(sorted.process.program, PathBuf::from("/bin/sh"));
        let upper = &kinds[1];
        assert_eq!(upper.splitter, Splitter::Lines);
        assert!(upper.process.program.ends_with("tr"));
        assert_eq!(upper.merge, None);
        assert!(
            !upper.hedge,
            "a command kind is not hedged unless its file says so"
        );
        assert_eq!(upper.shard_size, 64 * 1024);
    }

    /// The example kinds file loads, each program found.
    #[test]
    fn the_example_kinds_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kinds/kinds.toml");
        let kinds = load(&path).expect("the example loads");
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            ["csv-sum", "csv-sum-served", "grep-error", "numsort"]
        );
        assert!(kinds[1].server.is_some() && kinds[0].server.is_none());
    }

    /// Each sort of bad file is refused with an error that says what and where.
    #[test]
    fn refuses_bad_files() {
        let err = |text: &str| load_text(text).expect_err("refused").to_string();
        assert!(err("[kinds.x\nsplitter=").contains("does not parse"));
        assert!(
            err("[kinds.x]\nsplitter = \"chars\"\nprocess = [\"cat\"]").contains("does not parse")
        );
        assert!(
            err("[kinds.x]\nsplitter = \"lines\"\nprocess = [\"cat\"]\ncolour = 1")
                .contains("does not parse")
        );
        assert!(
            err("[kinds.x]\nsplitter = \"custom\"\nprocess = [\"cat\"]")
                .contains("generic splitter")
        );
        assert!(err("[kinds.X]\nsplitter = \"lines\"\nprocess = [\"cat\"]").contains("lowercase"));
        assert!(err("[kinds.x]\nsplitter = \"lines\"\nprocess = []").contains("empty"));
        let missing = err("[kinds.x]\nsplitter = \"lines\"\nprocess = [\"no-such-program-here\"]");
        assert!(
            missing.contains("not found") && missing.contains("\"x\""),
            "{missing}"
        );
        assert!(
            err("[kinds.x]\nsplitter = \"lines\"\nprocess = [\"a\", \"b\"]\nshell = true")
                .contains("one string")
        );
        let files = "[kinds.x]\nsplitter = \"lines\"\nprocess = [\"cat\"]\nmerge_input = \"files\"";
        assert!(err(files).contains("needs a merge"));
        let (dir, path) = file("[kinds.x]\nsplitter = \"lines\"\nprocess = [\"./plain.sh\"]");
        std::fs::write(dir.path().join("plain.sh"), "echo").expect("write");
        let e = load(&path).expect_err("not executable").to_string();
        assert!(e.contains("not executable"), "{e}");
        let gone = load(Path::new("/no/such/kinds.toml"))
            .expect_err("missing")
            .to_string();
        assert!(gone.contains("reading the kinds file"), "{gone}");
    }
}
