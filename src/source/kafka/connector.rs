//! `connector = 'kafka'`: a Kafka topic, its offsets kept in the job's checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{KafkaSource, StartFrom};
use crate::connector::kafka::{Brokers, DEFAULT_BOOTSTRAP, split_properties};
use crate::connector::options::json_only;
use crate::connector::{OptionError, SourceEntry, from_options};
use crate::error::Result;
use crate::source::{Source, SourceConnector, SourceContext};

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SourceEntry = SourceEntry {
    name: "kafka",
    example: "connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'payments', group_id = 'risk', start_from = 'earliest'",
    declare,
};

/// `WITH (…)` options of a Kafka source (besides `properties.<name>`, passed to librdkafka).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaSourceOptions {
    /// `host:port[,host:port…]` (default `127.0.0.1:9092`).
    pub bootstrap_servers: Option<String>,
    /// The topic.
    pub topic: String,
    /// The consumer group offsets are committed to after each checkpoint (default: the job's
    /// name).
    pub group_id: Option<String>,
    /// Where a job without a checkpoint starts: `earliest` (default), `latest`, or `group`
    /// (the group's committed offsets; earliest where it has none).
    pub start_from: Option<String>,
    /// The records' format: `json`.
    pub format: Option<String>,
}

/// A declared Kafka source.
#[derive(Debug, Clone)]
struct Declared {
    brokers: Brokers,
    topic: String,
    group: Option<String>,
    start_from: StartFrom,
}

fn declare(options: &BTreeMap<String, String>) -> Result<Arc<dyn SourceConnector>, OptionError> {
    let (own, properties) = split_properties(options);
    let o: KafkaSourceOptions = from_options(&own)?;
    json_only(
        o.format.as_deref(),
        "a Kafka topic",
        " (one JSON object a record)",
    )?;
    let start_from = match o.start_from.as_deref().unwrap_or("earliest") {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        "group" => StartFrom::Group,
        other => {
            return Err(OptionError::Invalid(format!(
                "start_from = '{other}': use 'earliest', 'latest' or 'group'"
            )));
        }
    };
    Ok(Arc::new(Declared {
        brokers: Brokers {
            bootstrap: o
                .bootstrap_servers
                .unwrap_or_else(|| DEFAULT_BOOTSTRAP.into()),
            properties,
        },
        topic: o.topic,
        group: o.group_id,
        start_from,
    }))
}

impl SourceConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn resumable(&self) -> bool {
        true
    }

    fn record_metadata(&self) -> &'static [&'static str] {
        crate::decode::MetaKey::KINDS
    }

    fn source(&self, ctx: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(KafkaSource {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            group: self.group.clone().unwrap_or_else(|| ctx.job.to_string()),
            start_from: self.start_from,
            until_end: ctx.until_end,
            events: Arc::clone(&ctx.events),
            committer: Default::default(),
            commit_warned: Default::default(),
        }))
    }
}
