//! The aggregates session queries use most, as flat per-slot state: `count`, the exact `sum`
//! of integers and decimals, and `count(DISTINCT x)`. Each keeps DataFusion's state shape (so a
//! snapshot reads the same whichever implementation wrote it) and its result type.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int64Array, ListArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Int64Type};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use super::slots::{NONE, SlotAggregate, kept};
use crate::error::{Error, Result};
use crate::operators::distinct_count::{Encoding, distinct_count_type, in_state_type};
use crate::operators::sum::{Input, add, for_each_value};

/// The built-in slot aggregate for `agg`, if it has one.
pub(super) fn for_aggregate(agg: &AggregateFunctionExpr) -> Result<Option<Box<dyn SlotAggregate>>> {
    let name = agg.fun().name();
    let state: Vec<DataType> = agg
        .state_fields()?
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let output = agg.field().data_type().clone();
    if let Some(data_type) = distinct_count_type(agg)? {
        return Ok(Some(Box::new(DistinctSlots::new(data_type)?)));
    }
    if agg.is_distinct() {
        return Ok(None);
    }
    Ok(match (name, state.as_slice(), &output) {
        ("count", [DataType::Int64], DataType::Int64) => Some(Box::new(CountSlots::default())),
        ("sum", [DataType::Decimal128(38, s)], DataType::Decimal128(38, o)) if s == o => {
            Some(Box::new(SumSlots {
                scale: *s,
                sums: Vec::new(),
                seen: Vec::new(),
            }))
        }
        _ => None,
    })
}

/// A snapshot's state column of the wrong type for `what` (a snapshot of another version).
fn bad_state(what: &str) -> Error {
    crate::state::state_err(
        "session_window",
        format!(
            "the saved {what} state has another type than this version keeps; run with --reset-state"
        ),
    )
}

/// `count(x, …)`: rows whose arguments are all non-null (`count(*)` has a constant argument).
#[derive(Default)]
struct CountSlots {
    counts: Vec<i64>,
}

impl SlotAggregate for CountSlots {
    fn grow(&mut self, n: usize) {
        self.counts.resize(n.max(self.counts.len()), 0);
    }

    fn update(
        &mut self,
        args: &[ArrayRef],
        slots: &[u32],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        // Logical nulls: an all-NULL argument (`count(NULL)`) has no null buffer.
        let nulls: Vec<_> = args.iter().filter_map(|a| a.logical_nulls()).collect();
        for (i, s) in slots.iter().enumerate() {
            if *s != NONE && kept(filter, i) && nulls.iter().all(|n| n.is_valid(i)) {
                self.counts[*s as usize] += 1;
            }
        }
        Ok(())
    }

    fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        self.counts[dst as usize] += std::mem::take(&mut self.counts[src as usize]);
        Ok(())
    }

    fn take(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            slots
                .iter()
                .map(|s| std::mem::take(&mut self.counts[*s as usize])),
        )))
    }

    fn value(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|s| self.counts[*s as usize]),
        )))
    }

    fn state(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|s| self.counts[*s as usize]),
        ))])
    }

    fn restore(&mut self, slot: u32, states: &[ArrayRef], row: usize) -> Result<()> {
        let col = states[0]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad_state("count"))?;
        if col.is_valid(row) {
            self.counts[slot as usize] += col.value(row);
        }
        Ok(())
    }
}

/// The exact `sum` (see `operators::sum`) of integers or decimals of scale `scale`: a
/// `DECIMAL(38, scale)`, NULL over no values, an error (never a wrapped number) beyond 128 bits.
struct SumSlots {
    scale: i8,
    sums: Vec<i128>,
    seen: Vec<bool>,
}

impl SumSlots {
    fn add(&mut self, slot: u32, v: i128) -> Result<()> {
        let s = slot as usize;
        self.sums[s] = add(self.sums[s], v)?;
        self.seen[s] = true;
        Ok(())
    }

    fn column(&self, values: impl Iterator<Item = (i128, bool)>) -> Result<ArrayRef> {
        let array: Decimal128Array = values.map(|(v, seen)| seen.then_some(v)).collect();
        Ok(Arc::new(array.with_precision_and_scale(38, self.scale)?))
    }
}

impl SlotAggregate for SumSlots {
    fn grow(&mut self, n: usize) {
        self.sums.resize(n.max(self.sums.len()), 0);
        self.seen.resize(n.max(self.seen.len()), false);
    }

    fn update(
        &mut self,
        args: &[ArrayRef],
        slots: &[u32],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        // The values as the exact sum reads them (`operators::sum`).
        let input = Input::of(args[0].data_type()).ok_or_else(|| {
            Error::Internal(format!(
                "the session window's sum was given {} values",
                args[0].data_type()
            ))
        })?;
        let (sums, seen) = (&mut self.sums, &mut self.seen);
        for_each_value(input, &args[0], |i, v| {
            let s = slots[i];
            if s != NONE && kept(filter, i) {
                sums[s as usize] = add(sums[s as usize], v)?;
                seen[s as usize] = true;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        if std::mem::take(&mut self.seen[src as usize]) {
            let v = std::mem::take(&mut self.sums[src as usize]);
            self.add(dst, v)?;
        }
        Ok(())
    }

    fn value(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let values: Vec<(i128, bool)> = slots
            .iter()
            .map(|s| (self.sums[*s as usize], self.seen[*s as usize]))
            .collect();
        self.column(values.into_iter())
    }

    fn take(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let values: Vec<(i128, bool)> = slots
            .iter()
            .map(|s| {
                let s = *s as usize;
                (
                    std::mem::take(&mut self.sums[s]),
                    std::mem::take(&mut self.seen[s]),
                )
            })
            .collect();
        self.column(values.into_iter())
    }

    fn state(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let values = slots
            .iter()
            .map(|s| (self.sums[*s as usize], self.seen[*s as usize]));
        Ok(vec![self.column(values)?])
    }

    fn restore(&mut self, slot: u32, states: &[ArrayRef], row: usize) -> Result<()> {
        let col = states[0]
            .as_primitive_opt::<Decimal128Type>()
            .ok_or_else(|| bad_state("sum"))?;
        if col.is_valid(row) {
            self.add(slot, col.value(row))?;
        }
        Ok(())
    }
}

/// Distinct values held in place before a slot switches to a hash set: most sessions see one
/// to a few.
const SMALL: usize = 16;

/// One slot's distinct values, as encoded bytes.
enum ValueSet {
    /// Up to [`SMALL`] values, each `[length: u32 LE][bytes]`, compared one by one. An emptied
    /// slot keeps the buffer's capacity for the session that reuses it.
    Small { bytes: Vec<u8>, n: usize },
    /// More.
    Large(hashbrown::HashSet<Box<[u8]>>),
}

impl Default for ValueSet {
    fn default() -> Self {
        ValueSet::Small {
            bytes: Vec::new(),
            n: 0,
        }
    }
}

/// The values of a `Small` set's buffer.
fn entries(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len_bytes = bytes.get(at..at + 4)?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("four bytes")) as usize;
        let value = &bytes[at + 4..at + 4 + len];
        at += 4 + len;
        Some(value)
    })
}

impl ValueSet {
    fn insert(&mut self, value: &[u8]) {
        match self {
            ValueSet::Small { bytes, n } => {
                if entries(bytes).any(|v| v == value) {
                    return;
                }
                if *n < SMALL {
                    bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(value);
                    *n += 1;
                    return;
                }
                let mut set: hashbrown::HashSet<Box<[u8]>> =
                    entries(bytes).map(Box::from).collect();
                set.insert(Box::from(value));
                *self = ValueSet::Large(set);
            }
            ValueSet::Large(set) => {
                if !set.contains(value) {
                    set.insert(Box::from(value));
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            ValueSet::Small { n, .. } => *n,
            ValueSet::Large(set) => set.len(),
        }
    }

    fn for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8])) {
        match self {
            ValueSet::Small { bytes, .. } => entries(bytes).for_each(f),
            ValueSet::Large(set) => set.iter().for_each(|v| f(v.as_ref())),
        }
    }

    /// Empties the set, keeping a small buffer's capacity.
    fn clear(&mut self) {
        match self {
            ValueSet::Small { bytes, n } => {
                bytes.clear();
                *n = 0;
            }
            ValueSet::Large(_) => *self = ValueSet::default(),
        }
    }
}

/// `count(DISTINCT x)`: each slot's distinct values, in the encoding of `distinct_count`.
struct DistinctSlots {
    data_type: DataType,
    encoding: Encoding,
    sets: Vec<ValueSet>,
}

impl DistinctSlots {
    fn new(data_type: DataType) -> Result<Self> {
        Ok(DistinctSlots {
            encoding: Encoding::new(&data_type)?,
            data_type,
            sets: Vec::new(),
        })
    }

    /// Adds the non-null values of `col` at `rows` to `slot(row)`.
    fn add_values(
        &mut self,
        col: &ArrayRef,
        rows: impl Iterator<Item = usize>,
        slot: impl Fn(usize) -> u32,
    ) -> Result<()> {
        let col = in_state_type(col, &self.data_type)?;
        let keys = self.encoding.keys(&col)?;
        let nulls = col.logical_nulls();
        for i in rows {
            if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
                self.sets[slot(i) as usize].insert(keys.get(i));
            }
        }
        Ok(())
    }
}

impl SlotAggregate for DistinctSlots {
    fn grow(&mut self, n: usize) {
        if self.sets.len() < n {
            self.sets.resize_with(n, ValueSet::default);
        }
    }

    fn update(
        &mut self,
        args: &[ArrayRef],
        slots: &[u32],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let rows = (0..slots.len()).filter(|i| slots[*i] != NONE && kept(filter, *i));
        self.add_values(&args[0], rows, |i| slots[i])
    }

    fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        let mut other = std::mem::take(&mut self.sets[src as usize]);
        let into = &mut self.sets[dst as usize];
        other.for_each(|v| into.insert(v));
        other.clear();
        self.sets[src as usize] = other;
        Ok(())
    }

    fn take(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(slots.iter().map(
            |s| {
                let set = &mut self.sets[*s as usize];
                let n = set.len() as i64;
                set.clear();
                n
            },
        ))))
    }

    fn value(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|s| self.sets[*s as usize].len() as i64),
        )))
    }

    fn state(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        // DataFusion's shape: one list of the slot's values per slot.
        let mut lens = Vec::with_capacity(slots.len());
        let mut values: Vec<&[u8]> = Vec::new();
        for s in slots {
            let set = &self.sets[*s as usize];
            lens.push(set.len());
            set.for_each(|v| values.push(v));
        }
        let flat = self.encoding.values(values.into_iter())?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(self.data_type.clone(), true)),
            OffsetBuffer::from_lengths(lens),
            flat,
            None,
        )?;
        Ok(vec![Arc::new(list)])
    }

    fn restore(&mut self, slot: u32, states: &[ArrayRef], row: usize) -> Result<()> {
        let list = states[0]
            .as_list_opt::<i32>()
            .ok_or_else(|| bad_state("count(DISTINCT)"))?;
        if list.is_valid(row) {
            let values = list.value(row);
            self.add_values(&values, 0..values.len(), |_| slot)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;

    use super::*;

    fn strings(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    #[test]
    fn distinct_slots_merge_reuse_and_round_trip_their_state() {
        let mut d = DistinctSlots::new(DataType::Utf8).unwrap();
        d.grow(4);
        let col = strings(&["a", "b", "a", "c", "b", "d"]);
        d.update(&[col], &[0, 0, 0, 1, NONE, 1], None).unwrap();
        d.merge(0, 1).unwrap();
        let state = d.state(&[0, 1]).unwrap();
        let mut e = DistinctSlots::new(DataType::Utf8).unwrap();
        e.grow(4);
        e.restore(2, &state, 0).unwrap();
        e.restore(3, &state, 1).unwrap();
        let counts = e.take(&[2, 3]).unwrap();
        assert_eq!(counts.as_primitive::<Int64Type>().values(), &[4, 0]);
        assert_eq!(
            d.take(&[0]).unwrap().as_primitive::<Int64Type>().value(0),
            4
        );
        // An emptied slot starts again from nothing.
        d.update(&[strings(&["z"])], &[0], None).unwrap();
        assert_eq!(
            d.take(&[0]).unwrap().as_primitive::<Int64Type>().value(0),
            1
        );
    }

    #[test]
    fn a_large_distinct_set_counts_each_value_once() {
        let mut d = DistinctSlots::new(DataType::Utf8).unwrap();
        d.grow(1);
        let values: Vec<String> = (0..100).map(|i| format!("m{}", i % 40)).collect();
        let col: ArrayRef = Arc::new(StringArray::from(values));
        d.update(&[col], &[0; 100], None).unwrap();
        assert_eq!(
            d.take(&[0]).unwrap().as_primitive::<Int64Type>().value(0),
            40
        );
    }

    #[test]
    fn sum_slots_are_exact_null_when_empty_and_refuse_overflow() {
        let mut s = SumSlots {
            scale: 0,
            sums: Vec::new(),
            seen: Vec::new(),
        };
        s.grow(3);
        let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(i64::MAX), None]));
        let filter = BooleanArray::from(vec![true, true, true]);
        s.update(&[col], &[0, 0, 1], Some(&filter)).unwrap();
        let out = s.take(&[0, 1]).unwrap();
        let out = out.as_primitive::<Decimal128Type>();
        assert_eq!(out.value(0), 2 * i64::MAX as i128);
        assert!(out.is_null(1), "a sum over no values is NULL");
        s.sums[2] = i128::MAX;
        s.seen[2] = true;
        let one: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        assert!(s.update(&[one], &[2], None).is_err());
    }

    #[test]
    fn count_slots_skip_nulls_filtered_rows_and_unassigned_rows() {
        let mut c = CountSlots::default();
        c.grow(2);
        let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
        let filter = BooleanArray::from(vec![Some(true), Some(true), None, Some(true)]);
        c.update(&[col], &[0, 0, 0, NONE], Some(&filter)).unwrap();
        c.merge(1, 0).unwrap();
        let out = c.take(&[0, 1]).unwrap();
        assert_eq!(out.as_primitive::<Int64Type>().values(), &[0, 1]);
        // `count(NULL)`: an all-NULL argument has no null buffer, and counts nothing.
        let null: ArrayRef = Arc::new(datafusion::arrow::array::NullArray::new(2));
        c.update(&[Arc::clone(&null)], &[0, 0], None).unwrap();
        assert_eq!(
            c.take(&[0]).unwrap().as_primitive::<Int64Type>().value(0),
            0
        );
        let mut d = DistinctSlots::new(DataType::Utf8).unwrap();
        d.grow(1);
        d.update(&[null], &[0, 0], None).unwrap();
        assert_eq!(
            d.take(&[0]).unwrap().as_primitive::<Int64Type>().value(0),
            0
        );
    }
}
