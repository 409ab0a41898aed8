//! A run behind a handle: what `paystream run` and `paystream replay` hold, and what a server
//! will hold for each query it was sent.
//!
//! ```text
//!  engine::spawn(RunSpec) ─────────────┐
//!  Job::prepare(text) ─▶ Job::spawn ───┴▶ RunHandle ── stop() / savepoint() / metrics()
//!                                           └─ join() ─▶ the outcome, or the error it failed with
//! ```
//! The run is on a thread of its own; the handle shares its stop flag, its savepoint request
//! and its live counters. `join` tells a run that stopped (its outcome) from one that failed
//! (its error); [`RunHandle::state`] says which while others look on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::{Progress, RunOutcome, RunSpec};
use crate::error::{Error, Result};
use crate::source::Positions;

/// Where a spawned run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Reading and processing.
    Running,
    /// Asked to stop (or failing): draining what it read, then taking its final checkpoint (a
    /// checkpointed run) or emitting its open windows.
    Stopping,
    /// Its thread has ended: [`RunHandle::join`] gives the outcome or the error.
    Ended,
}

/// A live snapshot of a run's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMetrics {
    /// Records read.
    pub read: u64,
    /// Redeliveries dropped by dedup.
    pub duplicates: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Late events.
    pub late: u64,
    /// Result rows written.
    pub results: u64,
    /// The watermark (epoch ms; `i64::MIN` before the first event).
    pub watermark: i64,
    /// Per source partition, the next position to read.
    pub positions: crate::source::Positions,
    /// Per source partition, records appended but not read yet (its end offset minus its
    /// position), for a handle with a lag probe (`Job::spawn` over a log source: each call
    /// reads the topic's partition stats); empty otherwise.
    pub lag: crate::source::Positions,
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

impl RunMetrics {
    /// The counters of `p` now.
    pub fn of(p: &Progress) -> Self {
        let r = Ordering::Relaxed;
        // The count is written last (Release): read it first, the rest is then its checkpoint's.
        let checkpoints = p.checkpoints.load(Ordering::Acquire);
        RunMetrics {
            read: p.read.load(r),
            duplicates: p.duplicates.load(r),
            dead_lettered: p.dead_lettered.load(r),
            late: p.late.load(r),
            results: p.results.load(r),
            watermark: p.watermark.load(r),
            positions: p.positions.lock().expect("progress lock").clone(),
            lag: Default::default(),
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

/// How far a source is behind its end, per partition, given the positions read.
pub type LagProbe = Box<dyn Fn(&Positions) -> Option<Positions> + Send + Sync>;

/// A run on its own thread: `T` is what it ends with ([`RunOutcome`] for [`spawn`], a job's
/// outcome for `Job::spawn`).
pub struct RunHandle<T> {
    name: String,
    stop: Arc<AtomicBool>,
    savepoint: Arc<AtomicBool>,
    progress: Arc<Progress>,
    lag: Option<LagProbe>,
    thread: JoinHandle<Result<T>>,
}

/// Runs `spec` on a thread of its own, named `name`. `stop`, when given, is the flag
/// [`RunHandle::stop`] sets (a signal may set it too); a savepoint request is the spec's
/// checkpoint request, when it has checkpoints.
pub fn spawn(
    name: impl Into<String>,
    spec: RunSpec<'static>,
    stop: Option<Arc<AtomicBool>>,
) -> RunHandle<RunOutcome> {
    let savepoint = spec
        .checkpoints
        .as_ref()
        .map(|c| Arc::clone(&c.request))
        .unwrap_or_default();
    RunHandle::spawn(name, stop.unwrap_or_default(), savepoint, move |p, s| {
        super::run(spec, p, s)
    })
}

impl<T: Send + 'static> RunHandle<T> {
    /// Runs `f` with fresh counters and `stop` on a thread of its own; `savepoint` is the flag
    /// [`Self::savepoint`] sets, which `f`'s run reads.
    pub fn spawn(
        name: impl Into<String>,
        stop: Arc<AtomicBool>,
        savepoint: Arc<AtomicBool>,
        f: impl FnOnce(Arc<Progress>, Arc<AtomicBool>) -> Result<T> + Send + 'static,
    ) -> Self {
        let progress = Arc::new(Progress::default());
        let (p, s) = (Arc::clone(&progress), Arc::clone(&stop));
        let name = name.into();
        let thread = super::spawn(&name, move || f(p, s));
        RunHandle {
            name,
            stop,
            savepoint,
            progress,
            lag: None,
            thread,
        }
    }

    /// Measures the lag with `probe` in [`Self::metrics`] (a log source: its end offsets).
    pub fn with_lag(mut self, probe: LagProbe) -> Self {
        self.lag = Some(probe);
        self
    }
}

impl<T> RunHandle<T> {
    /// The run's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the run to stop: it drains what it read and takes a final checkpoint (a log
    /// source), or emits its open windows (a file source). [`Self::join`] waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Asks for a savepoint at the next barrier (a run with checkpoints).
    pub fn savepoint(&self) {
        self.savepoint.store(true, Ordering::Relaxed);
    }

    /// The run's live counters, with the source's lag measured now where it can be.
    pub fn metrics(&self) -> RunMetrics {
        let mut m = RunMetrics::of(&self.progress);
        if let Some(lag) = self.lag.as_ref().and_then(|probe| probe(&m.positions)) {
            m.lag = lag;
        }
        m
    }

    /// The counters themselves, for a sampler that keeps its own history (a status line).
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Where the run is.
    pub fn state(&self) -> RunState {
        if self.thread.is_finished() {
            RunState::Ended
        } else if self.stop.load(Ordering::Relaxed) {
            RunState::Stopping
        } else {
            RunState::Running
        }
    }

    /// Waits for the run to end: its outcome when it stopped or its input ended, the error it
    /// failed with otherwise.
    pub fn join(self) -> Result<T> {
        self.thread
            .join()
            .map_err(|_| Error::Internal(format!("run {} panicked", self.name)))?
    }
}
