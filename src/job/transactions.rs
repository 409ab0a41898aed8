//! Exactly-once sink topics: aligning them with a restored checkpoint, and committing each
//! checkpoint as one transaction across the checkpoint store, the sink topics and the source
//! offsets.
//!
//! ```text
//! barrier ─▶ sinks flushed + fsynced ─▶ checkpoint (state + sink end offsets) durable  ← the commit point
//!         ─▶ sink partitions' committed markers moved to those offsets (read_committed sees them)
//!         ─▶ Source::commit: the source's group offsets (for `topic describe` lag)
//! ```
//! File sinks follow the same two phases with part files (`sink::PartFiles`): flushed and
//! renamed to pending before the checkpoint, renamed to committed after it.
//!
//! A crash before the checkpoint is durable: recovery restores the previous checkpoint and
//! truncates the sinks back to its offsets (the records after it are aborted, never having been
//! visible). A crash after it: recovery moves the markers forward to the checkpoint's offsets
//! (committing what it covers). Either way each result is visible exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::saved_state::SavedState;
use crate::checkpoint::CheckpointStore;
use crate::engine::PipelineState;
use crate::error::{Error, Result};
use crate::log::{Log, Producer, commit_offset, committed_offset};
use crate::sink::{SharedPartFiles, SharedProducer};
use crate::source::Source;

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

/// Commits checkpoints of one running job. Phase one (sinks durable, part files pending) runs
/// on the pipeline's thread at the barrier; writing the checkpoint and phase two run in the
/// background while the pipeline goes on, one checkpoint at a time.
pub struct Committer<'a> {
    pub(super) log: Log,
    pub(super) store: Arc<CheckpointStore>,
    pub(super) producers: &'a BTreeMap<String, SharedProducer>,
    pub(super) files: Vec<SharedPartFiles>,
    pub(super) topic: String,
    /// The job's source: told the positions of each durable checkpoint (its consumer group).
    pub(super) source: Arc<dyn Source>,
    pub(super) queries: Vec<String>,
    pub(super) workers: usize,
    /// The last checkpoint's number.
    pub(super) epoch: u64,
    /// (duration, bytes) of each checkpoint completed.
    pub(super) taken: Vec<(Duration, usize)>,
    pub(super) inflight: Option<JoinHandle<Result<(Duration, usize)>>>,
}

impl Committer<'_> {
    /// Waits for the checkpoint being written, if any.
    pub fn wait(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.take() {
            let done = h
                .join()
                .map_err(|_| Error::Internal("the checkpoint writer panicked".into()))??;
            self.taken.push(done);
        }
        Ok(())
    }

    /// Commits `state` as the next checkpoint; with `savepoint`, also stores it under that name.
    /// With `wait`, returns once it is complete (the final checkpoint of a run).
    pub fn commit(
        &mut self,
        state: PipelineState,
        savepoint: Option<String>,
        wait: bool,
    ) -> Result<()> {
        self.wait()?;
        let t0 = Instant::now();
        let mut sinks = BTreeMap::new();
        for (topic, p) in self.producers {
            let mut p = p.lock().expect("producer lock");
            p.flush()?;
            p.sync()?;
            sinks.insert(topic.clone(), p.end_offsets());
        }
        self.epoch += 1;
        let epoch = self.epoch;
        for f in &self.files {
            f.lock().expect("part files lock").pre_commit(epoch)?;
        }
        let saved = SavedState {
            queries: self.queries.clone(),
            workers: self.workers,
            topic: self.topic.clone(),
            epoch,
            sinks,
            pipeline: state,
        };
        let (store, log, files) = (
            Arc::clone(&self.store),
            self.log.clone(),
            self.files.clone(),
        );
        let source = Arc::clone(&self.source);
        let write = move || -> Result<(Duration, usize)> {
            let positions = saved.pipeline.positions.clone();
            let bytes = saved.encode();
            let size = bytes.len();
            if let Some(sp) = &savepoint {
                store.write_savepoint(sp, epoch, bytes.clone())?;
                tracing::info!(savepoint = %sp, epoch, "savepoint written");
            }
            store.write(epoch, bytes)?;
            for (topic, ends) in &saved.sinks {
                for (p, end) in ends.iter().enumerate() {
                    commit_offset(&log.partition_dir(topic, p as u32), *end)?;
                }
            }
            for f in &files {
                f.lock().expect("part files lock").commit(epoch)?;
            }
            source.commit(&positions)?;
            let took = t0.elapsed();
            tracing::info!(
                epoch,
                bytes = size,
                ms = took.as_millis() as u64,
                "checkpoint complete"
            );
            Ok((took, size))
        };
        self.inflight = Some(crate::engine::spawn("checkpoint", write));
        if wait {
            self.wait()?;
        }
        Ok(())
    }
}
