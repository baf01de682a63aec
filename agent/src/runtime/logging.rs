//! Log set-up: `tracing` to stderr, as text or JSON lines, filtered by `RUST_LOG` when set and
//! otherwise by the config's `log_level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Fails if the filter is invalid or a subscriber is installed.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::builder()
            .parse(&v)
            .map_err(|e| format!("RUST_LOG {v:?}: {e}"))?,
        _ => EnvFilter::builder()
            .parse(level)
            .map_err(|e| format!("log_level {level:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
