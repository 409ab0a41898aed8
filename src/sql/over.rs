//! Per-event window functions (`OVER`): what DataFusion planned, in the terms the over operator
//! runs.
//!
//! ```sql
//! SELECT event_id, count(*) OVER (PARTITION BY card_id ORDER BY event_time
//!                                 RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)
//! FROM payments
//! ```
//!
//! DataFusion plans one window node per distinct `PARTITION BY … ORDER BY …` (stacked, each
//! adding its columns to its input's). A stream runs them as one operator, so every function
//! must share the `PARTITION BY`, and order by the event time first: the operator keeps one
//! history per key in event-time order (ties by the remaining ORDER BY columns, then by the
//! event id) and computes every function over it. What a stream cannot compute — a frame that
//! ends after the current row, a function that looks at the whole partition — is refused here,
//! with what to write instead.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrame, WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, StandardWindowExpr, WindowExpr,
};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::windows::WindowUDFExpr;

use super::plan::Stage;
use crate::schema::EventSchema;

/// A query's window functions, planned for the over operator.
#[derive(Debug, Clone)]
pub struct OverSpec {
    /// The events it reads.
    pub events: Arc<EventSchema>,
    /// Steps between the stream and the window functions (the WHERE clause, filters only).
    pub input_stages: Vec<Stage>,
    /// The `PARTITION BY` expressions, over event batches (no keys: one partition).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Schema of the evaluated keys.
    pub key_schema: SchemaRef,
    /// `ORDER BY` columns after the event time, which break ties before the event id does.
    pub ties: Vec<PhysicalSortExpr>,
    /// The functions, in the order of their columns.
    pub functions: Vec<OverFunction>,
    /// The event columns followed by one column per function: what the output stages read.
    pub window_schema: SchemaRef,
    /// Steps after the window functions (an outer WHERE, the SELECT list).
    pub output_stages: Vec<Stage>,
    /// How long a key's state is kept after its last event (milliseconds of event time), for
    /// functions whose state never ends by itself (`row_number`, `lag`, frames from UNBOUNDED
    /// PRECEDING). `None`: the engine's dedup TTL.
    pub state_ttl: Option<i64>,
}

/// One window function.
#[derive(Debug, Clone)]
pub struct OverFunction {
    /// What it computes.
    pub kind: FunctionKind,
    /// Its argument (`None` for `count(*)` and `row_number()`), over event batches.
    pub arg: Option<Arc<dyn PhysicalExpr>>,
    /// The rows it reads, relative to the current one (aggregates only).
    pub frame: Frame,
    /// Its output column.
    pub field: FieldRef,
}

/// The window functions the over operator computes.
#[derive(Debug, Clone, PartialEq)]
pub enum FunctionKind {
    /// `count(x)` (non-null values) or `count(*)`.
    Count,
    /// `count(DISTINCT x)`.
    CountDistinct,
    /// `sum(x)`.
    Sum,
    /// `avg(x)`.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `stddev(x)` / `stddev_samp(x)`.
    StddevSamp,
    /// `stddev_pop(x)`.
    StddevPop,
    /// `var(x)` / `var_samp(x)` / `variance(x)`.
    VarSamp,
    /// `var_pop(x)`.
    VarPop,
    /// `lag(x, offset, default)`: the value `offset` rows before.
    Lag {
        /// Rows back (≥ 1).
        offset: u64,
        /// Value when there is no such row.
        default: ScalarValue,
    },
    /// `lead(x, offset, default)`: the value `offset` rows after; the row waits for it.
    Lead {
        /// Rows ahead (≥ 1).
        offset: u64,
        /// Value when the input ends first.
        default: ScalarValue,
    },
    /// `row_number()`: 1 for a key's first event.
    RowNumber,
    /// `ewma_zscore`, `ewma` or `mad_zscore` (`crate::functions::anomaly`) with its constant
    /// parameters.
    Anomaly(crate::functions::anomaly::Anomaly),
}

impl FunctionKind {
    /// Whether the function aggregates over a frame.
    pub fn is_aggregate(&self) -> bool {
        !matches!(
            self,
            FunctionKind::Lag { .. } | FunctionKind::Lead { .. } | FunctionKind::RowNumber
        )
    }
}

/// Rows of a frame relative to the current row (`start` before `end`, both before or at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    /// `ROWS BETWEEN start PRECEDING AND end PRECEDING` (`None`: UNBOUNDED; 0: CURRENT ROW).
    Rows {
        /// Rows back where the frame starts (`None`: the key's first row).
        start: Option<u64>,
        /// Rows back where it ends.
        end: u64,
    },
    /// `RANGE BETWEEN start PRECEDING AND end PRECEDING` in milliseconds of event time; the
    /// current row's peers (same event time) are in a frame that ends at 0 (CURRENT ROW).
    Range {
        /// How far back it starts (`None`: the key's first row); the row exactly `start`
        /// earlier is in.
        start: Option<i64>,
        /// How far back it ends.
        end: i64,
    },
}

/// What [`lift_window_functions`] finds: the PARTITION BY, the tie-breaking ORDER BY columns
/// and the functions.
pub(super) type Lifted = (
    Vec<Arc<dyn PhysicalExpr>>,
    Vec<PhysicalSortExpr>,
    Vec<OverFunction>,
);

/// What [`lift_window_functions`] refuses: the message and the word to point at.
pub(super) struct Refusal {
    /// A word of the query where the construct is (a function name, `OVER`, `ORDER`, …).
    pub word: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn refuse(word: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal {
        word: word.into(),
        message: message.into(),
    }
}

/// The functions of stacked window nodes (`execs`, bottom first), whose first input has
/// `input_width` columns: the event columns.
pub(super) fn lift_window_functions(
    execs: &[&[Arc<dyn WindowExpr>]],
    input_width: usize,
    events: &EventSchema,
) -> Result<Lifted, Refusal> {
    let time = events.event_time_column();
    let mut keys: Option<Vec<Arc<dyn PhysicalExpr>>> = None;
    let mut ties: Vec<PhysicalSortExpr> = Vec::new();
    let mut order_ties: Option<Vec<PhysicalSortExpr>> = None;
    let mut functions = Vec::new();
    for exprs in execs {
        for w in exprs.iter() {
            let name = function_name(w.as_ref());
            let field = w.field().map_err(|e| refuse(&name, e.to_string()))?;
            let reads_events = |e: &Arc<dyn PhysicalExpr>| {
                datafusion::physical_expr::utils::collect_columns(e)
                    .iter()
                    .all(|c| c.index() < input_width)
            };
            // PARTITION BY: the same for every function.
            let partition: Vec<Arc<dyn PhysicalExpr>> = w.partition_by().to_vec();
            if !partition.iter().all(reads_events) {
                return Err(refuse(
                    "PARTITION",
                    "a PARTITION BY cannot read a window function's result",
                ));
            }
            match &keys {
                None => keys = Some(partition),
                Some(k) if same_exprs(k, &partition) => {}
                Some(_) => {
                    return Err(refuse(
                        "PARTITION",
                        "window functions with different PARTITION BY in one query are not supported: each key needs its own state; write one query per PARTITION BY",
                    ));
                }
            }
            // ORDER BY event_time [ASC], then tie-breaking columns.
            let order = w.order_by();
            let Some(first) = order.first() else {
                return Err(refuse(
                    &name,
                    format!(
                        "{name}() OVER without ORDER BY reads the whole partition, which never ends on a stream; add ORDER BY {} (and a frame such as RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)",
                        events.arrow().field(time).name()
                    ),
                ));
            };
            let is_time = first
                .expr
                .downcast_ref::<Column>()
                .is_some_and(|c| c.index() == time);
            if !is_time || first.options.descending {
                return Err(refuse(
                    "ORDER",
                    format!(
                        "window functions over a stream must ORDER BY {} (ascending) first: rows are computed in event-time order; other columns may follow it to break ties",
                        events.arrow().field(time).name()
                    ),
                ));
            }
            let rest = &order[1..];
            if !rest.iter().all(|o| reads_events(&o.expr)) {
                return Err(refuse(
                    "ORDER",
                    "an ORDER BY cannot read a window function's result",
                ));
            }
            let (kind, arg) = function_kind(w.as_ref(), &name)?;
            // Rows are computed in one order for every function: (event time, these columns,
            // event id). A RANGE frame does not depend on it (peers are all in); every other
            // function must name the same tie-breaking columns, or none.
            let order_sensitive = !kind.is_aggregate()
                || matches!(
                    w.get_window_frame().units,
                    WindowFrameUnits::Rows | WindowFrameUnits::Groups
                );
            if order_sensitive {
                match &order_ties {
                    None => order_ties = Some(rest.to_vec()),
                    Some(t) if t.as_slice() == rest => {}
                    Some(_) => {
                        return Err(refuse(
                            "ORDER",
                            "window functions in one query must break event-time ties the same way (ORDER BY event_time, x in one and ORDER BY event_time, y in another); use one ORDER BY for all of them",
                        ));
                    }
                }
            }
            if rest.len() > ties.len() {
                ties = rest.to_vec();
            }
            if let Some(a) = &arg
                && !reads_events(a)
            {
                return Err(refuse(
                    &name,
                    "a window function's argument cannot read another window function's result",
                ));
            }
            if let Some(a) = &arg {
                check_argument_type(&kind, &name, a, events)?;
            }
            let frame = if kind.is_aggregate() {
                frame_of(w.get_window_frame(), &name, !rest.is_empty(), events)?
            } else {
                Frame::Rows {
                    start: Some(0),
                    end: 0,
                }
            };
            functions.push(OverFunction {
                kind,
                arg,
                frame,
                field,
            });
        }
    }
    Ok((keys.unwrap_or_default(), ties, functions))
}

fn same_exprs(a: &[Arc<dyn PhysicalExpr>], b: &[Arc<dyn PhysicalExpr>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref())
}

/// The SQL name of a window function (`count`, `lag`, …).
fn function_name(w: &dyn WindowExpr) -> String {
    let any = w.as_any();
    if let Some(a) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        return a.get_aggregate_expr().fun().name().to_string();
    }
    if let Some(a) = any.downcast_ref::<SlidingAggregateWindowExpr>() {
        return a.get_aggregate_expr().fun().name().to_string();
    }
    if let Some(s) = any.downcast_ref::<StandardWindowExpr>()
        && let Some(u) = s
            .get_standard_func_expr()
            .as_any()
            .downcast_ref::<WindowUDFExpr>()
    {
        return u.fun().name().to_string();
    }
    w.name().split('(').next().unwrap_or("OVER").to_string()
}

fn function_kind(
    w: &dyn WindowExpr,
    name: &str,
) -> Result<(FunctionKind, Option<Arc<dyn PhysicalExpr>>), Refusal> {
    let any = w.as_any();
    let aggregate = any
        .downcast_ref::<PlainAggregateWindowExpr>()
        .map(|a| a.get_aggregate_expr())
        .or_else(|| {
            any.downcast_ref::<SlidingAggregateWindowExpr>()
                .map(|a| a.get_aggregate_expr())
        });
    if let Some(a) = aggregate {
        let args = a.expressions();
        if !a.order_bys().is_empty() {
            return Err(refuse(
                name,
                format!(
                    "{name}(… ORDER BY …) OVER is not supported; the frame's order is the OVER clause's ORDER BY"
                ),
            ));
        }
        if a.ignore_nulls() {
            return Err(refuse(name, "IGNORE NULLS is not supported in OVER"));
        }
        if matches!(name, "ewma_zscore" | "ewma" | "mad_zscore") {
            if a.is_distinct() {
                return Err(refuse(
                    name,
                    format!(
                        "{name}(DISTINCT …) OVER is not supported; the baseline takes every value in order"
                    ),
                ));
            }
            let params: Vec<Option<ScalarValue>> = args[1..]
                .iter()
                .map(|e| e.downcast_ref::<Literal>().map(|l| l.value().clone()))
                .collect();
            let f = crate::functions::anomaly::Anomaly::parse(name, &params)
                .map_err(|m| refuse(name, m))?;
            return Ok((FunctionKind::Anomaly(f), Some(Arc::clone(&args[0]))));
        }
        let kind = match (name, a.is_distinct()) {
            ("count", false) => FunctionKind::Count,
            ("count", true) => FunctionKind::CountDistinct,
            ("sum", false) => FunctionKind::Sum,
            ("avg", false) => FunctionKind::Avg,
            ("min", _) => FunctionKind::Min,
            ("max", _) => FunctionKind::Max,
            ("stddev" | "stddev_samp", false) => FunctionKind::StddevSamp,
            ("stddev_pop", false) => FunctionKind::StddevPop,
            ("var" | "var_samp" | "variance", false) => FunctionKind::VarSamp,
            ("var_pop", false) => FunctionKind::VarPop,
            (_, true) => {
                return Err(refuse(
                    name,
                    format!(
                        "{name}(DISTINCT …) OVER is not supported; count(DISTINCT …), min and max are"
                    ),
                ));
            }
            _ => return Err(unsupported_function(name)),
        };
        if args.len() != 1 {
            return Err(refuse(name, format!("{name} OVER takes one argument")));
        }
        // count(*) is count(1): a constant argument counts every row.
        let counts_rows = kind == FunctionKind::Count
            && args[0]
                .downcast_ref::<Literal>()
                .is_some_and(|l| !l.value().is_null());
        let arg = (!counts_rows).then(|| Arc::clone(&args[0]));
        return Ok((kind, arg));
    }
    let Some(u) = any.downcast_ref::<StandardWindowExpr>().and_then(|s| {
        s.get_standard_func_expr()
            .as_any()
            .downcast_ref::<WindowUDFExpr>()
    }) else {
        return Err(unsupported_function(name));
    };
    let args = u.args();
    let literal = |i: usize| -> Result<Option<ScalarValue>, Refusal> {
        match args.get(i) {
            None => Ok(None),
            Some(e) => match e.downcast_ref::<Literal>() {
                Some(l) => Ok(Some(l.value().clone())),
                None => Err(refuse(
                    name,
                    format!("the offset and default of {name} must be constants"),
                )),
            },
        }
    };
    match name {
        "row_number" => Ok((FunctionKind::RowNumber, None)),
        "lag" | "lead" => {
            let offset = match literal(1)? {
                None => 1,
                Some(v) if v.is_null() => 1,
                Some(v) => match v.cast_to(&DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(n))) => n,
                    _ => {
                        return Err(refuse(
                            name,
                            format!("the offset of {name} must be an integer"),
                        ));
                    }
                },
            };
            let default = literal(2)?.unwrap_or(ScalarValue::Null);
            let lag = (name == "lag") == (offset >= 0);
            let offset = offset.unsigned_abs();
            if offset == 0 {
                return Err(refuse(
                    name,
                    format!("{name} with offset 0 is the row itself; select the column instead"),
                ));
            }
            let kind = if lag {
                FunctionKind::Lag { offset, default }
            } else {
                FunctionKind::Lead { offset, default }
            };
            Ok((kind, args.first().cloned()))
        }
        _ => Err(unsupported_function(name)),
    }
}

fn unsupported_function(name: &str) -> Refusal {
    refuse(
        name,
        format!(
            "{name}() OVER is not supported on a stream; supported are count, count(DISTINCT), sum, avg, min, max, stddev, stddev_pop, var, var_pop, ewma_zscore, ewma, mad_zscore over a frame, and lag, lead, row_number"
        ),
    )
}

/// The argument types the operator keeps in its history: integers, floats, strings, booleans
/// and timestamps; decimals and nested types are refused with what to write.
fn check_argument_type(
    kind: &FunctionKind,
    name: &str,
    arg: &Arc<dyn PhysicalExpr>,
    events: &EventSchema,
) -> Result<(), Refusal> {
    let t = arg
        .data_type(events.arrow())
        .map_err(|e| refuse(name, e.to_string()))?;
    let t = match &t {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        t => t.clone(),
    };
    let numeric = t.is_integer() || t.is_floating();
    let ok = match kind {
        FunctionKind::Sum
        | FunctionKind::Avg
        | FunctionKind::Anomaly(_)
        | FunctionKind::StddevSamp
        | FunctionKind::StddevPop
        | FunctionKind::VarSamp
        | FunctionKind::VarPop => numeric,
        _ => {
            numeric
                || matches!(
                    t,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Boolean
                        | DataType::Timestamp(_, _)
                        | DataType::Date32
                        | DataType::Date64
                )
        }
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(
            name,
            format!(
                "{name} OVER of a {t} value is not supported; cast it to BIGINT (amounts in minor units are integers) or VARCHAR"
            ),
        ))
    }
}

/// The frame of an aggregate, in rows or milliseconds before the current row.
fn frame_of(
    f: &WindowFrame,
    name: &str,
    has_ties: bool,
    events: &EventSchema,
) -> Result<Frame, Refusal> {
    let time = events
        .arrow()
        .field(events.event_time_column())
        .name()
        .clone();
    let following = |b: &WindowFrameBound| matches!(b, WindowFrameBound::Following(_));
    if following(&f.start_bound) || following(&f.end_bound) {
        return Err(refuse(
            "FOLLOWING",
            "a frame that reaches FOLLOWING rows would hold every result back until later events arrive; end it at CURRENT ROW (use lead() to look at the next event)",
        ));
    }
    let bound = |b: &WindowFrameBound, rows: bool| -> Result<Option<i64>, Refusal> {
        match b {
            WindowFrameBound::CurrentRow => Ok(Some(0)),
            WindowFrameBound::Preceding(v) if v.is_null() => Ok(None),
            WindowFrameBound::Preceding(v) if rows => match v.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) if n >= 0 => Ok(Some(n)),
                _ => Err(refuse("ROWS", format!("a ROWS frame counts rows: {v} is not a row count"))),
            },
            WindowFrameBound::Preceding(v) => interval_millis(v).map(Some).ok_or_else(|| {
                refuse(
                    "RANGE",
                    format!("a RANGE frame over {time} is an interval of days, hours, minutes, seconds or milliseconds (e.g. INTERVAL '1' HOUR), not {v}"),
                )
            }),
            WindowFrameBound::Following(_) => unreachable!("refused above"),
        }
    };
    match f.units {
        WindowFrameUnits::Rows => {
            let start = bound(&f.start_bound, true)?.map(|n| n as u64);
            let Some(end) = bound(&f.end_bound, true)? else {
                return Err(refuse("ROWS", "a frame cannot end at UNBOUNDED PRECEDING"));
            };
            Ok(Frame::Rows {
                start,
                end: end as u64,
            })
        }
        WindowFrameUnits::Range => {
            let start = bound(&f.start_bound, false)?;
            let Some(end) = bound(&f.end_bound, false)? else {
                return Err(refuse("RANGE", "a frame cannot end at UNBOUNDED PRECEDING"));
            };
            if has_ties {
                // Peers would be rows equal on every ORDER BY column; with the event id among
                // them that is the row alone, which a ROWS frame says plainly.
                return Err(refuse(
                    "ORDER",
                    format!(
                        "{name} OVER (ORDER BY {time}, …) with a RANGE frame (the default) is not supported; write ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW, or ORDER BY {time} alone"
                    ),
                ));
            }
            Ok(Frame::Range { start, end })
        }
        WindowFrameUnits::Groups => Err(refuse(
            "GROUPS",
            "GROUPS frames are not supported; use ROWS or RANGE",
        )),
    }
}

/// A fixed-length interval in milliseconds (months vary in length: refused).
fn interval_millis(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            let ms = i64::from(i.days)
                .checked_mul(86_400_000)?
                .checked_add(i.nanoseconds / 1_000_000)?;
            (ms >= 0 && i.nanoseconds % 1_000_000 == 0).then_some(ms)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            let ms = i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds);
            (ms >= 0).then_some(ms)
        }
        _ => None,
    }
}
