//! A running job behind a handle: what `paystream run` holds, and what a server will hold for
//! each query it was sent.
//!
//! ```text
//!  Job::prepare(text) ─▶ Job ─spawn(opts)─▶ JobHandle ── stop() / savepoint() / metrics()
//!                                              └─ join() ─▶ JobOutcome, or the error it failed with
//! ```
//! The job runs on a thread of its own; the handle shares its stop flag, its savepoint request
//! and its live counters. `join` tells a job that stopped (its outcome) from one that failed
//! (its error); [`JobHandle::state`] says which while others look on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::{Job, JobOptions, JobOutcome};
use crate::engine::Progress;
use crate::error::{Error, Result};

/// Where a spawned job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Reading and processing.
    Running,
    /// Asked to stop; taking its final checkpoint.
    Stopping,
    /// Its thread has ended: [`JobHandle::join`] gives the outcome or the error.
    Ended,
}

/// A live snapshot of a job's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMetrics {
    /// Records read.
    pub read: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Late events.
    pub late: u64,
    /// Result rows written.
    pub results: u64,
    /// The watermark (epoch ms; `i64::MIN` before the first event).
    pub watermark: i64,
    /// Per source partition, the next position to read (a topic's end minus it is the lag).
    pub positions: crate::source::Positions,
    /// Checkpoints completed (durable).
    pub checkpoints: u64,
    /// When the last checkpoint completed (epoch ms; `i64::MIN`: none yet).
    pub last_checkpoint_ms: i64,
    /// The last completed checkpoint's number (0: none).
    pub last_checkpoint_id: u64,
    /// How long it took, ms.
    pub last_checkpoint_duration_ms: u64,
    /// Its size, bytes.
    pub last_checkpoint_bytes: u64,
    /// Per query, in the file's order: (its sink's name, events into its operator, rows out).
    pub queries: Vec<(String, u64, u64)>,
}

impl JobMetrics {
    /// The counters of `p` now.
    pub fn of(p: &Progress) -> Self {
        let r = Ordering::Relaxed;
        // The count is written last (Release): read it first, the rest is then its checkpoint's.
        let checkpoints = p.checkpoints.load(Ordering::Acquire);
        JobMetrics {
            read: p.read.load(r),
            dead_lettered: p.dead_lettered.load(r),
            late: p.late.load(r),
            results: p.results.load(r),
            watermark: p.watermark.load(r),
            positions: p.positions.lock().expect("progress lock").clone(),
            checkpoints,
            last_checkpoint_ms: p.last_checkpoint_ms.load(r),
            last_checkpoint_id: p.last_checkpoint_id.load(r),
            last_checkpoint_duration_ms: p.last_checkpoint_duration_ms.load(r),
            last_checkpoint_bytes: p.last_checkpoint_bytes.load(r),
            queries: p
                .queries
                .lock()
                .expect("progress lock")
                .iter()
                .map(|q| (q.name.clone(), q.events_in.load(r), q.rows_out.load(r)))
                .collect(),
        }
    }
}

/// A job running on its own thread.
pub struct JobHandle {
    name: String,
    stop: Arc<AtomicBool>,
    savepoint: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: JoinHandle<Result<JobOutcome>>,
}

impl Job {
    /// Starts the job on a thread of its own. `opts.savepoint_request`, when set, is the flag
    /// [`JobHandle::savepoint`] sets (a signal may set it too); `stop`, when given, is the flag
    /// [`JobHandle::stop`] sets.
    pub fn spawn(self, mut opts: JobOptions, stop: Option<Arc<AtomicBool>>) -> JobHandle {
        let stop = stop.unwrap_or_default();
        let savepoint = opts
            .savepoint_request
            .get_or_insert_with(Arc::default)
            .clone();
        let progress = Arc::new(Progress::default());
        let name = self.name().to_string();
        let (p, s) = (Arc::clone(&progress), Arc::clone(&stop));
        let thread = crate::engine::spawn("job", move || self.run(&opts, p, s));
        JobHandle {
            name,
            stop,
            savepoint,
            progress,
            thread,
        }
    }
}

impl JobHandle {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the job to stop: it drains what it read and takes a final checkpoint (a log
    /// source), or emits its open windows (a file source). [`Self::join`] waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Asks for a savepoint at the next barrier (a job over a log source).
    pub fn savepoint(&self) {
        self.savepoint.store(true, Ordering::Relaxed);
    }

    /// The job's live counters.
    pub fn metrics(&self) -> JobMetrics {
        JobMetrics::of(&self.progress)
    }

    /// The counters themselves, for a sampler that keeps its own history (a status line).
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Where the job is.
    pub fn state(&self) -> JobState {
        if self.thread.is_finished() {
            JobState::Ended
        } else if self.stop.load(Ordering::Relaxed) {
            JobState::Stopping
        } else {
            JobState::Running
        }
    }

    /// Waits for the job to end: its outcome when it stopped or its input ended, the error it
    /// failed with otherwise.
    pub fn join(self) -> Result<JobOutcome> {
        self.thread
            .join()
            .map_err(|_| Error::Internal(format!("job {} panicked", self.name)))?
    }
}
