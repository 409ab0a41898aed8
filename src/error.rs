//! Typed errors at the library's boundaries.
//!
//! Every message says what was wrong, where (file and line, position in the query, operator), and
//! what to do. Bad *records* are not errors: they are data, routed to the dead-letter output by the
//! decoder (see [`crate::decode::Reject`]). These errors stop a run.

use std::path::PathBuf;

/// The error type of the paystream library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream query could not be planned or cannot run in streaming.
    #[error("query error at {position}: {message}")]
    Plan {
        /// Line and column in the query text, e.g. `line 3, column 10`.
        position: String,
        /// What is wrong and what to do instead.
        message: String,
    },
    /// An input file could not be opened or read (not a bad record: the file itself).
    #[error("cannot read {path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An output could not be written.
    #[error("cannot write {target}: {source}")]
    Output {
        /// Which output (`--output out.jsonl`, `dead-letter`, ...).
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Operator state could not be snapshotted or restored.
    #[error("state error in operator {operator}: {message}")]
    State {
        /// The operator whose state is affected.
        operator: String,
        /// What went wrong.
        message: String,
    },
    /// A command-line or configuration value is invalid.
    #[error("invalid {what}: {message}")]
    Config {
        /// The option, e.g. `--watermark-delay`.
        what: String,
        /// What is wrong and the accepted form.
        message: String,
    },
    /// The embedded log failed (a topic, a partition, a consumer group).
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// An error from DataFusion or Arrow while evaluating a query.
    #[error("evaluation error: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// An internal invariant was broken: this is a bug in paystream, please report it.
    #[error("internal error (this is a bug in paystream, please report it): {0}")]
    Internal(String),
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::DataFusion(e.into())
    }
}

/// Result type used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
