//! `connector = 'file'`: an event file read whole by each run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::FileSource;
use crate::connector::{OptionError, SourceEntry, from_options};
use crate::decode::Format;
use crate::error::Result;
use crate::source::{Source, SourceConnector, SourceContext};

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SourceEntry = SourceEntry {
    name: "file",
    example: "connector = 'file', path = 'data/events.jsonl'",
    declare,
};

/// `WITH (…)` options of a file source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceOptions {
    /// The event file (relative to the working directory).
    pub path: PathBuf,
    /// `json`, `csv` or `parquet` (absent: from the extension).
    pub format: Option<String>,
}

/// A declared file source.
#[derive(Debug, Clone)]
struct Declared {
    path: PathBuf,
    format: Option<Format>,
}

fn declare(options: &BTreeMap<String, String>) -> Result<Arc<dyn SourceConnector>, OptionError> {
    let o: FileSourceOptions = from_options(options)?;
    let format = match o.format.as_deref() {
        None => None,
        Some(f) => Some(Format::from_name(f).ok_or_else(|| {
            OptionError::Invalid(format!("unknown format '{f}'; use json, csv or parquet"))
        })?),
    };
    Ok(Arc::new(Declared {
        path: o.path,
        format,
    }))
}

impl SourceConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn resumable(&self) -> bool {
        false
    }

    fn format(&self) -> Option<Format> {
        self.format
    }

    fn file_path(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }

    fn source(&self, ctx: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(
            FileSource::new(&self.path)
                .format(self.format)
                .events(Arc::clone(&ctx.events)),
        ))
    }
}
