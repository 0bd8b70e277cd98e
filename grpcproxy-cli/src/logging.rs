//! Log output: human-readable or JSON lines, filtered by level.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

pub(crate) fn init(level: &str, format: Format) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Human => builder.init(),
        Format::Json => builder.json().init(),
    }
    Ok(())
}
