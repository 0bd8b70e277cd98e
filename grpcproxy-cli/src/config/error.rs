//! Configuration errors that name the file, line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (the operating system's words).
        reason: String,
    },
    /// The text is not a valid configuration, at `line`:`column` (both 1-based).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the problem.
        line: usize,
        /// The column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// More than one problem, each on a line of its own.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// An error at byte `span` of `text` (line and column are 1-based).
    pub(crate) fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let offset = span.map_or(0, |s| s.start.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: message.trim_end().to_owned(),
        }
    }
}

/// A problem found after parsing, at a place in the file.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) span: Option<Range<usize>>,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }
}
