//! The engine: wires source → decode → router → workers → sinks.
//!
//! ```text
//!   Source::open ─▶ decoders (N) ─▶ router ──part i──▶ worker i (Operator) ─┐
//!   (file, log)                     (router/)            (worker.rs)        ├─▶ sink loop: results,
//!                                    dead letters ride with worker 0's part ┘   late, dead letters
//! ```
//! [`run`] runs a [`RunSpec`] — a [`Source`], the queries with their result sinks, the dead-letter
//! and late sinks, and the [`RunOptions`] — through the pipeline (`engine/pipeline.rs`): a file replayed once, a
//! topic tailed until stopped, or a topic read to its end, all the same way.
//!
//! Every channel is bounded, so a slow sink slows the reader instead of filling memory: source →
//! router, router → each worker, each worker → the sink loop. The router's records for the sink
//! loop (dead letters, its part of a checkpoint) ride on its messages to the first worker
//! (`engine/worker.rs`), which keeps them in order with the results. There is one shutdown
//! path: the source stops (its end, or the `stop` flag), every stage drains what it holds and
//! closes its output, and the sink loop returns the [`Summary`].

pub mod defaults;
mod handle;
mod pipeline;
mod router;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::time::Duration;

pub use self::handle::{LagProbe, RunHandle, RunMetrics, RunState, spawn as spawn_run};
pub use self::pipeline::{Checkpoint, Checkpoints, PipelineState, QueryRun};
pub use self::router::{Partitioner, Router, RouterCounts};

use crate::decode::ReasonCounts;
use crate::error::Result;
use crate::sink::{NullSink, Sink};
use crate::source::Source;

/// How a run treats time, duplicates and parallelism. [`RunOptions::default`] holds the
/// engine's defaults ([`defaults`]), which the CLI flags and a query file's `SET`s override.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bounded out-of-orderness, ms: watermark = max event time seen − delay.
    pub watermark_delay: i64,
    /// How far ahead of the watermark an event time may be, ms.
    pub max_skew: i64,
    /// Dedup TTL in event time, ms.
    pub dedup_ttl: i64,
    /// A source partition without records for this long stops holding the watermark back
    /// (`None`: never; a file has one partition).
    pub idle_timeout: Option<Duration>,
    /// Worker threads per query (and decode threads).
    pub workers: usize,
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Replay N× faster than event time; `None` for as fast as possible.
    pub speed: Option<f64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            watermark_delay: defaults::WATERMARK_DELAY_MS,
            max_skew: defaults::MAX_SKEW_MS,
            dedup_ttl: defaults::DEDUP_TTL_MS,
            idle_timeout: Some(Duration::from_millis(defaults::IDLE_TIMEOUT_MS as u64)),
            workers: defaults::workers(),
            batch_size: defaults::BATCH_SIZE,
            speed: None,
        }
    }
}

/// What the run does when it is stopped (the `stop` flag) before its source ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Emit every open window, as at the end of input (a replay stopped by Ctrl-C).
    Finish,
    /// Snapshot instead of finishing, so a restart continues exactly here (a job); at the end
    /// of a bounded source, finish and snapshot the (then empty) operators.
    Snapshot,
}

/// Everything a run needs.
pub struct RunSpec<'a> {
    /// Where the events come from.
    pub source: Arc<dyn Source>,
    /// The queries, each with its result sink; they share one read of the source.
    pub queries: Vec<QueryRun>,
    /// Rejected records.
    pub dead_letter: Box<dyn Sink>,
    /// Late events.
    pub late: Box<dyn Sink>,
    /// Time, dedup and parallelism.
    pub options: RunOptions,
    /// State to continue from (a checkpoint); its positions are where the source opens.
    pub restore: Option<PipelineState>,
    /// Periodic checkpoints, if any.
    pub checkpoints: Option<Checkpoints<'a>>,
    /// What a stop does.
    pub on_stop: OnStop,
}

impl<'a> RunSpec<'a> {
    /// `queries` over `source` with the default options, dead letters and late events
    /// discarded, no checkpoints, finishing when stopped.
    pub fn new(source: Arc<dyn Source>, queries: Vec<QueryRun>) -> Self {
        RunSpec {
            source,
            queries,
            dead_letter: Box::new(NullSink),
            late: Box::new(NullSink),
            options: RunOptions::default(),
            restore: None,
            checkpoints: None,
            on_stop: OnStop::Finish,
        }
    }

    /// One query over `source`, its results to `results`.
    pub fn single(
        source: Arc<dyn Source>,
        plan: &crate::sql::StreamPlan,
        results: Box<dyn Sink>,
    ) -> Self {
        Self::new(
            source,
            vec![QueryRun {
                name: "query".into(),
                plan: plan.clone(),
                results,
            }],
        )
    }
}

/// What a run did and, when it snapshotted (stopped with [`OnStop::Snapshot`]), the state to
/// continue from.
#[derive(Debug)]
pub struct RunOutcome {
    /// Counters of this run.
    pub summary: Summary,
    /// Operator, dedup and watermark state, and every source partition's position.
    pub state: Option<PipelineState>,
    /// For a run with [`Checkpoints`] that snapshotted at its end: the number its final
    /// checkpoint gets and what the sinks pre-committed for it, for the caller to commit.
    pub last: Option<(u64, crate::sink::Prepared)>,
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
    /// Redeliveries dropped by dedup so far.
    pub duplicates: AtomicU64,
    /// Records dead-lettered so far.
    pub dead_lettered: AtomicU64,
    /// Late events so far.
    pub late: AtomicU64,
    /// Result rows written so far.
    pub results: AtomicU64,
    /// The watermark (epoch ms; `i64::MIN` before the first event).
    pub watermark: AtomicI64,
    /// Per source partition, the position after the last chunk processed (a log source: the
    /// topic's end offsets minus these are the consumer lag).
    pub positions: std::sync::Mutex<crate::source::Positions>,
    /// Checkpoints completed (durable) by a job.
    pub checkpoints: AtomicU64,
    /// When the last checkpoint completed (epoch ms; `i64::MIN`: none yet).
    pub last_checkpoint_ms: AtomicI64,
    /// The last completed checkpoint's number (0: none).
    pub last_checkpoint_id: AtomicU64,
    /// How long it took, from the sinks' pre-commit at its barrier to durable, ms.
    pub last_checkpoint_duration_ms: AtomicU64,
    /// Its size in bytes.
    pub last_checkpoint_bytes: AtomicU64,
    /// Per query of the run, in order: events into its operator and rows out of it.
    pub queries: std::sync::Mutex<Vec<Arc<QueryProgress>>>,
    /// Set once the run has recovered (its sinks aligned with the restored checkpoint, their
    /// result tables read back, its state restored) and processes input: a server is ready
    /// only when its resumed queries are.
    pub started: std::sync::atomic::AtomicBool,
}

/// One query's operator counters, summed over its workers.
#[derive(Debug, Default)]
pub struct QueryProgress {
    /// The query's name (its sink's, for a job).
    pub name: String,
    /// Events offered to the query: accepted by the router (after dedup and its checks),
    /// before the query's WHERE clause.
    pub events_in: AtomicU64,
    /// Result rows out of it.
    pub rows_out: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes_read: AtomicU64::new(0),
            read: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            results: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            positions: Default::default(),
            checkpoints: AtomicU64::new(0),
            last_checkpoint_ms: AtomicI64::new(i64::MIN),
            last_checkpoint_id: AtomicU64::new(0),
            last_checkpoint_duration_ms: AtomicU64::new(0),
            last_checkpoint_bytes: AtomicU64::new(0),
            queries: Default::default(),
            started: Default::default(),
        }
    }
}

/// Runs `spec` until its source ends or `stop` is set.
pub fn run(
    spec: RunSpec<'_>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome> {
    let out = pipeline::run(spec, progress, stop)?;
    let s = &out.summary;
    tracing::info!(
        read = s.read,
        accepted = s.accepted,
        duplicates = s.duplicates,
        dead_lettered = s.dead_lettered,
        late = s.late,
        results = s.results,
        unknown_fields = s.unknown_fields,
        wall_ms = s.wall.as_millis() as u64,
        "run finished"
    );
    Ok(out)
}

/// Spawns a named thread (names show in `perf`, `top -H` and panics).
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    // A job's threads end their waits for a server when the job stops.
    let job = crate::connector::waiting::job();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::connector::waiting::set_job(job);
            f()
        })
        .expect("cannot spawn a thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::EventSchema;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// A worker that fails keeps answering the steps still in flight, so the run ends with its
    /// error instead of the sink loop waiting on it forever (with two workers and many batches
    /// left, the other worker's answers filled their channel and the router stalled).
    #[test]
    fn a_failing_worker_ends_the_run_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        crate::generate::generate(
            &crate::generate::GenConfig {
                events: 20_000,
                ..Default::default()
            },
            &mut f,
        )
        .unwrap();
        // Only the worker that owns one card fails; the other keeps answering.
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let card = first["card_id"].as_str().unwrap();
        let plan = crate::sql::plan_query(&format!(
            "SELECT card_id, window_start, \
             sum(CASE WHEN card_id = '{card}' THEN amount_minor * 9223372036854775807 ELSE 0 END) AS s \
             FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY card_id, window_start"
        ))
        .unwrap();
        let mut spec = RunSpec::single(
            Arc::new(crate::source::FileSource::new(&path)),
            &plan,
            Box::new(NullSink),
        );
        spec.options.workers = 2;
        spec.options.batch_size = 16;
        let err = run(spec, Default::default(), Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("overflow"), "{err}");
    }

    /// With several workers the router evaluates a keyed query's WHERE clause; its errors name
    /// the query and say what to do, as the operator's do with one worker.
    #[test]
    fn an_overflow_in_where_names_the_query_with_any_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        crate::generate::generate(
            &crate::generate::GenConfig {
                events: 200,
                ..Default::default()
            },
            &mut f,
        )
        .unwrap();
        let plan = crate::sql::plan_query(
            "SELECT card_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) \
             WHERE amount_minor * 9223372036854775807 > 0 GROUP BY card_id, window_start",
        )
        .unwrap()
        .named("the risk query");
        for workers in [1, 2] {
            let mut spec = RunSpec::single(
                Arc::new(crate::source::FileSource::new(&path)),
                &plan,
                Box::new(NullSink),
            );
            spec.options.workers = workers;
            let err = run(spec, Default::default(), Default::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("the risk query stopped: integer overflow") && err.contains("DECIMAL"),
                "{workers} workers: {err}"
            );
        }
    }

    /// A query planned for other events than its source decodes is refused before anything
    /// runs: its columns would be read at the wrong places.
    #[test]
    fn a_query_planned_for_other_events_is_refused() {
        let arrow = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("at", crate::schema::timestamp_type(), false),
            Field::new("amount", DataType::Int64, true),
        ]));
        let events = Arc::new(EventSchema::new("refunds", arrow, "id", "at", vec![]).unwrap());
        let plan = crate::sql::plan_query_in(
            "SELECT id, amount FROM refunds WHERE amount > 0",
            &events,
            "refunds",
            &Default::default(),
        )
        .unwrap();
        assert_eq!(plan.events.stream(), "refunds");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "").unwrap();
        let spec = RunSpec::single(
            Arc::new(crate::source::FileSource::new(&path)),
            &plan,
            Box::new(NullSink),
        );
        let err = run(spec, Default::default(), Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("planned for events of the streams `refunds`, but the source decodes those of `payments`"),
            "{err}"
        );
    }
}
