//! Finding the preferred match that starts at a partition's first row.
//!
//! The compiled pattern (`sql/recognize/pattern.rs`) runs as a backtracking program over the
//! partition's rows, in time order: paths are tried in SQL's order of preference (a greedy
//! quantifier's longer path first, alternatives left to right), and the first path to complete
//! is the match. A path that reaches the last row known while the pattern could still take
//! another decides nothing yet: the match starting here is [`Outcome::Undecided`] until a row
//! arrives or the WITHIN bound shuts the door, whichever comes first. A path never waits behind
//! a less preferred one: that is what makes a replay give the live run's matches.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};
use crate::sql::recognize::navigation::{Nav, NavKind};
use crate::sql::recognize::pattern::Inst;
use crate::sql::recognize::{Define, RecognizeSpec};

/// Released events, in partition and time order.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The events' columns.
    pub batch: RecordBatch,
}

/// One event of a partition.
#[derive(Debug, Clone)]
pub(super) struct Row {
    /// Its chunk.
    pub chunk: Arc<Chunk>,
    /// Its row there.
    pub row: u32,
    /// Its event time.
    pub time: i64,
    /// Bit `v`: the row may be mapped to variable `v` (its DEFINE reads the row alone and holds,
    /// or reads the match and is checked per try, or there is none).
    pub fits: u64,
}

impl Row {
    fn value(&self, column: usize) -> Result<ScalarValue> {
        Ok(ScalarValue::try_from_array(
            self.chunk.batch.column(column),
            self.row as usize,
        )?)
    }
}

/// What starts at a partition's first row.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The preferred match: the variable of each of its rows, from the first.
    Match(Vec<u16>),
    /// No match starts there.
    NoMatch,
    /// The preferred path needs rows not known yet.
    Undecided,
}

/// Steps one search may take before it is stopped: a pattern such as `(A | A)+ B` tries
/// exponentially many paths.
const MAX_STEPS: u64 = 20_000_000;

/// Searches for the match starting at `rows[0]`. `more(first_time)`: whether a row not known
/// yet could still join a match that starts at `first_time`.
pub(super) fn find(
    spec: &RecognizeSpec,
    rows: &VecDeque<Row>,
    more: impl Fn(i64) -> bool,
) -> Result<Outcome> {
    let insts = &spec.program.insts;
    let Some(first) = rows.front() else {
        return Ok(Outcome::NoMatch);
    };
    let start_time = first.time;
    let mut assigned: Vec<u16> = Vec::new();
    // Paths to try when the current one fails: (instruction, rows mapped).
    let mut backtrack: Vec<(u32, usize)> = Vec::new();
    let mut pc = 0u32;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Error::DataFusion(
                datafusion::error::DataFusionError::Execution(format!(
                    "MATCH_RECOGNIZE's PATTERN tried over {MAX_STEPS} ways to match the rows from {start_time} ms on; write it so that no two of its paths match the same rows (not (A | A)+ or (A+)+)"
                )),
            ));
        }
        let ok = match insts[pc as usize] {
            Inst::Match => return Ok(Outcome::Match(assigned)),
            Inst::Jump(t) => {
                pc = t;
                continue;
            }
            Inst::Split(a, b) => {
                backtrack.push((b, assigned.len()));
                pc = a;
                continue;
            }
            Inst::Row(v) => {
                let pos = assigned.len();
                match rows.get(pos) {
                    None if more(start_time) => return Ok(Outcome::Undecided),
                    None => false,
                    Some(r) if r.time - start_time > spec.within => false,
                    Some(r) if r.fits & (1 << v) == 0 => false,
                    Some(_) => match &spec.defines[v as usize] {
                        Define::Navigated { expr, navs, schema } => {
                            navigated(expr, navs, schema, rows, &assigned, v)?
                        }
                        _ => true,
                    },
                }
            }
        };
        if ok {
            let Inst::Row(v) = insts[pc as usize] else {
                unreachable!()
            };
            assigned.push(v);
            pc += 1;
            continue;
        }
        match backtrack.pop() {
            Some((at, mapped)) => {
                pc = at;
                assigned.truncate(mapped);
            }
            None => return Ok(Outcome::NoMatch),
        }
    }
}

/// Whether the row after `assigned` fits variable `v` by a DEFINE that reads the match.
fn navigated(
    expr: &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
    navs: &[Nav],
    schema: &datafusion::arrow::datatypes::SchemaRef,
    rows: &VecDeque<Row>,
    assigned: &[u16],
    v: u16,
) -> Result<bool> {
    let current = &rows[assigned.len()];
    let mut columns: Vec<ArrayRef> = current
        .chunk
        .batch
        .columns()
        .iter()
        .map(|c| c.slice(current.row as usize, 1))
        .collect();
    for nav in navs {
        let value = nav_value(nav, rows, assigned, Some(v))?;
        columns.push(value.to_array_of_size(1)?);
    }
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
    let out = expr.evaluate(&batch)?.into_array(1)?;
    let b = out.as_boolean();
    Ok(b.is_valid(0) && b.value(0))
}

/// `nav` over the rows of a match: `assigned` gives the variable of each of its first rows,
/// and `tentative` that of the row after them (a DEFINE's try).
pub(super) fn nav_value(
    nav: &Nav,
    rows: &VecDeque<Row>,
    assigned: &[u16],
    tentative: Option<u16>,
) -> Result<ScalarValue> {
    let mapped = assigned.iter().copied().chain(tentative);
    let mut read = mapped
        .enumerate()
        .filter(|(_, v)| nav.variable.is_none_or(|x| x == *v))
        .map(|(i, _)| &rows[i]);
    let null = || ScalarValue::try_from(&nav.data_type);
    let Some(column) = nav.column else {
        return Ok(ScalarValue::Int64(Some(read.count() as i64)));
    };
    Ok(match nav.kind {
        NavKind::First => match read.next() {
            Some(r) => r.value(column)?,
            None => null()?,
        },
        NavKind::Last => match read.last() {
            Some(r) => r.value(column)?,
            None => null()?,
        },
        NavKind::Count => {
            let mut n = 0i64;
            for r in read {
                n += i64::from(!r.value(column)?.is_null());
            }
            ScalarValue::Int64(Some(n))
        }
        NavKind::Min | NavKind::Max => {
            let mut best: Option<ScalarValue> = None;
            for r in read {
                let v = r.value(column)?;
                if v.is_null() {
                    continue;
                }
                let better = match &best {
                    None => true,
                    Some(b) => match v.partial_cmp(b) {
                        Some(std::cmp::Ordering::Less) => nav.kind == NavKind::Min,
                        Some(std::cmp::Ordering::Greater) => nav.kind == NavKind::Max,
                        _ => false,
                    },
                };
                if better {
                    best = Some(v);
                }
            }
            match best {
                Some(b) => b,
                None => null()?,
            }
        }
        NavKind::Sum | NavKind::Avg => {
            let mut sum = 0i128;
            let mut n = 0i64;
            for r in read {
                if let Some(x) = as_i128(&r.value(column)?) {
                    sum = sum.checked_add(x).ok_or_else(overflow)?;
                    n += 1;
                }
            }
            match (nav.kind, &nav.data_type) {
                (_, _) if n == 0 => null()?,
                (NavKind::Avg, _) => ScalarValue::Float64(Some(sum as f64 / n as f64)),
                (_, datafusion::arrow::datatypes::DataType::Decimal128(p, s)) => {
                    if sum.unsigned_abs() >= 10u128.pow(u32::from(*p)) {
                        return Err(overflow());
                    }
                    ScalarValue::Decimal128(Some(sum), *p, *s)
                }
                _ => ScalarValue::Int64(Some(i64::try_from(sum).map_err(|_| overflow())?)),
            }
        }
    })
}

fn overflow() -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::ArrowError(
        Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
            "a SUM in MATCH_RECOGNIZE".into(),
        )),
        None,
    ))
}

/// An integer or decimal value as its unscaled integer (`None`: null or not a number).
fn as_i128(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => i128::from(*x),
        ScalarValue::Int16(Some(x)) => i128::from(*x),
        ScalarValue::Int32(Some(x)) => i128::from(*x),
        ScalarValue::Int64(Some(x)) => i128::from(*x),
        ScalarValue::UInt8(Some(x)) => i128::from(*x),
        ScalarValue::UInt16(Some(x)) => i128::from(*x),
        ScalarValue::UInt32(Some(x)) => i128::from(*x),
        ScalarValue::UInt64(Some(x)) => i128::from(*x),
        ScalarValue::Decimal128(Some(x), _, _) => *x,
        _ => return None,
    })
}
