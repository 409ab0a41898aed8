//! Operators: the stateful and stateless steps that turn accepted events into results.
//!
//! Fourth stage on the data's path (source → decode → sql → **operators** → sink). The router
//! (`engine`) deduplicates events ([`Dedup`]), tracks the watermark ([`Watermark`]) and sends each
//! worker its share of the events; the worker's [`Operator`] keeps per-window state and emits
//! results as the watermark passes window ends.
//!
//! ```text
//!            events (on time, deduplicated)            watermark W
//!   router ──────────────────────────────▶ Operator ◀────────────────── router
//!                                             │ process(): add to open windows
//!                                             │ advance_watermark(W): emit windows with end ≤ W
//!                                             ▼
//!                                       results, late events ──▶ sink
//! ```

mod aggregate;
mod booked;
pub(crate) use self::aggregate::where_mask;
mod chain;
mod dedup;
mod dense;
mod distinct_count;
mod enrich;
mod group_table;
mod hopping_window;
mod id_groups;
mod id_table;
mod interval_join;
mod key_ids;
mod lookup_join;
mod map;
mod over;
mod raw_events;
mod recognize;
mod session;
mod sum;
mod tumbling_window;
mod union;
mod updating;
mod watermark;
mod window_join;
mod window_state;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};

pub use self::dedup::{Dedup, DedupOutcome, PREFETCH_DISTANCE};
pub use self::group_table::FrozenGroups;
pub use self::hopping_window::HoppingWindow;
pub use self::lookup_join::{AS_OF_METADATA, AsOf, LookupJoin, LookupKind, TABLE_METADATA};
pub use self::map::MapOperator;
pub use self::over::OverWindow;
pub use self::raw_events::RawEvents;
pub use self::session::SessionWindow;
pub use self::sum::{ExactSum, exact_sum_udaf};
pub use self::tumbling_window::TumblingWindow;
pub use self::watermark::{Watermark, WatermarkState, check_max_skew, millis_text};

use crate::error::Result;
use crate::sql::{PlanKind, StreamPlan, WindowKind};

/// Accepted events as an operator receives them.
///
/// A decoded batch usually holds a few rows the router does not accept (redeliveries, far-future
/// times). Rather than copy every column to drop them, the router marks the accepted rows in
/// `selection`; operators fold it into their WHERE filter, which copies only the columns a query
/// reads. `positions` and `arrival_watermarks` have one entry per row of `batch`, selected or not.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// Rows in the order of the query's [`crate::schema::EventSchema`].
    pub batch: RecordBatch,
    /// Which rows are events (`None`: all). Never null.
    pub selection: Option<BooleanArray>,
    /// Position of each row in its source (for the late output).
    pub positions: Vec<u64>,
    /// The watermark in force when each row arrived (before it was seen).
    pub arrival_watermarks: Vec<i64>,
    /// The query's group-key columns over `batch`'s rows, when the router partitioned by key:
    /// it then also applied the query's WHERE clause, so every row passed it (and `selection`
    /// is `None`). `None`: the operator evaluates both itself.
    pub keys: Option<Vec<datafusion::arrow::array::ArrayRef>>,
    /// Which of the run's streams the rows are events of (0 but for a source of several
    /// streams, [`crate::source::Source::streams`]): a union of different streams gives each
    /// branch its own stream's batches.
    pub stream: usize,
    /// Each row's record, when the decoder left columns out: the late output decodes late
    /// events again from it, whole ([`RawEvents`]).
    pub raw: Option<RawEvents>,
}

impl EventBatch {
    /// A batch whose rows are all events.
    pub fn all(batch: RecordBatch, positions: Vec<u64>, arrival_watermarks: Vec<i64>) -> Self {
        EventBatch {
            batch,
            selection: None,
            positions,
            arrival_watermarks,
            keys: None,
            stream: 0,
            raw: None,
        }
    }

    /// Number of events (selected rows).
    pub fn num_events(&self) -> usize {
        self.selection
            .as_ref()
            .map_or(self.batch.num_rows(), BooleanArray::true_count)
    }

    /// Whether row `i` is an event.
    pub fn is_selected(&self, i: usize) -> bool {
        self.selection.as_ref().is_none_or(|s| s.value(i))
    }

    /// The rows at `idx`, with their positions, arrival watermarks and selection (not keys).
    pub fn take(&self, idx: &datafusion::arrow::array::UInt32Array) -> Result<EventBatch> {
        let rows = idx.values();
        let selection = match &self.selection {
            Some(s) => Some(
                datafusion::arrow::compute::take(s, idx, None)?
                    .as_boolean()
                    .clone(),
            ),
            None => None,
        };
        Ok(EventBatch {
            batch: datafusion::arrow::compute::take_record_batch(&self.batch, idx)?,
            selection,
            positions: rows.iter().map(|i| self.positions[*i as usize]).collect(),
            arrival_watermarks: rows
                .iter()
                .map(|i| self.arrival_watermarks[*i as usize])
                .collect(),
            keys: None,
            stream: self.stream,
            raw: self.raw.as_ref().map(|r| r.take(rows)),
        })
    }

    /// Re-orders the per-row vectors after a step that made row `i` out of row `from[i]` (a
    /// lookup join, which may repeat a row or drop it); `batch` is the caller's.
    pub fn reindex(&mut self, from: &[u32]) {
        self.positions = from.iter().map(|&i| self.positions[i as usize]).collect();
        self.arrival_watermarks = from
            .iter()
            .map(|&i| self.arrival_watermarks[i as usize])
            .collect();
        self.raw = self.raw.as_ref().map(|r| r.take(from));
    }

    /// The events alone (a copy only when some rows are not selected).
    pub fn compacted(&self) -> Result<EventBatch> {
        let Some(s) = &self.selection else {
            return Ok(self.clone());
        };
        let idx = datafusion::arrow::array::UInt32Array::from_iter_values(
            s.values().set_indices().map(|i| i as u32),
        );
        let mut out = self.take(&idx)?;
        out.selection = None;
        Ok(out)
    }
}

/// Events an operator found late, with the watermark that made them late.
#[derive(Debug, Clone)]
pub struct LateEvents {
    /// The late events.
    pub batch: RecordBatch,
    /// Their positions.
    pub positions: Vec<u64>,
    /// For each, the watermark it arrived behind.
    pub watermarks: Vec<i64>,
}

/// The event time each result row stands for: its window's end for a window aggregate, the
/// event's own time for a per-event result. A sink that keeps a timestamp per record (a log
/// topic) stamps it, so `consume --from <time>` finds results by the time they describe, not by
/// when a run happened to write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowTimes {
    /// Every row has this time (one window's results).
    All(i64),
    /// One time per row.
    Each(Vec<i64>),
}

impl RowTimes {
    /// The time of row `i`.
    pub fn get(&self, i: usize) -> i64 {
        match self {
            RowTimes::All(t) => *t,
            RowTimes::Each(v) => v[i],
        }
    }
}

/// Result rows with their event times.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Rows in the query's output schema.
    pub batch: RecordBatch,
    /// Each row's event time.
    pub times: RowTimes,
}

/// What an operator produced in one call.
#[derive(Debug, Default)]
pub struct OperatorOutput {
    /// Result rows, in the query's output schema.
    pub results: Vec<Emitted>,
    /// Late events to route to the late output.
    pub late: Vec<LateEvents>,
}

/// A step of the dataflow that may keep state between batches.
///
/// Call order: any number of `process` and `advance_watermark` calls, in arrival order, then
/// `finish` once at end of input. `snapshot` may be called between any two calls and must
/// capture everything needed for `restore` on a fresh operator of the same query to continue
/// with identical output.
///
/// Invariants: results of a window are emitted exactly once, by the first `advance_watermark`
/// whose watermark reaches the window's end (or by `finish`); an event is either added to state or
/// reported late, never both and never neither.
pub trait Operator: Send {
    /// Adds events to state (or emits them directly, for stateless operators).
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()>;
    /// The watermark moved to `watermark`: emit every window that ends at or before it.
    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()>;
    /// End of input: emit every open window.
    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()>;
    /// Serialises the operator's state.
    fn snapshot(&mut self) -> Result<Vec<u8>>;
    /// Replaces the operator's state with a snapshot taken from an operator of the same query.
    fn restore(&mut self, bytes: &[u8]) -> Result<()>;
}

/// `e` over the columns `columns` of its input (by index, in that order): each column `i` of
/// `e` becomes the position of `i` in `columns`. By index, not by name: rows joined to a
/// table may have two columns of one name (`p.merchant_id`, `m.merchant_id`).
pub(crate) fn rebind(
    e: &std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>,
    columns: &[usize],
) -> Result<std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_expr::expressions::Column;
    let mut missing = None;
    let out = std::sync::Arc::clone(e)
        .transform(|node| {
            if let Some(c) = node.downcast_ref::<Column>() {
                return Ok(match columns.iter().position(|i| *i == c.index()) {
                    Some(at) => Transformed::yes(std::sync::Arc::new(Column::new(c.name(), at))
                        as std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>),
                    None => {
                        missing = Some(c.index());
                        Transformed::no(node)
                    }
                });
            }
            Ok(Transformed::no(node))
        })?
        .data;
    match missing {
        Some(i) => Err(crate::error::Error::Internal(format!(
            "column {i} is not among the columns an expression is evaluated over"
        ))),
        None => Ok(out),
    }
}

/// Builds the operator for a planned query.
pub fn build_operator(plan: &StreamPlan) -> Result<Box<dyn Operator>> {
    Ok(Box::new(Named {
        query: plan.name.clone(),
        inner: build_unnamed(plan)?,
    }))
}

fn build_unnamed(plan: &StreamPlan) -> Result<Box<dyn Operator>> {
    Ok(match &plan.kind {
        PlanKind::Map { window, stages } => Box::new(MapOperator::new(
            stages.clone(),
            window.as_ref().map(|w| w.kind),
            std::sync::Arc::clone(&plan.events),
        )),
        PlanKind::Over(spec) => Box::new(over::OverWindow::new(
            spec.clone(),
            crate::engine::defaults::DEDUP_TTL_MS,
        )?),
        PlanKind::Window { window, aggregate } => match window.kind {
            WindowKind::Tumble { size } if window.dense => Box::new(TumblingWindow::dense(
                aggregate.clone(),
                size,
                window
                    .state_ttl
                    .unwrap_or(crate::engine::defaults::DEDUP_TTL_MS),
            )?),
            WindowKind::Tumble { size } => Box::new(TumblingWindow::new(aggregate.clone(), size)?),
            WindowKind::Hop { slide, size } => {
                Box::new(HoppingWindow::new(aggregate.clone(), slide, size)?)
            }
            WindowKind::Session { gap } => Box::new(SessionWindow::new(aggregate.clone(), gap)?),
        },
        PlanKind::Chain(spec) => Box::new(chain::ChainOperator::new(spec)?),
        PlanKind::Union(spec) => Box::new(union::UnionOperator::new(
            spec,
            std::sync::Arc::clone(&plan.output_schema),
        )?),
        PlanKind::IntervalJoin(spec) => {
            Box::new(interval_join::IntervalJoin::new((**spec).clone())?)
        }
        PlanKind::Updating(spec) => Box::new(updating::UpdatingAggregate::new(
            spec,
            std::sync::Arc::clone(&plan.output_schema),
        )?),
        PlanKind::WindowJoin(spec) => Box::new(window_join::WindowJoin::new(
            (**spec).clone(),
            build_unnamed(&spec.left)?,
            build_unnamed(&spec.right)?,
        )),
        PlanKind::Booked(inner) => Box::new(booked::Booked::new(
            build_unnamed(inner)?,
            std::sync::Arc::clone(inner.events.arrow()),
        )),
        PlanKind::Recognize(spec) => {
            Box::new(recognize::Recognize::new(spec, plan.events.arrow())?)
        }
        PlanKind::Enriched(spec) => Box::new(enrich::Enriched::new(
            spec.stages.clone(),
            build_unnamed(&spec.inner)?,
            plan.events.arrow().fields().len(),
        )),
    })
}

/// An operator whose evaluation errors (an integer overflow, a division by zero) name the query.
struct Named {
    query: String,
    inner: Box<dyn Operator>,
}

impl Named {
    fn name<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| named_evaluation_error(&self.query, e))
    }
}

/// An error evaluating `query`'s expressions (an integer overflow, a division by zero), naming
/// the query and saying what to do; other errors as they are. The operators' errors pass here,
/// and so do those of the WHERE clause and keys the router evaluates for them.
pub(crate) fn named_evaluation_error(query: &str, e: crate::error::Error) -> crate::error::Error {
    match e {
        crate::error::Error::DataFusion(e) => crate::error::Error::DataFusion(
            datafusion::error::DataFusionError::Execution(evaluation_message(query, &e)),
        ),
        e => e,
    }
}

/// What went wrong evaluating `query`, in one line, with what to do for an overflow.
fn evaluation_message(query: &str, e: &datafusion::error::DataFusionError) -> String {
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;
    match e.find_root() {
        DataFusionError::ArrowError(a, _) if matches!(**a, ArrowError::ArithmeticOverflow(_)) => {
            let ArrowError::ArithmeticOverflow(what) = &**a else {
                unreachable!()
            };
            format!(
                "{query} stopped: integer overflow: {what} does not fit in a 64-bit integer; results are never wrapped around. Compute in decimals instead, e.g. CAST(amount_minor AS DECIMAL(38, 0)) * 1000000"
            )
        }
        DataFusionError::ArrowError(a, _) if matches!(**a, ArrowError::DivideByZero) => format!(
            "{query} stopped: division by zero; write the divisor as NULLIF(divisor, 0) to get NULL instead"
        ),
        DataFusionError::ArrowError(a, _) if matches!(**a, ArrowError::CastError(_)) => {
            let ArrowError::CastError(what) = &**a else {
                unreachable!()
            };
            if what.contains("out of range") {
                // A number too large for the type: never wrapped, never silently nulled.
                format!(
                    "{query} stopped: {what}; results are never wrapped around or nulled. Keep it a DECIMAL(38, 0) (a sum of BIGINT is one), or compute in decimals"
                )
            } else {
                format!(
                    "{query} stopped: a value does not convert: {what}; write TRY_CAST(… AS …) to get NULL for the values that do not, or filter them out first"
                )
            }
        }
        DataFusionError::Internal(_) => format!(
            "{query} stopped: an internal error while evaluating it (this is a bug in paystream, please report it with the query)"
        ),
        root => format!("{query} stopped: {}", root.strip_backtrace()),
    }
}

impl Operator for Named {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let r = self.inner.process(input, out);
        self.name(r)
    }
    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let r = self.inner.advance_watermark(watermark, out);
        self.name(r)
    }
    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        let r = self.inner.finish(out);
        self.name(r)
    }
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.inner.snapshot()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.restore(bytes)
    }
}

/// The end of the earliest window an event at `ts` belongs to: once the watermark reaches it, that
/// window has fired and the event is late. `None` for session windows, whose lateness also depends
/// on per-key state (see [`SessionWindow`]).
pub fn first_window_end(kind: WindowKind, ts: i64) -> i64 {
    match kind {
        WindowKind::Tumble { size } => ts - ts.rem_euclid(size) + size,
        WindowKind::Hop { slide, size } => {
            // The earliest window containing ts starts at the first multiple of slide > ts - size.
            let s = ts - size;
            s - s.rem_euclid(slide) + slide + size
        }
        WindowKind::Session { gap } => ts + gap,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_selection_hides_rows_until_compacted() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![10, 11, 12, 13]))],
        )
        .unwrap();
        let mut ev = EventBatch::all(batch, vec![1, 2, 3, 4], vec![0, 0, 5, 5]);
        assert_eq!(ev.num_events(), 4);
        ev.selection = Some(BooleanArray::from(vec![true, false, true, false]));
        assert_eq!(ev.num_events(), 2);
        assert!(ev.is_selected(2) && !ev.is_selected(3));
        let c = ev.compacted().unwrap();
        assert!(c.selection.is_none());
        assert_eq!(c.positions, vec![1, 3]);
        assert_eq!(c.arrival_watermarks, vec![0, 5]);
        assert_eq!(
            c.batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values(),
            &[10, 12]
        );
        // `take` carries the selection of the rows it takes.
        let t = ev.take(&UInt32Array::from(vec![3, 0])).unwrap();
        assert_eq!(t.num_events(), 1);
        assert_eq!(t.positions, vec![4, 1]);
    }
}
