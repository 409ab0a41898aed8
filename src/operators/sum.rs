//! `sum` of integers and decimals, exact: computed in 128 bits and never wrapped.
//!
//! DataFusion's `sum(BIGINT)` returns a `BIGINT` accumulated with wrapping adds, so 10,000
//! amounts of 10^15 minor units came out negative. The planner registers [`ExactSum`] under the
//! name `sum` instead: a sum of an integer column is a `DECIMAL(38, 0)` (written as a plain JSON
//! integer), a sum of a `DECIMAL(p, s)` is a `DECIMAL(38, s)`, and a sum that leaves the 128-bit
//! range is an error, never a wrapped number. Floats, durations and intervals keep DataFusion's
//! own sum.
//!
//! The hot path stays 64-bit: each group keeps a wrapped `i64` sum and, only once a sum has
//! overflowed, a count of how many times it did (`carries`, allocated on the first overflow), so
//! the exact value is `sum + carries × 2^64`. An add is one `overflowing_add` and a branch that
//! is never taken for ordinary amounts.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, ListArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DataType, Decimal128Type, Field, FieldRef, Int64Type, UInt64Type,
};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, internal_err};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, ReversedUDAF, Signature,
};

/// The inputs [`ExactSum`] sums itself (after DataFusion's coercion of the argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// Signed integers (coerced to `BIGINT`).
    Int64,
    /// Unsigned integers (coerced to `BIGINT UNSIGNED`).
    UInt64,
    /// Decimals of this scale.
    Decimal128(i8),
}

impl Input {
    pub(super) fn of(t: &DataType) -> Option<Input> {
        match t {
            DataType::Int64 => Some(Input::Int64),
            DataType::UInt64 => Some(Input::UInt64),
            DataType::Decimal128(_, s) => Some(Input::Decimal128(*s)),
            _ => None,
        }
    }

    fn scale(self) -> i8 {
        match self {
            Input::Decimal128(s) => s,
            _ => 0,
        }
    }

    /// The sum's type: a decimal of the widest precision, at the input's scale.
    fn output(self) -> DataType {
        DataType::Decimal128(DECIMAL128_MAX_PRECISION, self.scale())
    }
}

/// The `sum` aggregate, exact for integers and decimals (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash, Default)]
pub struct ExactSum {
    /// DataFusion's sum: its signature (coercions), and the sums of other types.
    inner: Sum,
}

/// [`ExactSum`] as a function to register with a session (it replaces the built-in `sum`).
pub fn exact_sum_udaf() -> AggregateUDF {
    AggregateUDF::from(ExactSum::default())
}

fn input_of(args: &AccumulatorArgs) -> Option<Input> {
    args.expr_fields
        .first()
        .and_then(|f| Input::of(f.data_type()))
}

impl AggregateUDFImpl for ExactSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first().and_then(Input::of) {
            Some(input) => Ok(input.output()),
            None => self.inner.return_type(arg_types),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match input_of(&args) {
            Some(input) if args.is_distinct => Ok(Box::new(DistinctSum {
                input,
                values: HashSet::new(),
            })),
            Some(input) => Ok(Box::new(SumScalar { input, sum: None })),
            None => self.inner.accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        match args.input_fields.first().map(|f| Input::of(f.data_type())) {
            Some(Some(input)) if args.is_distinct => Ok(vec![Arc::new(Field::new_list(
                format_state_name(args.name, "sum distinct"),
                Field::new_list_field(input.output(), true),
                false,
            ))]),
            Some(Some(input)) => Ok(vec![Arc::new(Field::new(
                format_state_name(args.name, "sum"),
                input.output(),
                true,
            ))]),
            _ => self.inner.state_fields(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match input_of(&args) {
            Some(input) => Ok(Box::new(SumGroups::new(input))),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

fn overflow(sum: i128, v: i128) -> datafusion::error::DataFusionError {
    exec_datafusion_err!(
        "sum overflow: {sum} + {v} is beyond the 128-bit range of an exact sum; the sum's values are too large to add up exactly"
    )
}

/// `a + b`, or an overflow error.
pub(super) fn add(a: i128, b: i128) -> Result<i128> {
    a.checked_add(b).ok_or_else(|| overflow(a, b))
}

/// Each non-null value of an input (or state) column, as `i128`, by row.
pub(super) fn for_each_value(
    input: Input,
    values: &ArrayRef,
    mut f: impl FnMut(usize, i128) -> Result<()>,
) -> Result<()> {
    macro_rules! each {
        ($t:ty) => {{
            let a = values.as_primitive::<$t>();
            for (i, v) in a.values().iter().enumerate() {
                if a.is_valid(i) {
                    f(i, *v as i128)?;
                }
            }
        }};
    }
    match (input, values.data_type()) {
        (_, DataType::Decimal128(_, _)) => each!(Decimal128Type),
        (Input::Int64, DataType::Int64) => each!(Int64Type),
        (Input::UInt64, DataType::UInt64) => each!(UInt64Type),
        (_, other) => return internal_err!("sum of {input:?} given {other}"),
    }
    Ok(())
}

/// Per-group exact sums.
struct SumGroups {
    input: Input,
    /// Each group's sum, wrapped to 64 bits.
    sums: Vec<i64>,
    /// Each group's overflows of `sums` (+1 up, −1 down); empty until a sum first overflows.
    carries: Vec<i64>,
    /// Whether the group has had a (non-null, unfiltered) value.
    seen: Vec<bool>,
}

impl SumGroups {
    fn new(input: Input) -> Self {
        SumGroups {
            input,
            sums: Vec::new(),
            carries: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn resize(&mut self, groups: usize) {
        if self.sums.len() < groups {
            self.sums.resize(groups, 0);
            self.seen.resize(groups, false);
            if !self.carries.is_empty() {
                self.carries.resize(groups, 0);
            }
        }
    }

    /// Adds `v` to group `g` (the hot path).
    #[inline(always)]
    fn add_i64(&mut self, g: usize, v: i64) {
        let (s, over) = self.sums[g].overflowing_add(v);
        self.sums[g] = s;
        self.seen[g] = true;
        if over {
            self.carry(g, v);
        }
    }

    #[cold]
    #[inline(never)]
    fn carry(&mut self, g: usize, v: i64) {
        if self.carries.is_empty() {
            self.carries.resize(self.sums.len(), 0);
        }
        // A positive value overflowed upwards, a negative one downwards. Reaching 2^63
        // overflows would take more rows than any stream holds.
        self.carries[g] += if v > 0 { 1 } else { -1 };
    }

    /// Group `g`'s exact sum.
    fn value(&self, g: usize) -> Result<i128> {
        let carry = self.carries.get(g).copied().unwrap_or(0) as i128;
        add(carry << 64, self.sums[g] as i128)
    }

    /// Adds `v` to group `g`, exactly or with an error.
    fn add_wide(&mut self, g: usize, v: i128) -> Result<()> {
        let total = add(self.value(g)?, v)?;
        let low = total as i64;
        let carry = total
            .checked_sub(low as i128)
            .map(|high| high >> 64)
            .and_then(|c| i64::try_from(c).ok())
            .ok_or_else(|| overflow(total - v, v))?;
        self.sums[g] = low;
        self.seen[g] = true;
        if carry != 0 && self.carries.is_empty() {
            self.carries.resize(self.sums.len(), 0);
        }
        if let Some(c) = self.carries.get_mut(g) {
            *c = carry;
        }
        Ok(())
    }

    /// The first groups' sums as a decimal column, removed from the state.
    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let n = match emit_to {
            EmitTo::All => self.sums.len(),
            EmitTo::First(n) => n,
        };
        let values = (0..n).map(|g| self.value(g)).collect::<Result<Vec<_>>>()?;
        emit_to.take_needed(&mut self.sums);
        let seen = emit_to.take_needed(&mut self.seen);
        if !self.carries.is_empty() {
            emit_to.take_needed(&mut self.carries);
            if self.carries.iter().all(|c| *c == 0) {
                self.carries = Vec::new();
            }
        }
        let nulls = NullBuffer::new(BooleanBuffer::from(seen));
        let array = Decimal128Array::new(values.into(), Some(nulls))
            .with_precision_and_scale(DECIMAL128_MAX_PRECISION, self.input.scale())?;
        Ok(Arc::new(array))
    }
}

/// Rows to add: those valid in `values` and selected by `filter` (`None`: every row).
fn selected(values: &dyn Array, filter: Option<&BooleanArray>) -> Option<BooleanBuffer> {
    let filter = filter.map(|f| match f.null_count() {
        0 => f.values().clone(),
        _ => prep_null_mask_filter(f).values().clone(),
    });
    match (filter, values.logical_nulls()) {
        (None, None) => None,
        (Some(f), None) => Some(f),
        (None, Some(n)) => Some(n.into_inner()),
        (Some(f), Some(n)) => Some(&f & n.inner()),
    }
}

impl GroupsAccumulator for SumGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let values = &values[0];
        let rows = selected(values.as_ref(), opt_filter);
        if self.input == Input::Int64 && values.data_type() == &DataType::Int64 {
            let data = values.as_primitive::<Int64Type>().values();
            match rows {
                None => {
                    for (&g, &v) in group_indices.iter().zip(data.iter()) {
                        self.add_i64(g, v);
                    }
                }
                Some(rows) => {
                    for i in rows.set_indices() {
                        self.add_i64(group_indices[i], data[i]);
                    }
                }
            }
            return Ok(());
        }
        for_each_value(self.input, values, |i, v| {
            if rows.as_ref().is_none_or(|r| r.value(i)) {
                self.add_wide(group_indices[i], v)?;
            }
            Ok(())
        })
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.emit(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        for_each_value(self.input, &values[0], |i, v| {
            self.add_wide(group_indices[i], v)
        })
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row as a group of its own: its value, or null when filtered out.
        let rows = selected(values[0].as_ref(), opt_filter);
        let mut sums = vec![0i128; values[0].len()];
        let mut seen = vec![false; values[0].len()];
        for_each_value(self.input, &values[0], |i, v| {
            if rows.as_ref().is_none_or(|r| r.value(i)) {
                sums[i] = v;
                seen[i] = true;
            }
            Ok(())
        })?;
        let array = Decimal128Array::new(sums.into(), Some(NullBuffer::from(seen)))
            .with_precision_and_scale(DECIMAL128_MAX_PRECISION, self.input.scale())?;
        Ok(vec![Arc::new(array)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * 8 + self.carries.capacity() * 8 + self.seen.capacity()
    }
}

/// The exact sum of one group (session windows keep one accumulator per session).
#[derive(Debug)]
struct SumScalar {
    input: Input,
    /// `None` until a value is added.
    sum: Option<i128>,
}

impl SumScalar {
    fn scalar(&self) -> ScalarValue {
        ScalarValue::Decimal128(self.sum, DECIMAL128_MAX_PRECISION, self.input.scale())
    }

    fn add_all(&mut self, values: &ArrayRef) -> Result<()> {
        let mut sum = self.sum;
        for_each_value(self.input, values, |_, v| {
            sum = Some(add(sum.unwrap_or(0), v)?);
            Ok(())
        })?;
        self.sum = sum;
        Ok(())
    }
}

impl Accumulator for SumScalar {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add_all(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_all(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.scalar()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.scalar())
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }
}

/// `sum(DISTINCT x)`: the distinct values, added up exactly when the window closes.
#[derive(Debug)]
struct DistinctSum {
    input: Input,
    values: HashSet<i128>,
}

impl Accumulator for DistinctSum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for_each_value(self.input, &values[0], |_, v| {
            self.values.insert(v);
            Ok(())
        })
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: &ListArray = states[0].as_list();
        for list in lists.iter().flatten() {
            self.update_batch(&[list])?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let output = self.input.output();
        let values: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|v| {
                ScalarValue::Decimal128(Some(*v), DECIMAL128_MAX_PRECISION, self.input.scale())
            })
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values, &output,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut sum = None;
        for v in &self.values {
            sum = Some(add(sum.unwrap_or(0), *v)?);
        }
        Ok(ScalarValue::Decimal128(
            sum,
            DECIMAL128_MAX_PRECISION,
            self.input.scale(),
        ))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.values.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn decimals(a: &ArrayRef) -> Vec<Option<i128>> {
        a.as_primitive::<Decimal128Type>().iter().collect()
    }

    #[test]
    fn group_sums_are_exact_beyond_64_bits() {
        let mut acc = SumGroups::new(Input::Int64);
        let big: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX; 4]));
        acc.update_batch(&[big], &[0, 0, 0, 1], None, 3).unwrap();
        let small: ArrayRef = Arc::new(Int64Array::from(vec![Some(-5), None, Some(7)]));
        let filter = BooleanArray::from(vec![true, true, false]);
        acc.update_batch(&[small], &[0, 2, 2], Some(&filter), 3)
            .unwrap();
        let state = acc.state(EmitTo::All).unwrap();
        // Merged back (a snapshot restored), then more overflowing adds.
        let mut acc = SumGroups::new(Input::Int64);
        acc.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        let neg: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN, i64::MIN, i64::MIN]));
        acc.update_batch(&[neg], &[1, 1, 1], None, 3).unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            out.data_type(),
            &DataType::Decimal128(DECIMAL128_MAX_PRECISION, 0)
        );
        let max = i64::MAX as i128;
        assert_eq!(
            decimals(&out),
            vec![Some(3 * max - 5), Some(max + 3 * i64::MIN as i128), None]
        );
    }

    #[test]
    fn ten_thousand_captures_of_ten_to_the_fifteen() {
        let mut acc = SumGroups::new(Input::Int64);
        for _ in 0..10 {
            let v: ArrayRef = Arc::new(Int64Array::from(vec![1_000_000_000_000_000; 1000]));
            acc.update_batch(&[v], &[0; 1000], None, 1).unwrap();
        }
        let out = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(decimals(&out), vec![Some(10_000_000_000_000_000_000)]);
        let mut one = SumScalar {
            input: Input::Int64,
            sum: None,
        };
        for _ in 0..10 {
            let v: ArrayRef = Arc::new(Int64Array::from(vec![1_000_000_000_000_000; 1000]));
            one.update_batch(&[v]).unwrap();
        }
        assert_eq!(
            one.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(10_000_000_000_000_000_000), 38, 0)
        );
    }

    #[test]
    fn a_sum_beyond_128_bits_is_an_error() {
        let mut acc = SumGroups::new(Input::Decimal128(0));
        let v: ArrayRef = Arc::new(
            Decimal128Array::from(vec![i128::MAX / 2 + 1; 2])
                .with_precision_and_scale(38, 0)
                .unwrap(),
        );
        let e = acc.update_batch(&[v], &[0, 0], None, 1).unwrap_err();
        assert!(e.to_string().contains("sum overflow"), "{e}");
    }

    #[test]
    fn distinct_sums_add_each_value_once() {
        let mut acc = DistinctSum {
            input: Input::Int64,
            values: HashSet::new(),
        };
        let v: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, i64::MAX, 1, 1]));
        acc.update_batch(&[v]).unwrap();
        let state = acc.state().unwrap()[0].to_array().unwrap();
        let mut other = DistinctSum {
            input: Input::Int64,
            values: HashSet::new(),
        };
        other.merge_batch(&[state]).unwrap();
        assert_eq!(
            other.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(i64::MAX as i128 + 1), 38, 0)
        );
    }
}
