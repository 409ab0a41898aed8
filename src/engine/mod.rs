//! The engine: wires source → decode → router → workers → sinks with bounded channels.
//!
//! ```text
//!   file reader ─┐
//!                ├─▶ decoders (N) ─▶ router ──part i──▶ worker i (Operator) ─┐
//!   log reader ──┘                     │                                      ├─▶ sink loop: results,
//!                                      └─▶ dead-letter sink                   ┘   late (watermark order)
//! ```
//! [`run_replay`] reads a file once through one query; [`run_continuous`] tails a topic through
//! one or more queries until stopped. Both use the same [`pipeline`].
//!
//! Every data channel is bounded, so a slow sink slows the reader instead of filling memory; the
//! router's channel of dead letters and checkpoint metadata to the sink loop is not yet (a run
//! that dead-letters everything buffers those records until the sink loop takes them). There is
//! one shutdown path: the reader stops (end of file, or the `stop` flag), every stage drains what
//! it holds and closes its output, and the sink loop returns the [`Summary`].

mod log_source;
mod pipeline;
mod reader;
mod router;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::time::Duration;

pub use self::log_source::{ContinuousOptions, ContinuousOutcome, Outputs, run_continuous};
pub use self::pipeline::{Checkpoints, PipelineState, QueryRun};
pub(crate) use self::reader::CHUNK as READ_CHUNK;
pub use self::router::{Partitioner, Partitioning, Router, RouterCounts};

use crate::decode::{Format, Origin, PositionKind, ReasonCounts};
use crate::error::{Error, Result};
use crate::operators::{Dedup, Watermark};
use crate::sink::Sink;
use crate::sql::StreamPlan;

/// Options of a replay run.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The event file.
    pub input: PathBuf,
    /// Its format (guessed from the extension when `None`).
    pub format: Option<Format>,
    /// Bounded out-of-orderness, ms.
    pub watermark_delay: i64,
    /// How far ahead of the watermark an event time may be, ms.
    pub max_skew: i64,
    /// Dedup TTL in event time, ms.
    pub dedup_ttl: i64,
    /// Worker threads (and decode threads).
    pub workers: usize,
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Replay N× faster than event time; `None` for as fast as possible.
    pub speed: Option<f64>,
    /// Where to start reading (text formats): resume a replay from a recorded position.
    pub start: SourcePosition,
}

/// A position in a text event file: a byte offset at a record boundary and the line number of the
/// record that starts there. `SourcePosition::default()` is the beginning of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcePosition {
    /// Byte offset of the first record to read.
    pub offset: u64,
    /// 1-based line number of that record.
    pub line: u64,
}

impl Default for SourcePosition {
    fn default() -> Self {
        SourcePosition { offset: 0, line: 1 }
    }
}

impl ReplayOptions {
    /// Defaults for `input`: 5 s watermark delay, 5 min skew, 1 h dedup TTL, all cores.
    pub fn new(input: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            input: input.into(),
            format: None,
            watermark_delay: 5_000,
            max_skew: 300_000,
            dedup_ttl: 3_600_000,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_size: 8192,
            speed: None,
            start: SourcePosition::default(),
        }
    }
}

/// Where a run's outputs go.
pub struct Sinks {
    /// Result rows.
    pub results: Box<dyn Sink>,
    /// Dead-lettered records.
    pub dead_letter: Box<dyn Sink>,
    /// Late events.
    pub late: Box<dyn Sink>,
}

/// What a run did. `read = accepted + duplicates + dead_lettered` always holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Records read.
    pub read: u64,
    /// Records accepted into the query.
    pub accepted: u64,
    /// Redeliveries dropped by dedup.
    pub duplicates: u64,
    /// Records sent to the dead-letter output.
    pub dead_lettered: u64,
    /// Accepted events that arrived after their window fired.
    pub late: u64,
    /// Result rows written.
    pub results: u64,
    /// Fields outside the event format that were ignored.
    pub unknown_fields: u64,
    /// Wall time.
    pub wall: Duration,
    /// Dead letters by reason.
    pub reasons: ReasonCounts,
    /// Queries the events went through (each may find an event late: `late` counts per query).
    pub queries: u64,
}

impl Summary {
    /// Events read per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        self.read as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The one-line summary printed at the end of a run.
    pub fn line(&self) -> String {
        format!(
            "read={} accepted={} duplicates={} dead_lettered={} late={} results={} wall={:.3}s events_per_sec={:.0}",
            self.read,
            self.accepted,
            self.duplicates,
            self.dead_lettered,
            self.late,
            self.results,
            self.wall.as_secs_f64(),
            self.events_per_sec()
        )
    }
}

/// Progress of a run, readable while it goes (a progress bar, `run`'s status line).
#[derive(Debug)]
pub struct Progress {
    /// Bytes of input read so far.
    pub bytes_read: AtomicU64,
    /// Records read so far.
    pub read: AtomicU64,
    /// Records dead-lettered so far.
    pub dead_lettered: AtomicU64,
    /// Late events so far.
    pub late: AtomicU64,
    /// Result rows written so far.
    pub results: AtomicU64,
    /// The watermark (epoch ms; `i64::MIN` before the first event).
    pub watermark: AtomicI64,
    /// Sum over the source's partitions of the next offset to read (a log source): the topic's
    /// end offsets minus this is the consumer lag.
    pub offsets: AtomicU64,
    /// Checkpoints completed (a job).
    pub checkpoints: AtomicU64,
    /// When the last checkpoint completed (epoch ms; `i64::MIN`: none yet).
    pub last_checkpoint_ms: AtomicI64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes_read: AtomicU64::new(0),
            read: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            results: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            offsets: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            last_checkpoint_ms: AtomicI64::new(i64::MIN),
        }
    }
}

/// Replays an event file through a planned query.
pub fn run_replay(
    plan: &StreamPlan,
    opts: &ReplayOptions,
    sinks: Sinks,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<Summary> {
    let query = QueryRun {
        name: "query".into(),
        plan,
        results: sinks.results,
    };
    run_file(
        vec![query],
        sinks.dead_letter,
        sinks.late,
        opts,
        progress,
        stop,
    )
}

/// Runs several queries over one read of an event file (a query file with a `file` source).
pub fn run_file(
    queries: Vec<QueryRun<'_>>,
    dead_letter: Box<dyn Sink>,
    late: Box<dyn Sink>,
    opts: &ReplayOptions,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<Summary> {
    let format = match opts.format {
        Some(f) => f,
        None => Format::from_path(&opts.input).ok_or_else(|| Error::Config {
            what: "input format".into(),
            message: format!(
                "cannot tell the format of {} from its extension; use .jsonl, .csv or .parquet, or pass --format",
                opts.input.display()
            ),
        })?,
    };
    for q in &queries {
        let text = q.plan.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        tracing::info!(input = %opts.input.display(), ?format, workers = opts.workers, query = %q.name, sql = %text, "replay starting");
    }
    let origin = Origin::file(
        opts.input.display().to_string(),
        if format == Format::Parquet {
            PositionKind::Row
        } else {
            PositionKind::Line
        },
    );
    let workers = opts.workers.max(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let (rx, threads) = reader::spawn_reader(
        opts.input.clone(),
        format,
        opts.start,
        opts.batch_size,
        workers,
        Arc::clone(&bytes),
        Arc::clone(&stop),
    )?;
    let source = pipeline::Source {
        rx,
        threads,
        bytes,
        origins: vec![origin],
        positions: Default::default(),
    };
    let name_late_queries = queries.len() > 1;
    let spec = pipeline::Spec {
        queries,
        dead_letter,
        late,
        router: Router::new(
            Dedup::new(opts.dedup_ttl),
            Watermark::new(opts.watermark_delay, opts.max_skew),
        ),
        workers,
        speed: opts.speed,
        end: pipeline::EndMode::Finish,
        restore: None,
        name_late_queries,
        checkpoint: None,
    };
    let summary = pipeline::run(spec, source, progress, stop)?.summary;
    tracing::info!(
        read = summary.read,
        accepted = summary.accepted,
        duplicates = summary.duplicates,
        dead_lettered = summary.dead_lettered,
        late = summary.late,
        results = summary.results,
        unknown_fields = summary.unknown_fields,
        wall_ms = summary.wall.as_millis() as u64,
        "replay finished"
    );
    Ok(summary)
}

/// Spawns a named thread (names show in `perf`, `top -H` and panics).
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("cannot spawn a thread")
}
