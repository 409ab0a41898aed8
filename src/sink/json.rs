//! Row formatting, separate from transport: result rows, dead-letter records and late-event
//! records as JSON (every sink — a file, a topic, a broker — writes these bytes).
//!
//! One object per row with the SELECT's output names as keys, integers and decimals as exact JSON
//! numbers (a sum beyond 64 bits too: `10000000000000000000`, never quoted or rounded), timestamps
//! as RFC 3339 UTC strings with milliseconds (`"2026-11-01T00:01:00.000Z"`), nulls as `null`.

use datafusion::arrow::array::{Array, AsArray, RecordBatch, downcast_dictionary_array};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::array_value_to_string;

use crate::decode::{Origin, Reject};
use crate::operators::LateEvents;
use crate::time::format_rfc3339_millis;

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping (the common case: ids, codes).
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte of `w` is a control character, `"` or `\\` (SWAR: a byte below 0x20, or
/// equal to one of the two, sets its high bit in the result).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space
        | zero_byte(w ^ (ONES * u64::from(b'"')))
        | zero_byte(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends the value at `row` of `col` as JSON.
pub fn write_value(out: &mut Vec<u8>, col: &dyn Array, row: usize) {
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    match col.data_type() {
        DataType::Utf8 => write_json_str(out, col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write_json_str(out, col.as_string::<i64>().value(row)),
        DataType::Utf8View => write_json_str(out, col.as_string_view().value(row)),
        DataType::Int64 => write_int(out, col.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => write_int(out, col.as_primitive::<Int32Type>().value(row)),
        DataType::Int16 => write_int(out, col.as_primitive::<Int16Type>().value(row)),
        DataType::Int8 => write_int(out, col.as_primitive::<Int8Type>().value(row)),
        DataType::UInt64 => write_int(out, col.as_primitive::<UInt64Type>().value(row)),
        DataType::UInt32 => write_int(out, col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt16 => write_int(out, col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt8 => write_int(out, col.as_primitive::<UInt8Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            if *scale == 0 {
                write_int(out, v);
            } else {
                write_decimal(out, &v.to_string(), *scale);
            }
        }
        DataType::Decimal256(_, scale) => {
            let v = col.as_primitive::<Decimal256Type>().value(row);
            write_decimal(out, &v.to_string(), *scale);
        }
        DataType::Decimal32(_, _) | DataType::Decimal64(_, _) => {
            // Arrow's text for a decimal is a plain JSON number ("-12.50"), never an exponent.
            match array_value_to_string(col, row) {
                Ok(s) => out.extend_from_slice(s.as_bytes()),
                Err(_) => out.extend_from_slice(b"null"),
            }
        }
        DataType::Boolean => out.extend_from_slice(if col.as_boolean().value(row) {
            b"true"
        } else {
            b"false"
        }),
        DataType::Float64 | DataType::Float32 => {
            let v = if col.data_type() == &DataType::Float64 {
                col.as_primitive::<Float64Type>().value(row)
            } else {
                col.as_primitive::<Float32Type>().value(row) as f64
            };
            if v.is_finite() {
                out.extend_from_slice(ryu_like(v).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(row) * 1000,
                TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => col
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1000),
                TimeUnit::Nanosecond => col
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            };
            out.push(b'"');
            format_rfc3339_millis(ms, out);
            out.push(b'"');
        }
        DataType::Dictionary(_, _) => {
            // The value the key points at, written as its own type (a dictionary of integers
            // stays a number).
            downcast_dictionary_array!(
                col => match col.key(row) {
                    Some(k) => write_value(out, col.values().as_ref(), k),
                    None => out.extend_from_slice(b"null"),
                },
                _ => out.extend_from_slice(b"null")
            )
        }
        // `array_agg`, `string_to_array` …: a JSON array of the elements, each as its own type
        // (a string quoted, so `"o,9"` stays one element; a null element `null`).
        DataType::List(_) => write_list(out, col.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => write_list(out, col.as_list::<i64>().value(row).as_ref()),
        DataType::FixedSizeList(_, _) => {
            write_list(out, col.as_fixed_size_list().value(row).as_ref())
        }
        _ => match array_value_to_string(col, row) {
            Ok(s) => write_json_str(out, &s),
            Err(_) => out.extend_from_slice(b"null"),
        },
    }
}

/// Appends the elements of `values` as a JSON array.
fn write_list(out: &mut Vec<u8>, values: &dyn Array) {
    out.push(b'[');
    for i in 0..values.len() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, values, i);
    }
    out.push(b']');
}

/// Appends the decimal whose unscaled digits are `digits` (an integer, maybe negative) at
/// `scale` as a JSON number: exact, with no exponent (`-1250`, scale 2 → `-12.50`).
fn write_decimal(out: &mut Vec<u8>, digits: &str, scale: i8) {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", digits),
    };
    out.extend_from_slice(sign.as_bytes());
    if scale <= 0 {
        out.extend_from_slice(digits.as_bytes());
        if digits != "0" {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    out.extend_from_slice(int.as_bytes());
    out.push(b'.');
    out.extend_from_slice(frac.as_bytes());
}

/// Shortest round-trip decimal for a float (serde_json's formatting).
fn ryu_like(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| "null".into(), |n| n.to_string())
}

/// The value at `row` of `col` as plain text, for a broker's key or a field: a string (or a
/// time, a date: whatever JSON writes as a string) without quotes or escapes, anything else as
/// its JSON (`1250`, `true`, `null`).
pub fn text_value(col: &dyn Array, row: usize) -> Vec<u8> {
    if col.is_valid(row) && col.data_type() == &DataType::Utf8 {
        return col.as_string::<i32>().value(row).as_bytes().to_vec();
    }
    let mut out = Vec::new();
    write_value(&mut out, col, row);
    if out.first() == Some(&b'"')
        && let Ok(s) = serde_json::from_slice::<String>(&out)
    {
        return s.into_bytes();
    }
    out
}

/// Appends row `row` of `batch` as one JSON object (no newline).
pub fn write_row(out: &mut Vec<u8>, batch: &RecordBatch, row: usize) {
    out.push(b'{');
    let schema = batch.schema();
    for (c, field) in schema.fields().iter().enumerate() {
        if c > 0 {
            out.push(b',');
        }
        write_json_str(out, field.name());
        out.push(b':');
        write_value(out, batch.column(c).as_ref(), row);
    }
    out.push(b'}');
}

/// Appends every row of `batch` as JSON Lines.
pub fn write_batch(out: &mut Vec<u8>, batch: &RecordBatch) {
    // Each column's `"name":` once per batch, not once per row.
    let keys: Vec<Vec<u8>> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let mut k = Vec::with_capacity(f.name().len() + 3);
            write_json_str(&mut k, f.name());
            k.push(b':');
            k
        })
        .collect();
    let columns = batch.columns();
    for r in 0..batch.num_rows() {
        out.push(b'{');
        for (c, key) in keys.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            write_value(out, columns[c].as_ref(), r);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Row `row` of an event batch as a JSON object, leaving out absent optional fields.
pub fn event_json(batch: &RecordBatch, row: usize) -> String {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let schema = batch.schema();
    let mut first = true;
    for (c, field) in schema.fields().iter().enumerate() {
        if batch.column(c).is_null(row) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(&mut out, field.name());
        out.push(b':');
        write_value(&mut out, batch.column(c).as_ref(), row);
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// A dead-letter record: `{"reason","detail","file","line","raw"}` (the position key follows the
/// origin: `line` or `row`; a log source gives `"topic","partition","offset"`).
pub fn dead_letter_json(origin: &Origin, r: &Reject) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + r.raw.len());
    out.extend_from_slice(b"{\"reason\":");
    write_json_str(&mut out, r.reason.as_str());
    out.extend_from_slice(b",\"detail\":");
    write_json_str(&mut out, &r.detail);
    out.push(b',');
    origin.write_json(r.position, &mut out);
    out.extend_from_slice(b",\"raw\":");
    write_json_str(&mut out, &r.raw);
    out.push(b'}');
    out
}

/// Late-event records: `{"reason":"late","event_id","event_time","watermark",["query",]"file","line","event"}`
/// (`"topic","partition","offset"` for a log source; `query` names the query the event was late
/// for when a run has several).
/// `events` says where the id and event time are.
pub fn late_json(
    origin: &Origin,
    query: Option<&str>,
    late: &LateEvents,
    events: &crate::schema::EventSchema,
) -> Vec<Vec<u8>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let ids = events
        .id_column()
        .map(|c| late.batch.column(c).as_string::<i32>());
    let times = late
        .batch
        .column(events.event_time_column())
        .as_primitive::<TimestampMillisecondType>();
    (0..late.batch.num_rows())
        .map(|i| {
            let mut out = Vec::with_capacity(384);
            out.extend_from_slice(b"{\"reason\":\"late\",\"event_id\":");
            match ids {
                Some(ids) => write_json_str(&mut out, ids.value(i)),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"event_time\":\"");
            format_rfc3339_millis(times.value(i), &mut out);
            out.extend_from_slice(b"\",\"watermark\":\"");
            format_rfc3339_millis(late.watermarks[i], &mut out);
            out.extend_from_slice(b"\",");
            if let Some(q) = query {
                out.extend_from_slice(b"\"query\":");
                write_json_str(&mut out, q);
                out.push(b',');
            }
            origin.write_json(late.positions[i], &mut out);
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(event_json(&late.batch, i).as_bytes());
            out.push(b'}');
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn strings_escape_as_json_whatever_their_length_and_content() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<char> = (0u8..0x80)
            .map(char::from)
            .chain(['é', '€', '😀', '\u{2028}'])
            .collect();
        for _ in 0..2_000 {
            let len = rng.random_range(0..40);
            // Mostly plain text, sometimes anything: escapes at every offset of a word.
            let s: String = (0..len)
                .map(|_| {
                    if rng.random_bool(0.9) {
                        char::from(rng.random_range(b'a'..=b'z'))
                    } else {
                        alphabet[rng.random_range(0..alphabet.len())]
                    }
                })
                .collect();
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
            // serde_json writes \b and \f for two control characters where this writes \u00XX.
            if !s.contains(['\u{8}', '\u{c}']) {
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&s).unwrap()
                );
            }
        }
    }

    #[test]
    fn formats_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("m", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("window_start", crate::schema::timestamp_type(), false),
            Field::new("avg", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a\"b"), None])),
                Arc::new(Int64Array::from(vec![1, -2])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_762_000_000_000, 60_000])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![Some(2.5), None])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        write_batch(&mut out, &batch);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"m\":\"a\\\"b\",\"n\":1,\"window_start\":\"2025-11-01T12:26:40.000Z\",\"avg\":2.5}\n{\"m\":null,\"n\":-2,\"window_start\":\"1970-01-01T00:01:00.000Z\",\"avg\":null}\n"
        );
    }

    /// A list (`array_agg`) is a JSON array of its elements as their own types: a string with
    /// a comma stays one element, a null element is `null`, an empty list `[]`.
    #[test]
    fn lists_are_json_arrays() {
        use datafusion::arrow::array::ListArray;
        use datafusion::arrow::datatypes::Int64Type;
        let ints = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None, Some(-3)]),
            Some(vec![]),
            None,
        ]);
        let strings = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([2, 0, 0]),
            Arc::new(StringArray::from(vec![Some("o,9"), None])),
            None,
        );
        let mut out = Vec::new();
        for row in 0..3 {
            write_value(&mut out, &ints, row);
            out.push(b' ');
            write_value(&mut out, &strings, row);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1,null,-3] [\"o,9\",null]|[] []|null []|"
        );
    }

    #[test]
    fn decimals_are_exact_json_numbers() {
        use datafusion::arrow::array::Decimal128Array;
        let cases: [(i128, i8, &str); 7] = [
            (10_000_000_000_000_000_000, 0, "10000000000000000000"),
            (-8_446_744_073_709_551_616, 0, "-8446744073709551616"),
            (i128::MAX, 0, "170141183460469231731687303715884105727"),
            (-1250, 2, "-12.50"),
            (5, 3, "0.005"),
            (0, 2, "0.00"),
            (12, -2, "1200"),
        ];
        for (v, scale, text) in cases {
            let a = Decimal128Array::from(vec![v])
                .with_precision_and_scale(38, scale)
                .unwrap();
            let mut out = Vec::new();
            write_value(&mut out, &a, 0);
            assert_eq!(String::from_utf8(out).unwrap(), text);
            assert!(
                serde_json::from_str::<serde_json::Value>(text)
                    .unwrap()
                    .is_number()
            );
        }
    }
}
