//! Log output: human-readable or JSON lines, filtered by level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// One readable line per event (coloured on a terminal only).
    Human,
    /// One JSON object per line.
    Json,
}

pub(crate) fn init(level: &str, format: Format) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(directives(level))
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        Format::Human => builder.init(),
        Format::Json => builder.json().init(),
    }
    Ok(())
}

/// `debug` and `trace` alone are grpcproxy's own: the libraries under it (h2's frame
/// dumps, hyper, rustls, async-nats) stay at `info` unless named (`debug,h2=debug`).
fn directives(level: &str) -> String {
    match level.trim() {
        level @ ("debug" | "trace") => format!("info,grpcproxy={level}"),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bare_debug_level_is_ours_only() {
        assert_eq!(super::directives("debug"), "info,grpcproxy=debug");
        assert_eq!(super::directives("warn"), "warn");
        assert_eq!(super::directives("debug,h2=debug"), "debug,h2=debug");
    }
}
