//! The declared-sink seam: what `CREATE SINK … WITH (connector = '…')` becomes, and what it is
//! opened with.
//!
//! A sink connector is one directory (`sink/<name>/`) with its options (a serde struct with
//! `deny_unknown_fields`), a [`SinkConnector`] and a line in `connector::SINKS`. The
//! job opens each declared sink with a [`SinkContext`], then recovers it to the restored
//! checkpoint ([`Sink::recover`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{SharedProducer, Sink};
use crate::error::Result;
use crate::log::{FsyncPolicy, Log, LogError, Producer, TopicConfig};

/// A sink as `CREATE SINK` declared it: options checked, nothing opened yet.
pub trait SinkConnector: std::fmt::Debug + Send + Sync {
    /// The connector's name, as `connector = '…'` spells it.
    fn name(&self) -> &'static str;

    /// The topic of the embedded log it writes, if it writes one: a job refuses a sink that
    /// writes its own source topic.
    fn log_topic(&self) -> Option<&str> {
        None
    }

    /// The result table it fills, if it is one (`connector = 'table'`): its name.
    fn result_table(&self) -> Option<&str> {
        None
    }

    /// The local file it writes, if it writes one: a server confines the files submitted
    /// queries may write to its own directory.
    fn file_path(&self) -> Option<&std::path::Path> {
        None
    }

    /// What it writes, for a user and to notice a sink whose definition changed between runs:
    /// `topic risk.alerts`, `file out/alerts.jsonl`.
    fn describe(&self) -> String;

    /// Where a user finds the records it holds (said after a run that dead-lettered many).
    fn where_to_look(&self) -> String;

    /// The results it holds that a checkpoint committed, described for a user (`topic x (12
    /// records)`), or `None`. `sink_offsets` are the checkpoint's end offsets per sink topic. A
    /// reset refuses to recompute results over them unless told to truncate or keep them.
    fn committed_results(
        &self,
        sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>>;

    /// Opens the sink for a run.
    fn open(&self, ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>>;
}

/// What a declared sink is opened with: the data directory's log, and whether the run is
/// checkpointed (its sinks then hide records until their checkpoint commits).
pub struct SinkContext<'a> {
    /// The embedded log.
    pub log: &'a Log,
    /// How log sinks sync their appends.
    pub fsync: FsyncPolicy,
    /// Whether the run is checkpointed (exactly-once): sinks then take part in the two-phase
    /// commit rather than writing straight through.
    pub exactly_once: bool,
    /// One producer per topic, shared by every sink that writes it.
    producers: BTreeMap<String, SharedProducer>,
    /// Topics this context created (they did not exist), each with whether only one sink
    /// writes it so far.
    created: BTreeMap<String, Arc<AtomicBool>>,
    /// The live result tables a server reads, which `connector = 'table'` sinks fill (`None`
    /// outside a server: such a sink then writes its topic only).
    pub results: Option<Arc<super::ResultTables>>,
    /// The job the sinks are opened for (empty outside a job): a sink that keeps bookkeeping in
    /// another system records which job owns it.
    pub job: String,
}

impl<'a> SinkContext<'a> {
    /// A context over `log`.
    pub fn new(log: &'a Log, fsync: FsyncPolicy, exactly_once: bool) -> Self {
        SinkContext {
            log,
            fsync,
            exactly_once,
            producers: BTreeMap::new(),
            created: BTreeMap::new(),
            results: None,
            job: String::new(),
        }
    }

    /// The context of job `name`'s sinks.
    pub fn with_job(mut self, name: &str) -> Self {
        self.job = name.to_string();
        self
    }

    /// The context with the result tables `connector = 'table'` sinks fill.
    pub fn with_results(mut self, results: Option<Arc<super::ResultTables>>) -> Self {
        self.results = results;
        self
    }

    /// Whether [`Self::producer`] created `topic` (it did not exist) and one sink alone writes
    /// it: such a sink may still choose its cleanup, e.g. compaction for a changelog keyed by
    /// group key. A flag, read when the sink decides: a second sink opened on the topic later
    /// clears it (two queries' changelogs in one topic can have equal keys, and compaction
    /// would keep only one of them).
    pub fn created_topic(&self, topic: &str) -> Arc<AtomicBool> {
        self.created
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)))
    }

    /// The producer of `topic`, creating the topic with `partitions` (default 1) if missing;
    /// every sink of the run writing `topic` shares it.
    pub fn producer(&mut self, topic: &str, partitions: Option<u32>) -> Result<SharedProducer> {
        if let Some(p) = self.producers.get(topic) {
            if let Some(sole) = self.created.get(topic) {
                sole.store(false, Ordering::Release);
            }
            return Ok(Arc::clone(p));
        }
        let config = TopicConfig {
            partitions: partitions.unwrap_or(1),
            ..TopicConfig::default()
        };
        let missing = matches!(
            self.log.topic_config(topic),
            Err(LogError::NoSuchTopic { .. })
        );
        self.log.ensure_topic(topic, &config)?;
        if missing {
            self.created
                .insert(topic.to_string(), Arc::new(AtomicBool::new(true)));
        }
        let w = self.log.writer(topic, self.fsync)?;
        let p = Arc::new(Mutex::new(Producer::new(w, None)));
        self.producers.insert(topic.to_string(), Arc::clone(&p));
        Ok(p)
    }

    /// Makes every topic written through this context durable.
    pub fn sync(&mut self) -> Result<()> {
        for p in self.producers.values() {
            let mut p = p.lock().expect("producer lock");
            p.flush()?;
            p.sync()?;
        }
        Ok(())
    }
}
