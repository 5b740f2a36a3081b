//! Logging: tracing to stderr, text on a terminal and JSON otherwise (`--log-format` overrides).
//!
//! A bare level (`--log-level trace`, `RUST_LOG=debug`) applies to aml-auth-proxy itself; other crates are capped
//! at `info`, because their debug/trace output describes protocol internals this project does not control. Name
//! them explicitly (`RUST_LOG=info,hyper=trace`) to see it anyway.

pub mod access;
#[cfg(test)]
pub(crate) mod capture;
pub mod json;
pub mod writer;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use self::json::JsonLines;
use self::writer::{BatchWriter, Flusher};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields at top level.
    Json,
}

/// Keeps the background log writer running; dropping it flushes what is queued. Hold it for the process's life.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _flusher: Option<Flusher>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Installs the global subscriber. `level` is `--log-level`; without it `RUST_LOG` is used, else `info`.
///
/// Lines are written to stderr in batches by a background thread ([`writer`]), so a request never waits for (or
/// serialises on) a write to stderr. If stderr cannot keep up with a flood of lines, excess lines are dropped
/// rather than slowing the proxy down.
pub fn init(format: Option<LogFormat>, level: Option<&str>) -> LogGuard {
    let directives = level
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(expand_directives(&directives)).unwrap_or_else(|e| {
        eprintln!("aml-auth-proxy: ignoring invalid log level {directives:?}: {e}");
        EnvFilter::new("info")
    });
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let (batch, flusher) = match BatchWriter::start(Box::new(std::io::stderr())) {
        Ok((batch, flusher)) => (Some(batch), Some(flusher)),
        Err(e) => {
            eprintln!("aml-auth-proxy: cannot start the log writer thread, writing directly: {e}");
            (None, None)
        }
    };
    let writer = match &batch {
        Some(batch) => BoxMakeWriter::new(batch.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    match (result, batch) {
        (Err(e), _) => eprintln!("aml-auth-proxy: logging already initialised: {e}"),
        (Ok(()), Some(batch)) if format == LogFormat::Json => access::write_directly_to(batch),
        (Ok(()), _) => {}
    }
    LogGuard { _flusher: flusher }
}

/// A bare level becomes `<min(level, info)>,aml_auth_proxy=<level>`; anything else is used as given.
pub fn expand_directives(directives: &str) -> String {
    let bare = directives.trim().to_ascii_lowercase();
    let others = match bare.as_str() {
        "trace" | "debug" | "info" => "info",
        "warn" | "error" | "off" => bare.as_str(),
        _ => return directives.to_owned(),
    };
    format!("{others},aml_auth_proxy={bare}")
}

#[cfg(test)]
mod tests {
    use super::expand_directives;

    #[test]
    fn bare_levels_cap_dependencies_at_info() {
        assert_eq!(expand_directives("trace"), "info,aml_auth_proxy=trace");
        assert_eq!(expand_directives("DEBUG"), "info,aml_auth_proxy=debug");
        assert_eq!(expand_directives("warn"), "warn,aml_auth_proxy=warn");
        assert_eq!(expand_directives("info,hyper=trace"), "info,hyper=trace");
    }
}
