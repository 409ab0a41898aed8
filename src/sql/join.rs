//! Stream–stream interval joins: two views of the stream joined on a key and a bounded
//! event-time condition (an authorization and its capture within ten minutes).
//!
//! ```sql
//! SELECT a.payment_id, a.event_time AS authorized_at, c.event_time AS captured_at
//! FROM payments a
//! LEFT JOIN payments c
//!   ON c.payment_id = a.payment_id AND c.event_type = 'capture'
//!  AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE
//! WHERE a.event_type = 'authorization'
//! ```
//!
//! DataFusion plans the join (a nested-loop join whose filter is the whole ON condition); this
//! file reads that plan: the ON condition's conjuncts are sorted into equality keys (one side's
//! expression equal to the other's), the time bound (`right.time − left.time` within
//! `[lower, upper]`, from comparisons of the two time columns plus constant intervals), and
//! the rest, evaluated on each candidate pair. A condition on one side alone moves to that
//! side's input where the join type allows it (the right side of ON, either side of an inner
//! join's WHERE, the left side of a left join's WHERE), so rows that can never match are never
//! kept. The operator is `operators/interval_join.rs`.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{JoinSide, JoinType, ScalarValue};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::sql::sqlparser::tokenizer::Span;

use super::plan::Stage;
use super::window_tvf::plan_error;
use crate::error::{Error, Result};
use crate::schema::EventSchema;

/// An interval join of the stream with itself, or of two streams.
#[derive(Debug, Clone)]
pub struct IntervalJoinSpec {
    /// The events of left rows.
    pub left_events: Arc<EventSchema>,
    /// The events of right rows (the left's, for a join of the stream with itself).
    pub right_events: Arc<EventSchema>,
    /// For a join of two streams: both, by name, sorted (the order a run's source delivers
    /// them), and which of them is the left and which the right. Empty for a self-join.
    pub streams: Vec<(String, Arc<EventSchema>)>,
    /// Index in `streams` of the left rows' stream.
    pub left_stream: usize,
    /// Index in `streams` of the right rows' stream.
    pub right_stream: usize,
    /// Left outer (every left row, with nulls when nothing matched) or inner.
    pub left_outer: bool,
    /// Which events are left rows (over the left events), and which right rows (over the
    /// right events).
    pub left_filter: Option<Arc<dyn PhysicalExpr>>,
    /// See `left_filter`.
    pub right_filter: Option<Arc<dyn PhysicalExpr>>,
    /// The key of a left row and of a right row (over their events), compared in order.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// See `left_keys`.
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// A pair matches only when `right time − left time` is in `[lower, upper]` (ms).
    pub lower: i64,
    /// See `lower`.
    pub upper: i64,
    /// The whole ON condition over a pair's intermediate batch (DataFusion's join filter).
    pub on: JoinFilter,
    /// The joined rows: every event column of the left row, then of the right (nullable).
    pub joined_schema: SchemaRef,
    /// Steps over joined rows (the rest of WHERE, the SELECT list).
    pub output_stages: Vec<Stage>,
}

/// Position for errors about the join as a whole.
pub(super) struct JoinAt(pub Span);

/// The columns of an expression, each as (side, index in its side).
fn sides(e: &Arc<dyn PhysicalExpr>, filter: &JoinFilter) -> Vec<(JoinSide, usize)> {
    collect_columns(e)
        .iter()
        .map(|c| {
            let ci = &filter.column_indices()[c.index()];
            (ci.side, ci.index)
        })
        .collect()
}

/// `e` (over the filter's intermediate batch, reading one side only) over that side's events.
fn on_side(
    e: &Arc<dyn PhysicalExpr>,
    filter: &JoinFilter,
    events: &SchemaRef,
) -> Result<Arc<dyn PhysicalExpr>> {
    let rewritten = Arc::clone(e)
        .transform(|node| {
            if let Some(c) = node.downcast_ref::<Column>() {
                let ci = &filter.column_indices()[c.index()];
                let name = events.field(ci.index).name();
                return Ok(datafusion::common::tree_node::Transformed::yes(
                    Arc::new(Column::new(name, ci.index)) as Arc<dyn PhysicalExpr>,
                ));
            }
            Ok(datafusion::common::tree_node::Transformed::no(node))
        })?
        .data;
    // Arithmetic the operator runs stops on overflow, as everywhere (sql/checked.rs).
    Ok(super::checked::checked(rewritten, events)?)
}

use datafusion::common::tree_node::TreeNode;

/// A time term: the time column of one side plus a constant (ms). `time` is each side's time
/// column.
fn time_term(
    e: &Arc<dyn PhysicalExpr>,
    filter: &JoinFilter,
    time: (usize, usize),
) -> Option<(JoinSide, i64)> {
    if let Some(c) = e.downcast_ref::<Column>() {
        let ci = &filter.column_indices()[c.index()];
        let t = match ci.side {
            JoinSide::Left => time.0,
            JoinSide::Right => time.1,
            JoinSide::None => return None,
        };
        return (ci.index == t).then_some((ci.side, 0));
    }
    let b = e.downcast_ref::<BinaryExpr>()?;
    let sign = match b.op() {
        BinaryOp::Plus => 1,
        BinaryOp::Minus => -1,
        _ => return None,
    };
    let literal = |e: &Arc<dyn PhysicalExpr>| interval_ms(e.downcast_ref::<Literal>()?.value());
    match (time_term(b.left(), filter, time), literal(b.right())) {
        (Some((side, base)), Some(ms)) => Some((side, base + sign * ms)),
        // `INTERVAL '1' HOUR + a.event_time`.
        _ if sign == 1 => {
            let (side, base) = time_term(b.right(), filter, time)?;
            Some((side, base + literal(b.left())?))
        }
        _ => None,
    }
}

/// A constant interval or duration in milliseconds (months have no fixed length: none).
fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000 + i.milliseconds as i64)
        }
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1_000),
        _ => None,
    }
}

/// The two sides of a join: their streams' names and events.
pub(super) struct JoinSides {
    /// The left (FROM) relation's stream.
    pub left: (String, Arc<EventSchema>),
    /// The joined relation's stream (the same for a self-join).
    pub right: (String, Arc<EventSchema>),
}

/// Reads the join node `join` (under `above`, the stages over its rows, top first).
pub(super) fn lift_join(
    join: &NestedLoopJoinExec,
    mut above: Vec<Stage>,
    sides_of: JoinSides,
    at: JoinAt,
) -> Result<IntervalJoinSpec> {
    let left_events = Arc::clone(&sides_of.left.1);
    let right_events = Arc::clone(&sides_of.right.1);
    let at = at.0;
    let left_outer = match join.join_type() {
        JoinType::Inner => false,
        JoinType::Left => true,
        other => {
            let name = match other {
                JoinType::Right => "RIGHT JOIN",
                JoinType::Full => "FULL JOIN",
                _ => "this kind of join (semi, anti, mark)",
            };
            return Err(plan_error(
                at,
                format!(
                    "{name} of streams is not supported; write JOIN (inner) or LEFT JOIN, with the stream whose rows must all come out on the left"
                ),
            ));
        }
    };
    if join.projection().is_some() {
        return Err(Error::Internal("a join with its own projection".into()));
    }
    let arrow = Arc::clone(left_events.arrow());
    let right_arrow = Arc::clone(right_events.arrow());
    for child in [join.left(), join.right()] {
        if child.name() != "EmptyExec" {
            return Err(plan_error(
                at,
                "each side of a join reads the stream itself (FROM payments a JOIN payments c ON …); filter the sides in ON or WHERE",
            ));
        }
    }
    let Some(on) = join.filter().cloned() else {
        return Err(plan_error(
            at,
            "a join of the stream needs an ON condition with an equality key and a time bound (c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE)",
        ));
    };
    let time = (
        left_events.event_time_column(),
        right_events.event_time_column(),
    );
    let width = arrow.fields().len();
    let (mut lower, mut upper) = (i64::MIN, i64::MAX);
    let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
    let (mut left_filters, mut right_filters) = (Vec::new(), Vec::new());
    for c in split_conjunction(on.expression()) {
        let cols = sides(c, &on);
        let all = |s: JoinSide| !cols.is_empty() && cols.iter().all(|(x, _)| *x == s);
        if all(JoinSide::Right) {
            // A condition in ON on the right side alone: which rows may match at all.
            right_filters.push(on_side(c, &on, &right_arrow)?);
            continue;
        }
        if all(JoinSide::Left) && !left_outer {
            left_filters.push(on_side(c, &on, &arrow)?);
            continue;
        }
        let Some(b) = c.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let times = (
            time_term(b.left(), &on, time),
            time_term(b.right(), &on, time),
        );
        // An equality of one side's expression and the other's: a key (unless it equates the
        // two times: a bound).
        let equal_times = matches!(times, (Some((x, _)), Some((y, _))) if x != y);
        if *b.op() == BinaryOp::Eq && !equal_times {
            let (l, r) = (sides(b.left(), &on), sides(b.right(), &on));
            let one = |v: &[(JoinSide, usize)], s| !v.is_empty() && v.iter().all(|(x, _)| *x == s);
            if one(&l, JoinSide::Left) && one(&r, JoinSide::Right) {
                left_keys.push(on_side(b.left(), &on, &arrow)?);
                right_keys.push(on_side(b.right(), &on, &right_arrow)?);
                continue;
            }
            if one(&l, JoinSide::Right) && one(&r, JoinSide::Left) {
                left_keys.push(on_side(b.right(), &on, &arrow)?);
                right_keys.push(on_side(b.left(), &on, &right_arrow)?);
                continue;
            }
        }
        // A comparison of the two time columns: a bound on right time − left time.
        if let (Some((sa, oa)), Some((sb, ob))) = times
            && sa != sb
        {
            // a op b with a = side_a.t + oa, b = side_b.t + ob, as right − left op' c.
            let (op, c) = match sa {
                JoinSide::Right => (*b.op(), ob - oa),
                _ => (
                    match b.op() {
                        BinaryOp::Gt => BinaryOp::Lt,
                        BinaryOp::GtEq => BinaryOp::LtEq,
                        BinaryOp::Lt => BinaryOp::Gt,
                        BinaryOp::LtEq => BinaryOp::GtEq,
                        o => *o,
                    },
                    oa - ob,
                ),
            };
            match op {
                BinaryOp::GtEq => lower = lower.max(c),
                BinaryOp::Gt => lower = lower.max(c.saturating_add(1)),
                BinaryOp::LtEq => upper = upper.min(c),
                BinaryOp::Lt => upper = upper.min(c.saturating_sub(1)),
                BinaryOp::Eq => {
                    lower = lower.max(c);
                    upper = upper.min(c);
                }
                _ => {}
            }
        }
    }
    if left_keys.is_empty() {
        return Err(plan_error(
            at,
            "a join of the stream needs an equality key in ON (c.payment_id = a.payment_id): without one every event would be paired with every other",
        ));
    }
    if lower == i64::MIN || upper == i64::MAX {
        return Err(plan_error(
            at,
            "a join of streams needs its time bounded on both sides in ON, or it would keep every event for ever: add c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '10' MINUTE (or >= and <= of the two event times, plus intervals of days, hours, minutes or seconds: a month has no fixed length)",
        ));
    }
    if lower > upper {
        return Err(plan_error(
            at,
            "the join's time bounds leave no room: the right event time must be between left + lower and left + upper, with lower ≤ upper",
        ));
    }
    // WHERE conjuncts right above the join that read one side: that side's input, where the
    // join type allows it.
    let joined_schema = join.schema();
    if let Some(Stage::Filter(p)) = above.last().cloned() {
        let mut rest = Vec::new();
        for c in split_conjunction(&p) {
            let cols: Vec<usize> = collect_columns(c).iter().map(|c| c.index()).collect();
            if !cols.is_empty() && cols.iter().all(|i| *i < width) {
                left_filters.push(reassign_expr_columns(Arc::clone(c), &arrow)?);
            } else if !left_outer && !cols.is_empty() && cols.iter().all(|i| *i >= width) {
                let shifted = Arc::clone(c)
                    .transform(|node| {
                        if let Some(col) = node.downcast_ref::<Column>() {
                            let i = col.index() - width;
                            return Ok(datafusion::common::tree_node::Transformed::yes(Arc::new(
                                Column::new(right_arrow.field(i).name(), i),
                            )
                                as Arc<dyn PhysicalExpr>));
                        }
                        Ok(datafusion::common::tree_node::Transformed::no(node))
                    })?
                    .data;
                right_filters.push(shifted);
            } else {
                rest.push(Arc::clone(c));
            }
        }
        above.pop();
        if let Some(rest) = rest
            .into_iter()
            .reduce(|a, b| Arc::new(BinaryExpr::new(a, BinaryOp::And, b)) as Arc<dyn PhysicalExpr>)
        {
            above.push(Stage::Filter(rest));
        }
    }
    above.reverse();
    let and = |v: Vec<Arc<dyn PhysicalExpr>>| {
        v.into_iter()
            .reduce(|a, b| Arc::new(BinaryExpr::new(a, BinaryOp::And, b)) as Arc<dyn PhysicalExpr>)
    };
    // A join of two streams reads both, in name order (a self-join reads one).
    let (mut streams, mut left_stream, mut right_stream) = (Vec::new(), 0, 0);
    if sides_of.left.0 != sides_of.right.0 {
        streams = vec![sides_of.left.clone(), sides_of.right.clone()];
        streams.sort_by(|a, b| a.0.cmp(&b.0));
        left_stream = streams
            .iter()
            .position(|s| s.0 == sides_of.left.0)
            .unwrap_or(0);
        right_stream = 1 - left_stream;
    }
    let on = JoinFilter::new(
        super::checked::checked(Arc::clone(on.expression()), on.schema())?,
        on.column_indices().to_vec(),
        Arc::clone(on.schema()),
    );
    Ok(IntervalJoinSpec {
        left_events,
        right_events,
        streams,
        left_stream,
        right_stream,
        left_outer,
        left_filter: and(left_filters),
        right_filter: and(right_filters),
        left_keys,
        right_keys,
        lower,
        upper,
        // Evaluated over every candidate pair: its time bounds on the integers.
        on: datafusion::physical_plan::joins::utils::JoinFilter::new(
            super::time_shift::specialize(Arc::clone(on.expression()))?,
            on.column_indices().to_vec(),
            Arc::clone(on.schema()),
        ),
        joined_schema,
        output_stages: above,
    })
}
