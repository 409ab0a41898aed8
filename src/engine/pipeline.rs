//! The dataflow shared by every run: decoded chunks → router → per-query workers → sinks.
//!
//! ```text
//!                               ┌─▶ query 0: worker 0..N (Operator) ─┐
//!   chunks ─▶ router (dedup, ───┤                                    ├─▶ sink loop: results per
//!             watermark)        └─▶ query 1: worker 0..N (Operator) ─┘   query, late, in step order
//!               └─▶ dead letters
//! ```
//! The router reads each chunk once and fans it out to every query (several INSERTs share one
//! source read), partitioned by that query's group keys. Each router step sends exactly one
//! message to every worker, and the sink loop reads one reply per worker per step in the same
//! order, so windows come out in watermark order and results do not depend on the worker count.
//!
//! At the end of input every operator finishes (emits its open windows). A continuous run that
//! is stopped instead snapshots every operator and the router, so a restart continues exactly
//! where it stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use super::router::{Partitioner, Router, RouterCounts};
use super::{OnStop, Progress, RunOutcome, RunSpec, Summary};
use crate::decode::{Origin, ReasonCounts, Reject};
use crate::error::{Error, Result};
use crate::operators::{
    Dedup, EventBatch, LateEvents, Operator, OperatorOutput, Watermark, WatermarkState,
    build_operator,
};
use crate::sink::{Prepared, Sink, dead_letter_json, late_json};
use crate::source::{Chunk, Positions, ReadOptions};
use crate::sql::StreamPlan;

/// One query of a run and where its results go.
pub struct QueryRun<'a> {
    /// Name used in logs and late records (the sink's name for `run`).
    pub name: String,
    /// The planned query.
    pub plan: &'a StreamPlan,
    /// Its result rows.
    pub results: Box<dyn Sink>,
}

/// Everything a stopped continuous run needs to continue exactly where it stopped.
#[derive(Debug, Clone, Default)]
pub struct PipelineState {
    /// Watermark per source partition.
    pub watermark: Option<WatermarkState>,
    /// Dedup snapshot.
    pub dedup: Vec<u8>,
    /// Operator snapshots: `operators[query][worker]`.
    pub operators: Vec<Vec<Vec<u8>>>,
    /// Per source partition: the position after the last chunk processed (log offsets).
    pub positions: BTreeMap<u32, u64>,
}

/// When to take checkpoints and what to do with each.
pub struct Checkpoints<'a> {
    /// Take one this often (wall time), if set.
    pub interval: Option<Duration>,
    /// Set to take one as soon as possible (a savepoint request); cleared when taken.
    pub request: Arc<AtomicBool>,
    /// The number the first checkpoint gets; each next one is one more.
    pub first_epoch: u64,
    /// Called with each checkpoint once every result before its barrier has been written to
    /// the sinks and the sinks have pre-committed it ([`crate::sink::Sink::pre_commit`]). Runs on
    /// the calling thread; the final checkpoint of a run that snapshots at its end is returned
    /// in [`super::RunOutcome::last`] instead.
    pub on_checkpoint: Box<dyn FnMut(Checkpoint) -> Result<()> + Send + 'a>,
}

/// One checkpoint of a run: its state and what its sinks pre-committed.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its number.
    pub epoch: u64,
    /// Operator, dedup and watermark state, and every source partition's position.
    pub state: PipelineState,
    /// What the sinks pre-committed: offsets to record, and the actions that make the records
    /// visible once the checkpoint is durable.
    pub prepared: Prepared,
    /// Whether it was requested (a savepoint).
    pub savepoint: bool,
}

/// Phase one of checkpoint `epoch` on every sink of the run.
fn pre_commit_all(
    results: &mut [Box<dyn Sink>],
    late: &mut dyn Sink,
    dead_letter: &mut dyn Sink,
    epoch: u64,
) -> Result<Prepared> {
    // A checkpoint's duration counts from here: the sinks' flush and fsync are its first cost.
    let mut prepared = Prepared::default();
    for s in results.iter_mut() {
        prepared.merge(s.pre_commit(epoch)?);
    }
    prepared.merge(late.pre_commit(epoch)?);
    prepared.merge(dead_letter.pre_commit(epoch)?);
    Ok(prepared)
}

/// What the router sends the sink loop, in order: dead letters, and its part of each checkpoint
/// ahead of the workers' snapshots. One channel keeps them ordered, so a checkpoint covers
/// exactly the dead letters of the events before its barrier.
enum RouterMsg {
    /// Dead-letter records, each with its source record's timestamp where the source has one.
    DeadLetters(Vec<(Vec<u8>, Option<i64>)>),
    Barrier(BarrierMeta),
}

/// The router's part of a checkpoint.
struct BarrierMeta {
    watermark: WatermarkState,
    dedup: Result<Vec<u8>>,
    positions: BTreeMap<u32, u64>,
    last: bool,
    requested: bool,
}

enum ToWorker {
    Batch {
        events: Option<EventBatch>,
        watermark: i64,
        origin: u32,
    },
    Finish {
        snapshot: bool,
    },
    /// A barrier: snapshot the state as of every event before it (no emission).
    Snapshot,
}

enum FromWorker {
    Output(OperatorOutput, u32),
    Snapshot(Vec<u8>),
    EpochDone,
    Failed(Error),
}

/// Runs the dataflow until the source ends; returns the summary (and state, when snapshotted).
pub(super) fn run(
    spec: RunSpec<'_>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome> {
    let started = Instant::now();
    let opts = &spec.options;
    let workers = opts.workers.max(1);
    let nq = spec.queries.len();
    let origins = spec.source.origins()?;
    for q in &spec.queries {
        let text = q.plan.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        tracing::info!(query = %q.name, workers, bounded = spec.source.bounded(), sql = %text, "run starting");
    }
    let mut router = Router::new(
        Dedup::new(opts.dedup_ttl),
        Watermark::partitioned(
            opts.watermark_delay,
            opts.max_skew,
            origins.len(),
            opts.idle_timeout,
        ),
    );
    let mut restore = spec.restore;
    if let Some(r) = &restore
        && (r.operators.len() != nq || r.operators.iter().any(|o| o.len() != workers))
    {
        return Err(Error::State {
            operator: "run".into(),
            message: format!(
                "the saved state has {} queries × {} workers but this run has {nq} × {workers}; run with the same query file and --workers",
                r.operators.len(),
                r.operators.first().map_or(0, Vec::len)
            ),
        });
    }
    // The source opens first, as of now (a log read `until_end` takes its end offsets here, not
    // after a slow restore), at the restored positions.
    let source = spec.source.open(
        restore.as_ref().map_or(&Positions::new(), |r| &r.positions),
        &ReadOptions {
            decoders: workers,
            batch_size: opts.batch_size,
            stop: Arc::clone(&stop),
        },
    )?;
    if restore.is_some() && source.positions.is_empty() {
        return Err(Error::State {
            operator: "run".into(),
            message: "this source has no positions to resume from (a file is read whole), so saved state cannot be restored over it; run without the state".into(),
        });
    }
    if let Some(p) = source
        .positions
        .keys()
        .find(|p| **p as usize >= origins.len())
    {
        return Err(Error::Internal(format!(
            "the source opened partition {p} but declared {} partitions",
            origins.len()
        )));
    }
    if let Some(r) = &mut restore {
        if let Some(w) = &r.watermark {
            router.watermark.restore(w);
        }
        if !r.dedup.is_empty() {
            router.dedup.restore(&r.dedup)?;
        }
        tracing::info!(
            dedup_ids = router.dedup.len(),
            ms = started.elapsed().as_millis() as u64,
            "router state restored"
        );
    }

    // Workers: `to[q][w]`, and the replies in the order the sink loop reads them.
    let mut to: Vec<Vec<SyncSender<ToWorker>>> = Vec::with_capacity(nq);
    let mut from: Vec<(usize, Receiver<FromWorker>)> = Vec::with_capacity(nq * workers);
    let mut threads = Vec::new();
    let mut partitioners = Vec::with_capacity(nq);
    let mut results = Vec::with_capacity(nq);
    let mut names = Vec::with_capacity(nq);
    let mut counters = Vec::with_capacity(nq);
    for (q, query) in spec.queries.into_iter().enumerate() {
        partitioners.push(Partitioner::new(Partitioner::for_plan(query.plan), workers));
        let counted = Arc::new(super::QueryProgress {
            name: query.name.clone(),
            ..Default::default()
        });
        counters.push(Arc::clone(&counted));
        let mut txs = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<ToWorker>(4);
            let (otx, orx) = sync_channel::<FromWorker>(4);
            let mut op = build_operator(query.plan)?;
            if let Some(r) = &restore {
                op.restore(&r.operators[q][w])?;
            }
            let name = query.name.clone();
            let counted = Arc::clone(&counted);
            threads.push(super::spawn("worker", move || {
                worker_loop(&name, w, op, rx, otx, &counted)
            }));
            txs.push(tx);
            from.push((q, orx));
        }
        to.push(txs);
        results.push(query.results);
        names.push(query.name);
    }

    *progress.queries.lock().expect("progress lock") = counters;
    if restore.is_some() {
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "operator state restored"
        );
    }
    let origins = Arc::new(origins);
    let start_positions = source.positions.clone();
    let router_origins = Arc::clone(&origins);
    let mut dead_letter = spec.dead_letter;
    let speed = opts.speed;
    let end = spec.on_stop;
    let router_stop = Arc::clone(&stop);
    let chunks = source.chunks;
    let (meta_tx, meta_rx) = std::sync::mpsc::channel::<RouterMsg>();
    let (interval, request) = match &spec.checkpoints {
        Some(c) => (c.interval, Some(Arc::clone(&c.request))),
        None => (None, None),
    };
    let mut next_epoch = spec.checkpoints.as_ref().map_or(0, |c| c.first_epoch);
    let mut on_checkpoint = spec.checkpoints.map(|c| c.on_checkpoint);
    let name_late_queries = nq > 1;
    let router_progress = Arc::clone(&progress);
    *progress.positions.lock().expect("progress lock") = start_positions.clone();
    let router_thread = super::spawn("router", move || {
        let mut r = RouterLoop {
            router,
            partitioners,
            workers: to,
            origins: &router_origins,
            speed,
            pace: None,
            paced_stop: Arc::clone(&router_stop),
            last_sent: i64::MIN,
            positions: start_positions,
            meta: meta_tx,
            interval,
            request,
            last_barrier: Instant::now(),
            progress: router_progress,
            reasons: ReasonCounts::default(),
        };
        r.run(chunks, end, &router_stop)
    });

    // The sink loop.
    let mut late_sink = spec.late;
    let mut summary = Summary::default();
    let mut first_error: Option<Error> = None;
    let mut snapshots: Vec<Vec<Vec<u8>>> = vec![Vec::new(); nq];
    let mut final_state: Option<PipelineState> = None;
    let mut pending_meta: Option<BarrierMeta> = None;
    let mut open = vec![true; from.len()];
    let fail = |first_error: &mut Option<Error>, e: Error| {
        first_error.get_or_insert(e);
        stop.store(true, Ordering::Relaxed);
    };
    while open.iter().any(|o| *o) {
        for (i, (q, rx)) in from.iter().enumerate() {
            if !open[i] {
                continue;
            }
            loop {
                match rx.recv() {
                    Ok(FromWorker::Output(out, origin)) => {
                        if first_error.is_some() {
                            continue;
                        }
                        for r in &out.results {
                            summary.results += r.batch.num_rows() as u64;
                            progress
                                .results
                                .fetch_add(r.batch.num_rows() as u64, Ordering::Relaxed);
                            if let Err(e) = results[*q].write_results(&r.batch, &r.times) {
                                fail(&mut first_error, e);
                            }
                        }
                        let query = name_late_queries.then(|| names[*q].as_str());
                        for l in &out.late {
                            summary.late += l.batch.num_rows() as u64;
                            progress
                                .late
                                .fetch_add(l.batch.num_rows() as u64, Ordering::Relaxed);
                            let recs = late_json(&origins[origin as usize], query, l);
                            for (rec, time) in recs.iter().zip(late_event_times(l)) {
                                if let Err(e) = late_sink.write_record_at(rec, time) {
                                    fail(&mut first_error, e);
                                }
                            }
                        }
                    }
                    Ok(FromWorker::Snapshot(bytes)) => snapshots[*q].push(bytes),
                    Ok(FromWorker::EpochDone) => break,
                    Ok(FromWorker::Failed(e)) => fail(&mut first_error, e),
                    Err(_) => {
                        open[i] = false;
                        break;
                    }
                }
            }
        }
        // Dead letters so far; a barrier's meta is kept until the workers' snapshots arrive.
        if pending_meta.is_none()
            && let Err(e) = drain_router(&meta_rx, &mut *dead_letter, &mut pending_meta, false)
        {
            fail(&mut first_error, e);
        }
        // A pass in which the workers snapshotted was a barrier: every result before it has been
        // handed to the sinks above.
        if snapshots.iter().any(|s| !s.is_empty()) && first_error.is_none() {
            if pending_meta.is_none()
                && let Err(e) = drain_router(&meta_rx, &mut *dead_letter, &mut pending_meta, true)
            {
                fail(&mut first_error, e);
            }
            match take_checkpoint(&mut snapshots, workers, pending_meta.take()) {
                Ok((state, true, _)) => final_state = Some(state),
                Ok((state, false, requested)) => {
                    let r = match on_checkpoint.as_mut() {
                        Some(hook) => {
                            let epoch = next_epoch;
                            next_epoch += 1;
                            pre_commit_all(&mut results, &mut *late_sink, &mut *dead_letter, epoch)
                                .and_then(|prepared| {
                                    hook(Checkpoint {
                                        epoch,
                                        state,
                                        prepared,
                                        savepoint: requested,
                                    })
                                })
                        }
                        None => results
                            .iter_mut()
                            .try_for_each(|r| r.flush())
                            .and_then(|_| late_sink.flush())
                            .and_then(|_| dead_letter.flush()),
                    };
                    if let Err(e) = r {
                        fail(&mut first_error, e);
                    }
                }
                Err(e) => fail(&mut first_error, e),
            }
        }
        progress
            .bytes_read
            .store(source.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        for r in &mut results {
            if let Err(e) = r.flush_if_due() {
                fail(&mut first_error, e);
            }
        }
        if let Err(e) = late_sink.flush_if_due() {
            fail(&mut first_error, e);
        }
    }
    // The router's last dead letters (it closes the channel when it ends).
    if first_error.is_none() {
        for msg in meta_rx.iter() {
            if let RouterMsg::DeadLetters(recs) = msg {
                for (r, time) in recs {
                    write_dead_letter(&mut *dead_letter, &r, time)?;
                }
            }
        }
    }
    for r in &mut results {
        r.flush()?;
    }
    late_sink.flush()?;
    dead_letter.flush()?;
    // The final state of a checkpointed run is its last checkpoint: pre-committed here, after
    // every record, and committed by the caller.
    let last = match (&final_state, &on_checkpoint, &first_error) {
        (Some(_), Some(_), None) => {
            let epoch = next_epoch;
            match pre_commit_all(&mut results, &mut *late_sink, &mut *dead_letter, epoch) {
                Ok(p) => Some((epoch, p)),
                // Reported once the threads are joined, as any other failure.
                Err(e) => {
                    fail(&mut first_error, e);
                    None
                }
            }
        }
        _ => None,
    };
    let res = router_thread
        .join()
        .map_err(|_| Error::Internal("router thread panicked".into()))?;
    for t in threads.into_iter().chain(source.threads) {
        t.join()
            .map_err(|_| Error::Internal("pipeline thread panicked".into()))?;
    }
    // A failure the sink loop saw first is the cause; the router's error is then a consequence.
    if let Some(e) = first_error {
        return Err(e);
    }
    let (counts, read, unknown, reasons) = res?;
    progress
        .bytes_read
        .store(source.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    summary.read = read;
    summary.accepted = counts.accepted;
    summary.duplicates = counts.duplicates;
    summary.dead_lettered = counts.dead_lettered;
    summary.unknown_fields = unknown;
    summary.reasons = reasons;
    summary.queries = nq as u64;
    summary.wall = started.elapsed();
    let state = final_state;
    Ok(RunOutcome {
        summary,
        state,
        last,
    })
}

/// Assembles a checkpoint from one pass of worker snapshots and the router's part; returns it
/// and whether it is the last one (the run's end).
fn take_checkpoint(
    snapshots: &mut [Vec<Vec<u8>>],
    workers: usize,
    meta: Option<BarrierMeta>,
) -> Result<(PipelineState, bool, bool)> {
    if snapshots.iter().any(|s| s.len() != workers) {
        return Err(Error::Internal(
            "a worker missed a checkpoint barrier".into(),
        ));
    }
    let m =
        meta.ok_or_else(|| Error::Internal("the router did not send its checkpoint state".into()))?;
    let state = PipelineState {
        watermark: Some(m.watermark),
        dedup: m.dedup?,
        operators: snapshots.iter_mut().map(std::mem::take).collect(),
        positions: m.positions,
    };
    Ok((state, m.last, m.requested))
}

/// Writes the dead letters the router has sent, stopping at a barrier (kept in `meta`). With
/// `until_barrier`, waits for one.
fn drain_router(
    rx: &Receiver<RouterMsg>,
    dead_letter: &mut dyn Sink,
    meta: &mut Option<BarrierMeta>,
    until_barrier: bool,
) -> Result<()> {
    loop {
        let msg = if until_barrier {
            match rx.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            }
        } else {
            match rx.try_recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            }
        };
        match msg {
            RouterMsg::DeadLetters(recs) => {
                for (r, time) in recs {
                    write_dead_letter(dead_letter, &r, time)?;
                }
                dead_letter.flush_if_due()?;
            }
            RouterMsg::Barrier(m) => {
                *meta = Some(m);
                return Ok(());
            }
        }
    }
}

/// The timestamp of the source record at `position`, for a source that keeps one (a log).
fn record_time(times: &Option<(u64, Vec<i64>)>, position: u64) -> Option<i64> {
    let (first, times) = times.as_ref()?;
    times
        .get(usize::try_from(position.checked_sub(*first)?).ok()?)
        .copied()
}

/// Writes a dead letter stamped with its source record's time, or the wall time without one.
fn write_dead_letter(sink: &mut dyn Sink, rec: &[u8], time: Option<i64>) -> Result<()> {
    match time {
        Some(t) => sink.write_record_at(rec, t),
        None => sink.write_record(rec),
    }
}

/// The event time of each late event, to stamp its record with.
fn late_event_times(late: &LateEvents) -> impl Iterator<Item = i64> + '_ {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    late.batch
        .column(crate::schema::FieldId::EventTime as usize)
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .iter()
        .copied()
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
    query: &str,
    worker: usize,
    mut op: Box<dyn Operator>,
    rx: Receiver<ToWorker>,
    tx: SyncSender<FromWorker>,
    counted: &super::QueryProgress,
) {
    let mut failed = false;
    let mut m = WorkerMetrics::default();
    while let Ok(msg) = rx.recv() {
        let mut out = OperatorOutput::default();
        let t0 = Instant::now();
        let mut origin = 0;
        let mut snapshot = None;
        let r = match msg {
            ToWorker::Batch {
                events,
                watermark,
                origin: o,
            } => {
                origin = o;
                let n = events.as_ref().map_or(0, |e| e.num_events() as u64);
                m.rows_in += n;
                counted.events_in.fetch_add(n, Ordering::Relaxed);
                events
                    .as_ref()
                    .map_or(Ok(()), |e| op.process(e, &mut out))
                    .and_then(|_| op.advance_watermark(watermark, &mut out))
            }
            ToWorker::Finish { snapshot: snap } => op.finish(&mut out).and_then(|_| {
                if snap {
                    snapshot = Some(op.snapshot()?);
                }
                Ok(())
            }),
            ToWorker::Snapshot => op.snapshot().map(|s| snapshot = Some(s)),
        };
        m.busy += t0.elapsed();
        let rows = out
            .results
            .iter()
            .map(|r| r.batch.num_rows() as u64)
            .sum::<u64>();
        m.rows_out += rows;
        counted.rows_out.fetch_add(rows, Ordering::Relaxed);
        m.late += out
            .late
            .iter()
            .map(|l| l.batch.num_rows() as u64)
            .sum::<u64>();
        if failed {
            continue;
        }
        let mut msgs = Vec::with_capacity(3);
        match r {
            Ok(()) => {
                msgs.push(FromWorker::Output(out, origin));
                if let Some(s) = snapshot {
                    msgs.push(FromWorker::Snapshot(s));
                }
            }
            Err(e) => {
                failed = true;
                msgs.push(FromWorker::Failed(e));
            }
        }
        msgs.push(FromWorker::EpochDone);
        if msgs.into_iter().any(|m| tx.send(m).is_err()) {
            break;
        }
    }
    tracing::info!(
        query,
        worker,
        rows_in = m.rows_in,
        rows_out = m.rows_out,
        late = m.late,
        busy_ms = m.busy.as_millis() as u64,
        "operator finished"
    );
}

/// What the router counted: its counters, records read, unknown fields, dead letters by reason.
type Routed = Result<(RouterCounts, u64, u64, ReasonCounts)>;

struct RouterLoop<'a> {
    router: Router,
    partitioners: Vec<Partitioner>,
    workers: Vec<Vec<SyncSender<ToWorker>>>,
    origins: &'a [Origin],
    speed: Option<f64>,
    pace: Option<(i64, Instant)>,
    /// Set by a stop request: pacing (`--speed`) ends at once, so what was already read drains
    /// without sleeping and Ctrl-C stops a paced replay promptly.
    paced_stop: Arc<AtomicBool>,
    /// The watermark last sent to the workers.
    last_sent: i64,
    positions: BTreeMap<u32, u64>,
    meta: std::sync::mpsc::Sender<RouterMsg>,
    interval: Option<Duration>,
    request: Option<Arc<AtomicBool>>,
    last_barrier: Instant,
    /// Live counters for a status line.
    progress: Arc<Progress>,
    /// Dead letters by reason, decoder's and router's.
    reasons: ReasonCounts,
}

impl RouterLoop<'_> {
    fn run(&mut self, chunks: Receiver<Result<Chunk>>, end: OnStop, stop: &AtomicBool) -> Routed {
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut read = 0u64;
        let mut unknown = 0u64;
        let mut decode_dead = 0u64;
        let mut result: Result<()> = Ok(());
        'chunks: for item in chunks.iter() {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            pending.insert(item.seq, item);
            while let Some(c) = pending.remove(&next) {
                next += 1;
                read += c.decoded.records;
                self.progress
                    .read
                    .fetch_add(c.decoded.records, Ordering::Relaxed);
                unknown += c.decoded.unknown_fields;
                decode_dead += c.decoded.rejects.len() as u64;
                if let Err(e) = self.chunk(c).and_then(|_| self.maybe_barrier()) {
                    result = Err(e);
                    break 'chunks;
                }
            }
        }
        drop(chunks);
        if result.is_ok() {
            let stopped = stop.load(Ordering::Relaxed);
            let msg = || match end {
                OnStop::Finish => ToWorker::Finish { snapshot: false },
                OnStop::Snapshot if stopped => ToWorker::Snapshot,
                OnStop::Snapshot => ToWorker::Finish { snapshot: true },
            };
            if end == OnStop::Snapshot {
                result = self.send_meta(true, false);
            }
            for tx in self.workers.iter().flatten() {
                let _ = tx.send(msg());
            }
        }
        self.workers.clear();
        result?;
        let mut counts = self.router.counts;
        counts.dead_lettered += decode_dead;
        Ok((counts, read, unknown, self.reasons))
    }

    /// Sends the router's part of a checkpoint to the sink loop, behind the dead letters of the
    /// events before the barrier.
    fn send_meta(&mut self, last: bool, requested: bool) -> Result<()> {
        let meta = BarrierMeta {
            watermark: self.router.watermark.state(),
            dedup: self.router.dedup.snapshot(),
            positions: self.positions.clone(),
            last,
            requested,
        };
        self.meta
            .send(RouterMsg::Barrier(meta))
            .map_err(|_| Error::Internal("the sink loop stopped early".into()))
    }

    /// Takes a checkpoint if one is due: the barrier goes to every worker behind the events
    /// already sent, so each snapshot covers exactly the events before it.
    fn maybe_barrier(&mut self) -> Result<()> {
        let requested = self
            .request
            .as_ref()
            .is_some_and(|r| r.swap(false, Ordering::Relaxed));
        let due = self
            .interval
            .is_some_and(|i| self.last_barrier.elapsed() >= i);
        if !(requested || due) {
            return Ok(());
        }
        self.last_barrier = Instant::now();
        self.send_meta(false, requested)?;
        for tx in self.workers.iter().flatten() {
            if tx.send(ToWorker::Snapshot).is_err() {
                return Err(Error::Internal("a worker stopped early".into()));
            }
        }
        Ok(())
    }

    fn chunk(&mut self, c: Chunk) -> Result<()> {
        let p = c.tag.partition as usize;
        let origin = self.origins.get(p).ok_or_else(|| {
            Error::Internal(format!(
                "a chunk from partition {p}, but the source declared {} partitions",
                self.origins.len()
            ))
        })?;
        let now = Instant::now();
        if c.decoded.records > 0 {
            self.router.watermark.touch(p, now);
        }
        self.router.watermark.refresh(now);
        let d = c.decoded;
        let times = c.record_times;
        let mut router_rejects = Vec::new();
        let mut routed = Vec::with_capacity(d.batches.len());
        for b in &d.batches {
            let a = self
                .router
                .accept(p, b, |i| b.raw_record(i), &mut router_rejects)?;
            // The watermark after this batch, not after the chunk: a window must not fire
            // before the later batches of the chunk reach it.
            routed.push((a, self.router.watermark.current()));
        }
        // Dead letters in input order: merge the decoder's and the router's by position.
        let mut all: Vec<&Reject> = d.rejects.iter().chain(&router_rejects).collect();
        all.sort_by_key(|r| r.position);
        for r in &all {
            self.reasons.add(r.reason);
        }
        self.progress
            .dead_lettered
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        if !all.is_empty() {
            let recs = all
                .iter()
                .map(|r| {
                    tracing::debug!(reason = %r.reason, position = r.position, "dead-lettered");
                    (dead_letter_json(origin, r), record_time(&times, r.position))
                })
                .collect();
            self.meta
                .send(RouterMsg::DeadLetters(recs))
                .map_err(|_| Error::Internal("the sink loop stopped early".into()))?;
        }
        for (accepted, watermark) in routed {
            if let (Some(speed), Some(ev)) = (self.speed, &accepted) {
                throttle(&mut self.pace, ev, speed, &self.paced_stop);
            }
            self.step(accepted.as_ref(), watermark, c.tag.partition)?;
        }
        // Time may move without events (a partition went idle): tell the workers.
        let wm = self.router.watermark.current();
        if wm > self.last_sent {
            self.step(None, wm, c.tag.partition)?;
        }
        if let Some(end) = c.tag.end {
            self.positions.insert(c.tag.partition, end);
            self.progress
                .positions
                .lock()
                .expect("progress lock")
                .insert(c.tag.partition, end);
        }
        self.progress.watermark.store(wm, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one step (events for each query's workers, and the watermark) to every worker.
    fn step(&mut self, events: Option<&EventBatch>, watermark: i64, origin: u32) -> Result<()> {
        for (q, part) in self.partitioners.iter_mut().enumerate() {
            let mut parts = match events {
                Some(ev) => part.partition(ev)?,
                None => (0..self.workers[q].len()).map(|_| None).collect(),
            };
            for (w, tx) in self.workers[q].iter().enumerate() {
                let msg = ToWorker::Batch {
                    events: parts[w].take(),
                    watermark,
                    origin,
                };
                if tx.send(msg).is_err() {
                    return Err(Error::Internal("a worker stopped early".into()));
                }
            }
        }
        self.last_sent = watermark;
        Ok(())
    }
}

/// Sleeps so event time advances `speed`× faster than wall time.
fn throttle(pace: &mut Option<(i64, Instant)>, ev: &EventBatch, speed: f64, stop: &AtomicBool) {
    if stop.load(Ordering::Relaxed) {
        return;
    }
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let times = ev
        .batch
        .column(crate::schema::FieldId::EventTime as usize)
        .as_primitive::<TimestampMillisecondType>();
    let Some(max) = (0..times.len())
        .filter(|i| ev.is_selected(*i))
        .map(|i| times.value(i))
        .max()
    else {
        return;
    };
    let (t0, w0) = *pace.get_or_insert((max, Instant::now()));
    let due = Duration::from_secs_f64(((max - t0).max(0) as f64 / 1000.0) / speed);
    let elapsed = w0.elapsed();
    if due > elapsed {
        // In short naps, so a stop request is seen within 50 ms.
        let until = Instant::now() + (due - elapsed).min(Duration::from_secs(5));
        while !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}
