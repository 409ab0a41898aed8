//! `connector = 'log'`: a topic of the embedded log, tailed and checkpointed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::LogSource;
use crate::connector::options::json_only;
use crate::connector::{OptionError, SourceEntry, from_options};
use crate::error::Result;
use crate::source::{Source, SourceConnector, SourceContext};

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SourceEntry = SourceEntry {
    name: "log",
    example: "connector = 'log', topic = 'payments'",
    declare,
};

/// `WITH (…)` options of a log source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSourceOptions {
    /// The topic.
    pub topic: String,
    /// The records' format: `json` (the only one a topic holds).
    pub format: Option<String>,
}

/// A declared log source.
#[derive(Debug, Clone)]
struct Declared {
    topic: String,
}

fn declare(options: &BTreeMap<String, String>) -> Result<Arc<dyn SourceConnector>, OptionError> {
    let o: LogSourceOptions = from_options(options)?;
    json_only(o.format.as_deref(), "a log topic", "")?;
    Ok(Arc::new(Declared { topic: o.topic }))
}

impl SourceConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn log_topic(&self) -> Option<&str> {
        Some(&self.topic)
    }

    fn resumable(&self) -> bool {
        true
    }

    fn source(&self, ctx: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(
            LogSource::new(ctx.log.clone(), self.topic.clone())
                .until_end(ctx.until_end)
                .group(ctx.job)
                .events(Arc::clone(&ctx.events)),
        ))
    }
}
