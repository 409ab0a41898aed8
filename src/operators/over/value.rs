//! Values kept in a key's history: what a window function's argument is once read out of its
//! Arrow column, and how a column of them is built back.
//!
//! Integers, timestamps, dates and booleans are kept as `i64` (sums of them are exact, in 128
//! bits), floats as `f64`, strings as shared `str`. The planner refuses other argument types.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray, UInt8Array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};

/// One value of a window function's argument.
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// SQL NULL.
    Null,
    /// An integer, timestamp (milliseconds), date or boolean.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(Arc<str>),
    /// A sum beyond 64 bits (results only: never kept in state).
    Big(i128),
}

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Val {}

impl PartialOrd for Val {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Val {
    /// NULL first, then by value; one argument's values are all of one kind.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => a.cmp(b),
            (Val::Float(a), Val::Float(b)) => a.total_cmp(b),
            (Val::Str(a), Val::Str(b)) => a.cmp(b),
            (Val::Big(a), Val::Big(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Val {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Val::Null => 0u8.hash(h),
            Val::Int(v) => v.hash(h),
            Val::Float(v) => v.to_bits().hash(h),
            Val::Str(s) => s.hash(h),
            Val::Big(v) => v.hash(h),
        }
    }
}

impl Val {
    fn rank(&self) -> u8 {
        match self {
            Val::Null => 0,
            Val::Int(_) => 1,
            Val::Float(_) => 2,
            Val::Str(_) => 3,
            Val::Big(_) => 4,
        }
    }

    /// Whether the value is NULL.
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// A constant (a `lag` default) as a value of the argument's kind.
    pub(super) fn of_scalar(v: &ScalarValue, kind: ValKind) -> Result<Val> {
        if v.is_null() {
            return Ok(Val::Null);
        }
        let a = v.to_array()?;
        Ok(ValColumn::new(&a, kind)?.get(0))
    }
}

/// How one argument's values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValKind {
    /// As `i64`.
    Int,
    /// As `f64`.
    Float,
    /// As strings.
    Str,
}

impl ValKind {
    /// How values of type `t` are kept.
    pub(super) fn of(t: &DataType) -> ValKind {
        match t {
            DataType::Dictionary(_, v) => ValKind::of(v),
            t if t.is_floating() => ValKind::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValKind::Str,
            _ => ValKind::Int,
        }
    }
}

/// An argument column, cast once to the kind its values are kept as.
pub(super) enum ValColumn {
    Int(Int64Array),
    Float(Float64Array),
    Str(StringArray),
}

impl ValColumn {
    /// `a` read as values of `kind`.
    pub(super) fn new(a: &ArrayRef, kind: ValKind) -> Result<ValColumn> {
        Ok(match kind {
            ValKind::Int => {
                // Strict: an unsigned value beyond 64 signed bits is an error, never NULL.
                let a = to_type(Arc::clone(a), &DataType::Int64)?;
                ValColumn::Int(a.as_primitive::<Int64Type>().clone())
            }
            ValKind::Float => ValColumn::Float(
                cast(a, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            ValKind::Str => ValColumn::Str(
                to_type(Arc::clone(a), &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone(),
            ),
        })
    }

    /// Row `i`.
    pub(super) fn get(&self, i: usize) -> Val {
        match self {
            ValColumn::Int(a) if a.is_valid(i) => Val::Int(a.value(i)),
            ValColumn::Float(a) if a.is_valid(i) => Val::Float(a.value(i)),
            ValColumn::Str(a) if a.is_valid(i) => Val::Str(Arc::from(a.value(i))),
            _ => Val::Null,
        }
    }
}

/// A column of `values` (each of `kind` or NULL) of type `t`; a value that does not fit `t` is
/// an error, never NULL.
pub(super) fn column_of(values: &[Val], kind: ValKind, t: &DataType) -> Result<ArrayRef> {
    // Exact sums are decimals, as the window aggregates' are: 128 bits wide.
    if let (ValKind::Int, DataType::Decimal128(p, s)) = (kind, t) {
        let a =
            datafusion::arrow::array::Decimal128Array::from_iter(values.iter().map(|v| match v {
                Val::Int(x) => Some(i128::from(*x)),
                Val::Big(x) => Some(*x),
                _ => None,
            }))
            .with_precision_and_scale(*p, *s)?;
        return Ok(Arc::new(a));
    }
    if let Some(Val::Big(x)) = values.iter().find(|v| matches!(v, Val::Big(_))) {
        return Err(Error::DataFusion(
            datafusion::error::DataFusionError::ArrowError(
                Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
                    format!("the sum {x}"),
                )),
                None,
            ),
        ));
    }
    let a: ArrayRef = match kind {
        ValKind::Int => Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
            Val::Int(x) => Some(*x),
            _ => None,
        }))),
        ValKind::Float => Arc::new(Float64Array::from_iter(values.iter().map(|v| match v {
            Val::Float(x) => Some(*x),
            _ => None,
        }))),
        ValKind::Str => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
            Val::Str(s) => Some(s.as_ref()),
            _ => None,
        }))),
    };
    to_type(a, t)
}

/// `a` cast to `t`, failing (not nulling) a value that does not fit.
pub(super) fn to_type(a: ArrayRef, t: &DataType) -> Result<ArrayRef> {
    if a.data_type() == t {
        return Ok(a);
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(cast_with_options(&a, t, &strict)?)
}

/// Values as four columns (a tag and one column per kind), for snapshots.
pub(super) fn encode_vals(values: &[Val]) -> Vec<ArrayRef> {
    // Sums beyond 64 bits are results, never state.
    debug_assert!(!values.iter().any(|v| matches!(v, Val::Big(_))));
    let tag = UInt8Array::from_iter_values(values.iter().map(Val::rank));
    let ints = Int64Array::from_iter(values.iter().map(|v| match v {
        Val::Int(x) => Some(*x),
        _ => None,
    }));
    let floats = Float64Array::from_iter(values.iter().map(|v| match v {
        Val::Float(x) => Some(*x),
        _ => None,
    }));
    let strs = StringArray::from_iter(values.iter().map(|v| match v {
        Val::Str(s) => Some(s.as_ref()),
        _ => None,
    }));
    vec![
        Arc::new(tag),
        Arc::new(ints),
        Arc::new(floats),
        Arc::new(strs),
    ]
}

/// Inverse of [`encode_vals`].
pub(super) fn decode_vals(cols: &[ArrayRef]) -> Result<Vec<Val>> {
    let bad = || Error::Internal("over-window snapshot: bad value columns".into());
    let [tag, ints, floats, strs] = cols else {
        return Err(bad());
    };
    let tag = tag
        .as_primitive_opt::<datafusion::arrow::datatypes::UInt8Type>()
        .ok_or_else(bad)?;
    let ints = ints.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
    let floats = floats.as_primitive_opt::<Float64Type>().ok_or_else(bad)?;
    let strs = strs.as_string_opt::<i32>().ok_or_else(bad)?;
    (0..tag.len())
        .map(|i| {
            Ok(match tag.value(i) {
                0 => Val::Null,
                1 => Val::Int(ints.value(i)),
                2 => Val::Float(floats.value(i)),
                3 => Val::Str(Arc::from(strs.value(i))),
                _ => return Err(bad()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_past_64_bits_are_decimals_and_never_wrap() {
        let past = i128::from(i64::MAX) + 1;
        let vals = [Val::Int(1), Val::Big(past), Val::Null];
        let dec = column_of(&vals, ValKind::Int, &DataType::Decimal128(38, 0)).unwrap();
        let dec = dec.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(dec.value(1), past);
        assert!(dec.is_null(2));
        assert!(column_of(&vals, ValKind::Int, &DataType::Int64).is_err());
    }

    #[test]
    fn values_that_do_not_fit_are_errors_not_nulls() {
        let big: ArrayRef = Arc::new(datafusion::arrow::array::UInt64Array::from(vec![u64::MAX]));
        assert!(ValColumn::new(&big, ValKind::Int).is_err());
        let x = ScalarValue::Utf8(Some("x".into()));
        assert!(Val::of_scalar(&x, ValKind::Int).is_err());
    }
}
