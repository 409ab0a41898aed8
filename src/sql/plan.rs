//! The streaming plan: what the SQL layer hands to the operators.
//!
//! DataFusion does the planning (name resolution, type coercion, aggregate selection); this module
//! keeps only the pieces a streaming operator needs — physical expressions evaluated on Arrow
//! batches and aggregate functions whose accumulators hold per-window state.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;

use super::window_tvf::WindowSpec;
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// A stateless step applied to every batch: a filter or a projection.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Keep rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute the output columns.
    Project {
        /// Expressions evaluated against the input batch.
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// The schema they produce.
        schema: SchemaRef,
    },
    /// Number the rows of each partition by an order (`ROW_NUMBER()`, `RANK()`, `DENSE_RANK()
    /// OVER (PARTITION BY window_start, … ORDER BY total DESC)`), appending one column per
    /// function. Only over a windowed aggregate's rows, whose every batch holds whole windows:
    /// a partition that includes a window bound is complete in each batch (Top-N per window).
    Rank {
        /// The partition expressions.
        partition: Vec<Arc<dyn PhysicalExpr>>,
        /// The order within a partition.
        order: Vec<datafusion::physical_expr::PhysicalSortExpr>,
        /// The functions, in column order.
        functions: Vec<RankKind>,
        /// The input columns followed by one UInt64 column per function.
        schema: SchemaRef,
    },
    /// Join each event to the rows of a reference table with its key
    /// (`operators/lookup_join.rs`): inner or left (the event's columns, then the table's), or
    /// semi / anti (`IN`, `EXISTS`: the events that pass, as they are). A row may match
    /// several table rows (a table without a primary key) or none.
    Lookup(Arc<crate::operators::LookupJoin>),
}

/// How a [`Stage::Rank`] numbers tied rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    /// 1, 2, 3, … (ties in an unspecified but deterministic order).
    RowNumber,
    /// Ties share a number; the next number skips them (1, 1, 3).
    Rank,
    /// Ties share a number; no gaps (1, 1, 2).
    DenseRank,
}

impl Stage {
    /// Applies the stage to a batch.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        match self {
            Stage::Rank {
                partition,
                order,
                functions,
                schema,
            } => rank(batch, partition, order, functions, schema),
            Stage::Filter(pred) => {
                let mask = filter_mask(pred, batch)?;
                if mask.true_count() == batch.num_rows() {
                    return Ok(batch.clone());
                }
                Ok(filter_record_batch(batch, &mask)?)
            }
            Stage::Lookup(join) => Ok(join.apply(batch)?.0),
            Stage::Project { exprs, schema } => {
                let cols = exprs
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(schema),
                    cols,
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(batch.num_rows())),
                )?)
            }
        }
    }
}

/// [`Stage::Rank`] over one batch: rows keep their place; each function's number is computed
/// over the rows sorted by partition, then order (then by every column, so equal rows of a
/// ROW_NUMBER get their numbers in the same order on every run).
fn rank(
    batch: &RecordBatch,
    partition: &[Arc<dyn PhysicalExpr>],
    order: &[datafusion::physical_expr::PhysicalSortExpr],
    functions: &[RankKind],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::UInt64Array;
    use datafusion::arrow::row::{RowConverter, SortField};
    let n = batch.num_rows();
    let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<datafusion::arrow::array::ArrayRef> {
        Ok(e.evaluate(batch)?.into_array(n)?)
    };
    let parts = partition.iter().map(eval).collect::<Result<Vec<_>>>()?;
    let keys = order
        .iter()
        .map(|o| Ok((eval(&o.expr)?, o.options)))
        .collect::<Result<Vec<_>>>()?;
    // One sort key per row: partition, then order, then every column (so rows equal on the
    // ORDER BY still get their ROW_NUMBERs in the same order on every run, however the
    // window's groups arrived).
    let mut fields: Vec<SortField> = parts
        .iter()
        .map(|p| SortField::new(p.data_type().clone()))
        .collect();
    fields.extend(
        keys.iter()
            .map(|(v, o)| SortField::new_with_options(v.data_type().clone(), *o)),
    );
    let mut cols: Vec<datafusion::arrow::array::ArrayRef> = parts.clone();
    cols.extend(keys.iter().map(|(v, _)| Arc::clone(v)));
    for c in batch.columns() {
        let field = SortField::new(c.data_type().clone());
        if RowConverter::supports_fields(std::slice::from_ref(&field)) {
            fields.push(field);
            cols.push(Arc::clone(c));
        }
    }
    let sort_rows = RowConverter::new(fields)?.convert_columns(&cols)?;
    let mut sorted: Vec<u32> = (0..n as u32).collect();
    sorted.sort_unstable_by(|a, b| sort_rows.row(*a as usize).cmp(&sort_rows.row(*b as usize)));
    // Partition and order values as comparable rows, to find where each changes.
    let fields = |cols: &[datafusion::arrow::array::ArrayRef]| -> Vec<SortField> {
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect()
    };
    let order_cols: Vec<_> = keys.iter().map(|(v, _)| Arc::clone(v)).collect();
    let part_rows = RowConverter::new(fields(&parts))?.convert_columns(&parts)?;
    let order_rows = RowConverter::new(fields(&order_cols))?.convert_columns(&order_cols)?;
    let mut numbers = vec![vec![0u64; n]; functions.len()];
    let (mut row_number, mut rank, mut dense) = (0u64, 0u64, 0u64);
    for (i, &r) in sorted.iter().enumerate() {
        let r = r as usize;
        let new_partition = i == 0 || part_rows.row(r) != part_rows.row(sorted[i - 1] as usize);
        if new_partition {
            (row_number, rank, dense) = (0, 0, 0);
        }
        row_number += 1;
        let tied = !new_partition && order_rows.row(r) == order_rows.row(sorted[i - 1] as usize);
        if !tied {
            rank = row_number;
            dense += 1;
        }
        for (f, kind) in functions.iter().enumerate() {
            numbers[f][r] = match kind {
                RankKind::RowNumber => row_number,
                RankKind::Rank => rank,
                RankKind::DenseRank => dense,
            };
        }
    }
    let mut cols = batch.columns().to_vec();
    cols.extend(
        numbers
            .into_iter()
            .map(|v| Arc::new(UInt64Array::from(v)) as datafusion::arrow::array::ArrayRef),
    );
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        cols,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// The predicate of a filter stage evaluated over `batch`.
fn filter_mask(pred: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let mask = pred.evaluate(batch)?.into_array(batch.num_rows())?;
    mask.as_boolean_opt()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("filter produced {}", mask.data_type())))
}

/// [`apply_stages`] to the rows of `batch` that `selection` marks (all when `None`). A first
/// filter stage is evaluated over the whole batch and combined with the selection, so rows are
/// copied once, survivors only: compacting first copied every column of every selected row
/// only to filter most of them away again.
pub fn apply_stages_selected(
    stages: &[Stage],
    batch: &RecordBatch,
    selection: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let Some(selection) = selection else {
        return apply_stages(stages, batch);
    };
    match stages.split_first() {
        Some((Stage::Filter(pred), rest)) => {
            // A null from the predicate stays null, which the filter drops.
            let both = datafusion::arrow::compute::and(selection, &filter_mask(pred, batch)?)?;
            apply_stages(rest, &filter_record_batch(batch, &both)?)
        }
        _ => apply_stages(stages, &filter_record_batch(batch, selection)?),
    }
}

/// [`apply_stages_selected`], carrying each row's event time `times` (one per row of `batch`)
/// through the filters: returns the result rows and the times of the rows that survived.
pub fn apply_stages_timed(
    stages: &[Stage],
    batch: &RecordBatch,
    selection: Option<&BooleanArray>,
    times: &[i64],
) -> Result<(RecordBatch, Vec<i64>)> {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::compute::{and, filter};
    let mut times = Int64Array::from(times.to_vec());
    let mut b = batch.clone();
    let mut rest = stages;
    if let Some(selection) = selection {
        let mask = match stages.split_first() {
            Some((Stage::Filter(pred), r)) => {
                rest = r;
                and(selection, &filter_mask(pred, batch)?)?
            }
            _ => selection.clone(),
        };
        b = filter_record_batch(&b, &mask)?;
        times = filter(&times, &mask)?.as_primitive().clone();
    }
    for s in rest {
        if b.num_rows() == 0 {
            break;
        }
        match s {
            // Both filters drop a row whose predicate is null.
            Stage::Filter(pred) => {
                let mask = filter_mask(pred, &b)?;
                if mask.true_count() != b.num_rows() {
                    b = filter_record_batch(&b, &mask)?;
                    times = filter(&times, &mask)?.as_primitive().clone();
                }
            }
            Stage::Project { .. } | Stage::Rank { .. } => b = s.apply(&b)?,
            // A join may repeat or drop events: each row keeps its event's time.
            Stage::Lookup(join) => {
                let (joined, from) = join.apply(&b)?;
                if let Some(from) = from {
                    let from = datafusion::arrow::array::UInt32Array::from(from);
                    times = datafusion::arrow::compute::take(&times, &from, None)?
                        .as_primitive()
                        .clone();
                }
                b = joined;
            }
        }
    }
    let times = times.values().to_vec();
    debug_assert_eq!(times.len(), b.num_rows());
    Ok((b, times))
}

/// Applies stages in order.
pub fn apply_stages(stages: &[Stage], batch: &RecordBatch) -> Result<RecordBatch> {
    let mut b = batch.clone();
    for s in stages {
        if b.num_rows() == 0 {
            break;
        }
        b = s.apply(&b)?;
    }
    Ok(b)
}

/// Where each grouping column of the aggregate's output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// The window's start.
    WindowStart,
    /// The window's end.
    WindowEnd,
    /// The i-th non-window grouping expression.
    Key(usize),
}

/// A windowed aggregation as planned by DataFusion.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// The events it reads.
    pub events: Arc<EventSchema>,
    /// Steps between the stream and the aggregation (the WHERE clause).
    pub input_stages: Vec<Stage>,
    /// Non-window grouping expressions, evaluated against the stream batch.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Schema of the evaluated keys (for the group table).
    pub key_schema: SchemaRef,
    /// For each grouping column of the aggregate's output, its source.
    pub key_layout: Vec<KeySlot>,
    /// The aggregate functions.
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Their `FILTER (WHERE …)` clauses.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Schema of the aggregate's output: grouping columns, then one column per aggregate.
    pub output_schema: SchemaRef,
    /// Steps after the aggregation (HAVING, SELECT list).
    pub output_stages: Vec<Stage>,
}

/// How a query's events are spread over its workers (what Flink calls the distribution).
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// By hash of the group keys, so each key's events always reach the same worker. With more
    /// than one worker the router applies `filters` (the WHERE clause) first and evaluates
    /// `keys` once, over the rows that pass, and hands the key columns to the worker with the
    /// rows (with one worker the operator does both). Both are planned over the windowed schema
    /// but read only event columns, whose indices are the same in the event schema (a window
    /// bound is not known until the operator assigns one).
    ByKeys {
        /// The WHERE clause, as conjuncts.
        filters: Vec<Arc<dyn PhysicalExpr>>,
        /// The non-window group keys, in the aggregate's order.
        keys: Vec<Arc<dyn PhysicalExpr>>,
    },
    /// By hash of keys of its own for each of the streams a join of two streams reads (in
    /// [`StreamPlan::stream_events`] order): an event goes to the worker of its key, whichever
    /// stream it is of, so the events of one key meet on one worker. No filter is applied.
    ByStreamKeys(Vec<Vec<Arc<dyn PhysicalExpr>>>),
    /// Everything to worker 0 (an aggregate without keys has one group per window).
    Single,
    /// Batch by batch in turn (stateless queries).
    RoundRobin,
}

/// The predicates of the filter stages among `stages` (a WHERE clause, as conjuncts).
fn filters_of(stages: &[Stage]) -> Vec<Arc<dyn PhysicalExpr>> {
    stages
        .iter()
        .filter_map(|s| match s {
            Stage::Filter(p) => Some(Arc::clone(p)),
            Stage::Project { .. } | Stage::Rank { .. } | Stage::Lookup(_) => None,
        })
        .collect()
}

/// What kind of dataflow a query needs.
#[derive(Debug, Clone)]
pub enum PlanKind {
    /// A stateless filter/projection: rows stream through as they arrive.
    Map {
        /// The window whose bounds are added to each row (TUMBLE only), if any.
        window: Option<WindowSpec>,
        /// Steps applied to every batch.
        stages: Vec<Stage>,
    },
    /// Per-event window functions (`OVER`): one row per event, emitted when the watermark
    /// passes it.
    Over(super::over::OverSpec),
    /// A windowed aggregation: rows are emitted once per window when the watermark passes its end.
    Window {
        /// The window.
        window: WindowSpec,
        /// The aggregation.
        aggregate: AggregateSpec,
    },
    /// A query over a windowed query's results (`WITH per_minute AS (… TUMBLE …) SELECT … FROM
    /// TUMBLE(per_minute, window_start, INTERVAL '1' HOUR) …`): the inner plan's rows are the
    /// outer plan's events.
    Chain(Box<ChainSpec>),
    /// `UNION ALL` of queries over the same stream.
    Union(Box<UnionSpec>),
    /// A GROUP BY without a window: running aggregates per key, emitted as a changelog.
    Updating(Box<UpdatingSpec>),
    /// Two views of the stream joined on a key within a time bound.
    IntervalJoin(Box<super::join::IntervalJoinSpec>),
    /// Events joined to reference tables, then a stateful plan over the joined rows (a
    /// window, OVER or GROUP BY over `payments JOIN merchants`).
    Enriched(Box<EnrichedSpec>),
    /// Two windowed aggregates of the stream joined on their keys and window bounds.
    WindowJoin(Box<WindowJoinSpec>),
    /// A row pattern over each partition of the stream (`MATCH_RECOGNIZE`): one row per match,
    /// emitted once the watermark has decided it.
    Recognize(Box<super::recognize::RecognizeSpec>),
    /// A plan over the events plus the watermark each arrived under (`booking_time`): the
    /// operator adds that column, then runs the inner plan, on one worker.
    Booked(Box<StreamPlan>),
}

/// Two windowed aggregates with the same windows, joined on their keys and a window bound
/// (`operators/window_join.rs`): the rows each emits for a window are joined when it closes.
#[derive(Debug, Clone)]
pub struct WindowJoinSpec {
    /// The left aggregate (over the stream).
    pub left: StreamPlan,
    /// The right aggregate (over the same stream).
    pub right: StreamPlan,
    /// Left outer (every left row, with nulls when nothing matched) or inner.
    pub left_outer: bool,
    /// The key of a left row and of a right row (over each side's result rows).
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// See `left_keys`.
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The rest of ON, over DataFusion's intermediate batch of a pair.
    pub residual: Option<datafusion::physical_plan::joins::utils::JoinFilter>,
    /// The joined rows: the left side's columns, then the right's.
    pub joined_schema: SchemaRef,
    /// Steps over joined rows (the rest of WHERE, the SELECT list).
    pub output_stages: Vec<Stage>,
}

/// A stateful plan over events joined to reference tables: `stages` (filters and
/// [`Stage::Lookup`]s) turn each event batch into joined rows, which are the events of
/// `inner` (the stream's columns first, then the tables'; same event time and id).
#[derive(Debug, Clone)]
pub struct EnrichedSpec {
    /// From events to joined rows.
    pub stages: Vec<Stage>,
    /// The plan over the joined rows.
    pub inner: StreamPlan,
}

/// The name of the column an updating query's rows end with: [`OP_INSERT`], [`OP_UPDATE`] or
/// [`OP_DELETE`].
pub const CHANGELOG_OP: &str = "op";
/// A key's first row.
pub const OP_INSERT: &str = "insert";
/// A key's new values.
pub const OP_UPDATE: &str = "update";
/// The key is gone (its state expired, or it no longer passes HAVING); its last values.
pub const OP_DELETE: &str = "delete";

/// A GROUP BY without a window (running totals per key since the start): every key's values
/// change as its events arrive, so its rows are a changelog ([`CHANGELOG_OP`]), one row per
/// changed key per watermark step and at the end of input. Applied in order, keeping the
/// latest row per key and dropping deleted keys, it is the batch GROUP BY over the same events.
#[derive(Debug, Clone)]
pub struct UpdatingSpec {
    /// The aggregation (no window bounds among its keys).
    pub aggregate: AggregateSpec,
    /// Keys without an event for this long behind the watermark are dropped, with a
    /// `delete` (`SET state_ttl`); `None`: kept for ever.
    pub state_ttl: Option<i64>,
    /// The result columns that are the group keys, in key order, when the SELECT list shows
    /// every key as it is (`None` otherwise): a sink that keys its records keys them by these,
    /// so a key's changes stay in order in one partition.
    pub output_keys: Option<Vec<usize>>,
}

impl UpdatingSpec {
    /// [`Self::output_keys`] of an aggregation: its keys (the first columns of its rows)
    /// followed through the output stages.
    pub fn keys_in_output(aggregate: &AggregateSpec) -> Option<Vec<usize>> {
        if aggregate.keys.is_empty() {
            return None;
        }
        let mut at: Vec<usize> = (0..aggregate.keys.len()).collect();
        for s in &aggregate.output_stages {
            match s {
                Stage::Filter(_) => {}
                Stage::Project { exprs, .. } => {
                    let column = |e: &Arc<dyn PhysicalExpr>| {
                        e.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                            .map(|c| c.index())
                    };
                    at = at
                        .iter()
                        .map(|k| exprs.iter().position(|e| column(e) == Some(*k)))
                        .collect::<Option<_>>()?;
                }
                Stage::Rank { .. } | Stage::Lookup(_) => return None,
            }
        }
        Some(at)
    }
}

/// `UNION ALL` of queries, each over a stream: every branch sees every event of its stream and
/// runs as a query of its own; its rows, cast to the first branch's column types, go to one
/// output.
#[derive(Debug, Clone)]
pub struct UnionSpec {
    /// The branches, in the order written.
    pub branches: Vec<StreamPlan>,
    /// Per branch, per column: the type its values are cast to (`None`: as they are).
    pub casts: Vec<Vec<Option<datafusion::arrow::datatypes::DataType>>>,
    /// The streams the branches read, by name, when they read more than one (empty: every
    /// branch reads the plan's one stream). Sorted by name: a run reads them as its source's
    /// streams in this order ([`crate::source::Source::streams`]).
    pub streams: Vec<(String, Arc<EventSchema>)>,
    /// Per branch, the index of its stream in `streams` (all 0 when there is one).
    pub branch_streams: Vec<usize>,
}

/// Two plans in a row: the inner windowed aggregate's result rows, as they are emitted, are the
/// events of the outer plan, timed by one of the inner window's bounds.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// The windowed aggregate over the stream.
    pub inner: StreamPlan,
    /// For each column of the outer plan's events, the inner result column it is.
    pub columns: Vec<usize>,
    /// How far the outer events' time lags the watermark: after the watermark passed `W`,
    /// every inner row timed before `W - lag + 1` has been emitted (the inner window's size
    /// less one for `window_start`; nothing but the bound's own millisecond for `window_end`),
    /// so the outer plan's watermark is `W - lag`.
    pub lag: i64,
    /// The plan over the inner rows.
    pub outer: StreamPlan,
}

/// A planned stream query.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// The query text.
    pub sql: String,
    /// How errors while the query runs name it (`the query` unless the caller names it: the
    /// query file, the sink an INSERT writes).
    pub name: String,
    /// The dataflow.
    pub kind: PlanKind,
    /// The schema of result rows.
    pub output_schema: SchemaRef,
    /// The events it reads: the engine runs it only over a source that decodes these.
    pub events: Arc<EventSchema>,
}

impl StreamPlan {
    /// The plan, named `name` in errors while it runs.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The plan with `ttl` as its state TTL (`SET state_ttl`, `--state-ttl`).
    pub fn with_state_ttl(mut self, ttl: i64) -> StreamPlan {
        match &mut self.kind {
            PlanKind::Booked(b) => **b = b.clone().with_state_ttl(ttl),
            PlanKind::Over(o) => o.state_ttl = Some(ttl),
            PlanKind::Window { window, .. } => window.state_ttl = Some(ttl),
            PlanKind::Chain(c) => {
                c.inner = c.inner.clone().with_state_ttl(ttl);
                c.outer = c.outer.clone().with_state_ttl(ttl);
            }
            PlanKind::Updating(u) => u.state_ttl = Some(ttl),
            PlanKind::Union(u) => {
                for b in &mut u.branches {
                    *b = b.clone().with_state_ttl(ttl);
                }
            }
            PlanKind::Enriched(e) => e.inner = e.inner.clone().with_state_ttl(ttl),
            _ => {}
        }
        self
    }

    /// The plan with `ttl` as its state TTL unless the query set one (`SET state_ttl`): the
    /// source's dedup TTL, so a key's per-event state lives as long as its events' ids do.
    pub fn with_default_state_ttl(&self, ttl: i64) -> StreamPlan {
        let mut plan = self.clone();
        match &mut plan.kind {
            PlanKind::Booked(b) => **b = b.with_default_state_ttl(ttl),
            PlanKind::Over(o) => {
                o.state_ttl.get_or_insert(ttl);
            }
            PlanKind::Window { window, .. } => {
                window.state_ttl.get_or_insert(ttl);
            }
            PlanKind::Chain(c) => {
                c.inner = c.inner.with_default_state_ttl(ttl);
                c.outer = c.outer.with_default_state_ttl(ttl);
            }
            PlanKind::Union(u) => {
                for b in &mut u.branches {
                    *b = b.with_default_state_ttl(ttl);
                }
            }
            PlanKind::Enriched(e) => e.inner = e.inner.with_default_state_ttl(ttl),
            _ => {}
        }
        plan
    }

    /// The plan with `SET dense_windows = 'true'`: its TUMBLE aggregate (or the one a query
    /// over windowed results reads) emits a row for every key it has seen in each window,
    /// quiet ones too. Refused, saying why, for a plan without one.
    pub fn with_dense_windows(mut self) -> std::result::Result<StreamPlan, String> {
        match &mut self.kind {
            PlanKind::Window { window, .. } => match window.kind {
                super::WindowKind::Tumble { .. } => window.dense = true,
                _ => {
                    return Err(
                        "SET dense_windows fills the quiet windows of a TUMBLE aggregate; HOP and SESSION windows are not filled (a session is made of events), so remove the SET or aggregate over TUMBLE".into(),
                    );
                }
            },
            PlanKind::Chain(c) => c.inner = c.inner.clone().with_dense_windows()?,
            PlanKind::Booked(b) => **b = b.clone().with_dense_windows()?,
            PlanKind::Enriched(e) => e.inner = e.inner.clone().with_dense_windows()?,
            _ => {
                return Err(
                    "SET dense_windows fills the quiet windows of an aggregate over TUMBLE (GROUP BY …, window_start, window_end), or of the one a query over windowed results reads; this query has none, so remove the SET".into(),
                );
            }
        }
        Ok(self)
    }

    /// The events of each stream it reads, in the order a run's source must deliver them as
    /// its streams: one but for a union of different streams ([`UnionSpec::streams`]).
    pub fn stream_events(&self) -> Vec<Arc<EventSchema>> {
        match &self.kind {
            PlanKind::Union(u) if !u.streams.is_empty() => {
                u.streams.iter().map(|(_, e)| Arc::clone(e)).collect()
            }
            PlanKind::IntervalJoin(j) if !j.streams.is_empty() => {
                j.streams.iter().map(|(_, e)| Arc::clone(e)).collect()
            }
            // A window over a join of two sources reads what the join reads.
            PlanKind::Chain(c) => c.inner.stream_events(),
            _ => vec![Arc::clone(&self.events)],
        }
    }

    /// The names of the streams it reads when it reads several ([`UnionSpec::streams`]).
    pub fn stream_names(&self) -> Vec<String> {
        match &self.kind {
            PlanKind::Union(u) => u.streams.iter().map(|(n, _)| n.clone()).collect(),
            PlanKind::IntervalJoin(j) => j.streams.iter().map(|(n, _)| n.clone()).collect(),
            PlanKind::Chain(c) => c.inner.stream_names(),
            _ => Vec::new(),
        }
    }

    /// For a changelog (a GROUP BY without a window), the result columns its rows are keyed by
    /// ([`UpdatingSpec::output_keys`]).
    pub fn changelog_keys(&self) -> Option<&[usize]> {
        match &self.kind {
            PlanKind::Updating(u) => u.output_keys.as_deref(),
            PlanKind::Enriched(e) => e.inner.changelog_keys(),
            PlanKind::Booked(b) => b.changelog_keys(),
            _ => None,
        }
    }

    /// How the query's events must be spread over workers: the plan decides, the router does it.
    pub fn partitioning(&self) -> Partitioning {
        match &self.kind {
            // Quiet windows are filled up to the stream's last window with events: one worker
            // sees them all.
            PlanKind::Window { window, .. } if window.dense => Partitioning::Single,
            PlanKind::Window { aggregate, .. } if aggregate.keys.is_empty() => Partitioning::Single,
            // A ranking (Top-N per window) needs each window's groups together.
            PlanKind::Window { aggregate, .. }
                if aggregate
                    .output_stages
                    .iter()
                    .any(|s| matches!(s, Stage::Rank { .. })) =>
            {
                Partitioning::Single
            }
            // A projection below the aggregate would move the columns the keys read; one
            // worker is always right (and the operators refuse such a plan today).
            PlanKind::Window { aggregate, .. }
                if aggregate
                    .input_stages
                    .iter()
                    .any(|s| matches!(s, Stage::Project { .. })) =>
            {
                Partitioning::Single
            }
            PlanKind::Window { aggregate, .. } => Partitioning::ByKeys {
                filters: filters_of(&aggregate.input_stages),
                keys: aggregate.keys.clone(),
            },
            PlanKind::Over(over) if over.keys.is_empty() => Partitioning::Single,
            PlanKind::Over(over) => Partitioning::ByKeys {
                filters: filters_of(&over.input_stages),
                keys: over.keys.clone(),
            },
            PlanKind::Map { .. } => Partitioning::RoundRobin,
            // The outer plan's groups are made of the inner one's: one worker sees them all.
            PlanKind::Chain(_) => Partitioning::Single,
            // A self-join whose sides have the same key: an event's key is the same whichever
            // side takes it, so spreading events by it keeps every pair on one worker.
            PlanKind::IntervalJoin(j)
                if j.streams.is_empty()
                    && j.left_keys.len() == j.right_keys.len()
                    && j.left_keys
                        .iter()
                        .zip(&j.right_keys)
                        .all(|(l, r)| l.to_string() == r.to_string()) =>
            {
                Partitioning::ByKeys {
                    filters: vec![],
                    keys: j.left_keys.clone(),
                }
            }
            // A join of two streams whose keys have the same types: each stream's events by its
            // own side's key, hashed alike.
            PlanKind::IntervalJoin(j)
                if j.streams.len() == 2 && {
                    let types = |keys: &[Arc<dyn PhysicalExpr>], e: &EventSchema| {
                        keys.iter()
                            .map(|k| k.data_type(e.arrow()).ok())
                            .collect::<Vec<_>>()
                    };
                    let (l, r) = (
                        types(&j.left_keys, &j.left_events),
                        types(&j.right_keys, &j.right_events),
                    );
                    l == r && l.iter().all(Option::is_some)
                } =>
            {
                let mut per_stream = vec![Vec::new(), Vec::new()];
                per_stream[j.left_stream] = j.left_keys.clone();
                per_stream[j.right_stream] = j.right_keys.clone();
                Partitioning::ByStreamKeys(per_stream)
            }
            // Keys of different columns or types: one worker sees both sides.
            PlanKind::IntervalJoin(_) => Partitioning::Single,
            PlanKind::Updating(u) if u.aggregate.keys.is_empty() => Partitioning::Single,
            PlanKind::Updating(u) => Partitioning::ByKeys {
                filters: filters_of(&u.aggregate.input_stages),
                keys: u.aggregate.keys.clone(),
            },
            // Keys of the stream's own columns (the joined rows' first ones) are known before the
            // join: events are spread by them, after the conditions on the stream's columns (the
            // rest of the WHERE may read the tables'). Keys that read a table's columns are known
            // only after it.
            PlanKind::Enriched(e) => match e.inner.partitioning() {
                Partitioning::RoundRobin => Partitioning::RoundRobin,
                Partitioning::ByKeys { keys, .. }
                    if keys.iter().all(|k| {
                        datafusion::physical_expr::utils::collect_columns(k)
                            .iter()
                            .all(|c| c.index() < self.events.arrow().fields().len())
                    }) =>
                {
                    // The conditions before the first join read the stream's columns alone.
                    let filters = e
                        .stages
                        .iter()
                        .take_while(|s| matches!(s, Stage::Filter(_)))
                        .filter_map(|s| match s {
                            Stage::Filter(p) => Some(Arc::clone(p)),
                            _ => None,
                        })
                        .collect();
                    Partitioning::ByKeys { filters, keys }
                }
                _ => Partitioning::Single,
            },
            PlanKind::WindowJoin(_) => Partitioning::Single,
            // The router's events lack the column the inner plan reads.
            PlanKind::Booked(_) => Partitioning::Single,
            PlanKind::Recognize(r) if r.keys.is_empty() => Partitioning::Single,
            PlanKind::Recognize(r) => Partitioning::ByKeys {
                filters: r.filters.clone(),
                keys: r.keys.clone(),
            },
            // Branches partitioned apart would need the events twice; stateless branches go
            // anywhere, and a stateful one runs with its siblings on one worker.
            PlanKind::Union(u) => match u
                .branches
                .iter()
                .all(|b| matches!(b.kind, PlanKind::Map { .. }))
            {
                true => Partitioning::RoundRobin,
                false => Partitioning::Single,
            },
        }
    }

    /// The window, if the query has one.
    pub fn window(&self) -> Option<&WindowSpec> {
        match &self.kind {
            PlanKind::Map { window, .. } => window.as_ref(),
            PlanKind::Window { window, .. } => Some(window),
            PlanKind::Over(_) => None,
            PlanKind::Chain(c) => c.outer.window(),
            PlanKind::Enriched(e) => e.inner.window(),
            PlanKind::Booked(b) => b.window(),
            PlanKind::WindowJoin(_) | PlanKind::Recognize(_) => None,
            PlanKind::Union(_) | PlanKind::Updating(_) | PlanKind::IntervalJoin(_) => None,
        }
    }
}
