//! The embedded partitioned log: durable, append-only, read by offset — the default ingest
//! stream and the sink queues, kept the way Kafka keeps them.
//!
//! ```text
//! <data-dir>/<topic>/topic.json                      partitions, segment size, retention, cleanup
//! <data-dir>/<topic>/<partition>/<base>.log|.index|.timeindex
//! <data-dir>/<topic>/<partition>/committed           committed offset of a sink partition
//! <data-dir>/<topic>/<partition>/compacted           where the last compaction pass ended
//! <data-dir>/<topic>/groups/<group>.json             committed offsets of a consumer group
//! <data-dir>/<topic>/writer.lock                     one writer process per topic
//! ```
//! `batch` is the on-disk format, `segment` a file with its sparse indexes, `partition` the
//! writer and the tailing reader of one partition, `topic` partitioning, configuration and
//! consumer groups, `tail` the wait for new data, `compact` the latest record per key of a
//! compacted topic.

mod batch;
mod compact;
mod consumer;
mod partition;
mod producer;
mod pump;
mod read;
mod screen;
mod segment;
mod tail;
mod topic;
mod txn;

use std::path::PathBuf;
use std::time::Duration;

pub use self::batch::{BatchBuilder, MAX_BATCH_BYTES, MAX_RECORD_BYTES, RecordRef};
pub use self::compact::{
    CompactStats, Compaction, DEFAULT_DELETE_RETENTION_MS, MIN_DIRTY_RATIO, is_tombstone,
};
pub use self::consumer::{StartAt, TopicConsumer};
pub use self::partition::{PartitionReader, PartitionWriter, Retention, Skipped};
pub use self::producer::{Producer, Sent, now_ms as producer_now_ms};
pub use self::pump::pump_lines;
pub use self::read::{ReadEnd, ReadTopic, read_topic};
pub use self::tail::TailWaiter;
pub(crate) use self::topic::write_atomic;
pub use self::topic::{
    Cleanup, DEFAULT_SEGMENT_BYTES, GroupOffsets, Log, PartitionStats, TopicConfig, TopicWriter,
    partition_for_key,
};
pub use self::txn::{Isolation, commit_offset, committed_offset};

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append, before it is acknowledged.
    Always,
    /// At most this long after an append (and on close).
    Interval(Duration),
    /// Left to the OS (and done on close).
    Never,
}

impl FsyncPolicy {
    /// Parses `always`, `interval` (1 s) or `never`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(FsyncPolicy::Always),
            "interval" => Some(FsyncPolicy::Interval(Duration::from_secs(1))),
            "never" => Some(FsyncPolicy::Never),
            _ => None,
        }
    }
}

/// An error of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read or written.
    #[error("log file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Stored data is inconsistent.
    #[error("log data {path} is corrupt: {message}")]
    Corrupt {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Segments do not follow each other.
    #[error(
        "log partition {path}: segment {segment} starts at offset {base} but the previous one ends at {expected}; the partition lost data and cannot be opened safely"
    )]
    Gap {
        /// The partition directory.
        path: PathBuf,
        /// The segment file that does not follow.
        segment: String,
        /// Its base offset.
        base: u64,
        /// Where the previous segment ended.
        expected: u64,
    },
    /// The topic does not exist.
    #[error(
        "topic `{topic}` does not exist in {data_dir}; create it with `paystream topic create {topic} --partitions N` (or check --data-dir)"
    )]
    NoSuchTopic {
        /// The topic.
        topic: String,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The topic exists already.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// A name or setting is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A record is larger than the topic accepts; nothing of it was written.
    #[error(
        "{record} is {bytes} bytes, over topic `{topic}`'s limit of {limit} bytes per record (key and value); it was not written. Split the record, or create the topic with a larger `--max-record-bytes` (at most {max})",
        max = MAX_RECORD_BYTES
    )]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// Which record (`line N` of the input, or `record N` of the producer).
        record: String,
        /// Its key plus value, in bytes.
        bytes: u64,
        /// The topic's `max_record_bytes`.
        limit: u64,
    },
    /// The input being produced could not be read.
    #[error("cannot read the input: {0}")]
    Input(std::io::Error),
    /// The output records were being written to failed (not a closed pipe: that ends a read
    /// quietly).
    #[error("cannot write the records out: {0}")]
    Output(std::io::Error),
    /// Another process writes the topic.
    #[error(
        "topic `{0}` is being written by another paystream process (one writer per topic); stop it or write another topic"
    )]
    Locked(String),
}

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod tests;
