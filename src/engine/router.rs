//! The router: the single place where an event is accepted or not, and where time advances.
//!
//! For each decoded batch, in file order: reject far-future timestamps, deduplicate by `event_id`,
//! advance the watermark, stamp every accepted event with the watermark it arrived under, and
//! split the batch by group key so each key's events always reach the same worker.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_plan::PhysicalExpr;

use crate::decode::{DecodedBatch, Reject, RejectReason};
use crate::error::Result;
use crate::operators::{Dedup, DedupOutcome, EventBatch, PREFETCH_DISTANCE, Watermark};
use crate::schema::{FieldId, windowed_schema};
use crate::time::rfc3339;

/// Counters kept by the router.
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterCounts {
    /// Events accepted (passed to the query).
    pub accepted: u64,
    /// Redeliveries dropped.
    pub duplicates: u64,
    /// Events dead-lettered by the router (conflicts, far-future timestamps).
    pub dead_lettered: u64,
}

/// How accepted events are spread over workers.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// By hash of the group keys: each key's events always reach the same worker.
    ByKeys(Vec<Arc<dyn PhysicalExpr>>),
    /// Everything to worker 0 (an aggregate without keys has one group per window).
    Single,
    /// Batch by batch in turn (stateless queries).
    RoundRobin,
}

/// Dedup and watermark: decides which events the queries see, and when time advances.
pub struct Router {
    /// Dedup state.
    pub dedup: Dedup,
    /// Watermark state.
    pub watermark: Watermark,
    /// Counters.
    pub counts: RouterCounts,
}

/// Spreads one query's events over its workers.
pub struct Partitioner {
    partitioning: Partitioning,
    workers: usize,
    round_robin: usize,
}

impl Router {
    /// A router with the given dedup and watermark state.
    pub fn new(dedup: Dedup, watermark: Watermark) -> Self {
        Router {
            dedup,
            watermark,
            counts: RouterCounts::default(),
        }
    }

    /// Accepts what can be accepted from a decoded batch of source partition `partition`. Rejected events are appended to
    /// `rejects`; the accepted ones are returned with their arrival watermarks.
    pub fn accept(
        &mut self,
        partition: usize,
        d: &DecodedBatch,
        raw: impl Fn(usize) -> String,
        rejects: &mut Vec<Reject>,
    ) -> Result<Option<EventBatch>> {
        let b = &d.batch;
        let ids = b.column(FieldId::EventId as usize).as_string::<i32>();
        let times = b
            .column(FieldId::EventTime as usize)
            .as_primitive::<TimestampMillisecondType>();
        // Which rows are accepted, built as they are checked.
        let mut selected = BooleanBufferBuilder::new(b.num_rows());
        let mut accepted = 0usize;
        let mut arrival = Vec::with_capacity(b.num_rows());
        // Keys first, so each row's table slot can be prefetched a few rows before it is checked.
        let keys: Vec<u128> = ids.iter().map(|id| Dedup::key(id.unwrap_or(""))).collect();
        for k in keys.iter().take(PREFETCH_DISTANCE) {
            self.dedup.prefetch(*k);
        }
        for i in 0..b.num_rows() {
            if let Some(k) = keys.get(i + PREFETCH_DISTANCE) {
                self.dedup.prefetch(*k);
            }
            let ts = times.value(i);
            // Every row gets an arrival watermark (the batch keeps its rows; see `EventBatch`).
            arrival.push(self.watermark.current());
            if self.watermark.is_far_future(partition, ts) {
                self.counts.dead_lettered += 1;
                rejects.push(Reject::new(
                    RejectReason::FutureTimestamp,
                    format!(
                        "event_time {} is more than the allowed skew ahead of the watermark {}",
                        rfc3339(ts),
                        rfc3339(self.watermark.current())
                    ),
                    d.positions[i],
                    raw(i).as_bytes(),
                ));
                selected.append(false);
                continue;
            }
            let outcome =
                self.dedup
                    .check_key(keys[i], d.payload_hashes[i], ts, self.watermark.current());
            selected.append(outcome == DedupOutcome::New);
            match outcome {
                DedupOutcome::New => {
                    self.watermark.observe(partition, ts);
                    accepted += 1;
                }
                DedupOutcome::Duplicate => self.counts.duplicates += 1,
                DedupOutcome::Conflict => {
                    self.counts.dead_lettered += 1;
                    rejects.push(Reject::new(
                        RejectReason::DuplicateConflict,
                        format!(
                            "event_id {:?} was seen before with a different payload",
                            ids.value(i)
                        ),
                        d.positions[i],
                        raw(i).as_bytes(),
                    ));
                }
            }
        }
        self.dedup.expire(self.watermark.current());
        self.counts.accepted += accepted as u64;
        if accepted == 0 {
            return Ok(None);
        }
        // Rows not accepted stay in the batch, unselected: copying every column to drop a few
        // rows was a third of the router's work, and operators filter anyway.
        let selection =
            (accepted != b.num_rows()).then(|| BooleanArray::new(selected.finish(), None));
        Ok(Some(EventBatch {
            batch: b.clone(),
            selection,
            positions: d.positions.clone(),
            arrival_watermarks: arrival,
        }))
    }
}

impl Partitioner {
    /// A partitioner over `workers` workers.
    pub fn new(partitioning: Partitioning, workers: usize) -> Self {
        Partitioner {
            partitioning,
            workers: workers.max(1),
            round_robin: 0,
        }
    }

    /// The partitioning a planned query needs: by group key, everything to one worker for a
    /// keyless aggregate, or round-robin for a stateless query.
    pub fn for_plan(plan: &crate::sql::StreamPlan) -> Partitioning {
        use crate::sql::PlanKind;
        match &plan.kind {
            PlanKind::Window { aggregate, .. } if aggregate.keys.is_empty() => Partitioning::Single,
            PlanKind::Window { aggregate, .. } => Partitioning::ByKeys(aggregate.keys.clone()),
            PlanKind::Map { .. } => Partitioning::RoundRobin,
        }
    }

    /// Splits accepted events into one part per worker (parts may be empty).
    pub fn partition(&mut self, events: &EventBatch) -> Result<Vec<Option<EventBatch>>> {
        let n = self.workers;
        let mut parts: Vec<Option<EventBatch>> = (0..n).map(|_| None).collect();
        let keys = match &self.partitioning {
            _ if n == 1 => {
                parts[0] = Some(events.clone());
                return Ok(parts);
            }
            Partitioning::Single => {
                parts[0] = Some(events.clone());
                return Ok(parts);
            }
            Partitioning::RoundRobin => {
                let w = self.round_robin % n;
                self.round_robin += 1;
                parts[w] = Some(events.clone());
                return Ok(parts);
            }
            Partitioning::ByKeys(keys) => keys,
        };
        let rows = events.batch.num_rows();
        let zeros: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![0i64; rows]).with_timezone("UTC"));
        let mut cols = events.batch.columns().to_vec();
        cols.push(Arc::clone(&zeros));
        cols.push(zeros);
        let eval = RecordBatch::try_new(windowed_schema(), cols)?;
        let keys = keys
            .iter()
            .map(|k| k.evaluate(&eval)?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut hashes = vec![0u64; rows];
        create_hashes(&keys, &RandomState::with_seed(0x9a75_17ea), &mut hashes)?;
        let mut idx: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (r, h) in hashes.iter().enumerate() {
            if events.is_selected(r) {
                idx[(*h % n as u64) as usize].push(r as u32);
            }
        }
        for (w, rows) in idx.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let mut part = events.take(&UInt32Array::from(rows))?;
            part.selection = None; // only selected rows were taken
            parts[w] = Some(part);
        }
        Ok(parts)
    }
}
