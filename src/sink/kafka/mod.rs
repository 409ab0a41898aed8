//! `connector = 'kafka'`: result rows as JSON records of a Kafka topic (`sink.rs`).
//!
//! ```sql
//! CREATE SINK alerts WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092',
//!   topic = 'risk_alerts', key = 'card_id', partitions = '6');
//! ```
//! Delivery is at-least-once with the idempotent producer (no duplicates from the producer's
//! own retries) and deterministic keys: every checkpoint waits until its records are
//! acknowledged by the broker, and a recovery recomputes what followed the restored checkpoint,
//! so a record can repeat — with the same key, value and timestamp — but is never lost.

mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;

use self::sink::KafkaSink;
use super::{Sink, SinkConnector, SinkContext};
use crate::connector::kafka::{Brokers, DEFAULT_BOOTSTRAP, split_properties};
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "kafka",
    example: "connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'risk_alerts', key = 'card_id'",
    declare,
};

/// `WITH (…)` options of a Kafka sink (besides `properties.<name>`, passed to librdkafka).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkOptions {
    /// `host:port[,host:port…]` (default `127.0.0.1:9092`).
    pub bootstrap_servers: Option<String>,
    /// The topic (created when absent).
    pub topic: String,
    /// The column whose value keys each record (default: a changelog's group key, else none).
    pub key: Option<String>,
    /// Partitions when the topic is created (default 1), a positive whole number.
    pub partitions: Option<String>,
}

/// A declared Kafka sink.
#[derive(Debug, Clone)]
struct Declared {
    brokers: Brokers,
    topic: String,
    key: Option<String>,
    partitions: i32,
}

fn declare(
    _name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let (own, properties) = split_properties(options);
    let o: KafkaSinkOptions = from_options(&own)?;
    let partitions = match &o.partitions {
        None => 1,
        Some(p) => p.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| {
            OptionError::Invalid(format!("partitions must be a positive number, not '{p}'"))
        })?,
    };
    Ok(Arc::new(Declared {
        brokers: Brokers {
            bootstrap: o
                .bootstrap_servers
                .unwrap_or_else(|| DEFAULT_BOOTSTRAP.into()),
            properties,
        },
        topic: o.topic,
        key: o.key,
        partitions,
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        format!("{} topic {}", self.brokers.describe(), self.topic)
    }

    fn where_to_look(&self) -> String {
        format!(
            "They are records of Kafka topic {} at {} with reason and source offset.",
            self.topic, self.brokers.bootstrap
        )
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        // At-least-once: a reset appends recomputed results as `--keep-sinks` would.
        Ok(None)
    }

    fn open(&self, _ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        Ok(Box::new(KafkaSink::open(
            self.brokers.clone(),
            &self.topic,
            self.partitions,
            self.key.clone(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::query_file::parse_query_file;

    #[test]
    fn options_are_checked_and_properties_pass_through() {
        let f = parse_query_file(
            "CREATE SOURCE p WITH (connector = 'kafka', topic = 'payments', properties.fetch.min.bytes = '1');\n\
             CREATE SINK s WITH (connector = 'kafka', topic = 'out', key = 'card_id', properties.linger.ms = '20');\n\
             INSERT INTO s SELECT card_id FROM p;",
        )
        .unwrap();
        assert_eq!(f.sources[0].connector.name(), "kafka");
        let e = parse_query_file(
            "CREATE SOURCE p WITH (connector = 'kafka', topic = 'payments', start_from = 'now');",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("use 'earliest', 'latest' or 'group'"), "{e}");
        let e = parse_query_file(
            "CREATE SINK s WITH (connector = 'kafka', topic = 'out', partitions = '0');",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("partitions must be a positive number"), "{e}");
        let e = parse_query_file("CREATE SINK s WITH (connector = 'kafka', topik = 'out');")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown option `topik`") && e.contains("bootstrap_servers"),
            "{e}"
        );
    }
}
