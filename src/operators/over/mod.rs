//! `OVER`: per-event window functions over each key's recent events.
//!
//! ```text
//!  process(batch) ── WHERE, late split ──▶ pending rows (buffered in chunks)
//!  advance_watermark(W) ── rows with event time < W, per key in (time, ties, event id) order
//!        ──▶ key history + frames (key.rs) ──▶ one result row per event ──▶ outer WHERE, SELECT
//! ```
//!
//! A row is computed once the watermark has passed its event time, so every row that can share
//! its frame (its peers at the same time, every earlier row of its key) is known: the result is
//! what a batch query over all events computes. A row with `lead` also waits for the rows after
//! it (or the end of input). An event behind the watermark it arrived under is late.
//!
//! Buffered rows keep only the event columns the query's output reads, in the chunks they
//! arrived in (no copy per row); emitted rows are gathered from them with one `interleave` per
//! column. Keys whose state can no longer matter are dropped: at once when every frame is a
//! bounded RANGE (exact), else after the state TTL without events.

mod acc;
mod key;
mod value;

use std::sync::Arc;

use datafusion::arrow::array::make_comparator;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{filter, filter_record_batch, interleave};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMillisecondType};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::PhysicalExpr;

use self::key::{KeyState, Layout, RowRef};
use self::value::{Val, ValColumn, ValKind, column_of, decode_vals, encode_vals};
use super::aggregate::{late_events, projected, where_mask};
use super::key_ids::KeyIds;
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::{Error, Result};
use crate::sql::{Frame, FunctionKind, OverSpec, Stage, apply_stages_timed};
use crate::state::{Snapshot, state_err};

const NAME: &str = "over_window";

/// Events buffered together: the columns the operator keeps, each argument's values, and the
/// sort keys that break event-time ties.
struct Chunk {
    batch: RecordBatch,
    args: Vec<ValColumn>,
    /// The tie-breaking columns, then the event id (compared only between rows of one key at
    /// one time, which is rare: no sort keys are built ahead).
    ties: Vec<ArrayRef>,
    /// Rows still buffered (pending or waiting); the chunk is dropped at zero.
    live: u32,
}

/// An outer WHERE decided before the other columns are gathered.
struct EarlyFilter {
    /// The predicate, over `schema`.
    predicate: Arc<dyn PhysicalExpr>,
    /// The output columns it reads (indices into the operator's output schema).
    columns: Vec<usize>,
    /// Those columns' schema.
    schema: SchemaRef,
}

/// A row whose event time the watermark has not passed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    ts: i64,
    key: u32,
    at: RowRef,
}

/// The over operator.
pub struct OverWindow {
    spec: OverSpec,
    layout: Layout,
    /// Event columns kept, in schema order.
    projection: Vec<usize>,
    /// Schema of the kept columns.
    schema: SchemaRef,
    time: usize,
    predicates: Vec<Arc<dyn PhysicalExpr>>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Each argument slot's expression and kind.
    args: Vec<(Arc<dyn PhysicalExpr>, ValKind)>,
    /// Tie-breaking expressions, then the event id.
    ties: Vec<Arc<dyn PhysicalExpr>>,
    /// How each tie column orders.
    tie_options: Vec<SortOptions>,
    /// For each event column of the window schema the output reads: its index in `schema`.
    output_columns: Vec<usize>,
    /// The kept event columns the output reads, then one column per function.
    output_schema: SchemaRef,
    /// The output stages over `output_schema`, less the one `early` decides.
    stages: Vec<Stage>,
    /// Each function's output kind.
    output_kinds: Vec<ValKind>,
    /// The first output stage, when it is a filter.
    early: Option<EarlyFilter>,
    key_ids: KeyIds,
    states: Vec<KeyState>,
    chunks: Vec<Option<Chunk>>,
    free: Vec<u32>,
    pending: Vec<Pending>,
    /// A key whose newest event is this much older than the watermark is dropped.
    horizon: i64,
    watermark: i64,
    next_sweep: i64,
    /// Events before this time are late whatever the watermark: `finish` computed every row
    /// up to it (a job that stops at the end of its log snapshots after finishing, and a
    /// row appended behind computed ones would be out of order).
    floor: i64,
    /// Rows in the chunks, and rows still buffered in them.
    buffered_rows: usize,
    live_rows: usize,
    /// Chunks are compacted only when they hold more rows than this beyond 4× the buffered
    /// ones (a field so tests can make it small).
    compact_above: usize,
    scratch_ids: Vec<u32>,
}

impl OverWindow {
    /// The operator for `spec`; keys are kept `default_ttl` after their last event unless the
    /// query sets its own TTL (or every frame is a bounded RANGE, which bounds state itself).
    pub fn new(spec: OverSpec, default_ttl: i64) -> Result<Self> {
        let events = Arc::clone(&spec.events);
        let event_width = events.arrow().fields().len();
        let predicates: Vec<Arc<dyn PhysicalExpr>> = spec
            .input_stages
            .iter()
            .map(|s| match s {
                Stage::Filter(p) => Ok(Arc::clone(p)),
                Stage::Project { .. } | Stage::Rank { .. } | Stage::Lookup(_) => Err(
                    Error::Internal("a projection below window functions".into()),
                ),
            })
            .collect::<Result<_>>()?;
        // Argument slots: one per distinct argument expression.
        let mut slot_exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        let mut slot_of = |a: &Arc<dyn PhysicalExpr>| match slot_exprs
            .iter()
            .position(|e| e.as_ref() == a.as_ref())
        {
            Some(i) => i,
            None => {
                slot_exprs.push(Arc::clone(a));
                slot_exprs.len() - 1
            }
        };
        let fn_slots: Vec<Option<usize>> = spec
            .functions
            .iter()
            .map(|f| f.arg.as_ref().map(&mut slot_of))
            .collect();
        let slot_kinds: Vec<ValKind> = slot_exprs
            .iter()
            .map(|e| Ok(ValKind::of(&e.data_type(events.arrow())?)))
            .collect::<Result<_>>()?;
        // The columns the output stages read before (and including) the first projection.
        let mut read: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
        let mut projected = false;
        for s in &spec.output_stages {
            match s {
                Stage::Filter(p) => read.extend(collect_columns(p).iter().map(|c| c.index())),
                Stage::Project { exprs, .. } => {
                    for e in exprs {
                        read.extend(collect_columns(e).iter().map(|c| c.index()));
                    }
                    projected = true;
                    break;
                }
                // Never planned over window functions; if it were, it reads every column.
                Stage::Rank { .. } | Stage::Lookup(_) => break,
            }
        }
        if !projected {
            read.extend(0..spec.window_schema.fields().len());
        }
        let read_events: Vec<usize> = read.iter().copied().filter(|c| *c < event_width).collect();
        let time_column = events.event_time_column();
        let tie_columns = events.tie_columns();
        let mut used = std::collections::BTreeSet::from([time_column]);
        used.extend(tie_columns.iter().copied());
        used.extend(read_events.iter().copied());
        let tie_exprs: Vec<Arc<dyn PhysicalExpr>> =
            spec.ties.iter().map(|t| Arc::clone(&t.expr)).collect();
        for e in predicates
            .iter()
            .chain(&spec.keys)
            .chain(&slot_exprs)
            .chain(&tie_exprs)
        {
            used.extend(collect_columns(e).iter().map(|c| c.index()));
        }
        let projection: Vec<usize> = used.into_iter().collect();
        let schema = Arc::new(events.arrow().project(&projection)?);
        let rebind = |e: &Arc<dyn PhysicalExpr>| crate::operators::rebind(e, &projection);
        let at = |c: usize| projection.iter().position(|p| *p == c).expect("projected");
        // Output: the read event columns, then the functions' columns.
        let output_columns: Vec<usize> = read_events.iter().map(|c| at(*c)).collect();
        let mut fields: Vec<_> = read_events
            .iter()
            .map(|c| Arc::new(events.arrow().field(*c).clone()))
            .collect();
        fields.extend(spec.functions.iter().map(|f| Arc::clone(&f.field)));
        let output_schema = Arc::new(Schema::new(fields));
        // The output's columns as indices of the window functions' rows (events, functions).
        let output_of: Vec<usize> = read_events
            .iter()
            .copied()
            .chain((0..spec.functions.len()).map(|f| event_width + f))
            .collect();
        let mut stages = Vec::new();
        let mut rebound = true;
        for s in &spec.output_stages {
            stages.push(match s {
                Stage::Filter(p) if rebound => {
                    Stage::Filter(crate::operators::rebind(p, &output_of)?)
                }
                Stage::Project { exprs, schema } if rebound => {
                    rebound = false;
                    Stage::Project {
                        exprs: exprs
                            .iter()
                            .map(|e| crate::operators::rebind(e, &output_of))
                            .collect::<Result<_>>()?,
                        schema: Arc::clone(schema),
                    }
                }
                s => s.clone(),
            });
        }
        let mut tie_options: Vec<SortOptions> = spec.ties.iter().map(|t| t.options).collect();
        let mut ties = tie_exprs.iter().map(rebind).collect::<Result<Vec<_>>>()?;
        for c in &tie_columns {
            tie_options.push(SortOptions::default());
            ties.push(Arc::new(
                datafusion::physical_expr::expressions::Column::new(
                    events.arrow().field(*c).name(),
                    at(*c),
                ),
            ));
        }
        let layout = layout_of(&spec, &fn_slots, &slot_kinds)?;
        // The outer WHERE, over the operator's output columns: first, or right after a SELECT
        // list that only picks and renames columns (`SELECT … FROM (SELECT …, count(*) OVER w
        // AS n …) WHERE n > 10`), whose columns it then reads through.
        let (early_predicate, rest) = match stages.as_slice() {
            [Stage::Filter(p), rest @ ..] => (Some(Arc::clone(p)), rest.to_vec()),
            [
                project @ Stage::Project { exprs, .. },
                Stage::Filter(p),
                rest @ ..,
            ] if exprs.iter().all(|e| {
                e.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                    .is_some()
            }) =>
            {
                use datafusion::common::tree_node::{Transformed, TreeNode};
                let through = Arc::clone(p)
                    .transform(|e| {
                        Ok(
                            match e.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                            {
                                Some(c) => Transformed::yes(Arc::clone(&exprs[c.index()])),
                                None => Transformed::no(e),
                            },
                        )
                    })?
                    .data;
                let mut rest_stages = vec![project.clone()];
                rest_stages.extend(rest.iter().cloned());
                (Some(through), rest_stages)
            }
            _ => (None, stages.clone()),
        };
        let early = match early_predicate {
            Some(p) => {
                let mut columns: Vec<usize> =
                    collect_columns(&p).iter().map(|c| c.index()).collect();
                columns.sort_unstable();
                columns.dedup();
                let schema = Arc::new(output_schema.project(&columns)?);
                Some(EarlyFilter {
                    predicate: crate::operators::rebind(&p, &columns)?,
                    columns,
                    schema,
                })
            }
            None => None,
        };
        let stages = rest;
        let output_kinds = spec
            .functions
            .iter()
            .zip(&fn_slots)
            .map(|(f, slot)| match &f.kind {
                FunctionKind::Count | FunctionKind::CountDistinct | FunctionKind::RowNumber => {
                    ValKind::Int
                }
                FunctionKind::Sum => slot.map_or(ValKind::Int, |s| match slot_kinds[s] {
                    ValKind::Float => ValKind::Float,
                    _ => ValKind::Int,
                }),
                FunctionKind::Avg
                | FunctionKind::StddevSamp
                | FunctionKind::StddevPop
                | FunctionKind::VarSamp
                | FunctionKind::VarPop => ValKind::Float,
                _ => slot.map_or(ValKind::Int, |s| slot_kinds[s]),
            })
            .collect();
        let horizon = horizon(&spec, spec.state_ttl.unwrap_or(default_ttl));
        Ok(OverWindow {
            key_ids: KeyIds::for_schema(&spec.key_schema)?,
            predicates: predicates.iter().map(rebind).collect::<Result<_>>()?,
            keys: spec.keys.iter().map(rebind).collect::<Result<_>>()?,
            args: slot_exprs
                .iter()
                .zip(&slot_kinds)
                .map(|(e, k)| Ok((rebind(e)?, *k)))
                .collect::<Result<_>>()?,
            tie_options,
            ties,
            time: at(time_column),
            projection,
            schema,
            output_columns,
            output_schema,
            stages,
            output_kinds,
            early,
            layout,
            spec,
            states: Vec::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            horizon,
            watermark: i64::MIN,
            next_sweep: i64::MIN,
            floor: i64::MIN,
            buffered_rows: 0,
            live_rows: 0,
            compact_above: 65_536,
            scratch_ids: Vec::new(),
        })
    }

    /// The buffered rows `refs`, in that order, as one batch of the kept columns.
    fn gather(&self, refs: impl Iterator<Item = RowRef>) -> Result<RecordBatch> {
        let mut dense: hashbrown::HashMap<u32, usize> = hashbrown::HashMap::new();
        let mut used: Vec<&Chunk> = Vec::new();
        let index: Vec<(usize, usize)> = refs
            .map(|at| {
                let d = *dense.entry(at.chunk).or_insert_with(|| {
                    used.push(self.chunk(at.chunk));
                    used.len() - 1
                });
                (d, at.row as usize)
            })
            .collect();
        let mut cols = Vec::with_capacity(self.schema.fields().len());
        for (c, field) in self.schema.fields().iter().enumerate() {
            let parts: Vec<&dyn Array> =
                used.iter().map(|ch| ch.batch.column(c).as_ref()).collect();
            cols.push(if parts.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                interleave(&parts, &index)?
            });
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(index.len())),
        )?)
    }

    /// When the chunks hold far more rows than are still buffered (rows waiting for `lead`
    /// keep their whole arrival batch alive), copies the buffered rows into one chunk.
    fn compact_chunks(&mut self) -> Result<()> {
        if self.buffered_rows < 4 * self.live_rows + self.compact_above {
            return Ok(());
        }
        let mut refs: Vec<RowRef> = self.pending.iter().map(|p| p.at).collect();
        for state in &self.states {
            refs.extend(state.waiting.iter().copied());
        }
        let batch = self.gather(refs.iter().copied())?;
        self.chunks.clear();
        self.free.clear();
        self.buffered_rows = 0;
        self.live_rows = 0;
        let chunk = self.add_chunk(batch, refs.len() as u32)?;
        let mut row = 0u32;
        let mut next = || {
            row += 1;
            RowRef {
                chunk,
                row: row - 1,
            }
        };
        for p in &mut self.pending {
            p.at = next();
        }
        for state in &mut self.states {
            for at in state.waiting.iter_mut() {
                *at = next();
            }
        }
        Ok(())
    }

    /// Buffers `batch` (kept columns, after WHERE) as a chunk; returns its number.
    fn add_chunk(&mut self, batch: RecordBatch, live: u32) -> Result<u32> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            Ok(e.evaluate(&batch)?.into_array(rows)?)
        };
        let args = self
            .args
            .iter()
            .map(|(e, kind)| ValColumn::new(&eval(e)?, *kind))
            .collect::<Result<_>>()?;
        let ties = self.ties.iter().map(eval).collect::<Result<Vec<_>>>()?;
        self.buffered_rows += rows;
        self.live_rows += live as usize;
        let chunk = Chunk {
            batch,
            args,
            ties,
            live,
        };
        Ok(match self.free.pop() {
            Some(c) => {
                self.chunks[c as usize] = Some(chunk);
                c
            }
            None => {
                self.chunks.push(Some(chunk));
                (self.chunks.len() - 1) as u32
            }
        })
    }

    fn chunk(&self, c: u32) -> &Chunk {
        self.chunks[c as usize].as_ref().expect("a live chunk")
    }

    fn release(&mut self, at: RowRef) {
        let slot = &mut self.chunks[at.chunk as usize];
        let chunk = slot.as_mut().expect("a live chunk");
        chunk.live -= 1;
        self.live_rows -= 1;
        if chunk.live == 0 {
            self.buffered_rows -= chunk.batch.num_rows();
            *slot = None;
            self.free.push(at.chunk);
        }
    }

    /// Interns the key of every row of `batch` into `self.scratch_ids`.
    fn intern(&mut self, batch: &RecordBatch, routed: Option<&Vec<ArrayRef>>) -> Result<()> {
        let rows = batch.num_rows();
        let keys = match routed {
            Some(k) => k.clone(),
            None => self
                .keys
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
                .collect::<Result<Vec<_>>>()?,
        };
        let mut ids = std::mem::take(&mut self.scratch_ids);
        self.key_ids.intern(&keys, rows, &mut ids)?;
        if self.states.len() < self.key_ids.len() {
            self.states
                .resize_with(self.key_ids.len(), KeyState::default);
        }
        self.scratch_ids = ids;
        Ok(())
    }

    /// Computes every row the watermark (or the end of input, `finishing`) releases.
    fn release_until(
        &mut self,
        watermark: i64,
        finishing: bool,
        out: &mut OperatorOutput,
    ) -> Result<()> {
        let mut values: Vec<Vec<Val>> = vec![Vec::new(); self.layout.functions.len()];
        let mut emitted: Vec<(RowRef, i64)> = Vec::new();
        if !self.pending.is_empty() {
            // The rows the watermark releases, taken out in arrival order (the rest keep
            // theirs), then ordered by event time with ties in arrival order: an unstable sort
            // of (time, arrival index) pairs, where a stable sort of every pending row each
            // time cost 9 % of a 1-hour OVER query's instructions.
            let mut arrived: Vec<Pending> = Vec::new();
            self.pending.retain(|p| {
                let due = p.ts < watermark;
                if due {
                    arrived.push(*p);
                }
                !due
            });
            if !arrived.is_empty() {
                let mut order: Vec<(i64, u32)> = arrived
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.ts, i as u32))
                    .collect();
                order.sort_unstable();
                let mut ready: Vec<Pending> =
                    order.iter().map(|(_, i)| arrived[*i as usize]).collect();
                let chunks = &self.chunks;
                let options = &self.tie_options;
                // In event-time order, one time at a time: every row of a time is appended to
                // its key before any is computed (they are each other's peers), and rows of one
                // key at one time go in tie order. Results come out in event-time order.
                let mut i = 0;
                while i < ready.len() {
                    let t = ready[i].ts;
                    let mut j = i + 1;
                    while j < ready.len() && ready[j].ts == t {
                        j += 1;
                    }
                    let run = &mut ready[i..j];
                    if run.len() > 1 {
                        let mut failed = None;
                        run.sort_by(|a, b| {
                            a.key.cmp(&b.key).then_with(|| {
                                compare_ties(chunks, options, a.at, b.at).unwrap_or_else(|e| {
                                    failed = Some(e);
                                    std::cmp::Ordering::Equal
                                })
                            })
                        });
                        if let Some(e) = failed {
                            return Err(e);
                        }
                    }
                    for p in run.iter() {
                        let chunk = chunks[p.at.chunk as usize].as_ref().expect("a live chunk");
                        let row = p.at.row as usize;
                        let state = &mut self.states[p.key as usize];
                        // A key idle for longer than its horizon starts afresh, as a sweep would
                        // have dropped it: whether a sweep ran in between (where the watermark
                        // steps fell) never changes a result.
                        if !state.is_empty()
                            && state.waiting.is_empty()
                            && p.ts.saturating_sub(state.last_ts) > self.horizon
                        {
                            *state = KeyState::default();
                        }
                        state.append(
                            &self.layout,
                            p.ts,
                            chunk.args.iter().map(|a| a.get(row)),
                            p.at,
                        );
                    }
                    for (n, p) in run.iter().enumerate() {
                        if n > 0 && run[n - 1].key == p.key {
                            continue;
                        }
                        self.states[p.key as usize].compute(
                            &self.layout,
                            false,
                            &mut values,
                            &mut |at, t| emitted.push((at, t)),
                        )?;
                    }
                    i = j;
                }
            }
        }
        if finishing {
            for state in &mut self.states {
                state.compute(&self.layout, true, &mut values, &mut |at, t| {
                    emitted.push((at, t))
                })?;
            }
        }
        self.emit(values, &emitted, out)?;
        for (at, _) in &emitted {
            self.release(*at);
        }
        Ok(())
    }

    /// Result rows for `emitted` (with each function's `values`), through the output stages.
    fn emit(
        &self,
        values: Vec<Vec<Val>>,
        emitted: &[(RowRef, i64)],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let functions: Vec<ArrayRef> = values
            .iter()
            .enumerate()
            .map(|(f, vals)| {
                column_of(
                    vals,
                    self.output_kinds[f],
                    self.spec.functions[f].field.data_type(),
                )
            })
            .collect::<Result<_>>()?;
        let mut times: Vec<i64> = emitted.iter().map(|(_, t)| *t).collect();
        let mut rows: Vec<RowRef> = emitted.iter().map(|(at, _)| *at).collect();
        let mut functions = functions;
        let stages: &[Stage] = &self.stages;
        // An outer WHERE over the features (an alert rule) usually keeps few rows: decide it
        // on the columns it reads, and gather the others for the rows it keeps only.
        if let Some(early) = &self.early {
            let n_events = self.output_columns.len();
            let cols = early
                .columns
                .iter()
                .map(|c| match c.checked_sub(n_events) {
                    Some(f) => Ok(Arc::clone(&functions[f])),
                    None => self.gather_column(self.output_columns[*c], &rows),
                })
                .collect::<Result<Vec<_>>>()?;
            let narrow = RecordBatch::try_new_with_options(
                Arc::clone(&early.schema),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(rows.len())),
            )?;
            if let Some(mask) = where_mask(std::slice::from_ref(&early.predicate), &narrow, None)?
                && mask.true_count() < rows.len()
            {
                let keep: Vec<usize> = mask.values().set_indices().collect();
                rows = keep.iter().map(|i| rows[*i]).collect();
                times = keep.iter().map(|i| times[*i]).collect();
                functions = functions
                    .iter()
                    .map(|f| Ok(filter(f.as_ref(), &mask)?))
                    .collect::<Result<_>>()?;
            }
            if rows.is_empty() {
                return Ok(());
            }
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.output_schema.fields().len());
        for c in &self.output_columns {
            cols.push(self.gather_column(*c, &rows)?);
        }
        cols.extend(functions);
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.output_schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        let (batch, times) = apply_stages_timed(stages, &batch, None, &times)?;
        if batch.num_rows() > 0 {
            out.results.push(Emitted {
                batch,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }

    /// Column `c` (of the kept columns) of the buffered rows `rows`.
    fn gather_column(&self, c: usize, rows: &[RowRef]) -> Result<ArrayRef> {
        let mut dense: hashbrown::HashMap<u32, usize> = hashbrown::HashMap::new();
        let mut parts: Vec<&dyn Array> = Vec::new();
        let index: Vec<(usize, usize)> = rows
            .iter()
            .map(|at| {
                let d = *dense.entry(at.chunk).or_insert_with(|| {
                    parts.push(self.chunk(at.chunk).batch.column(c).as_ref());
                    parts.len() - 1
                });
                (d, at.row as usize)
            })
            .collect();
        if parts.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.schema.field(c).data_type(),
            ));
        }
        Ok(interleave(&parts, &index)?)
    }

    /// Drops keys whose state can no longer matter, and reclaims their ids.
    fn sweep(&mut self, watermark: i64) -> Result<()> {
        if watermark < self.next_sweep || watermark == i64::MAX {
            return Ok(());
        }
        self.next_sweep = watermark.saturating_add((self.horizon / 4).max(1_000));
        let cutoff = watermark.saturating_sub(self.horizon);
        for state in &mut self.states {
            if !state.is_empty() && state.waiting.is_empty() && state.last_ts < cutoff {
                *state = KeyState::default();
            }
        }
        if self.key_ids.wants_compaction() {
            let mut live: Vec<u32> = (0..self.states.len() as u32)
                .filter(|k| !self.states[*k as usize].is_empty())
                .collect();
            live.extend(self.pending.iter().map(|p| p.key));
            live.sort_unstable();
            live.dedup();
            if let Some(renumber) = self.key_ids.compact(&live)? {
                let mut states: Vec<KeyState> = Vec::new();
                states.resize_with(live.len(), KeyState::default);
                for (old, state) in std::mem::take(&mut self.states).into_iter().enumerate() {
                    let new = renumber[old];
                    if new != u32::MAX {
                        states[new as usize] = state;
                    }
                }
                self.states = states;
                for p in &mut self.pending {
                    p.key = renumber[p.key as usize];
                }
            }
        }
        Ok(())
    }
}

/// The order of two buffered rows of one key at one time: by the tie-breaking columns, then the
/// event id.
fn compare_ties(
    chunks: &[Option<Chunk>],
    options: &[SortOptions],
    a: RowRef,
    b: RowRef,
) -> Result<std::cmp::Ordering> {
    let chunk = |at: RowRef| chunks[at.chunk as usize].as_ref().expect("a live chunk");
    let (ca, cb) = (chunk(a), chunk(b));
    for ((x, y), o) in ca.ties.iter().zip(&cb.ties).zip(options) {
        let cmp = make_comparator(x.as_ref(), y.as_ref(), *o)?;
        let ord = cmp(a.row as usize, b.row as usize);
        if ord.is_ne() {
            return Ok(ord);
        }
    }
    Ok(std::cmp::Ordering::Equal)
}

/// How long after a key's newest event its state is kept. A RANGE frame with a bounded start
/// never reads a row older than that start, so it alone needs no longer (dropping the key then
/// is exact); every other function (row_number, lag, ROWS frames, frames from UNBOUNDED
/// PRECEDING) keeps state for `ttl`, but never less than the longest RANGE frame needs.
fn horizon(spec: &OverSpec, ttl: i64) -> i64 {
    let mut longest_range = 0i64;
    let mut needs_ttl = false;
    for f in &spec.functions {
        match (f.kind.is_aggregate(), f.frame) {
            (true, Frame::Range { start: Some(s), .. }) => {
                longest_range = longest_range.max(s.saturating_add(1));
            }
            _ => needs_ttl = true,
        }
    }
    let h = if needs_ttl {
        ttl.max(longest_range)
    } else {
        longest_range
    };
    h.max(1)
}

fn layout_of(
    spec: &OverSpec,
    fn_slots: &[Option<usize>],
    slot_kinds: &[ValKind],
) -> Result<Layout> {
    let mut frames: Vec<(Frame, key::Members)> = Vec::new();
    let mut functions = Vec::new();
    let mut defaults = Vec::new();
    let (mut max_lag, mut max_lead) = (0, 0);
    for (i, f) in spec.functions.iter().enumerate() {
        let slot = fn_slots[i];
        let mut place = None;
        let mut default = Val::Null;
        match &f.kind {
            FunctionKind::Lag { offset, default: d } => {
                max_lag = max_lag.max(*offset);
                default = Val::of_scalar(d, slot.map_or(ValKind::Int, |s| slot_kinds[s]))?;
            }
            FunctionKind::Lead { offset, default: d } => {
                max_lead = max_lead.max(*offset);
                default = Val::of_scalar(d, slot.map_or(ValKind::Int, |s| slot_kinds[s]))?;
            }
            FunctionKind::RowNumber => {}
            _ => {
                let fi = match frames.iter().position(|(fr, _)| *fr == f.frame) {
                    Some(fi) => fi,
                    None => {
                        frames.push((f.frame, Vec::new()));
                        frames.len() - 1
                    }
                };
                frames[fi].1.push((i, slot));
                place = Some((fi, frames[fi].1.len() - 1));
            }
        }
        functions.push((f.kind.clone(), slot, place));
        defaults.push(default);
    }
    Ok(Layout {
        frames,
        functions,
        slots: slot_kinds.len(),
        float_slots: slot_kinds.iter().map(|k| *k == ValKind::Float).collect(),
        max_lag,
        max_lead,
        defaults,
    })
}

impl Operator for OverWindow {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let events = &input.batch;
        let n = events.num_rows();
        let mut batch = projected(events, &self.projection, &self.schema)?;
        let routed = input.keys.as_ref();
        let predicates: &[Arc<dyn PhysicalExpr>] = match routed {
            Some(_) => &[],
            None => &self.predicates,
        };
        let mut input_rows: Option<Vec<u32>> = None;
        if let Some(mask) = where_mask(predicates, &batch, input.selection.as_ref())?
            && mask.true_count() != n
        {
            batch = filter_record_batch(&batch, &mask)?;
            input_rows = Some(mask.values().set_indices().map(|i| i as u32).collect());
        }
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let times = batch
            .column(self.time)
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let input_row = |r: usize| input_rows.as_ref().map_or(r, |ix| ix[r] as usize);
        let floor = self.floor;
        let is_late = |r: usize| times.value(r) < input.arrival_watermarks[input_row(r)].max(floor);
        let late: Vec<u32> = (0..rows)
            .filter(|r| is_late(*r))
            .map(|r| input_row(r) as u32)
            .collect();
        if !late.is_empty() {
            out.late.push(late_events(input, &late)?);
        }
        self.intern(&batch, routed)?;
        let live = (rows - late.len()) as u32;
        if live == 0 {
            return Ok(());
        }
        let chunk = self.add_chunk(batch, live)?;
        self.pending.reserve(live as usize);
        for r in 0..rows {
            let ts = times.value(r);
            if is_late(r) {
                continue;
            }
            self.pending.push(Pending {
                ts,
                key: self.scratch_ids[r],
                at: RowRef {
                    chunk,
                    row: r as u32,
                },
            });
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.release_until(watermark, false, out)?;
        self.sweep(watermark)?;
        self.compact_chunks()
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        let newest = self
            .states
            .iter()
            .map(|s| s.last_ts)
            .chain(self.pending.iter().map(|p| p.ts))
            .max();
        if let Some(t) = newest {
            self.floor = self.floor.max(t.saturating_add(1));
        }
        self.release_until(i64::MAX, true, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        snapshot(self)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        restore(self, bytes)
    }
}

/// Snapshot batches, by tag.
const ROWS: i64 = 0;
const KEYS: i64 = 1;
const HISTORY: i64 = 2;
const HISTORY_VALUES: i64 = 3;
const FRAMES: i64 = 4;
const FRAME_VALUES: i64 = 5;

fn i64_column(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

/// `a` without a validity buffer when it has no nulls: gathered columns keep their sources'
/// buffers, and the same state should encode to the same bytes however its rows were chunked.
fn canonical(a: ArrayRef) -> Result<ArrayRef> {
    // Dictionaries as their values: a gathered dictionary keeps values no row uses.
    if let datafusion::arrow::datatypes::DataType::Dictionary(_, v) = a.data_type() {
        return canonical(datafusion::arrow::compute::cast(&a, v)?);
    }
    if a.null_count() > 0 || a.nulls().is_none() {
        return Ok(a);
    }
    let data = a.to_data().into_builder().nulls(None).build()?;
    Ok(datafusion::arrow::array::make_array(data))
}

fn batch_of(cols: Vec<(&str, ArrayRef)>, rows: usize) -> Result<RecordBatch> {
    let cols = cols
        .into_iter()
        .map(|(n, a)| Ok((n, canonical(a)?)))
        .collect::<Result<Vec<_>>>()?;
    let fields: Vec<_> = cols
        .iter()
        .map(|(n, a)| datafusion::arrow::datatypes::Field::new(*n, a.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, a)| a).collect(),
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

fn vals_columns(vals: &[Val]) -> Vec<(&'static str, ArrayRef)> {
    ["tag", "int", "float", "str"]
        .into_iter()
        .zip(encode_vals(vals))
        .collect()
}

/// The operator's state: buffered rows (pending, then each key's waiting rows), live keys with
/// their counters, their history, and each frame's place and accumulators.
fn snapshot(op: &mut OverWindow) -> Result<Vec<u8>> {
    let live: Vec<u32> = (0..op.states.len() as u32)
        .filter(|k| !op.states[*k as usize].is_empty())
        .collect();
    // Rows: pending ones (key −1), then waiting ones by key.
    let mut refs: Vec<(RowRef, i64)> = op.pending.iter().map(|p| (p.at, -1)).collect();
    for (i, k) in live.iter().enumerate() {
        refs.extend(
            op.states[*k as usize]
                .waiting
                .iter()
                .map(|at| (*at, i as i64)),
        );
    }
    let gathered = op.gather(refs.iter().map(|(at, _)| *at))?;
    let mut row_cols: Vec<(String, ArrayRef)> = op
        .schema
        .fields()
        .iter()
        .zip(gathered.columns())
        .map(|(f, c)| (f.name().clone(), Arc::clone(c)))
        .collect();
    row_cols.push(("__key".into(), i64_column(refs.iter().map(|(_, k)| *k))));
    let rows_batch = batch_of(
        row_cols
            .iter()
            .map(|(n, a)| (n.as_str(), Arc::clone(a)))
            .collect(),
        refs.len(),
    )?;
    // Keys.
    let key_cols = op.key_ids.keys(&live)?;
    let st = |f: fn(&KeyState) -> i64| i64_column(live.iter().map(|k| f(&op.states[*k as usize])));
    let mut cols: Vec<(String, ArrayRef)> = vec![
        ("base".into(), st(|s| s.base as i64)),
        ("done".into(), st(|s| s.done as i64)),
        ("next".into(), st(|s| s.next as i64)),
        ("last_ts".into(), st(|s| s.last_ts)),
    ];
    for (i, k) in key_cols.into_iter().enumerate() {
        cols.push((format!("k{i}"), k));
    }
    let keys_batch = batch_of(
        cols.iter()
            .map(|(n, a)| (n.as_str(), Arc::clone(a)))
            .collect(),
        live.len(),
    )?;
    // History and frames.
    let (mut hk, mut hts, mut hvals) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fk, mut ff, mut fstart, mut fend, mut flen, mut fvals) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (i, k) in live.iter().enumerate() {
        let s = &op.states[*k as usize];
        hk.extend(std::iter::repeat_n(i as i64, s.ts.len()));
        hts.extend(s.ts.iter().copied());
        hvals.extend(s.vals.iter().cloned());
        for (f, frame) in s.frames.iter().enumerate() {
            for acc in &frame.accs {
                let before = fvals.len();
                acc.encode(&mut fvals);
                fk.push(i as i64);
                ff.push(f as i64);
                fstart.push(frame.start as i64);
                fend.push(frame.end as i64);
                flen.push((fvals.len() - before) as i64);
            }
        }
    }
    let history_rows = hts.len();
    let history = batch_of(
        vec![("key", i64_column(hk)), ("ts", i64_column(hts))],
        history_rows,
    )?;
    let history_values = batch_of(vals_columns(&hvals), hvals.len())?;
    let frames = batch_of(
        vec![
            ("key", i64_column(fk.iter().copied())),
            ("frame", i64_column(ff)),
            ("start", i64_column(fstart)),
            ("end", i64_column(fend)),
            ("len", i64_column(flen)),
        ],
        fk.len(),
    )?;
    let frame_values = batch_of(vals_columns(&fvals), fvals.len())?;
    Snapshot {
        header: serde_json::json!({
            "watermark": op.watermark,
            "next_sweep": op.next_sweep,
            "floor": op.floor,
            "functions": op.spec.functions.len(),
            "slots": op.layout.slots,
        }),
        batches: vec![
            (ROWS, rows_batch),
            (KEYS, keys_batch),
            (HISTORY, history),
            (HISTORY_VALUES, history_values),
            (FRAMES, frames),
            (FRAME_VALUES, frame_values),
        ],
    }
    .encode(NAME)
}

fn restore(op: &mut OverWindow, bytes: &[u8]) -> Result<()> {
    let snap = Snapshot::decode(NAME, bytes)?;
    let bad = |m: &str| state_err(NAME, format!("{m}; the snapshot is not from this query"));
    let header = |k: &str| snap.header.get(k).and_then(|v| v.as_i64());
    if header("functions") != Some(op.spec.functions.len() as i64)
        || header("slots") != Some(op.layout.slots as i64)
    {
        return Err(bad("a different set of window functions"));
    }
    let batch = |tag: i64| {
        snap.batches
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, b)| b)
            .ok_or_else(|| bad("a part is missing"))
    };
    let ints = |b: &RecordBatch, name: &str| -> Result<Vec<i64>> {
        Ok(b.column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>())
            .ok_or_else(|| bad("a column is missing"))?
            .values()
            .to_vec())
    };
    // Fresh state.
    op.key_ids = KeyIds::for_schema(&op.spec.key_schema)?;
    op.states.clear();
    op.chunks.clear();
    op.free.clear();
    op.pending.clear();
    op.watermark = header("watermark").unwrap_or(i64::MIN);
    op.next_sweep = header("next_sweep").unwrap_or(i64::MIN);
    op.floor = header("floor").unwrap_or(i64::MIN);
    op.buffered_rows = 0;
    op.live_rows = 0;
    // Keys, in snapshot order: intern them so key i gets id i.
    let keys = batch(KEYS)?;
    let nkeys = keys.num_rows();
    let key_cols: Vec<ArrayRef> = keys.columns()[4..]
        .iter()
        .zip(op.spec.key_schema.fields())
        .map(|(c, f)| value::to_type(Arc::clone(c), f.data_type()))
        .collect::<Result<_>>()?;
    if key_cols.len() != op.spec.key_schema.fields().len() {
        return Err(bad("different keys"));
    }
    let mut ids = Vec::new();
    op.key_ids.intern(&key_cols, nkeys, &mut ids)?;
    op.states
        .resize_with(op.key_ids.len().max(nkeys), KeyState::default);
    let (base, done, next, last) = (
        ints(keys, "base")?,
        ints(keys, "done")?,
        ints(keys, "next")?,
        ints(keys, "last_ts")?,
    );
    let hist = batch(HISTORY)?;
    let hvals = decode_vals(batch(HISTORY_VALUES)?.columns())?;
    let (hk, hts) = (ints(hist, "key")?, ints(hist, "ts")?);
    let frames = batch(FRAMES)?;
    let fvals = decode_vals(batch(FRAME_VALUES)?.columns())?;
    let (fk, ff, fstart, fend, flen) = (
        ints(frames, "key")?,
        ints(frames, "frame")?,
        ints(frames, "start")?,
        ints(frames, "end")?,
        ints(frames, "len")?,
    );
    for i in 0..nkeys {
        let s = &mut op.states[ids[i] as usize];
        s.base = base[i] as u64;
        s.done = done[i] as u64;
        s.next = next[i] as u64;
        s.last_ts = last[i];
    }
    let slots = op.layout.slots;
    for (r, (k, t)) in hk.iter().zip(&hts).enumerate() {
        let s = &mut op.states[ids[*k as usize] as usize];
        s.ts.push_back(*t);
        s.vals
            .extend(hvals[r * slots..(r + 1) * slots].iter().cloned());
    }
    let mut at = 0usize;
    let mut acc_no = vec![0usize; nkeys * op.layout.frames.len().max(1)];
    for r in 0..fk.len() {
        let (k, f) = (fk[r] as usize, ff[r] as usize);
        let s = &mut op.states[ids[k] as usize];
        if s.frames.is_empty() {
            s.frames = op.layout.new_frames();
        }
        let frame = s
            .frames
            .get_mut(f)
            .ok_or_else(|| bad("a frame is missing"))?;
        frame.start = fstart[r] as u64;
        frame.end = fend[r] as u64;
        let m = &mut acc_no[k * op.layout.frames.len() + f];
        let acc = frame
            .accs
            .get_mut(*m)
            .ok_or_else(|| bad("an accumulator is missing"))?;
        *m += 1;
        let len = flen[r] as usize;
        acc.decode(
            fvals
                .get(at..at + len)
                .ok_or_else(|| bad("values are missing"))?,
        )?;
        at += len;
    }
    // Buffered rows: one chunk.
    let rows = batch(ROWS)?;
    let owners = ints(rows, "__key")?;
    if !owners.is_empty() {
        let cols: Vec<ArrayRef> = rows.columns()[..rows.num_columns() - 1]
            .iter()
            .zip(op.schema.fields())
            .map(|(c, f)| value::to_type(Arc::clone(c), f.data_type()))
            .collect::<Result<_>>()?;
        if cols.len() != op.schema.fields().len() {
            return Err(bad("different buffered columns"));
        }
        let b = RecordBatch::try_new_with_options(
            Arc::clone(&op.schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
        )?;
        let times: Vec<i64> = b
            .column(op.time)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        op.intern(&b, None)?;
        let row_keys = op.scratch_ids.clone();
        let chunk = op.add_chunk(b, owners.len() as u32)?;
        for (r, owner) in owners.iter().enumerate() {
            let at = RowRef {
                chunk,
                row: r as u32,
            };
            if *owner < 0 {
                op.pending.push(Pending {
                    ts: times[r],
                    key: row_keys[r],
                    at,
                });
            } else {
                op.states[ids[*owner as usize] as usize]
                    .waiting
                    .push_back(at);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{PlanKind, plan_query};

    fn spec(sql: &str) -> OverSpec {
        match plan_query(sql).unwrap().kind {
            PlanKind::Over(o) => o,
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn frames_are_shared_and_state_is_bounded_by_range_frames() {
        let s = spec(
            "SELECT event_id, count(*) OVER w AS n, sum(amount_minor) OVER w AS total, \
             max(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time ROWS BETWEEN 3 PRECEDING AND 1 PRECEDING) AS prev_max \
             FROM payments WINDOW w AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)",
        );
        let op = OverWindow::new(s.clone(), 1).unwrap();
        assert_eq!(op.layout.frames.len(), 2, "count and sum share a frame");
        assert_eq!(op.layout.slots, 1, "sum and max read the same column");
        assert_eq!(
            horizon(&s, 5),
            3_600_001,
            "never less than the hour frame needs"
        );
        assert_eq!(
            horizon(&s, 7_200_000),
            7_200_000,
            "a ROWS frame keeps keys for the TTL"
        );
        let r = spec(
            "SELECT count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM payments",
        );
        assert_eq!(
            horizon(&r, 3_600_000),
            10_001,
            "a RANGE frame alone bounds state"
        );
    }

    /// Generated events in batches of 500, with the watermark after each (5 s behind).
    fn generated(events: u64) -> Vec<(EventBatch, i64)> {
        let cfg = crate::generate::GenConfig {
            events,
            cards: 300,
            rate: 200.0,
            disorder_ms: 1_000,
            duplicate_rate: 0.0,
            malformed_rate: 0.0,
            ..Default::default()
        };
        let mut text = Vec::new();
        crate::generate::generate(&cfg, &mut text).unwrap();
        let decoded = crate::decode::decode_json_lines(&text, 1, 500);
        let mut max = i64::MIN;
        decoded
            .batches
            .into_iter()
            .map(|b| {
                let n = b.batch.num_rows();
                let wm = max.saturating_sub(5_000);
                let times = b.batch.column(2).as_primitive::<TimestampMillisecondType>();
                max = max.max(times.values().iter().copied().max().unwrap_or(max));
                let ev = EventBatch::all(b.batch, (0..n as u64).collect(), vec![wm; n]);
                (ev, max.saturating_sub(5_000))
            })
            .collect()
    }

    fn run(op: &mut OverWindow, input: &[(EventBatch, i64)]) -> Vec<String> {
        let mut out = OperatorOutput::default();
        for (ev, wm) in input {
            op.process(ev, &mut out).unwrap();
            op.advance_watermark(*wm, &mut out).unwrap();
        }
        op.finish(&mut out).unwrap();
        assert!(out.late.is_empty());
        let mut lines = Vec::new();
        for r in out.results {
            for i in 0..r.batch.num_rows() {
                let row: Vec<String> = r
                    .batch
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect();
                lines.push(row.join(","));
            }
        }
        lines.sort();
        lines
    }

    #[test]
    fn rows_waiting_for_lead_do_not_pin_their_batches() {
        let input = generated(20_000);
        let mut op = OverWindow::new(spec_of_last(), 3_600_000).unwrap();
        op.compact_above = 0;
        let mut out = OperatorOutput::default();
        let mut most = 0;
        for (ev, wm) in &input {
            op.process(ev, &mut out).unwrap();
            op.advance_watermark(*wm, &mut out).unwrap();
            assert!(op.buffered_rows <= 4 * op.live_rows.max(1));
            most = most.max(op.buffered_rows);
        }
        // Every card's last row waits for its next one: without compaction nearly every
        // batch would stay.
        assert!(most < 10_000, "{most} of 20000 rows buffered");
        let mut compacting = OverWindow::new(spec_of_last(), 3_600_000).unwrap();
        compacting.compact_above = 0;
        let mut plain = OverWindow::new(spec_of_last(), 3_600_000).unwrap();
        plain.compact_above = usize::MAX / 8;
        assert_eq!(run(&mut compacting, &input), run(&mut plain, &input));
    }

    fn spec_of_last() -> OverSpec {
        spec(
            "SELECT event_id, lead(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time) AS next, \
             count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) AS n \
             FROM payments",
        )
    }

    #[test]
    fn after_finish_earlier_events_are_late_so_histories_stay_in_order() {
        let input = generated(2_000);
        let mut op = OverWindow::new(spec_of_last(), 3_600_000).unwrap();
        let mut out = OperatorOutput::default();
        let (first, rest) = input.split_at(2);
        for (ev, wm) in first {
            op.process(ev, &mut out).unwrap();
            op.advance_watermark(*wm, &mut out).unwrap();
        }
        op.finish(&mut out).unwrap();
        let emitted: usize = out.results.iter().map(|r| r.batch.num_rows()).sum();
        assert_eq!(emitted, 1_000, "finish computes every buffered row");
        // The next batch overlaps the rows finish computed: those are late now.
        let mut after = OperatorOutput::default();
        op.process(&rest[0].0, &mut after).unwrap();
        assert!(!after.late.is_empty());
    }
}
