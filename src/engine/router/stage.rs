//! The router's thread: reads decoded chunks in source order, accepts events, partitions them
//! per query and sends every worker one step per batch; takes checkpoint barriers between
//! chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use super::{Partitioner, Router, RouterCounts};
use crate::decode::{Origin, ReasonCounts, Reject};
use crate::engine::worker::{Step, ToWorker};
use crate::engine::{OnStop, Progress, QueryProgress};
use crate::error::{Error, Result};
use crate::operators::EventBatch;
use crate::sink::dead_letter_json;
use crate::source::Chunk;

/// What the router sends the sink loop, in order: dead letters, and its part of each checkpoint
/// ahead of the workers' snapshots. They ride on the messages to the first worker (see
/// `engine/worker.rs`), so a checkpoint covers exactly the dead letters of the events before its
/// barrier.
pub(in crate::engine) enum RouterMsg {
    /// Dead-letter records, each with its source record's timestamp where the source has one.
    DeadLetters(Vec<(Vec<u8>, Option<i64>)>),
    Barrier(BarrierMeta),
}

/// The router's part of a checkpoint.
pub(in crate::engine) struct BarrierMeta {
    /// The router's snapshot ([`Router::snapshot`]).
    pub(in crate::engine) state: Result<Vec<u8>>,
    /// Per source partition, the position after the last chunk before the barrier.
    pub(in crate::engine) positions: BTreeMap<u32, u64>,
    /// Whether this is the run's end.
    pub(in crate::engine) last: bool,
    /// Whether the run ends by finishing its operators (every open window emitted), rather
    /// than by a snapshot of them: the checkpoint must then hold a watermark past what they
    /// emitted.
    pub(in crate::engine) flushed: bool,
    /// Whether it was requested (a savepoint).
    pub(in crate::engine) requested: bool,
}

/// The timestamp of the source record at `position`, for a source that keeps one (a log).
pub(in crate::engine) fn record_time(
    times: &Option<(u64, Vec<i64>)>,
    position: u64,
) -> Option<i64> {
    let (first, times) = times.as_ref()?;
    times
        .get(usize::try_from(position.checked_sub(*first)?).ok()?)
        .copied()
}

/// What the router counted: its counters, records read, unknown fields, dead letters by reason.
pub(in crate::engine) type Routed = Result<(RouterCounts, u64, u64, ReasonCounts)>;

/// The router thread's state.
pub(in crate::engine) struct RouterLoop<'a> {
    pub(in crate::engine) router: Router,
    /// One per query, in order.
    pub(in crate::engine) partitioners: Vec<Partitioner>,
    /// `workers[query][worker]`.
    pub(in crate::engine) workers: Vec<Vec<SyncSender<ToWorker>>>,
    /// Per query: events offered to it (accepted by the router).
    pub(in crate::engine) counters: Vec<Arc<QueryProgress>>,
    pub(in crate::engine) origins: &'a [Origin],
    pub(in crate::engine) speed: Option<f64>,
    pub(in crate::engine) pace: Option<(i64, Instant)>,
    /// Set by a stop request: pacing (`--speed`) ends at once, so what was already read drains
    /// without sleeping and Ctrl-C stops a paced replay promptly.
    pub(in crate::engine) paced_stop: Arc<AtomicBool>,
    /// The watermark last sent to the workers.
    pub(in crate::engine) last_sent: i64,
    pub(in crate::engine) positions: BTreeMap<u32, u64>,
    /// Records for the sink loop not yet sent: they go with the next message to the first
    /// worker.
    pub(in crate::engine) forward: Vec<RouterMsg>,
    pub(in crate::engine) interval: Option<Duration>,
    pub(in crate::engine) request: Option<Arc<AtomicBool>>,
    pub(in crate::engine) last_barrier: Instant,
    /// A chunk asked for a checkpoint ([`crate::source::ChunkTag::wants_checkpoint`]).
    pub(in crate::engine) wanted: bool,
    /// Live counters for a status line.
    pub(in crate::engine) progress: Arc<Progress>,
    /// Dead letters by reason, decoder's and router's.
    pub(in crate::engine) reasons: ReasonCounts,
}

impl RouterLoop<'_> {
    /// Runs until the source ends (or fails); then tells every worker how to end.
    pub(in crate::engine) fn run(
        &mut self,
        chunks: Receiver<Result<Chunk>>,
        end: OnStop,
        stop: &AtomicBool,
    ) -> Routed {
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
            let step = || match end {
                OnStop::Finish => Step::Finish { snapshot: false },
                OnStop::Snapshot if stopped => Step::Snapshot,
                OnStop::Snapshot => Step::Finish { snapshot: true },
            };
            if end == OnStop::Snapshot {
                self.barrier_meta(true, false);
                if let Some(RouterMsg::Barrier(m)) = self.forward.last_mut() {
                    m.flushed = !stopped;
                }
            }
            result = self.send_all(step);
        }
        self.workers.clear();
        result?;
        let mut counts = self.router.counts;
        counts.dead_lettered += decode_dead;
        Ok((counts, read, unknown, self.reasons))
    }

    /// Queues the router's part of a checkpoint for the sink loop, behind the dead letters of
    /// the events before the barrier.
    fn barrier_meta(&mut self, last: bool, requested: bool) {
        let meta = BarrierMeta {
            state: self.router.snapshot(),
            positions: self.positions.clone(),
            last,
            requested,
            flushed: false,
        };
        self.forward.push(RouterMsg::Barrier(meta));
    }

    /// Sends every worker the same step, the queued router records with the first.
    fn send_all(&mut self, step: impl Fn() -> Step) -> Result<()> {
        let mut forward = std::mem::take(&mut self.forward);
        for tx in self.workers.iter().flatten() {
            let msg = ToWorker {
                step: step(),
                forward: std::mem::take(&mut forward),
            };
            if tx.send(msg).is_err() {
                return Err(Error::Internal("a worker stopped early".into()));
            }
        }
        Ok(())
    }

    /// Takes a checkpoint if one is due: the barrier goes to every worker behind the events
    /// already sent, so each snapshot covers exactly the events before it.
    fn maybe_barrier(&mut self) -> Result<()> {
        let requested = self
            .request
            .as_ref()
            .is_some_and(|r| r.swap(false, Ordering::Relaxed));
        let wanted = std::mem::take(&mut self.wanted);
        let due = self
            .interval
            .is_some_and(|i| wanted || self.last_barrier.elapsed() >= i);
        if !(requested || due) {
            return Ok(());
        }
        self.last_barrier = Instant::now();
        self.barrier_meta(false, requested);
        self.send_all(|| Step::Snapshot)
    }

    fn chunk(&mut self, c: Chunk) -> Result<()> {
        self.wanted |= c.tag.wants_checkpoint;
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
        if c.tag.last {
            self.router.watermark.end(p);
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
            self.forward.push(RouterMsg::DeadLetters(recs));
        }
        for (accepted, watermark) in routed {
            if let (Some(speed), Some(ev)) = (self.speed, &accepted) {
                let time = self.router.events_of(p).event_time_column();
                throttle(&mut self.pace, ev, time, speed, &self.paced_stop);
            }
            self.step(accepted.as_ref(), watermark, c.tag.partition)?;
        }
        // Time may move without events (a partition went idle): tell the workers. Dead letters
        // of a chunk without a step go out with an empty one, not with some later chunk.
        let wm = self.router.watermark.current();
        if wm > self.last_sent || !self.forward.is_empty() {
            self.step(None, wm.max(self.last_sent), c.tag.partition)?;
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
        self.progress
            .duplicates
            .store(self.router.counts.duplicates, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one step (events for each query's workers, and the watermark) to every worker.
    fn step(&mut self, events: Option<&EventBatch>, watermark: i64, origin: u32) -> Result<()> {
        let mut forward = std::mem::take(&mut self.forward);
        for (q, part) in self.partitioners.iter_mut().enumerate() {
            let mut parts = match events {
                Some(ev) => {
                    self.counters[q]
                        .events_in
                        .fetch_add(ev.num_events() as u64, Ordering::Relaxed);
                    part.partition(ev)?
                }
                None => (0..self.workers[q].len()).map(|_| None).collect(),
            };
            for (w, tx) in self.workers[q].iter().enumerate() {
                let msg = ToWorker {
                    step: Step::Batch {
                        events: parts[w].take(),
                        watermark,
                        origin,
                    },
                    forward: std::mem::take(&mut forward),
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
fn throttle(
    pace: &mut Option<(i64, Instant)>,
    ev: &EventBatch,
    time_column: usize,
    speed: f64,
    stop: &AtomicBool,
) {
    if stop.load(Ordering::Relaxed) {
        return;
    }
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let times = ev
        .batch
        .column(time_column)
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
