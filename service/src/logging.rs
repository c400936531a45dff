//! One tracing setup for every binary.
//!
//! Level from `RUST_LOG` (default `info`); `HEDWIG_LOG_FORMAT=json` switches to one JSON object
//! per line for log shippers. Per-message lines carry fields (`queue_id`, `host`, `from`, `to`,
//! `outcome`) so that `grep <queue id>` follows a message across tiers.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to stderr. Safe to call twice (the second is a no-op).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HEDWIG_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colour only for a person at a terminal: not in files, journald or `docker logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
