//! Parquet → [`RawRow`].
//!
//! Parquet is typed, but a producer's types need not be ours (an `Int32` amount, a `Utf8View`
//! id, a `Timestamp(µs)` event time), so each cell is read into the same [`RawValue`] a JSON
//! parser would produce and validated by the same rules. Positions are 1-based row numbers.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::card::contains_card_number;
use super::fast::{FastPath, check};
use super::row::{MAX_EVENT_TIME, RawRow, RawValue, ValidRow};
use crate::schema::{FieldId, NUM_FIELDS};

/// A Parquet batch's columns, converted once to the few shapes the row reader understands.
#[derive(Debug)]
pub struct ParquetColumns {
    cols: Vec<(Option<FieldId>, String, Column)>,
}

#[derive(Debug)]
enum Column {
    Str(StringArray),
    Int(Int64Array),
    Float(ArrayRef),
    Bool(BooleanArray),
    Other(ArrayRef),
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

impl ParquetColumns {
    /// Checks a Parquet file's schema before any row is read: a column name given twice is
    /// refused, naming it (which column holds the field would be a guess; JSON refuses a
    /// repeated field and CSV a repeated header name).
    pub fn check_schema(
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<(), super::csv::CsvHeaderError> {
        let fields = schema.fields();
        for (k, f) in fields.iter().enumerate() {
            if let Some(first) = fields[..k].iter().position(|g| g.name() == f.name()) {
                return Err(super::csv::CsvHeaderError::Duplicate(
                    super::card::redact(f.name()),
                    first + 1,
                    k + 1,
                ));
            }
        }
        Ok(())
    }

    /// Prepares a batch read from a Parquet file.
    pub fn new(batch: &RecordBatch) -> Self {
        let schema = batch.schema();
        let cols = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, arr)| {
                let id = FieldId::from_name(field.name().as_bytes());
                let col = match arr.data_type() {
                    // Plain strings, or dictionary-encoded ones (how many writers store codes,
                    // and how paystream's own batches hold `event_type` and `status`).
                    t if is_string(t)
                        || matches!(t, DataType::Dictionary(_, v) if is_string(v)) =>
                    {
                        Column::Str(cast(arr, &DataType::Utf8).map_or_else(
                            |_| StringArray::new_null(arr.len()),
                            |a| a.as_string::<i32>().clone(),
                        ))
                    }
                    DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32 => Column::Int(
                        cast(arr, &DataType::Int64)
                            .expect("widening integer cast")
                            .as_primitive()
                            .clone(),
                    ),
                    DataType::Timestamp(unit, _) => {
                        let raw = cast(arr, &DataType::Int64).expect("timestamp to int");
                        let raw: &Int64Array = raw.as_primitive();
                        let div = match unit {
                            TimeUnit::Second => -1000,
                            TimeUnit::Millisecond => 1,
                            TimeUnit::Microsecond => 1000,
                            TimeUnit::Nanosecond => 1_000_000,
                        };
                        Column::Int(raw.unary(|v| {
                            if div < 0 {
                                v.saturating_mul(-div)
                            } else {
                                v.div_euclid(div)
                            }
                        }))
                    }
                    DataType::Float16
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::UInt64 => Column::Float(arr.clone()),
                    DataType::Boolean => Column::Bool(arr.as_boolean().clone()),
                    _ => Column::Other(arr.clone()),
                };
                (id, field.name().clone(), col)
            })
            .collect();
        ParquetColumns { cols }
    }

    /// Reads row `i` into `row`.
    pub fn read_row<'a>(&'a self, i: usize, row: &mut RawRow<'a>) {
        for (k, (id, name, _)) in self.cols.iter().enumerate() {
            let (v, text) = self.cell(k, i);
            match &v {
                // Screened as JSON screens a string in the same field: known fields by their
                // kind (never a time or an amount), extra ones always.
                RawValue::Str(s) => match id {
                    Some(f) => row.note_field(*f, s),
                    None => row.note_string(name, s),
                },
                // A list or struct: screened as JSON screens the strings and numbers inside an
                // array or object, through its text.
                RawValue::Compound(_) => {
                    if let Some(text) = &text {
                        row.note_string(name, text);
                    }
                }
                _ => {}
            }
            match id {
                Some(f) => row.values[*f as usize] = Some(v),
                None => row.unknown_fields += 1,
            }
        }
    }

    /// The fast path: row `i` read straight into `row` when every cell is of the type its field
    /// wants (strings as text, the time as text or an integer timestamp, amounts as integers)
    /// and valid, with the number of extra columns; `None` for anything else, which
    /// [`Self::read_row`] and [`validate`](super::validate) then decide and name. What it takes,
    /// the general route takes with the same values.
    pub(super) fn fast_row<'a>(
        &'a self,
        i: usize,
        time: &mut FastPath,
        row: &mut ValidRow<'a>,
    ) -> Option<u32> {
        row.strs = [None; NUM_FIELDS];
        row.fee_minor = None;
        let mut event_time = None;
        let mut amount = None;
        let mut unknown = 0;
        for (id, _, col) in &self.cols {
            let Some(f) = id else {
                unknown += 1;
                match col {
                    // Screened as `read_row` screens an extra column's text.
                    Column::Str(a)
                        if a.is_valid(i) && contains_card_number(a.value(i).as_bytes()) =>
                    {
                        return None;
                    }
                    Column::Other(a) if a.is_valid(i) => return None,
                    _ => {}
                }
                continue;
            };
            match (f, col) {
                (FieldId::EventTime, Column::Int(a)) if a.is_valid(i) => {
                    let ms = a.value(i);
                    event_time = Some((0..=MAX_EVENT_TIME).contains(&ms).then_some(ms)?);
                }
                (FieldId::EventTime, Column::Str(a)) if a.is_valid(i) => {
                    event_time = Some(time.event_time(a.value(i))?);
                }
                (FieldId::AmountMinor | FieldId::FeeMinor, Column::Int(a)) if a.is_valid(i) => {
                    let v = a.value(i);
                    if !(0..=super::MAX_AMOUNT).contains(&v) {
                        return None;
                    }
                    match f {
                        FieldId::AmountMinor => amount = Some(v),
                        _ => row.fee_minor = Some(v),
                    }
                }
                (FieldId::EventTime | FieldId::AmountMinor | FieldId::FeeMinor, _) => {
                    // A null fee is absent; anything else the general route judges.
                    if !(*f == FieldId::FeeMinor && is_null(col, i)) {
                        return None;
                    }
                }
                (_, Column::Str(a)) if a.is_valid(i) => row.strs[*f as usize] = Some(a.value(i)),
                // A null optional string is absent (`check` declines a missing required one).
                (_, c) if is_null(c, i) => {}
                _ => return None,
            }
        }
        row.amount_minor = amount?;
        row.event_time = event_time?;
        check(row)?;
        Some(unknown)
    }

    /// The columns' names, in order.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.cols.iter().map(|(_, n, _)| n.as_str())
    }

    /// Row `i` of column `k` as the value a JSON parser would see; for a list or struct, also
    /// its text (which is screened for card numbers).
    pub(super) fn cell(&self, k: usize, i: usize) -> (RawValue<'_>, Option<String>) {
        if let (_, _, Column::Other(a)) = &self.cols[k]
            && a.is_valid(i)
        {
            return (
                RawValue::Compound(described(a.data_type())),
                datafusion::arrow::util::display::array_value_to_string(a, i).ok(),
            );
        }
        (self.value(k, i).unwrap_or(RawValue::Null), None)
    }

    /// Row `i` of column `k` as the value a JSON parser would see; `None` for a list, struct
    /// or other compound value, whose text [`Self::cell`] renders (for the card screen).
    /// Inlined: returned through memory, the value cost the declared fast path a third of its
    /// time.
    #[inline(always)]
    pub(super) fn value(&self, k: usize, i: usize) -> Option<RawValue<'_>> {
        let (_, _, col) = &self.cols[k];
        Some(match col {
            Column::Str(a) if a.is_valid(i) => RawValue::Str(Cow::Borrowed(a.value(i))),
            Column::Int(a) if a.is_valid(i) => RawValue::Int(a.value(i)),
            Column::Bool(a) if a.is_valid(i) => RawValue::Bool(a.value(i)),
            Column::Float(a) if a.is_valid(i) => {
                use datafusion::arrow::datatypes::{Float32Type, Float64Type, UInt64Type};
                // A UInt64 that fits is still an integer.
                if let Some(u) = a.as_primitive_opt::<UInt64Type>() {
                    let v = u.value(i);
                    i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int)
                } else if let Some(f) = a.as_primitive_opt::<Float64Type>() {
                    RawValue::Float(f.value(i))
                } else if let Some(f) = a.as_primitive_opt::<Float32Type>() {
                    RawValue::Float(f64::from(f.value(i)))
                } else {
                    RawValue::Float(f64::NAN)
                }
            }
            Column::Other(a) if a.is_valid(i) => return None,
            _ => RawValue::Null,
        })
    }

    /// Column `k` as an Arrow array when it is one of the shapes a row's value is read from
    /// unchanged: text (as `Utf8`) or integers and times (as `Int64`, times in epoch
    /// milliseconds).
    pub(super) fn plain(&self, k: usize) -> Option<ArrayRef> {
        match &self.cols[k].2 {
            Column::Str(a) => Some(Arc::new(a.clone())),
            Column::Int(a) => Some(Arc::new(a.clone())),
            _ => None,
        }
    }

    /// The text columns of payment event fields (other than the coded `event_type` and
    /// `status`), as `Utf8` arrays.
    pub(super) fn texts(&self) -> impl Iterator<Item = (FieldId, ArrayRef)> + '_ {
        self.cols.iter().filter_map(|(id, _, col)| match (id, col) {
            (Some(f), Column::Str(a)) if !matches!(f, FieldId::EventType | FieldId::Status) => {
                Some((*f, Arc::new(a.clone()) as ArrayRef))
            }
            _ => None,
        })
    }

    /// The string in row `i` of column `k`, a string column ([`Self::value`] read a string
    /// there); empty for any other column, which no caller asks for.
    #[inline]
    pub(super) fn str_at(&self, k: usize, i: usize) -> &str {
        match &self.cols[k].2 {
            Column::Str(a) => a.value(i),
            _ => {
                debug_assert!(false, "column {k} holds no strings");
                ""
            }
        }
    }

    /// Row `i` as a JSON object, for the dead-letter output.
    pub fn row_json(&self, i: usize) -> String {
        let mut m = serde_json::Map::new();
        for (_, name, col) in &self.cols {
            let v = match col {
                Column::Str(a) if a.is_valid(i) => serde_json::Value::from(a.value(i)),
                Column::Int(a) if a.is_valid(i) => serde_json::Value::from(a.value(i)),
                Column::Bool(a) if a.is_valid(i) => serde_json::Value::from(a.value(i)),
                Column::Float(a) | Column::Other(a) if a.is_valid(i) => {
                    match datafusion::arrow::util::display::array_value_to_string(a, i) {
                        Ok(s) => serde_json::Value::from(s),
                        Err(_) => serde_json::Value::Null,
                    }
                }
                _ => serde_json::Value::Null,
            };
            m.insert(name.clone(), v);
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// Whether row `i` of `col` is null.
fn is_null(col: &Column, i: usize) -> bool {
    match col {
        Column::Str(a) => a.is_null(i),
        Column::Int(a) => a.is_null(i),
        Column::Bool(a) => a.is_null(i),
        Column::Float(a) | Column::Other(a) => a.is_null(i),
    }
}

/// What a Parquet value of `t` (one without a JSON counterpart) is, for errors.
fn described(t: &datafusion::arrow::datatypes::DataType) -> &'static str {
    use datafusion::arrow::datatypes::DataType as T;
    match t {
        T::List(_) | T::LargeList(_) | T::FixedSizeList(_, _) | T::ListView(_) => "a list",
        T::Struct(_) => "a struct",
        T::Map(_, _) => "a map",
        T::Decimal32(_, _) | T::Decimal64(_, _) | T::Decimal128(_, _) | T::Decimal256(_, _) => {
            "a decimal"
        }
        T::Date32 | T::Date64 => "a date",
        T::Time32(_) | T::Time64(_) => "a time of day",
        T::Timestamp(_, _) => "a timestamp",
        T::Duration(_) | T::Interval(_) => "a duration",
        T::Binary | T::LargeBinary | T::BinaryView | T::FixedSizeBinary(_) => "binary data",
        _ => "a value of a type JSON has no counterpart for",
    }
}
