//! `connector = 'log'`: a topic of the embedded log ([`TopicSink`]), transactional when the
//! job is checkpointed.

mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use self::topic::{FLUSH_EVERY, SharedProducer, TopicSink, align_sink};

use super::{Sink, SinkConnector, SinkContext};
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "log",
    example: "connector = 'log', topic = 'risk_alerts'",
    declare,
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

/// A declared log sink.
#[derive(Debug, Clone)]
struct Declared {
    topic: String,
    partitions: Option<u32>,
}

/// A log sink writing `topic` (created with one partition if missing): where a job's dead
/// letters and late events go when its file declares no sink for them.
pub fn declare_topic(topic: impl Into<String>) -> Arc<dyn SinkConnector> {
    Arc::new(Declared {
        topic: topic.into(),
        partitions: None,
    })
}

fn declare(
    _name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: LogSinkOptions = from_options(options)?;
    let partitions = o
        .partitions
        .map(|p| {
            p.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                OptionError::Invalid(format!("partitions must be a positive number, not '{p}'"))
            })
        })
        .transpose()?;
    Ok(Arc::new(Declared {
        topic: o.topic,
        partitions,
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn log_topic(&self) -> Option<&str> {
        Some(&self.topic)
    }

    fn describe(&self) -> String {
        format!("topic {}", self.topic)
    }

    fn where_to_look(&self) -> String {
        format!(
            "`paystream consume {}` shows each one with its reason and source offset.",
            self.topic
        )
    }

    fn committed_results(
        &self,
        sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        let records: u64 = sink_offsets.get(&self.topic).map_or(0, |o| o.iter().sum());
        Ok((records > 0).then(|| format!("topic {} ({records} records)", self.topic)))
    }

    fn open(&self, ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        let producer = ctx.producer(&self.topic, self.partitions)?;
        let sink = if ctx.exactly_once {
            // Records become visible when their checkpoint commits.
            TopicSink::transactional(self.topic.clone(), producer, ctx.log.clone())
        } else {
            TopicSink::new(self.topic.clone(), producer)
        };
        // A topic created just now is made compacted if the sink's rows turn out to be keyed.
        Ok(Box::new(sink.created_topic(ctx.created_topic(&self.topic))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Cleanup, FsyncPolicy, Log, TopicConfig};

    /// A changelog sink (rows keyed by group key) that creates its topic makes it compacted; a
    /// topic that existed keeps its configuration, and a sink without keys leaves retention.
    #[test]
    fn a_changelog_sink_creates_its_topic_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        log.create_topic("existing", &TopicConfig::default())
            .unwrap();
        let mut ctx = SinkContext::new(&log, FsyncPolicy::Never, true);
        let declared =
            |topic: &str| declare("s", &[("topic".to_string(), topic.to_string())].into()).unwrap();
        for (topic, keyed, want) in [
            ("changelog", true, Cleanup::Compact),
            ("appends", false, Cleanup::Delete),
            ("existing", true, Cleanup::Delete),
        ] {
            let mut sink = declared(topic).open(&mut ctx).unwrap();
            if keyed {
                sink.key_rows_by(&[0]);
            }
            sink.write_record(b"{\"n\":1}").unwrap();
            assert_eq!(log.topic_config(topic).unwrap().cleanup, want, "{topic}");
        }
        // A second sink of the created topic in the same run shares its producer.
        let mut again = declared("changelog").open(&mut ctx).unwrap();
        again.key_rows_by(&[0]);
        assert_eq!(
            log.topic_config("changelog").unwrap().compaction(),
            Some(crate::log::Compaction::default())
        );
        // Two changelogs opened on one created topic before either is keyed: their keys can
        // be equal, so neither makes it compacted.
        let (mut a, mut b) = (
            declared("shared").open(&mut ctx).unwrap(),
            declared("shared").open(&mut ctx).unwrap(),
        );
        a.key_rows_by(&[0]);
        b.key_rows_by(&[0]);
        a.write_record(b"{\"n\":1}").unwrap();
        assert_eq!(log.topic_config("shared").unwrap().cleanup, Cleanup::Delete);
    }
}
