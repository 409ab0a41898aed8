//! A Kafka topic as a source (librdkafka through `rdkafka`).
//!
//! ```text
//!  consumer (partitions assigned by us, at the checkpoint's offsets) ─▶ per-partition chunks
//!        ─▶ decoders (N) ─▶ engine         checkpoint durable ─▶ offsets committed to the group
//! ```
//! Exactly-once rests on our checkpoints, not on the group: the job assigns every partition
//! itself (no group rebalancing), starts each at the offset its checkpoint recorded, and
//! commits offsets to the consumer group only after a checkpoint covering them is durable (for
//! lag tools and `start_from = 'group'`). Records are JSON objects, one a record, decoded as the
//! embedded log's are; positions in dead letters and late records are Kafka offsets.

pub(crate) mod connector;
mod reader;

pub(crate) use self::connector::CONNECTOR;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::decoders::start_reading;
use super::{Positions, ReadOptions, Reading, Source};
use crate::connector::kafka::{Brokers, Quiet};
use crate::decode::Origin;
use crate::error::{Error, Result};

/// How long one request to the broker (metadata, offsets) may take before it is tried again.
const REQUEST: Duration = Duration::from_secs(5);

/// Where a partition without a checkpointed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// Its earliest retained record.
    Earliest,
    /// Its end: only records produced from now on.
    Latest,
    /// The consumer group's committed offset (earliest without one).
    Group,
}

/// A Kafka topic read by a job.
pub(crate) struct KafkaSource {
    pub(super) brokers: Brokers,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) start_from: StartFrom,
    pub(super) until_end: bool,
    pub(super) events: Arc<crate::schema::EventSchema>,
    /// The consumer that commits offsets to the group (outlives the readers: the final
    /// checkpoint commits after the run ended).
    pub(super) committer: Mutex<Option<BaseConsumer<Quiet>>>,
    /// When a failed group commit was last warned of.
    pub(super) commit_warned: Mutex<Option<std::time::Instant>>,
}

impl KafkaSource {
    /// A consumer of the job's group that never commits on its own.
    fn consumer(&self) -> Result<BaseConsumer<Quiet>> {
        self.brokers
            .config()
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of a partition is reported: `--until-end` stops there even when no
            // record sits at the end offset (a transaction marker, a compacted tail).
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(Quiet)
            .map_err(|e| self.brokers.error("create a consumer", &e))
    }

    /// The topic's partition count, waiting for the broker; a topic that does not exist is an
    /// error saying so.
    fn partitions(&self, c: &BaseConsumer<Quiet>) -> Result<u32> {
        let md = self
            .brokers
            .retry(&format!("read topic {}", self.topic), || {
                c.fetch_metadata(Some(&self.topic), REQUEST)
            })?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n == 0 {
            return Err(self.brokers.error(
                &format!("read topic {}", self.topic),
                &"the topic does not exist; create it first (with the partitions you want)",
            ));
        }
        Ok(n as u32)
    }

    /// Where each partition starts: its position in `start` (a checkpoint's), else as
    /// `start_from` says; never before the earliest retained record.
    fn start_offsets(
        &self,
        c: &BaseConsumer<Quiet>,
        n: u32,
        start: &Positions,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut low = Vec::with_capacity(n as usize);
        let mut high = Vec::with_capacity(n as usize);
        for p in 0..n {
            let (l, h) = self.brokers.retry(
                &format!("read the offsets of {} partition {p}", self.topic),
                || c.fetch_watermarks(&self.topic, p as i32, REQUEST),
            )?;
            low.push(l.max(0) as u64);
            high.push(h.max(0) as u64);
        }
        let committed = match self.start_from {
            StartFrom::Group if (0..n).any(|p| !start.contains_key(&p)) => {
                let mut tpl = TopicPartitionList::new();
                for p in 0..n {
                    tpl.add_partition(&self.topic, p as i32);
                }
                let got = self
                    .brokers
                    .retry(&format!("read group {}'s offsets", self.group), || {
                        c.committed_offsets(tpl.clone(), REQUEST)
                    })?;
                (0..n)
                    .map(|p| {
                        match got
                            .find_partition(&self.topic, p as i32)
                            .map(|e| e.offset())
                        {
                            Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
                            _ => None,
                        }
                    })
                    .collect()
            }
            _ => vec![None; n as usize],
        };
        let from = (0..n as usize)
            .map(|p| {
                let want = match start.get(&(p as u32)) {
                    Some(&o) => o,
                    None => match self.start_from {
                        StartFrom::Earliest => low[p],
                        StartFrom::Latest => high[p],
                        StartFrom::Group => committed[p].unwrap_or(low[p]),
                    },
                };
                if want > high[p] && start.contains_key(&(p as u32)) {
                    return Err(self.brokers.error(
                        &format!("resume topic {} partition {p}", self.topic),
                        &format!(
                            "the checkpoint's offset {want} is past the partition's end {} (was the topic deleted and created again?); run with --reset-state to start over",
                            high[p]
                        ),
                    ));
                }
                if want < low[p] {
                    tracing::warn!(topic = %self.topic, partition = p, from = want, earliest = low[p], "records before the earliest retained offset were deleted by the broker's retention: they are not read");
                }
                Ok(want.max(low[p]))
            })
            .collect::<Result<Vec<u64>>>()?;
        Ok((from, high))
    }
}

impl Source for KafkaSource {
    fn events(&self) -> Arc<crate::schema::EventSchema> {
        Arc::clone(&self.events)
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        let c = self.consumer()?;
        let n = self.partitions(&c)?;
        Ok((0..n)
            .map(|p| Origin::partition(self.topic.as_str(), p))
            .collect())
    }

    fn bounded(&self) -> bool {
        self.until_end
    }

    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        let consumer = self.consumer()?;
        let n = self.partitions(&consumer)?;
        let (from, high) = self.start_offsets(&consumer, n, start)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in from.iter().enumerate() {
            tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(*o as i64))
                .map_err(|e| self.brokers.error("assign partitions", &e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| self.brokers.error("assign partitions", &e))?;
        let positions: Positions = from
            .iter()
            .enumerate()
            .map(|(p, o)| (p as u32, *o))
            .collect();
        tracing::info!(topic = %self.topic, partitions = n, ?positions, until_end = self.until_end, "kafka source opened");

        let (brokers, until) = (self.brokers.clone(), self.until_end.then_some(high));
        let topic = self.topic.clone();
        let meta_keys = crate::decode::metadata_keys(self.events.arrow().fields())
            .into_iter()
            .map(|(_, _, k)| k)
            .collect();
        let stop = Arc::clone(&opts.stop);
        start_reading(&self.events, opts, positions, "kafka-reader", move |feed| {
            reader::KafkaReader {
                consumer,
                brokers,
                topic,
                meta_keys,
                position: from,
                until,
                feed,
                stop,
            }
            .run()
        })
    }

    fn commit(&self, positions: &Positions) -> Result<()> {
        let mut committer = self.committer.lock().unwrap_or_else(|e| e.into_inner());
        if committer.is_none() {
            *committer = Some(self.consumer()?);
        }
        let c = committer
            .as_ref()
            .ok_or_else(|| Error::Internal("no committer".into()))?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in positions {
            tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*o as i64))
                .map_err(|e| self.brokers.error("commit offsets", &e))?;
        }
        let committed = self
            .brokers
            .retry(&format!("commit group {}'s offsets", self.group), || {
                c.commit(&tpl, CommitMode::Sync)
            });
        // The group's offsets serve lag tools and `start_from = 'group'`; the job resumes from
        // its checkpoint's own. A commit the broker refuses (a group ACL, a coordinator that
        // stays away) is a warning a minute, not the end of the job.
        if let Err(e) = committed {
            let mut warned = self.commit_warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned.is_none_or(|w| w.elapsed() > std::time::Duration::from_secs(60)) {
                tracing::warn!(topic = %self.topic, group = %self.group, "kafka source: {e}; the job goes on (its positions are in its checkpoints), the group's offsets lag");
                *warned = Some(std::time::Instant::now());
            }
        }
        Ok(())
    }
}
