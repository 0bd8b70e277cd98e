//! Log output: human-readable or JSON lines, filtered by level.

use std::io::IsTerminal;

use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
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
    let asked = filter.max_level_hint();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        Format::Human => builder.init(),
        Format::Json => builder.json().init(),
    }
    if let Some(kept) = left_out(STATIC_MAX_LEVEL, asked) {
        tracing::warn!(
            "--log-level {level:?}: this build logs nothing finer than {kept} (its lean-logs feature left the finer events out; build with --no-default-features --features mimalloc to keep them)"
        );
    }
    Ok(())
}

/// The most detailed level this build keeps, when the filter asks for more.
fn left_out(compiled: LevelFilter, asked: Option<LevelFilter>) -> Option<LevelFilter> {
    asked.filter(|asked| *asked > compiled).map(|_| compiled)
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

    #[test]
    fn asking_for_trace_from_a_build_without_it_is_told() {
        use tracing::level_filters::LevelFilter;
        let debug = LevelFilter::DEBUG;
        assert_eq!(
            super::left_out(debug, Some(LevelFilter::TRACE)),
            Some(debug)
        );
        assert_eq!(super::left_out(debug, Some(LevelFilter::DEBUG)), None);
        assert_eq!(super::left_out(debug, Some(LevelFilter::INFO)), None);
        assert_eq!(super::left_out(debug, None), None);
        assert_eq!(
            super::left_out(LevelFilter::TRACE, Some(LevelFilter::TRACE)),
            None
        );
    }
}
