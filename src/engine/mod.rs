//! The engine: wires source → decode → router → workers → sinks with bounded channels.
//!
//! ```text
//!   reader ─▶ decoders (N) ─▶ router ──part i──▶ worker i (Operator) ─┐
//!                               │                                      ├─▶ sink loop: results, late
//!                               └─▶ dead-letter sink                   │   (worker by worker, batch
//!                                                                      ┘    by batch: watermark order)
//! ```
//!
//! Every channel is bounded, so a slow sink slows the reader instead of filling memory. There is
//! one shutdown path: the reader stops (end of file, or the `stop` flag), every stage drains what
//! it holds and closes its output, and the sink loop returns the [`Summary`].

mod reader;
mod router;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

pub use self::router::{Partitioning, Router, RouterCounts};

use crate::decode::{Format, Origin, PositionKind};
use crate::error::{Error, Result};
use crate::operators::{Dedup, EventBatch, OperatorOutput, Watermark, build_operator};
use crate::sink::{Sink, dead_letter_json, event_json, late_json};
use crate::sql::{PlanKind, StreamPlan};

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

enum ToWorker {
    Batch {
        events: Option<EventBatch>,
        watermark: i64,
    },
    Finish,
}

enum FromWorker {
    Output(OperatorOutput),
    EpochDone,
    Failed(Error),
}

/// Progress of a run, readable while it goes.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of input read so far.
    pub bytes_read: AtomicU64,
}

/// Replays an event file through a planned query.
pub fn run_replay(
    plan: &StreamPlan,
    opts: &ReplayOptions,
    sinks: Sinks,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<Summary> {
    let started = Instant::now();
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
    let query = plan.sql.split_whitespace().collect::<Vec<_>>().join(" ");
    tracing::info!(input = %opts.input.display(), ?format, workers = opts.workers, %query, "replay starting");
    let origin = Origin {
        name: opts.input.display().to_string().into(),
        kind: if format == Format::Parquet {
            PositionKind::Row
        } else {
            PositionKind::Line
        },
    };
    let workers = opts.workers.max(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let (decoded_rx, reader_threads) = reader::spawn_reader(
        opts.input.clone(),
        format,
        opts.start,
        opts.batch_size,
        workers,
        Arc::clone(&bytes),
        Arc::clone(&stop),
    )?;

    let partitioning = match &plan.kind {
        PlanKind::Window { aggregate, .. } if aggregate.keys.is_empty() => Partitioning::Single,
        PlanKind::Window { aggregate, .. } => Partitioning::ByKeys(aggregate.keys.clone()),
        PlanKind::Map { .. } => Partitioning::RoundRobin,
    };
    let mut to_workers = Vec::with_capacity(workers);
    let mut from_workers = Vec::with_capacity(workers);
    let mut worker_threads = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = sync_channel::<ToWorker>(4);
        let (otx, orx) = sync_channel::<FromWorker>(4);
        let op = build_operator(plan)?;
        let w = worker_threads.len();
        worker_threads.push(std::thread::spawn(move || worker_loop(w, op, rx, otx)));
        to_workers.push(tx);
        from_workers.push(orx);
    }

    let router = Router::new(
        Dedup::new(opts.dedup_ttl),
        Watermark::new(opts.watermark_delay, opts.max_skew),
        partitioning,
        workers,
    );
    let speed = opts.speed;
    let router_origin = origin.clone();
    let dead_letter = sinks.dead_letter;
    let router_thread = std::thread::spawn(move || {
        router_loop(
            router,
            decoded_rx,
            to_workers,
            dead_letter,
            &router_origin,
            speed,
        )
    });

    // The sink loop: read each worker's output for one batch in turn, so windows come out in
    // watermark order across workers.
    let mut results_sink = sinks.results;
    let mut late_sink = sinks.late;
    let mut summary = Summary::default();
    let mut first_error: Option<Error> = None;
    let mut open: Vec<bool> = vec![true; workers];
    while open.iter().any(|o| *o) {
        for (w, rx) in from_workers.iter().enumerate() {
            if !open[w] {
                continue;
            }
            loop {
                match rx.recv() {
                    Ok(FromWorker::Output(out)) => {
                        if first_error.is_some() {
                            continue;
                        }
                        for b in &out.results {
                            summary.results += b.num_rows() as u64;
                            if let Err(e) = results_sink.write_batch(b) {
                                first_error = Some(e);
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        for l in &out.late {
                            summary.late += l.batch.num_rows() as u64;
                            for rec in late_json(&origin, l) {
                                if let Err(e) = late_sink.write_record(&rec) {
                                    first_error = Some(e);
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Ok(FromWorker::EpochDone) => break,
                    Ok(FromWorker::Failed(e)) => {
                        first_error.get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {
                        open[w] = false;
                        break;
                    }
                }
            }
        }
        progress
            .bytes_read
            .store(bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    results_sink.flush()?;
    late_sink.flush()?;
    let routed = router_thread
        .join()
        .map_err(|_| Error::Internal("router thread panicked".into()))?;
    for t in worker_threads.into_iter().chain(reader_threads) {
        t.join()
            .map_err(|_| Error::Internal("pipeline thread panicked".into()))?;
    }
    let (counts, read, unknown) = routed?;
    if let Some(e) = first_error {
        return Err(e);
    }
    progress
        .bytes_read
        .store(bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    summary.read = read;
    summary.accepted = counts.accepted;
    summary.duplicates = counts.duplicates;
    summary.dead_lettered = counts.dead_lettered;
    summary.unknown_fields = unknown;
    summary.wall = started.elapsed();
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

/// Per-worker operator metrics, logged when the worker ends.
#[derive(Debug, Default)]
struct WorkerMetrics {
    rows_in: u64,
    rows_out: u64,
    late: u64,
    busy: Duration,
}

fn worker_loop(
    worker: usize,
    mut op: Box<dyn crate::operators::Operator>,
    rx: Receiver<ToWorker>,
    tx: SyncSender<FromWorker>,
) {
    let mut failed = false;
    let mut m = WorkerMetrics::default();
    while let Ok(msg) = rx.recv() {
        let mut out = OperatorOutput::default();
        let t0 = Instant::now();
        let r = match msg {
            ToWorker::Batch { events, watermark } => {
                m.rows_in += events.as_ref().map_or(0, |e| e.batch.num_rows() as u64);
                events
                    .as_ref()
                    .map_or(Ok(()), |e| op.process(e, &mut out))
                    .and_then(|_| op.advance_watermark(watermark, &mut out))
            }
            ToWorker::Finish => op.finish(&mut out),
        };
        m.busy += t0.elapsed();
        m.rows_out += out.results.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        m.late += out
            .late
            .iter()
            .map(|l| l.batch.num_rows() as u64)
            .sum::<u64>();
        if failed {
            continue;
        }
        let msg = match r {
            Ok(()) => FromWorker::Output(out),
            Err(e) => {
                failed = true;
                FromWorker::Failed(e)
            }
        };
        if tx.send(msg).is_err() || tx.send(FromWorker::EpochDone).is_err() {
            break;
        }
    }
    tracing::info!(
        worker,
        rows_in = m.rows_in,
        rows_out = m.rows_out,
        late = m.late,
        busy_ms = m.busy.as_millis() as u64,
        "operator finished"
    );
}

type Routed = Result<(RouterCounts, u64, u64)>;

fn router_loop(
    mut router: Router,
    decoded: Receiver<Result<reader::SeqDecoded>>,
    workers: Vec<SyncSender<ToWorker>>,
    mut dead_letter: Box<dyn Sink>,
    origin: &Origin,
    speed: Option<f64>,
) -> Routed {
    let mut pending = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut read = 0u64;
    let mut unknown = 0u64;
    let mut decode_dead = 0u64;
    let mut pace: Option<(i64, Instant)> = None;
    let mut result: Result<()> = Ok(());
    'chunks: for item in decoded.iter() {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        pending.insert(item.seq, item.decoded);
        while let Some(d) = pending.remove(&next) {
            next += 1;
            read += d.records;
            unknown += d.unknown_fields;
            decode_dead += d.rejects.len() as u64;
            let mut router_rejects = Vec::new();
            let mut routed = Vec::with_capacity(d.batches.len());
            for b in &d.batches {
                match router.accept(b, |i| event_json(&b.batch, i), &mut router_rejects) {
                    // The watermark after this batch, not after the chunk: a window must not fire
                    // before the later batches of the chunk reach it.
                    Ok(a) => routed.push((a, router.watermark.current())),
                    Err(e) => {
                        result = Err(e);
                        break 'chunks;
                    }
                }
            }
            // Dead letters in input order: merge the decoder's and the router's by position.
            let mut all: Vec<&crate::decode::Reject> =
                d.rejects.iter().chain(&router_rejects).collect();
            all.sort_by_key(|r| r.position);
            for r in all {
                tracing::debug!(reason = %r.reason, position = r.position, "dead-lettered");
                if let Err(e) = dead_letter.write_record(&dead_letter_json(origin, r)) {
                    result = Err(e);
                    break 'chunks;
                }
            }
            for (accepted, watermark) in routed {
                if let (Some(speed), Some(ev)) = (speed, &accepted) {
                    throttle(&mut pace, ev, speed);
                }
                let parts = match accepted.map(|ev| router.partition(ev)).transpose() {
                    Ok(p) => p,
                    Err(e) => {
                        result = Err(e);
                        break 'chunks;
                    }
                };
                let mut parts = parts.unwrap_or_else(|| (0..workers.len()).map(|_| None).collect());
                for (w, tx) in workers.iter().enumerate() {
                    let events = parts[w].take();
                    if tx.send(ToWorker::Batch { events, watermark }).is_err() {
                        break 'chunks;
                    }
                }
            }
        }
    }
    drop(decoded);
    for tx in &workers {
        let _ = tx.send(ToWorker::Finish);
    }
    drop(workers);
    dead_letter.flush()?;
    result?;
    let mut counts = router.counts;
    counts.dead_lettered += decode_dead;
    Ok((counts, read, unknown))
}

/// Sleeps so event time advances `speed`× faster than wall time.
fn throttle(pace: &mut Option<(i64, Instant)>, ev: &EventBatch, speed: f64) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let times = ev
        .batch
        .column(crate::schema::FieldId::EventTime as usize)
        .as_primitive::<TimestampMillisecondType>();
    let Some(max) = times.values().iter().max().copied() else {
        return;
    };
    let (t0, w0) = *pace.get_or_insert((max, Instant::now()));
    let due = Duration::from_secs_f64(((max - t0).max(0) as f64 / 1000.0) / speed);
    let elapsed = w0.elapsed();
    if due > elapsed {
        std::thread::sleep((due - elapsed).min(Duration::from_secs(5)));
    }
}
