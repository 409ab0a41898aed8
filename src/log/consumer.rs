//! Consuming a topic: one reader per partition, read in turn, with a start position and the
//! positions to commit for a consumer group.

use std::time::Duration;

use super::{GroupOffsets, Isolation, Log, LogError, PartitionReader, RecordRef, TailWaiter};

/// Where a consumer starts in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The first stored offset.
    Earliest,
    /// The end: only records appended from now on.
    Latest,
    /// This offset in every partition.
    Offset(u64),
    /// The first batch reaching this timestamp (epoch ms).
    Timestamp(i64),
    /// A group's committed offsets; partitions without one start at the earliest.
    Committed(GroupOffsets),
}

/// Reads every partition of a topic.
pub struct TopicConsumer {
    readers: Vec<PartitionReader>,
    waiter: TailWaiter,
    next: usize,
}

impl TopicConsumer {
    /// Opens a read_committed reader per partition of `topic`, positioned per `start`.
    pub fn open(log: &Log, topic: &str, start: &StartAt) -> Result<Self, LogError> {
        Self::open_with(log, topic, start, Isolation::ReadCommitted)
    }

    /// Opens a reader per partition of `topic` with the given isolation, positioned per `start`.
    pub fn open_with(
        log: &Log,
        topic: &str,
        start: &StartAt,
        isolation: Isolation,
    ) -> Result<Self, LogError> {
        let config = log.topic_config(topic)?;
        let mut readers = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let mut r = PartitionReader::open_with(&log.partition_dir(topic, p), 0, isolation)?;
            match start {
                StartAt::Earliest => {}
                StartAt::Latest => {
                    let end = r.visible_end_offset()?;
                    r.seek(end)?;
                }
                StartAt::Offset(o) => r.seek(*o)?,
                StartAt::Timestamp(t) => r.seek_time(*t)?,
                StartAt::Committed(g) => {
                    if let Some(o) = g.offsets.get(&p) {
                        r.seek(*o)?;
                    }
                }
            }
            readers.push(r);
        }
        let dirs: Vec<_> = (0..config.partitions)
            .map(|p| log.partition_dir(topic, p))
            .collect();
        Ok(TopicConsumer {
            waiter: TailWaiter::new(dirs.iter().map(|d| d.as_path())),
            readers,
            next: 0,
        })
    }

    /// Step over damaged batches, reporting them, instead of failing
    /// (see [`PartitionReader::skip_corrupt`]).
    pub fn skip_corrupt(&mut self, skip: bool) {
        for r in &mut self.readers {
            r.skip_corrupt(skip);
        }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.readers.len() as u32
    }

    /// Reads one batch from the next partition that has data (partitions take turns) and calls
    /// `f(partition, record)` for its records. Returns 0 when no partition has new data.
    pub fn poll(&mut self, mut f: impl FnMut(u32, RecordRef<'_>)) -> Result<usize, LogError> {
        let n = self.readers.len();
        for i in 0..n {
            let p = (self.next + i) % n;
            let got = self.readers[p].poll(|r| f(p as u32, r))?;
            if got > 0 {
                self.next = (p + 1) % n;
                self.waiter.reset();
                return Ok(got);
            }
        }
        Ok(0)
    }

    /// Reads one batch from every partition and drops it: surfaces damage right after the
    /// positions (an error, or a reported skip in skip mode). A reader that stops at an end it
    /// computed would otherwise stop just short of a damaged batch and never say so.
    pub fn probe(&mut self) -> Result<(), LogError> {
        for r in &mut self.readers {
            r.poll(|_| {})?;
        }
        Ok(())
    }

    /// Sleeps until a partition may have new data, or `timeout`.
    pub fn wait(&mut self, timeout: Duration) {
        self.waiter.wait(timeout);
    }

    /// The next offset to read in each partition (what a group commits).
    pub fn positions(&self) -> GroupOffsets {
        GroupOffsets {
            offsets: self
                .readers
                .iter()
                .enumerate()
                .map(|(p, r)| (p as u32, r.position()))
                .collect(),
        }
    }

    /// The current end offset of each partition, as far as this consumer may read (the
    /// committed end for read_committed).
    pub fn end_offsets(&self) -> Result<Vec<u64>, LogError> {
        self.readers
            .iter()
            .map(|r| r.visible_end_offset())
            .collect()
    }
}
