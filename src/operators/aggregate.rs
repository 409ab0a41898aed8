//! What every windowed aggregation does the same way: evaluate the query's expressions on an
//! incoming batch, and turn a closed window's groups into result rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::boolean::and;
use datafusion::arrow::compute::{filter_record_batch, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::PhysicalExpr;

use super::{EventBatch, LateEvents};
use crate::error::{Error, Result};
use crate::sql::{AggregateSpec, KeySlot, Stage, apply_stages, apply_stages_timed};

fn as_mask(a: ArrayRef, what: &str) -> Result<BooleanArray> {
    a.as_boolean_opt()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("{what} produced {}", a.data_type())))
}

/// `mask` with null entries read as false, ready to select rows by its values alone.
fn nulls_as_false(mask: BooleanArray) -> BooleanArray {
    match mask.nulls() {
        Some(_) => prep_null_mask_filter(&mask),
        None => mask,
    }
}

/// The rows of `batch` that `selection` (all when `None`) and every WHERE conjunct in
/// `predicates` keep, with a null predicate read as false; `None` when there is nothing to apply.
pub(crate) fn where_mask(
    predicates: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
    selection: Option<&BooleanArray>,
) -> Result<Option<BooleanArray>> {
    let n = batch.num_rows();
    let mut mask: Option<BooleanArray> = selection.cloned();
    for p in predicates {
        let m = as_mask(p.evaluate(batch)?.into_array(n)?, "WHERE")?;
        mask = Some(match mask {
            None => m,
            Some(prev) => and(&prev, &m)?,
        });
    }
    Ok(mask.map(nulls_as_false))
}

/// The columns `projection` of `events` (no copy), as a batch of `schema`: what an operator
/// evaluates its WHERE clause and expressions over.
pub(super) fn projected(
    events: &RecordBatch,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let cols = projection
        .iter()
        .map(|i| Arc::clone(events.column(*i)))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(events.num_rows())),
    )?)
}

/// Key columns, each aggregate's argument columns, and each aggregate's FILTER mask.
pub(super) type Columns = (Vec<ArrayRef>, Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

/// Each aggregate's argument columns and FILTER mask.
pub(super) type Inputs = (Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

/// A batch evaluated for aggregation: event times, key columns, arguments and filters.
pub(super) struct Prepared {
    /// Event time of each row (after WHERE).
    pub times: Vec<i64>,
    /// Index of each row in the operator's input batch (after WHERE; `None`: the same), once
    /// [`Self::index_rows`] has run.
    pub input_rows: Option<UInt32Array>,
    /// The input rows WHERE kept, until [`Self::index_rows`] turns them into `input_rows` (only
    /// late events and sessions need them: most batches never do).
    kept: Option<BooleanArray>,
    /// Non-window key columns.
    pub keys: Vec<ArrayRef>,
    /// For each aggregate, its argument columns.
    pub args: Vec<Vec<ArrayRef>>,
    /// For each aggregate, its FILTER mask.
    pub filters: Vec<Option<BooleanArray>>,
}

impl Prepared {
    /// Number of rows.
    pub(super) fn len(&self) -> usize {
        self.times.len()
    }

    /// Makes [`Self::input_row`] available.
    pub(super) fn index_rows(&mut self) {
        if let Some(kept) = self.kept.take() {
            // Walking the set bits a word at a time (a per-row `value(i)` was 3 % of the
            // operator's profile).
            self.input_rows = Some(UInt32Array::from_iter_values(
                kept.values().set_indices().map(|i| i as u32),
            ));
        }
    }

    /// Index into the operator's input batch of prepared row `r` (after [`Self::index_rows`]).
    pub(super) fn input_row(&self, r: usize) -> usize {
        debug_assert!(self.kept.is_none(), "index_rows first");
        self.input_rows
            .as_ref()
            .map_or(r, |ids| ids.value(r) as usize)
    }

    /// Splits off the rows that `is_late(event_time, arrival_watermark)` calls late: they are
    /// returned as original events for the late output, and removed from `self`. `is_late` must
    /// be monotone: false for an event time means false for every later one, and true under a
    /// watermark means true under every higher one.
    pub(super) fn split_late(
        &mut self,
        input: &EventBatch,
        is_late: impl Fn(i64, i64) -> bool,
    ) -> Result<Option<LateEvents>> {
        // `is_late` is monotone (a later event is never later than an earlier one; a higher
        // watermark makes more events late), so if the earliest event is on time under the
        // highest watermark, all are — the common case, decided without a per-row pass.
        if let (Some(min_ts), Some(max_wm)) = (
            self.times.iter().min(),
            input.arrival_watermarks.iter().max(),
        ) && !is_late(*min_ts, *max_wm)
        {
            return Ok(None);
        }
        self.index_rows();
        let mut late_rows = Vec::new();
        let mut keep = Vec::with_capacity(self.len());
        for (r, &ts) in self.times.iter().enumerate() {
            let row = self.input_row(r);
            let late = is_late(ts, input.arrival_watermarks[row]);
            if late {
                late_rows.push(row as u32);
            }
            keep.push(!late);
        }
        if late_rows.is_empty() {
            return Ok(None);
        }
        let keep_idx = UInt32Array::from_iter_values(
            keep.iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .map(|(i, _)| i as u32),
        );
        let (keys, args, filters) = self.select(&keep_idx)?;
        self.times = keep_idx
            .values()
            .iter()
            .map(|i| self.times[*i as usize])
            .collect();
        self.input_rows = Some(UInt32Array::from_iter_values(
            keep_idx
                .values()
                .iter()
                .map(|i| self.input_row(*i as usize) as u32),
        ));
        self.keys = keys;
        self.args = args;
        self.filters = filters;
        Ok(Some(late_events(input, &late_rows)?))
    }

    /// Rows `idx` of every column.
    pub(super) fn select(&self, idx: &UInt32Array) -> Result<Columns> {
        let keys = self
            .keys
            .iter()
            .map(|k| take(k, idx, None))
            .collect::<Result<_, _>>()?;
        let (args, filters) = self.select_inputs(idx)?;
        Ok((keys, args, filters))
    }

    /// Rows `idx` of the aggregates' arguments and filters.
    pub(super) fn select_inputs(&self, idx: &UInt32Array) -> Result<Inputs> {
        let args = self
            .args
            .iter()
            .map(|a| {
                a.iter()
                    .map(|c| take(c, idx, None))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| take(f, idx, None).map(|a| a.as_boolean().clone()))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok((args, filters))
    }
}

/// Each aggregate's arguments and FILTER, for rows that add nothing ([`AggregateCore::no_rows`]).
pub(super) type NoRows = (Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

/// Expression evaluation and output assembly shared by the window operators.
///
/// Only the columns the query reads are kept from an incoming batch: WHERE is evaluated on them
/// and only they are filtered, so a query over three of sixteen columns never copies the other
/// thirteen (most of them strings).
pub(super) struct AggregateCore {
    /// The planned aggregation.
    pub spec: AggregateSpec,
    /// Event columns the query reads, in schema order.
    projection: Vec<usize>,
    /// Schema of the projected batch.
    schema: SchemaRef,
    /// Index of `event_time` in the projected batch.
    time: usize,
    /// WHERE conjuncts, over the projected batch.
    predicates: Vec<Arc<dyn PhysicalExpr>>,
    /// Grouping keys, over the projected batch.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Each aggregate's arguments, over the projected batch.
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Each aggregate's FILTER, over the projected batch.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// For each FILTER, the earlier aggregate with the same one (`count(*) FILTER (WHERE x)` and
    /// `sum(a) FILTER (WHERE x)` share one evaluation).
    filter_same_as: Vec<Option<usize>>,
    /// HAVING, when it reads no group key.
    having: Option<Having>,
}

/// A HAVING clause that reads only aggregates and window bounds, so it can be decided before a
/// window's key columns are built: a hop window of 34,000 cards then builds keys for the few
/// hundred that pass `count(*) >= 5` (card_velocity) instead of for all of them.
struct Having {
    /// The predicate, over `schema`.
    predicate: Arc<dyn PhysicalExpr>,
    /// The columns it reads, projected from the aggregate's output schema.
    schema: SchemaRef,
    /// Their indices in the aggregate's output schema.
    columns: Vec<usize>,
}

impl Having {
    /// The first output stage, when it is a filter that reads no group key.
    fn of(spec: &AggregateSpec) -> Result<Option<Having>> {
        let Some(Stage::Filter(p)) = spec.output_stages.first() else {
            return Ok(None);
        };
        let mut columns: Vec<usize> = collect_columns(p).iter().map(|c| c.index()).collect();
        columns.sort_unstable();
        columns.dedup();
        let reads_key = columns
            .iter()
            .any(|c| matches!(spec.key_layout.get(*c), Some(KeySlot::Key(_))));
        if reads_key {
            return Ok(None);
        }
        let schema = Arc::new(spec.output_schema.project(&columns)?);
        Ok(Some(Having {
            predicate: super::rebind(p, &columns)?,
            schema,
            columns,
        }))
    }
}

/// Window bounds as a column of `UTC` timestamps.
fn bound_column(v: &[i64]) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v.to_vec()).with_timezone("UTC"))
}

impl AggregateCore {
    /// Prepares evaluation of `spec` over projected event batches.
    pub(super) fn new(spec: AggregateSpec) -> Result<Self> {
        let mut predicates = Vec::new();
        for stage in &spec.input_stages {
            match stage {
                Stage::Filter(p) => predicates.push(Arc::clone(p)),
                Stage::Project { .. } | Stage::Rank { .. } | Stage::Lookup(_) => {
                    return Err(Error::Internal(
                        "a projection below a windowed aggregate is not supported".into(),
                    ));
                }
            }
        }
        // An ordered aggregate's accumulator takes its ORDER BY values after its arguments (as
        // DataFusion's own aggregate operator passes them).
        let args: Vec<Vec<Arc<dyn PhysicalExpr>>> = spec
            .aggregates
            .iter()
            .map(|a| {
                let all = a.all_expressions();
                all.args.into_iter().chain(all.order_by_exprs).collect()
            })
            .collect();
        let time_column = spec.events.event_time_column();
        let mut used = std::collections::BTreeSet::from([time_column]);
        let all = predicates
            .iter()
            .chain(&spec.keys)
            .chain(args.iter().flatten())
            .chain(spec.filters.iter().flatten());
        for e in all {
            used.extend(collect_columns(e).iter().map(|c| c.index()));
        }
        let projection: Vec<usize> = used.into_iter().collect();
        let schema = Arc::new(spec.events.windowed().project(&projection)?);
        let rebind = |e: &Arc<dyn PhysicalExpr>| super::rebind(e, &projection);
        let time = projection
            .iter()
            .position(|c| *c == time_column)
            .expect("the event time is projected");
        let filter_same_as = spec
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = f.as_ref()?;
                spec.filters[..i]
                    .iter()
                    .position(|g| g.as_ref().is_some_and(|g| g.as_ref() == f.as_ref()))
            })
            .collect();
        Ok(AggregateCore {
            having: Having::of(&spec)?,
            filter_same_as,
            predicates: predicates.iter().map(rebind).collect::<Result<_>>()?,
            keys: spec.keys.iter().map(rebind).collect::<Result<_>>()?,
            args: args
                .iter()
                .map(|a| a.iter().map(rebind).collect::<Result<Vec<_>>>())
                .collect::<Result<_>>()?,
            filters: spec
                .filters
                .iter()
                .map(|f| f.as_ref().map(rebind).transpose())
                .collect::<Result<_>>()?,
            spec,
            projection,
            schema,
            time,
        })
    }

    /// Evaluates the WHERE clause, keys, arguments and FILTERs over the selected rows of `input`
    /// (all when its selection is `None`). When the router already applied WHERE and evaluated
    /// the keys ([`EventBatch::keys`]), they are taken as they are.
    pub(super) fn prepare(&self, input: &EventBatch) -> Result<Prepared> {
        let events = &input.batch;
        let selection = input.selection.as_ref();
        let routed_keys = input.keys.as_ref();
        debug_assert!(
            routed_keys.is_none() || selection.is_none(),
            "routed keys cover every row"
        );
        let predicates: &[Arc<dyn PhysicalExpr>] = match routed_keys {
            Some(_) => &[],
            None => &self.predicates,
        };
        let n = events.num_rows();
        let mut batch = projected(events, &self.projection, &self.schema)?;
        let mut kept = None;
        if let Some(mask) = where_mask(predicates, &batch, selection)?
            && mask.true_count() != n
        {
            batch = filter_record_batch(&batch, &mask)?;
            // Remember which input rows survive WHERE, to map late rows back to events.
            kept = Some(mask);
        }
        let rows = batch.num_rows();
        let times = batch
            .column(self.time)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            Ok(e.evaluate(&batch)?.into_array(rows)?)
        };
        let keys = match routed_keys {
            Some(keys) => keys.clone(),
            None => self.keys.iter().map(eval).collect::<Result<_>>()?,
        };
        let args = self
            .args
            .iter()
            .map(|a| a.iter().map(eval).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let mut filters: Vec<Option<BooleanArray>> = Vec::with_capacity(self.filters.len());
        for (f, same) in self.filters.iter().zip(&self.filter_same_as) {
            let mask = match (f, same) {
                (Some(_), Some(j)) => filters[*j].clone(),
                (Some(f), None) => Some(as_mask(eval(f)?, "FILTER")?),
                (None, _) => None,
            };
            filters.push(mask);
        }
        Ok(Prepared {
            times,
            input_rows: None,
            kept,
            keys,
            args,
            filters,
        })
    }

    /// Assembles result rows for a closed window and applies HAVING and the SELECT list.
    /// Inputs that add no row to any aggregate: `n` rows of null arguments with every FILTER
    /// false. Groups interned with them hold the aggregates of no rows (`count(*)` 0, `sum`
    /// NULL): a dense window's quiet keys.
    pub(super) fn no_rows(&self, n: usize) -> Result<NoRows> {
        let args = self
            .args
            .iter()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        Ok(datafusion::arrow::array::new_null_array(
                            &e.data_type(&self.schema)?,
                            n,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .args
            .iter()
            .map(|_| Some(BooleanArray::from(vec![false; n])))
            .collect();
        Ok((args, filters))
    }

    pub(super) fn output(
        &self,
        start: i64,
        end: i64,
        keys: Vec<ArrayRef>,
        aggs: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<RecordBatch> {
        let batch = self.aggregated(&vec![start; rows], &vec![end; rows], keys, aggs, rows)?;
        apply_stages(&self.spec.output_stages, &batch)
    }

    /// Which of a window's groups pass HAVING, decided from their aggregates alone (`None`: the
    /// query has no such HAVING, keep all). The groups kept still go through [`Self::output`],
    /// which applies HAVING again; this only spares building keys of groups it would drop.
    pub(super) fn having_mask(
        &self,
        start: i64,
        end: i64,
        aggs: &[ArrayRef],
        rows: usize,
    ) -> Result<Option<BooleanArray>> {
        let Some(h) = &self.having else {
            return Ok(None);
        };
        let keys = self.spec.key_layout.len();
        let cols = h
            .columns
            .iter()
            .map(|c| match self.spec.key_layout.get(*c) {
                Some(KeySlot::WindowStart) => bound_column(&vec![start; rows]),
                Some(KeySlot::WindowEnd) => bound_column(&vec![end; rows]),
                _ => Arc::clone(&aggs[c - keys]),
            })
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&h.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let mask = as_mask(h.predicate.evaluate(&batch)?.into_array(rows)?, "HAVING")?;
        Ok(Some(nulls_as_false(mask)))
    }

    /// Like [`Self::output`], with each row's own window bounds (session windows differ per key);
    /// also returns the window end of each row that passed HAVING.
    pub(super) fn output_rows(
        &self,
        starts: &[i64],
        ends: &[i64],
        keys: Vec<ArrayRef>,
        aggs: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<(RecordBatch, Vec<i64>)> {
        let batch = self.aggregated(starts, ends, keys, aggs, rows)?;
        apply_stages_timed(&self.spec.output_stages, &batch, None, ends)
    }

    /// The output rows of groups without window bounds (a GROUP BY over the whole stream),
    /// before HAVING and the SELECT list.
    pub(super) fn unwindowed(
        &self,
        keys: Vec<ArrayRef>,
        aggs: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<RecordBatch> {
        self.aggregated(&[], &[], keys, aggs, rows)
    }

    /// The aggregate's output rows before HAVING and the SELECT list.
    fn aggregated(
        &self,
        starts: &[i64],
        ends: &[i64],
        keys: Vec<ArrayRef>,
        aggs: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<RecordBatch> {
        let mut cols = Vec::with_capacity(self.spec.key_layout.len() + aggs.len());
        for slot in &self.spec.key_layout {
            cols.push(match slot {
                KeySlot::WindowStart => bound_column(starts),
                KeySlot::WindowEnd => bound_column(ends),
                KeySlot::Key(i) => Arc::clone(&keys[*i]),
            });
        }
        cols.extend(aggs);
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.spec.output_schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok(batch)
    }
}

/// Rows of a batch by bucket (window or pane start).
pub(super) enum Buckets {
    /// Every row is in this bucket (the common, in-order case).
    One(i64),
    /// Row indices per bucket, in ascending bucket order.
    Many(std::collections::BTreeMap<i64, Vec<u32>>),
}

/// Groups the rows of `times` (non-empty) by `bucket_of(time)`, which must be monotone. One
/// bucket for the whole batch is told by the earliest and latest time alone, without a vector of
/// per-row buckets.
pub(super) fn bucket_rows(times: &[i64], bucket_of: impl Fn(i64) -> i64) -> Buckets {
    let (min, max) = times
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
    if bucket_of(min) == bucket_of(max) {
        return Buckets::One(bucket_of(min));
    }
    let mut m: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (i, t) in times.iter().enumerate() {
        m.entry(bucket_of(*t)).or_default().push(i as u32);
    }
    Buckets::Many(m)
}

/// The given rows of an input batch as late events.
pub(super) fn late_events(input: &EventBatch, rows: &[u32]) -> Result<LateEvents> {
    let taken = input.take(&UInt32Array::from(rows.to_vec()))?;
    Ok(LateEvents {
        // Whole, whatever columns the decoder left out.
        batch: match &taken.raw {
            Some(raw) => raw.whole(&taken.batch),
            None => taken.batch,
        },
        positions: taken.positions,
        watermarks: taken.arrival_watermarks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{PlanKind, plan_query};

    fn having_of(sql: &str) -> Option<Having> {
        match plan_query(sql).unwrap().kind {
            PlanKind::Window { aggregate, .. } => Having::of(&aggregate).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn having_is_decided_early_only_when_it_reads_no_key() {
        let hop = "FROM HOP(payments, event_time, INTERVAL '10' SECOND, INTERVAL '60' SECOND) \
                   GROUP BY card_id, window_start, window_end";
        let early = having_of(&format!(
            "SELECT card_id, count(*) AS n {hop} HAVING count(*) >= 5 AND window_start > TIMESTAMP '2026-01-01T00:00:00Z'"
        ))
        .expect("aggregates and bounds only");
        assert_eq!(early.schema.fields().len(), 2, "{:?}", early.schema);
        for late in [
            format!("SELECT card_id, count(*) AS n {hop} HAVING card_id <> 'c' AND count(*) > 1"),
            format!("SELECT card_id, count(*) AS n {hop}"),
        ] {
            assert!(having_of(&late).is_none(), "{late}");
        }
    }
}
