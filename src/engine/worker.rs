//! A worker: one thread running one query's [`Operator`] over its share of the events.
//!
//! The protocol with the router and the sink loop: the router sends every worker exactly one
//! [`ToWorker`] per step, and a worker answers each with its output, a snapshot at a barrier, and
//! [`FromWorker::EpochDone`]; the sink loop reads one answer per worker per step, in the same
//! order, so results come out in watermark order whatever the worker count. The router's own
//! records for the sink loop (dead letters, its part of a checkpoint) ride on the messages to
//! the first worker of the first query and come back ahead of that worker's answer: they stay
//! in order with the results, and every channel of the run stays bounded.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use super::router::stage::RouterMsg;
use crate::error::Error;
use crate::operators::{EventBatch, Operator, OperatorOutput};

/// One message from the router to a worker.
pub(super) struct ToWorker {
    /// What the worker does.
    pub(super) step: Step,
    /// Router records for the sink loop, handed back first (only to the first worker).
    pub(super) forward: Vec<RouterMsg>,
}

/// What a worker does in one step. Nearly every step is a batch, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub(super) enum Step {
    /// Process events (if any), then advance the watermark.
    Batch {
        events: Option<EventBatch>,
        watermark: i64,
        /// The source partition the events came from (names it in late records).
        origin: u32,
    },
    /// The input ended: emit every open window, then snapshot if asked.
    Finish { snapshot: bool },
    /// A barrier: snapshot the state as of every event before it (no emission).
    Snapshot,
}

/// One part of a worker's answer to a step.
pub(super) enum FromWorker {
    /// The router's records forwarded with the step, ahead of the worker's own answer.
    Router(Vec<RouterMsg>),
    Output(OperatorOutput, u32),
    Snapshot(Vec<u8>),
    /// The end of the answer to one step.
    EpochDone,
    Failed(Error),
}

/// Per-worker operator metrics, logged when the worker ends.
#[derive(Debug, Default)]
struct WorkerMetrics {
    rows_in: u64,
    rows_out: u64,
    late: u64,
    busy: Duration,
}

/// Runs `op` over the steps from `rx` until the router closes the channel.
pub(super) fn worker_loop(
    query: &str,
    worker: usize,
    mut op: Box<dyn Operator>,
    rx: Receiver<ToWorker>,
    tx: SyncSender<FromWorker>,
    counted: &super::QueryProgress,
) {
    let mut failed = false;
    let mut m = WorkerMetrics::default();
    while let Ok(ToWorker { step, forward }) = rx.recv() {
        let mut out = OperatorOutput::default();
        let t0 = Instant::now();
        let mut origin = 0;
        let mut snapshot = None;
        let r = match step {
            Step::Batch {
                events,
                watermark,
                origin: o,
            } => {
                origin = o;
                m.rows_in += events.as_ref().map_or(0, |e| e.num_events() as u64);
                events
                    .as_ref()
                    .map_or(Ok(()), |e| op.process(e, &mut out))
                    .and_then(|_| op.advance_watermark(watermark, &mut out))
            }
            Step::Finish { snapshot: snap } => op.finish(&mut out).and_then(|_| {
                if snap {
                    snapshot = Some(op.snapshot()?);
                }
                Ok(())
            }),
            Step::Snapshot => op.snapshot().map(|s| snapshot = Some(s)),
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
            // Still answer every step: the sink loop reads one answer per worker per step, and
            // a worker that went quiet would block it (and, behind it, the router).
            if tx.send(FromWorker::EpochDone).is_err() {
                break;
            }
            continue;
        }
        let mut msgs = Vec::with_capacity(4);
        if !forward.is_empty() {
            msgs.push(FromWorker::Router(forward));
        }
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
