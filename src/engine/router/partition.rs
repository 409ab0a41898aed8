//! Partitioning: spreads one query's accepted events over its workers as its plan requires
//! ([`Partitioning`]).
//!
//! By key, the router applies the query's WHERE clause and evaluates its group keys here, once:
//! only the rows that pass are hashed and copied to a worker, and the key columns travel with
//! them ([`EventBatch::keys`]) so the worker does not evaluate them again.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::PhysicalExpr;

use crate::error::{Error, Result};
use crate::operators::{EventBatch, named_evaluation_error, where_mask};
use crate::sql::{Partitioning, StreamPlan};

/// Spreads one query's events over its workers.
pub struct Partitioner {
    /// The query's name, for its evaluation errors (as its operator names them).
    query: String,
    how: How,
    workers: usize,
    round_robin: usize,
}

enum How {
    /// Everything to one worker (one worker, or a keyless aggregate).
    Single,
    RoundRobin,
    ByKeys(KeyEval),
    /// Per stream of the run (a join of two streams), its own keys.
    ByStreamKeys(Vec<KeyEval>),
}

/// The WHERE clause and group keys, bound to the event schema; the keys are rebound to just
/// the columns they read, so filtering copies those columns and no others.
struct KeyEval {
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Event-schema indices of the columns the keys read.
    key_columns: Vec<usize>,
    key_schema: datafusion::arrow::datatypes::SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
}

impl Partitioner {
    /// A partitioner of `plan`'s events (of the schema `events`) over `workers` workers, as the
    /// plan requires ([`StreamPlan::partitioning`]).
    pub fn new(
        plan: &StreamPlan,
        events: &crate::schema::EventSchema,
        workers: usize,
    ) -> Result<Self> {
        let workers = workers.max(1);
        let how = match plan.partitioning() {
            _ if workers == 1 => How::Single,
            Partitioning::Single => How::Single,
            Partitioning::RoundRobin => How::RoundRobin,
            Partitioning::ByKeys { filters, keys } => {
                How::ByKeys(KeyEval::new(filters, keys, events)?)
            }
            Partitioning::ByStreamKeys(per_stream) => How::ByStreamKeys(
                per_stream
                    .into_iter()
                    .zip(plan.stream_events())
                    .map(|(keys, e)| KeyEval::new(vec![], keys, &e))
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Partitioner {
            query: plan.name.clone(),
            how,
            workers,
            round_robin: 0,
        })
    }

    /// Splits accepted events into one part per worker (parts may be empty).
    pub fn partition(&mut self, events: &EventBatch) -> Result<Vec<Option<EventBatch>>> {
        let n = self.workers;
        let mut parts: Vec<Option<EventBatch>> = (0..n).map(|_| None).collect();
        let eval = match &self.how {
            How::Single => {
                parts[0] = Some(events.clone());
                return Ok(parts);
            }
            How::RoundRobin => {
                let w = self.round_robin % n;
                self.round_robin += 1;
                parts[w] = Some(events.clone());
                return Ok(parts);
            }
            How::ByKeys(eval) => eval,
            How::ByStreamKeys(evals) => evals
                .get(events.stream)
                .ok_or_else(|| Error::Internal(format!("events of stream {}", events.stream)))?,
        };
        let batch = &events.batch;
        let rows = batch.num_rows();
        // WHERE over the whole batch (a predicate on a dictionary column compares a few words),
        // combined with the router's selection.
        let mask = where_mask(&eval.filters, batch, events.selection.as_ref())
            .map_err(|e| named_evaluation_error(&self.query, e))?
            .filter(|m| m.true_count() != rows);
        let kept = match &mask {
            Some(m) if m.true_count() == 0 => return Ok(parts),
            Some(m) => Some(UInt32Array::from_iter_values(
                m.values().set_indices().map(|i| i as u32),
            )),
            None => None,
        };
        let keys = eval
            .keys(batch, mask.as_ref())
            .map_err(|e| named_evaluation_error(&self.query, e))?;
        let kept_rows = keys.first().map_or(rows, |k| k.len());
        let mut hashes = vec![0u64; kept_rows];
        create_hashes(&keys, &RandomState::with_seed(0x9a75_17ea), &mut hashes)?;
        // Per worker: the rows' indices in the batch, and in the kept rows (the key columns).
        let mut idx: Vec<(Vec<u32>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); n];
        for (k, h) in hashes.iter().enumerate() {
            let w = (*h % n as u64) as usize;
            let row = kept.as_ref().map_or(k as u32, |kept| kept.value(k));
            idx[w].0.push(row);
            idx[w].1.push(k as u32);
        }
        for (w, (rows, local)) in idx.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let mut part = events.take(&UInt32Array::from(rows))?;
            let local = UInt32Array::from(local);
            part.selection = None; // only rows that passed were taken
            part.keys = Some(
                keys.iter()
                    .map(|k| Ok(take(k.as_ref(), &local, None)?))
                    .collect::<Result<_>>()?,
            );
            parts[w] = Some(part);
        }
        Ok(parts)
    }
}

impl KeyEval {
    /// `keys` (and `filters`) bound to the columns of `events` they read.
    fn new(
        filters: Vec<Arc<dyn PhysicalExpr>>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        events: &crate::schema::EventSchema,
    ) -> Result<Self> {
        let mut cols = std::collections::BTreeSet::new();
        for k in &keys {
            cols.extend(collect_columns(k).iter().map(|c| c.index()));
        }
        let key_columns: Vec<usize> = cols.into_iter().collect();
        let schema = Arc::clone(events.arrow());
        if let Some(c) = key_columns.iter().find(|c| **c >= schema.fields().len()) {
            return Err(Error::Internal(format!(
                "a group key reads column {c}, which is not an event column"
            )));
        }
        let key_schema = Arc::new(schema.project(&key_columns)?);
        let keys = keys
            .into_iter()
            .map(|k| crate::operators::rebind(&k, &key_columns))
            .collect::<Result<_>>()?;
        Ok(KeyEval {
            filters,
            key_columns,
            key_schema,
            keys,
        })
    }

    /// The group keys over the rows `mask` keeps (all when `None`).
    fn keys(&self, batch: &RecordBatch, mask: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let cols = self
            .key_columns
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect();
        let mut b = RecordBatch::try_new_with_options(
            Arc::clone(&self.key_schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        if let Some(m) = mask {
            b = filter_record_batch(&b, m)?;
        }
        let rows = b.num_rows();
        Ok(self
            .keys
            .iter()
            .map(|k| k.evaluate(&b)?.into_array(rows))
            .collect::<datafusion::error::Result<_>>()?)
    }
}
