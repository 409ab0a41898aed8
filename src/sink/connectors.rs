//! The sink connectors' options: `connector = 'log'` (a topic of the embedded log) and
//! `connector = 'file'` (JSON Lines part files, or a stream such as `/dev/stdout`). Each reads
//! its `WITH (…)` options into a serde struct; the job opens the declared sink. (These move into
//! `sink/<name>/` directories when the commit protocol moves onto the `Sink` trait.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::connector::{OptionError, SinkEntry, from_options};
use crate::sql::query_file::SinkConnector;

/// `connector = 'log'`.
pub(crate) const LOG: SinkEntry = SinkEntry {
    name: "log",
    example: "connector = 'log', topic = 'risk_alerts'",
    declare: declare_log,
};

/// `connector = 'file'`.
pub(crate) const FILE: SinkEntry = SinkEntry {
    name: "file",
    example: "connector = 'file', path = 'out.jsonl'",
    declare: declare_file,
};

/// `WITH (…)` options of a log sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkOptions {
    /// The topic (created if missing).
    pub topic: String,
    /// Partitions when the topic is created (default 1), a positive whole number.
    pub partitions: Option<String>,
}

/// `WITH (…)` options of a file sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkOptions {
    /// The file (part files `PATH.part-N.jsonl` beside it for a job over a log), or a stream.
    pub path: PathBuf,
}

fn declare_log(options: &BTreeMap<String, String>) -> Result<SinkConnector, OptionError> {
    let o: LogSinkOptions = from_options(options)?;
    let partitions = o
        .partitions
        .map(|p| {
            p.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                OptionError::Invalid(format!("partitions must be a positive number, not '{p}'"))
            })
        })
        .transpose()?;
    Ok(SinkConnector::Log {
        topic: o.topic,
        partitions,
    })
}

fn declare_file(options: &BTreeMap<String, String>) -> Result<SinkConnector, OptionError> {
    let o: FileSinkOptions = from_options(options)?;
    Ok(SinkConnector::File { path: o.path })
}
