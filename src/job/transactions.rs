//! Exactly-once sinks: aligning sink topics with a restored checkpoint, and committing each
//! checkpoint as one transaction across the checkpoint store, the sinks and the source.
//!
//! ```text
//! barrier ─▶ Sink::pre_commit (engine): topics flushed + fsynced, part files renamed pending
//!         ─▶ checkpoint (state + sink end offsets) durable                    ← the commit point
//!         ─▶ Prepared::commit: topics' committed markers moved (read_committed sees them),
//!            pending parts renamed committed
//!         ─▶ Source::commit: the source's group offsets (for `topic describe` lag)
//! ```
//! The protocol is the `Sink` trait's (see `sink::Sink`); this module writes the checkpoint
//! between its two phases and aligns sink topics on start.
//!
//! A crash before the checkpoint is durable: recovery restores the previous checkpoint and
//! truncates the sinks back to its offsets (the records after it are aborted, never having been
//! visible). A crash after it: recovery moves the markers forward to the checkpoint's offsets
//! (committing what it covers). Either way each result is visible exactly once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::saved_state::SavedState;
use crate::checkpoint::CheckpointStore;
use crate::engine::{PipelineState, Progress};
use crate::error::{Error, Result};
use crate::sink::Prepared;
use crate::source::Source;

/// Commits checkpoints of one running job. Phase one (the sinks' `pre_commit`: durable, not
/// visible) ran on the pipeline's thread at the barrier; writing the checkpoint, then the
/// sinks' commit actions and the source's commit, run in the background while the pipeline goes
/// on, one checkpoint at a time.
pub struct Committer {
    pub(super) store: Arc<CheckpointStore>,
    pub(super) topic: String,
    /// The job's source: told the positions of each durable checkpoint (its consumer group).
    pub(super) source: Arc<dyn Source>,
    /// Told of each checkpoint once it is complete (status line, `JobHandle::metrics`).
    pub(super) progress: Arc<Progress>,
    pub(super) queries: Vec<String>,
    pub(super) workers: usize,
    /// How each query's events are spread over the workers (recorded in each checkpoint).
    pub(super) partitioning: Vec<String>,
    /// The reference tables its queries join: their rows go into each checkpoint.
    pub(super) tables: Vec<Arc<crate::table::ReferenceTable>>,
    /// The last checkpoint's number.
    pub(super) epoch: u64,
    /// (duration, bytes) of each checkpoint completed.
    pub(super) taken: Vec<(Duration, usize)>,
    pub(super) inflight: Option<JoinHandle<Result<(Duration, usize)>>>,
}

impl Committer {
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

    /// Commits `state` as checkpoint `epoch` (the next number), with what the sinks
    /// pre-committed for it; with `savepoint`, also stores it under that name. With `wait`,
    /// returns once it is complete (the final checkpoint of a run).
    pub fn commit(
        &mut self,
        epoch: u64,
        state: PipelineState,
        prepared: Prepared,
        savepoint: Option<String>,
        wait: bool,
    ) -> Result<()> {
        self.wait()?;
        if epoch != self.epoch + 1 {
            return Err(Error::Internal(format!(
                "checkpoint {epoch} after checkpoint {}",
                self.epoch
            )));
        }
        self.epoch = epoch;
        let Prepared {
            started: t0,
            offsets: sinks,
            commits,
        } = prepared;
        let saved = SavedState {
            queries: self.queries.clone(),
            workers: self.workers,
            partitioning: Some(self.partitioning.clone()),
            topic: self.topic.clone(),
            epoch,
            sinks,
            pipeline: state,
            tables: self
                .tables
                .iter()
                .filter_map(|t| {
                    t.saved()
                        .transpose()
                        .map(|b| b.map(|b| (t.name().to_string(), b)))
                })
                .collect::<Result<_>>()?,
        };
        let store = Arc::clone(&self.store);
        let source = Arc::clone(&self.source);
        let progress = Arc::clone(&self.progress);
        let write = move || -> Result<(Duration, usize)> {
            let positions = saved.pipeline.positions.clone();
            let bytes = saved.encode();
            let size = bytes.len();
            if let Some(sp) = &savepoint {
                store.write_savepoint(sp, epoch, bytes.clone())?;
                tracing::info!(savepoint = %sp, epoch, "savepoint written");
            }
            store.write(epoch, bytes)?;
            // Durable: counted now (a failing commit below still fails the job).
            let took = t0.elapsed();
            let r = std::sync::atomic::Ordering::Relaxed;
            progress.last_checkpoint_bytes.store(size as u64, r);
            progress
                .last_checkpoint_duration_ms
                .store(took.as_millis() as u64, r);
            progress
                .last_checkpoint_ms
                .store(crate::log::producer_now_ms(), r);
            progress.last_checkpoint_id.store(epoch, r);
            progress
                .checkpoints
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            // The checkpoint is durable: what the sinks pre-committed becomes visible.
            Prepared {
                started: t0,
                offsets: Default::default(),
                commits,
            }
            .commit()?;
            source.commit(&positions)?;
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
