//! Exactly-once sink topics: aligning them with a restored checkpoint, and committing each
//! checkpoint as one transaction across the checkpoint store, the sink topics and the source
//! offsets.
//!
//! ```text
//! barrier ─▶ sinks flushed + fsynced ─▶ checkpoint (state + sink end offsets) durable  ← the commit point
//!         ─▶ sink partitions' committed markers moved to those offsets (read_committed sees them)
//!         ─▶ source group offsets committed (for `topic describe` lag)
//! ```
//! File sinks follow the same two phases with part files (`sink::PartFiles`): flushed and
//! renamed to pending before the checkpoint, renamed to committed after it.
//!
//! A crash before the checkpoint is durable: recovery restores the previous checkpoint and
//! truncates the sinks back to its offsets (the records after it are aborted, never having been
//! visible). A crash after it: recovery moves the markers forward to the checkpoint's offsets
//! (committing what it covers). Either way each result is visible exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::saved_state::SavedState;
use crate::checkpoint::CheckpointStore;
use crate::engine::PipelineState;
use crate::error::Result;
use crate::log::{GroupOffsets, Log, Producer, commit_offset, committed_offset};
use crate::sink::{SharedPartFiles, SharedProducer};

/// Makes a sink topic's partitions agree with a restored checkpoint: everything after the
/// checkpoint's offsets (or, without one, after the last committed marker) is aborted; a topic
/// never written transactionally starts its first transaction at its current end.
pub fn align_sink(log: &Log, producer: &mut Producer, restored: Option<&[u64]>) -> Result<()> {
    let topic = producer.topic().to_string();
    let ends = producer.end_offsets();
    for (p, end) in ends.iter().enumerate() {
        let dir = log.partition_dir(&topic, p as u32);
        let target = restored
            .and_then(|r| r.get(p).copied())
            .or(committed_offset(&dir)?)
            .unwrap_or(*end)
            .min(*end);
        if target < *end {
            tracing::info!(
                topic,
                partition = p,
                aborted = end - target,
                "aborting uncommitted sink records"
            );
            producer.truncate_to(p as u32, target)?;
        }
        commit_offset(&dir, target)?;
    }
    Ok(())
}

/// Commits checkpoints of one running job.
pub struct Committer<'a> {
    pub(super) log: &'a Log,
    pub(super) store: &'a CheckpointStore,
    pub(super) producers: &'a BTreeMap<String, SharedProducer>,
    pub(super) files: &'a [SharedPartFiles],
    pub(super) name: &'a str,
    pub(super) topic: &'a str,
    pub(super) queries: &'a [String],
    pub(super) workers: usize,
    /// The last checkpoint's number.
    pub(super) epoch: u64,
    /// (duration, bytes) of each checkpoint taken.
    pub(super) taken: Vec<(Duration, usize)>,
}

impl Committer<'_> {
    /// Commits `state` as the next checkpoint; with `savepoint`, also stores it under that name.
    pub fn commit(&mut self, state: PipelineState, savepoint: Option<&str>) -> Result<()> {
        let t0 = Instant::now();
        let mut sinks = BTreeMap::new();
        for (topic, p) in self.producers {
            let mut p = p.lock().expect("producer lock");
            p.flush()?;
            p.sync()?;
            sinks.insert(topic.clone(), p.end_offsets());
        }
        self.epoch += 1;
        for f in self.files {
            f.lock().expect("part files lock").pre_commit(self.epoch)?;
        }
        let positions = state.positions.clone();
        let saved = SavedState {
            queries: self.queries.to_vec(),
            workers: self.workers,
            topic: self.topic.to_string(),
            epoch: self.epoch,
            sinks,
            pipeline: state,
        };
        let bytes = saved.encode();
        let size = bytes.len();
        if let Some(name) = savepoint {
            self.store
                .write_savepoint(name, self.epoch, bytes.clone())?;
            tracing::info!(savepoint = name, epoch = self.epoch, "savepoint written");
        }
        self.store.write(self.epoch, bytes)?;
        for (topic, ends) in &saved.sinks {
            for (p, end) in ends.iter().enumerate() {
                commit_offset(&self.log.partition_dir(topic, p as u32), *end)?;
            }
        }
        for f in self.files {
            f.lock().expect("part files lock").commit(self.epoch)?;
        }
        self.log
            .commit_offsets(self.topic, self.name, &GroupOffsets { offsets: positions })?;
        let took = t0.elapsed();
        tracing::info!(
            epoch = self.epoch,
            bytes = size,
            ms = took.as_millis() as u64,
            "checkpoint complete"
        );
        self.taken.push((took, size));
        Ok(())
    }
}
