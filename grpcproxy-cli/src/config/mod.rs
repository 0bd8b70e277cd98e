//! The configuration file: TOML, strictly parsed (unknown fields are errors), then checked
//! for what the types cannot say (references between sections, regexes, file paths).

mod duration;
mod error;
mod file;
mod routes;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub(crate) use file::*;
pub(crate) use routes::{CompiledRoute, HeaderCondition};

/// A configuration that parsed and passed every check, with the text it came from.
#[derive(Debug, Clone)]
pub(crate) struct LoadedConfig {
    pub(crate) path: PathBuf,
    pub(crate) config: Config,
    /// What is valid but likely a mistake, each as `file:line:column: message`.
    pub(crate) warnings: Vec<String>,
    /// Read from a file (reloadable); false for quick mode's.
    pub(crate) from_file: bool,
}

/// Reads, parses and checks the configuration at `path`.
pub(crate) fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let config = parse(path, &text)?;
    let warnings = config
        .warnings()
        .into_iter()
        .map(|w| ConfigError::at(path, &text, w.span, w.message).to_string())
        .collect();
    Ok(LoadedConfig {
        path: path.to_owned(),
        config,
        warnings,
        from_file: true,
    })
}

/// Parses and checks configuration text; `path` names it in errors.
///
/// ```
/// use std::path::Path;
///
/// let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n\
///             [clusters.c]\nendpoints = [\"127.0.0.1:50052\"]\n";
/// assert!(grpcproxy_cli::config::parse(Path::new("proxy.toml"), text).is_ok());
/// let error = grpcproxy_cli::config::parse(Path::new("proxy.toml"), "[[routes]]\n").unwrap_err();
/// assert!(error.to_string().starts_with("proxy.toml:"));
/// ```
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| {
        let message = match e.span().and_then(|span| key_before(text, span.start)) {
            Some(key) if !names_field(e.message()) => format!("{key}: {}", e.message()),
            _ => e.message().to_owned(),
        };
        ConfigError::at(path, text, e.span(), message)
    })?;
    config.compiled_routes = config.check().map_err(|problems| {
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|problem| ConfigError::at(path, text, problem.span, problem.message))
            .collect();
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Several(errors)
        }
    })?;
    Ok(config)
}

/// The key of a `key = value` line whose value starts at `offset`, to name the field in
/// serde's messages (which name the expected type, not the field).
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let before = &text[line_start..offset.min(text.len())];
    let key = before.split('=').next()?.trim();
    (before.contains('=') && !key.is_empty() && !key.contains(['{', '[', '"'])).then_some(key)
}

/// Whether serde's message already names the field.
fn names_field(message: &str) -> bool {
    ["unknown field", "missing field", "duplicate"]
        .iter()
        .any(|p| message.starts_with(p))
}
