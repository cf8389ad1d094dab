//! Logging set-up for the binaries. Libraries only emit `tracing` events.

use tracing_subscriber::EnvFilter;

/// Install a subscriber: filter from `RUST_LOG` (default `info`), format from
/// `SHARDLINE_LOG_FORMAT` (`plain`, the default, or `json`), written to stderr.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SHARDLINE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
