//! The dataflow shared by every run: decoded chunks → router → per-query workers → sinks.
//!
//! ```text
//!                               ┌─▶ query 0: worker 0..N (Operator) ─┐
//!   chunks ─▶ router (dedup, ───┤                                    ├─▶ sink loop: results per
//!             watermark)        └─▶ query 1: worker 0..N (Operator) ─┘   query, late, in step order
//!               └─▶ dead letters
//! ```
//! The router (`engine/router/`) reads each chunk once and fans it out to every query (several
//! INSERTs share one source read), partitioned as that query's plan requires; the workers are
//! in `engine/worker.rs`; this file wires them and runs the sink loop. Each router step sends exactly one
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

use super::router::stage::{BarrierMeta, RouterLoop, RouterMsg};
use super::router::{Partitioner, Router};
use super::worker::{FromWorker, ToWorker, worker_loop};
use super::{Progress, RunOutcome, RunSpec, Summary};
use crate::decode::{Projection, ReasonCounts};
use crate::error::{Error, Result};
use crate::operators::{Dedup, LateEvents, Watermark, build_operator};
use crate::schema::EventSchema;
use crate::sink::{Prepared, Sink, late_json};
use crate::source::{Positions, ReadOptions};
use crate::sql::StreamPlan;

/// One query of a run and where its results go.
pub struct QueryRun {
    /// Name used in logs and late records (the sink's name for `run`).
    pub name: String,
    /// The planned query.
    pub plan: StreamPlan,
    /// Its result rows.
    pub results: Box<dyn Sink>,
}

/// Everything a stopped continuous run needs to continue exactly where it stopped.
#[derive(Debug, Clone, Default)]
pub struct PipelineState {
    /// The router's snapshot: its dedup table and the watermark per source partition (empty:
    /// none, start fresh).
    pub router: Vec<u8>,
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
    if nq == 0 {
        // The router's records for the sink loop travel with the first query's first worker.
        return Err(Error::Internal("a run needs at least one query".into()));
    }
    let origins = spec.source.origins()?;
    for q in &spec.queries {
        let text = q.plan.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        tracing::info!(query = %q.name, workers, bounded = spec.source.bounded(), sql = %text, "run starting");
    }
    // The streams the source decodes; every query must have been planned for them, in order.
    let streams = spec.source.streams()?;
    for q in &spec.queries {
        let wants = q.plan.stream_events();
        let fits = wants.len() == streams.len()
            && wants
                .iter()
                .zip(&streams)
                .all(|(w, s)| w.same_events(&s.events));
        if !fits {
            let names = |e: &mut dyn Iterator<Item = &EventSchema>| {
                e.map(|e| format!("`{}`", e.stream()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::Internal(format!(
                "query {} was planned for events of the streams {}, but the source decodes those of {}",
                q.name,
                names(&mut wants.iter().map(|e| e.as_ref())),
                names(&mut streams.iter().map(|s| s.events.as_ref()))
            )));
        }
    }
    // The events of each source partition's stream.
    let partition_events: Vec<Arc<EventSchema>> = streams
        .iter()
        .flat_map(|s| std::iter::repeat_n(Arc::clone(&s.events), s.partitions))
        .collect();
    if partition_events.len() != origins.len() {
        return Err(Error::Internal(format!(
            "the source's streams have {} partitions but it declared {}",
            partition_events.len(),
            origins.len()
        )));
    }
    let events = Arc::clone(&streams[0].events);
    let mut router = Router::for_streams(
        &streams,
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
            projection: projection_of(&spec.queries),
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
        if !r.router.is_empty() {
            router.restore(&r.router)?;
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
        partitioners.push(Partitioner::new(&query.plan, &events, workers)?);
        let counted = Arc::new(super::QueryProgress {
            name: query.name.clone(),
            ..Default::default()
        });
        counters.push(Arc::clone(&counted));
        let mut txs = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<ToWorker>(4);
            let (otx, orx) = sync_channel::<FromWorker>(4);
            let mut op = build_operator(&query.plan.with_default_state_ttl(opts.dedup_ttl))?;
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
    progress.started.store(true, Ordering::Release);
    let origins = Arc::new(origins);
    let start_positions = source.positions.clone();
    let router_origins = Arc::clone(&origins);
    let mut dead_letter = spec.dead_letter;
    let speed = opts.speed;
    let end = spec.on_stop;
    let router_stop = Arc::clone(&stop);
    let chunks = source.chunks;
    let (interval, request) = match &spec.checkpoints {
        Some(c) => (c.interval, Some(Arc::clone(&c.request))),
        None => (None, None),
    };
    let mut next_epoch = spec.checkpoints.as_ref().map_or(0, |c| c.first_epoch);
    let mut on_checkpoint = spec.checkpoints.map(|c| c.on_checkpoint);
    let name_late_queries = nq > 1;
    let router_progress = Arc::clone(&progress);
    *progress.positions.lock().expect("progress lock") = start_positions.clone();
    let router_counters = progress.queries.lock().expect("progress lock").clone();
    let router_thread = super::spawn("router", move || {
        let mut r = RouterLoop {
            router,
            partitioners,
            workers: to,
            counters: router_counters,
            origins: &router_origins,
            speed,
            pace: None,
            paced_stop: Arc::clone(&router_stop),
            last_sent: i64::MIN,
            positions: start_positions,
            forward: Vec::new(),
            interval,
            request,
            last_barrier: Instant::now(),
            wanted: false,
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
    // The latest time a result of the current pass stands for (a window's end, an event's time).
    let mut pass_max_time = i64::MIN;
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
                    Ok(FromWorker::Router(msgs)) => {
                        if first_error.is_some() {
                            continue;
                        }
                        for m in msgs {
                            match m {
                                RouterMsg::DeadLetters(recs) => {
                                    let r = recs.iter().try_for_each(|(r, time)| {
                                        write_dead_letter(&mut *dead_letter, r, *time)
                                    });
                                    if let Err(e) = r.and_then(|_| dead_letter.flush_if_due()) {
                                        fail(&mut first_error, e);
                                    }
                                }
                                RouterMsg::Barrier(m) => pending_meta = Some(m),
                            }
                        }
                    }
                    Ok(FromWorker::Output(out, origin)) => {
                        if first_error.is_some() {
                            continue;
                        }
                        for r in &out.results {
                            if let Some(t) = (0..r.batch.num_rows()).map(|i| r.times.get(i)).max() {
                                pass_max_time = pass_max_time.max(t);
                            }
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
                            let events = &partition_events[origin as usize];
                            let recs = late_json(&origins[origin as usize], query, l, events);
                            let times = late_event_times(l, events.event_time_column());
                            for (rec, time) in recs.iter().zip(times) {
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
        // A pass in which the workers snapshotted was a barrier: every result and dead letter
        // before it has been handed to the sinks above, and the router's part arrived first.
        if snapshots.iter().any(|s| !s.is_empty()) && first_error.is_none() {
            let flushed = pending_meta.as_ref().is_some_and(|m| m.flushed);
            match take_checkpoint(&mut snapshots, workers, pending_meta.take()) {
                // The operators emitted their open windows: whatever those rows stand for is
                // final, and an event for them that arrives after a restart is late.
                Ok((mut state, true, _)) if flushed && pass_max_time > i64::MIN => {
                    match Router::snapshot_with_watermark_at_least(
                        &state.router,
                        pass_max_time.saturating_add(1),
                    ) {
                        Ok(router) => {
                            state.router = router;
                            final_state = Some(state);
                        }
                        Err(e) => fail(&mut first_error, e),
                    }
                }
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

/// The columns the decoders build (the payment event's or a declared source's): those some
/// query may read (its text names them, or it reads all: [`crate::sql::columns_read`]).
fn projection_of(queries: &[QueryRun]) -> Projection {
    Projection::reading(queries.iter().map(|q| match q.plan.sql.trim() {
        // A plan made without its text: it may read anything.
        "" => None,
        sql => crate::sql::columns_read(sql),
    }))
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
        router: m.state?,
        operators: snapshots.iter_mut().map(std::mem::take).collect(),
        positions: m.positions,
    };
    Ok((state, m.last, m.requested))
}

/// Writes a dead letter stamped with its source record's time, or the wall time without one.
fn write_dead_letter(sink: &mut dyn Sink, rec: &[u8], time: Option<i64>) -> Result<()> {
    match time {
        Some(t) => sink.write_record_at(rec, t),
        None => sink.write_record(rec),
    }
}

/// The event time of each late event, to stamp its record with.
fn late_event_times(late: &LateEvents, column: usize) -> impl Iterator<Item = i64> + '_ {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    late.batch
        .column(column)
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .iter()
        .copied()
}
