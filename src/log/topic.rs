//! Topics: named sets of partitions with a configuration, a stable key partitioner, a writer
//! lock, and consumer groups with durably committed offsets.
//!
//! **Partitioner (stable, part of the format):** a record with a key goes to partition
//! `xxh3_64(key, seed 0) mod partitions` — the same partition on every run, machine and version,
//! so each card's (or merchant's) events stay in order in one partition. Records without a key
//! are spread round-robin.
//!
//! **Cleanup:** a topic's storage is bounded either by retention ([`Cleanup::Delete`], the
//! default: sealed segments are deleted by age and size) or by compaction
//! ([`Cleanup::Compact`]: each key's latest record is kept forever and retention is not
//! applied; see `compact`).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::compact::{CompactStats, Compaction, DEFAULT_DELETE_RETENTION_MS};
use super::partition::{PartitionReader, PartitionWriter, Retention, segment_bases};
use super::segment::io_err;
use super::{BatchBuilder, FsyncPolicy, LogError, MAX_RECORD_BYTES};

/// Default segment size: segments roll after 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// What bounds a topic's storage (`cleanup` in `topic.json`, like Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Retention deletes sealed segments by age and size.
    #[default]
    Delete,
    /// Compaction keeps each key's latest record (records without a key all stay); retention
    /// is not applied, so no key's latest record ever expires. For changelog sinks and the
    /// topics reference tables read.
    Compact,
}

impl Cleanup {
    fn is_delete(&self) -> bool {
        *self == Cleanup::Delete
    }
}

fn default_delete_retention_ms() -> u64 {
    DEFAULT_DELETE_RETENTION_MS
}

fn is_default_delete_retention(ms: &u64) -> bool {
    *ms == DEFAULT_DELETE_RETENTION_MS
}

/// A topic's stored configuration (`topic.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Segment roll size in bytes.
    pub segment_bytes: u64,
    /// Retention by age and size.
    pub retention: Retention,
    /// Largest record (key plus value) accepted, bytes; `None`: the format's limit,
    /// [`MAX_RECORD_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<u64>,
    /// Retention or compaction. Absent in a `topic.json` written before compaction existed:
    /// retention.
    #[serde(default, skip_serializing_if = "Cleanup::is_delete")]
    pub cleanup: Cleanup,
    /// For a compacted topic: how long a tombstone (an empty or `null` value) is kept after its
    /// segment's last write, ms, so a consumer that was away for less still sees the delete.
    #[serde(
        default = "default_delete_retention_ms",
        skip_serializing_if = "is_default_delete_retention"
    )]
    pub delete_retention_ms: u64,
}

impl TopicConfig {
    /// The largest record (key plus value) a writer accepts.
    pub fn record_limit(&self) -> usize {
        self.max_record_bytes.map_or(MAX_RECORD_BYTES, |b| {
            b.min(MAX_RECORD_BYTES as u64) as usize
        })
    }

    /// The compaction settings of a compacted topic; `None` under retention.
    pub fn compaction(&self) -> Option<Compaction> {
        (self.cleanup == Cleanup::Compact).then_some(Compaction {
            delete_retention_ms: self.delete_retention_ms,
        })
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention: Retention {
                max_age_ms: Some(7 * 24 * 3_600_000),
                max_bytes: None,
            },
            max_record_bytes: None,
            cleanup: Cleanup::Delete,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
        }
    }
}

/// The partition a key belongs to (see the module documentation).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

/// The log's data directory.
#[derive(Debug, Clone)]
pub struct Log {
    dir: PathBuf,
}

fn valid_name(kind: &str, name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-200 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Log {
    /// The log kept in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Log { dir: dir.into() }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.dir.join(topic)
    }

    /// The directory of one partition.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.topic_dir(topic).join(partition.to_string())
    }

    /// Creates a topic.
    pub fn create_topic(&self, topic: &str, config: &TopicConfig) -> Result<(), LogError> {
        valid_name("topic", topic)?;
        if config.partitions == 0 || config.partitions > 4096 {
            return Err(LogError::Invalid(format!(
                "a topic needs 1 to 4096 partitions, not {}",
                config.partitions
            )));
        }
        if let Some(b) = config.max_record_bytes
            && !(1..=MAX_RECORD_BYTES as u64).contains(&b)
        {
            return Err(LogError::Invalid(format!(
                "a topic's max_record_bytes must be 1 to {MAX_RECORD_BYTES} (the batch format's limit), not {b}"
            )));
        }
        let dir = self.topic_dir(topic);
        if dir.join("topic.json").exists() {
            return Err(LogError::TopicExists(topic.into()));
        }
        for p in 0..config.partitions {
            let d = self.partition_dir(topic, p);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let json = serde_json::to_vec_pretty(config).expect("config serializes");
        write_atomic(&dir.join("topic.json"), &json)
    }

    /// The configuration of an existing topic.
    pub fn topic_config(&self, topic: &str) -> Result<TopicConfig, LogError> {
        valid_name("topic", topic)?;
        let path = self.topic_dir(topic).join("topic.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::NoSuchTopic {
                    topic: topic.into(),
                    data_dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// The configuration of `topic`, creating it with `default` when it does not exist.
    pub fn ensure_topic(
        &self,
        topic: &str,
        default: &TopicConfig,
    ) -> Result<TopicConfig, LogError> {
        match self.topic_config(topic) {
            Err(LogError::NoSuchTopic { .. }) => {
                match self.create_topic(topic, default) {
                    Ok(()) | Err(LogError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(topic, partitions = default.partitions, "created topic");
                self.topic_config(topic)
            }
            r => r,
        }
    }

    /// Deletes a topic and everything in it (segments, consumer groups). Refused while a
    /// process writes it (its writer lock is held).
    pub fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        self.topic_config(topic)?;
        let dir = self.topic_dir(topic);
        let lock_path = dir.join("writer.lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LogError::Locked(topic.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        // The configuration goes first: a crash midway leaves no half topic that looks whole.
        let config = dir.join("topic.json");
        std::fs::remove_file(&config).map_err(io_err(&config))?;
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    /// Topics in the data directory, sorted.
    pub fn topics(&self) -> Result<Vec<String>, LogError> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            if e.path().join("topic.json").exists()
                && let Ok(name) = e.file_name().into_string()
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Opens the topic for writing (one writer process per topic), applying its retention or,
    /// if compacted and due, compacting it.
    pub fn writer(&self, topic: &str, fsync: FsyncPolicy) -> Result<TopicWriter, LogError> {
        let mut w = self.open_writer(topic, fsync)?;
        for p in &mut w.partitions {
            p.maintain()?;
        }
        Ok(w)
    }

    /// Compacts a compacted topic now (refused while another process writes it); see
    /// [`TopicWriter::compact`].
    pub fn compact_topic(&self, topic: &str) -> Result<CompactStats, LogError> {
        self.open_writer(topic, FsyncPolicy::Always)?.compact()
    }

    fn open_writer(&self, topic: &str, fsync: FsyncPolicy) -> Result<TopicWriter, LogError> {
        let config = self.topic_config(topic)?;
        let lock_path = self.topic_dir(topic).join("writer.lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LogError::Locked(topic.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let partitions = (0..config.partitions)
            .map(|p| {
                let mut w = PartitionWriter::open(
                    &self.partition_dir(topic, p),
                    config.segment_bytes,
                    fsync,
                )?;
                w.set_retention(config.retention);
                w.set_compaction(config.compaction());
                Ok(w)
            })
            .collect::<Result<Vec<_>, LogError>>()?;
        Ok(TopicWriter {
            topic: topic.into(),
            dir: self.topic_dir(topic),
            config,
            partitions,
            round_robin: 0,
            _lock: lock,
        })
    }

    /// A reader of one partition, positioned at `offset`.
    pub fn reader(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<PartitionReader, LogError> {
        PartitionReader::open(&self.partition_dir(topic, partition), offset)
    }

    /// Per partition: (first stored offset, end offset, bytes on disk, segment count).
    pub fn partition_stats(&self, topic: &str) -> Result<Vec<PartitionStats>, LogError> {
        let config = self.topic_config(topic)?;
        (0..config.partitions)
            .map(|p| {
                let dir = self.partition_dir(topic, p);
                let bases = segment_bases(&dir)?;
                let r = PartitionReader::open(&dir, 0)?;
                let mut bytes = 0;
                for b in &bases {
                    let path = super::segment::segment_path(&dir, *b, "log");
                    bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
                Ok(PartitionStats {
                    partition: p,
                    start_offset: bases.first().copied().unwrap_or(0),
                    end_offset: r.end_offset()?,
                    committed: super::txn::committed_offset(&dir)?,
                    bytes,
                    segments: bases.len(),
                })
            })
            .collect()
    }

    fn group_path(&self, topic: &str, group: &str) -> PathBuf {
        self.topic_dir(topic)
            .join("groups")
            .join(format!("{group}.json"))
    }

    /// The committed offsets of `group` on `topic` (empty when it never committed).
    pub fn group_offsets(&self, topic: &str, group: &str) -> Result<GroupOffsets, LogError> {
        valid_name("consumer group", group)?;
        let path = self.group_path(topic, group);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LogError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GroupOffsets::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Durably commits `group`'s offsets on `topic` (atomic replace).
    pub fn commit_offsets(
        &self,
        topic: &str,
        group: &str,
        offsets: &GroupOffsets,
    ) -> Result<(), LogError> {
        valid_name("consumer group", group)?;
        let path = self.group_path(topic, group);
        let dir = path.parent().expect("groups dir");
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let json = serde_json::to_vec(offsets).expect("offsets serialize");
        write_atomic(&path, &json)
    }

    /// Consumer groups that committed on `topic`.
    pub fn groups(&self, topic: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.topic_dir(topic).join("groups"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .collect();
        out.sort();
        out
    }
}

/// Stored state of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record gets.
    pub end_offset: u64,
    /// For a transactional (sink) partition: the offset up to which records are committed.
    pub committed: Option<u64>,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Number of segments.
    pub segments: usize,
}

/// Committed offsets of a consumer group: the next offset to read, per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupOffsets {
    /// `offsets[p]` is the next offset to read in partition `p`.
    pub offsets: std::collections::BTreeMap<u32, u64>,
}

/// The writer of a topic: routes records to partitions and batches them.
pub struct TopicWriter {
    topic: String,
    dir: PathBuf,
    config: TopicConfig,
    partitions: Vec<PartitionWriter>,
    round_robin: u32,
    _lock: File,
}

impl TopicWriter {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// The largest record (key plus value) the topic accepts.
    pub fn max_record_bytes(&self) -> usize {
        self.config.record_limit()
    }

    /// The partition for a record with this key (round-robin when `None`).
    pub fn route(&mut self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => partition_for_key(k, self.config.partitions),
            None => {
                let p = self.round_robin % self.config.partitions;
                self.round_robin = self.round_robin.wrapping_add(1);
                p
            }
        }
    }

    /// Appends a batch to partition `p`; returns its first offset.
    pub fn append(&mut self, p: u32, batch: &mut BatchBuilder) -> Result<u64, LogError> {
        let n = self.partitions.len();
        let w = self.partitions.get_mut(p as usize).ok_or_else(|| {
            LogError::Invalid(format!("partition {p} does not exist (the topic has {n})"))
        })?;
        w.append(batch)
    }

    /// Hands index entries to the OS and syncs where the policy is due; applies retention.
    pub fn flush(&mut self) -> Result<(), LogError> {
        for p in &mut self.partitions {
            p.flush()?;
        }
        Ok(())
    }

    /// Makes everything written durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        for p in &mut self.partitions {
            p.sync()?;
        }
        Ok(())
    }

    /// Deletes segments beyond the topic's retention (none of a compacted topic).
    pub fn apply_retention(&mut self) -> Result<usize, LogError> {
        if self.config.cleanup == Cleanup::Compact {
            return Ok(0);
        }
        let r = self.config.retention;
        let mut n = 0;
        for p in &mut self.partitions {
            n += p.apply_retention(&r)?;
        }
        Ok(n)
    }

    /// Truncates partition `p` to `offset` (see [`PartitionWriter::truncate_to`]).
    pub fn truncate_to(&mut self, p: u32, offset: u64) -> Result<(), LogError> {
        let n = self.partitions.len();
        self.partitions
            .get_mut(p as usize)
            .ok_or_else(|| {
                LogError::Invalid(format!("partition {p} does not exist (the topic has {n})"))
            })?
            .truncate_to(offset)
    }

    /// Next offset per partition.
    pub fn end_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.next_offset()).collect()
    }

    /// The topic's configuration.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Compacts every partition now (see `compact`), whether or not a pass is due: for tests and
    /// `paystream topic compact`. Refused for a topic under retention.
    pub fn compact(&mut self) -> Result<CompactStats, LogError> {
        let Some(policy) = self.config.compaction() else {
            return Err(LogError::Invalid(format!(
                "topic `{}` is not compacted (its cleanup is retention); only a topic created with `paystream topic create {} --compact` keeps the latest record per key",
                self.topic, self.topic
            )));
        };
        let mut stats = CompactStats::default();
        for p in &mut self.partitions {
            stats += p.compact(&policy)?;
        }
        Ok(stats)
    }

    /// Makes the topic compacted from now on (`topic.json` is rewritten): for a sink that just
    /// created its topic and learns its rows are keyed changelog rows. Retention no longer
    /// applies.
    pub fn enable_compaction(&mut self) -> Result<(), LogError> {
        if self.config.cleanup == Cleanup::Compact {
            return Ok(());
        }
        let mut config = self.config.clone();
        config.cleanup = Cleanup::Compact;
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        write_atomic(&self.dir.join("topic.json"), &json)?;
        for p in &mut self.partitions {
            p.set_compaction(config.compaction());
        }
        self.config = config;
        tracing::info!(topic = self.topic, "topic is compacted from now on");
        Ok(())
    }
}
