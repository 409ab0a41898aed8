//! The schema-driven decoder: records of a source declared with its own columns
//! (`CREATE SOURCE orders (order_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, …)`) → Arrow
//! batches of exactly those columns, plus rejects.
//!
//! The payment decoders know one schema by heart; this one reads a schema given at run time
//! ([`EventSchema::is_declared`]). The format parsers are shared (JSON's cursor, CSV's
//! splitter, Parquet's columns), and so is the rule that decides nothing silently: a value
//! that does not fit its column's type — a quoted number in a `BIGINT`, `12.5` in an `INT`, an
//! unparsable time, a `null` or a missing member in a `NOT NULL` column — rejects the whole
//! record with the column's name and the reason, never coerced and never nulled. Members the
//! schema does not name are skipped and counted, as the payment event's unknown fields are;
//! every string (values, keys, strings nested in skipped members) is screened for card numbers.
//!
//! Types, as `CREATE SOURCE` spells them ([`ColumnKind`]): `VARCHAR`, `BIGINT`, `INT`,
//! `DOUBLE`, `BOOLEAN`, `TIMESTAMP` (RFC 3339 with an offset, or epoch milliseconds).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::card::contains_card_number;
use super::csv::{CsvHeader, split_record};
use super::payload_hash::PayloadHasher;
use super::reject::{Reject, RejectReason};
use super::row::{Invalid, RawValue, Screen, screen_into};
use super::str_column::StrColumn;
use super::{Decoded, DecodedBatch, ParquetColumns, RawSource, span};
use crate::schema::EventSchema;
use crate::time::parse_rfc3339_millis;

/// The field metadata key of a `VARCHAR(n)` column's length `n`.
pub const MAX_CHARS: &str = "paystream.max_chars";

/// The value types a declared column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `VARCHAR` (`TEXT`, `STRING`): UTF-8 text.
    Utf8,
    /// `BIGINT`: a 64-bit integer (money in minor units).
    Int64,
    /// `INT` (`INTEGER`): a 32-bit integer.
    Int32,
    /// `DOUBLE` (`FLOAT`, `REAL`): a 64-bit float, for scores and rates, never money.
    Float64,
    /// `BOOLEAN`.
    Bool,
    /// `TIMESTAMP`: milliseconds since the epoch, UTC.
    Timestamp,
}

impl ColumnKind {
    /// The kind of an Arrow type, if a declared column can have it.
    pub fn of(t: &DataType) -> Option<ColumnKind> {
        Some(match t {
            DataType::Utf8 => ColumnKind::Utf8,
            DataType::Int64 => ColumnKind::Int64,
            DataType::Int32 => ColumnKind::Int32,
            DataType::Float64 => ColumnKind::Float64,
            DataType::Boolean => ColumnKind::Bool,
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
                ColumnKind::Timestamp
            }
            _ => return None,
        })
    }

    /// The SQL spelling, as errors name it.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnKind::Utf8 => "VARCHAR",
            ColumnKind::Int64 => "BIGINT",
            ColumnKind::Int32 => "INT",
            ColumnKind::Float64 => "DOUBLE",
            ColumnKind::Bool => "BOOLEAN",
            ColumnKind::Timestamp => "TIMESTAMP",
        }
    }
}

/// One declared column.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: ColumnKind,
    nullable: bool,
    /// `VARCHAR(n)`: at most `n` characters.
    max_chars: Option<usize>,
}

/// The raw values of one record of a declared schema, indexed by column.
#[derive(Debug, Default)]
pub(super) struct DeclaredRow<'a> {
    /// Each column's value; `None` when absent.
    pub(super) values: Vec<Option<RawValue<'a>>>,
    /// Members not in the schema (skipped, counted).
    pub(super) unknown_fields: u32,
    /// The columns' names, for messages.
    pub(super) names: Arc<[String]>,
    /// Whether a slot may hold a value (a row not checked to the end since it was emptied).
    dirty: bool,
    /// A member (known or not) whose string looks like a card number.
    pub(super) card_number_in: Option<String>,
}

impl DeclaredRow<'_> {
    /// Empties the row for the next record, keeping its memory.
    fn clear(&mut self) {
        self.values.fill(None);
        self.unknown_fields = 0;
        self.card_number_in = None;
        self.dirty = false;
    }
}

impl Screen for DeclaredRow<'_> {
    fn note_string(&mut self, field: &str, value: &str) {
        screen_into(&mut self.card_number_in, field, value);
    }
}

/// A checked value, ready to append.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Decodes records into batches of a declared schema. Built once per source from its
/// [`EventSchema`]; shared by its decoder threads.
#[derive(Debug)]
pub struct DeclaredDecoder {
    events: Arc<EventSchema>,
    columns: Vec<Column>,
    /// The columns' names (rows share them for messages).
    names: Arc<[String]>,
    /// The JSON keys' patterns, and the member order a chunk starts from.
    keys: super::json::DeclaredKeys,
}

impl DeclaredDecoder {
    /// The decoder of `events`, whose columns must all have a [`ColumnKind`] (the declaration
    /// checked that).
    pub fn new(events: Arc<EventSchema>) -> crate::error::Result<Self> {
        let columns = events
            .arrow()
            .fields()
            .iter()
            .map(|f| {
                let kind = ColumnKind::of(f.data_type()).ok_or_else(|| {
                    crate::error::Error::Internal(format!(
                        "declared column `{}` has type {}, which no decoder reads",
                        f.name(),
                        f.data_type()
                    ))
                })?;
                Ok(Column {
                    name: f.name().clone(),
                    kind,
                    nullable: f.is_nullable(),
                    max_chars: f.metadata().get(MAX_CHARS).and_then(|n| n.parse().ok()),
                })
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        let names: Arc<[String]> = columns.iter().map(|c| c.name.clone()).collect();
        let keys = super::json::DeclaredKeys::new(columns.iter().map(|c| c.name.as_str()));
        Ok(DeclaredDecoder {
            events,
            columns,
            names,
            keys,
        })
    }

    /// The events it decodes.
    pub fn events(&self) -> &Arc<EventSchema> {
        &self.events
    }

    fn empty_row<'a>(&self) -> DeclaredRow<'a> {
        DeclaredRow {
            values: vec![None; self.columns.len()],
            unknown_fields: 0,
            names: Arc::clone(&self.names),
            card_number_in: None,
            dirty: false,
        }
    }

    /// The column named `key`, if one is. Linear over the columns, length first: a schema has a
    /// few dozen columns at most, and a hash of the key cost more than comparing lengths.
    #[inline]
    fn column(&self, key: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.len() == key.len() && c.name == key)
    }

    /// Decodes a chunk of JSON Lines whose first line is number `first_line` (blank lines are
    /// skipped and not counted); `lines` (about how many the chunk holds) sizes the columns.
    pub fn json_lines(
        &self,
        chunk: &[u8],
        first_line: u64,
        batch_size: usize,
        lines: usize,
    ) -> Decoded {
        let mut asm = Assembler::new(self, batch_size, lines);
        let mut row = self.empty_row();
        let mut cells = Vec::with_capacity(self.columns.len());
        let mut keys = self.keys.clone();
        let ascii = super::is_ascii(chunk);
        let mut pos = first_line;
        let mut start = 0;
        while start <= chunk.len() {
            let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
            let line = &chunk[start..end];
            let at = start;
            let this = pos;
            pos += 1;
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            asm.out.records += 1;
            // An ASCII chunk (the common case, told 64 bytes at a time) is UTF-8 throughout.
            let text = match ascii {
                // SAFETY: ASCII is UTF-8.
                true => unsafe { std::str::from_utf8_unchecked(line) },
                false => match std::str::from_utf8(line) {
                    Ok(t) => t,
                    Err(e) => {
                        asm.reject(
                            (
                                RejectReason::InvalidUtf8,
                                format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                            ),
                            this,
                            line,
                        );
                        continue;
                    }
                },
            };
            // A checked row leaves its slots empty; any other is emptied here.
            if row.dirty {
                row.clear();
            }
            row.dirty = true;
            let parsed = super::json::parse_declared(text, |k| self.column(k), &mut keys, &mut row);
            match parsed {
                Ok(()) => asm.row(&mut row, &mut cells, this, line, at),
                Err(e) => asm.reject(e, this, line),
            }
        }
        asm.finish()
    }

    /// Decodes one batch read from a Parquet file, its columns matched to the declared ones by
    /// name (as a CSV header's are: every declared column must be there) and each cell checked
    /// as a JSON value of the same type is; `first_row` is the 1-based number of its first row.
    pub fn parquet(&self, batch: &RecordBatch, first_row: u64, batch_size: usize) -> Decoded {
        let cols = Arc::new(ParquetColumns::new(batch));
        let names: Vec<&str> = cols.names().collect();
        let map: Vec<Option<usize>> = names.iter().map(|n| self.column(n)).collect();
        let mut asm = Assembler::new(self, batch_size, batch.num_rows());
        let mut cells = Vec::with_capacity(self.columns.len());
        for i in 0..batch.num_rows() {
            let mut row = self.empty_row();
            for (k, target) in map.iter().enumerate() {
                let (v, text) = cols.cell(k, i);
                match (&v, text) {
                    (RawValue::Str(s), _) if target.is_none() => row.note_string(names[k], s),
                    (RawValue::Compound, Some(t)) => row.note_string(names[k], &t),
                    _ => {}
                }
                match target {
                    Some(c) => row.values[*c] = Some(v),
                    None => row.unknown_fields += 1,
                }
            }
            let pos = first_row + i as u64;
            asm.out.records += 1;
            if let Err(e) = asm.push(&mut row, &mut cells, pos, span(i, i + 1)) {
                asm.reject(e, pos, cols.row_json(i).as_bytes());
            }
        }
        let mut d = asm.finish();
        d.keep_source(RawSource::Parquet(cols));
        d
    }

    /// Every declared column must be a column of a Parquet file (a null cell is a null).
    pub fn parquet_columns(
        &self,
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<(), String> {
        let missing: Vec<&str> = self
            .columns
            .iter()
            .filter(|c| schema.field_with_name(&c.name).is_err())
            .map(|c| c.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the Parquet file lacks the declared column(s) {}; its columns are {}",
                missing.join(", "),
                schema
                    .fields()
                    .iter()
                    .map(|f| super::card::redact(f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// The columns of a CSV header: each cell names a declared column or an ignored one.
    /// Every declared column must have a cell (an empty cell is a null): a nullable column
    /// missing from the header would otherwise be null in every row without a word.
    pub fn csv_columns(&self, header: &CsvHeader) -> Result<Vec<Option<usize>>, String> {
        let columns: Vec<Option<usize>> = header.names().iter().map(|n| self.column(n)).collect();
        let missing: Vec<&str> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !columns.contains(&Some(*i)))
            .map(|(_, c)| c.name.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(columns);
        }
        // A header cell spelled like a missing column but for case is the likely mistake.
        let near: Vec<String> = missing
            .iter()
            .filter_map(|m| {
                header
                    .names()
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(m))
                    .map(|n| format!("`{}` is not `{m}`", super::card::redact(n)))
            })
            .collect();
        Err(format!(
            "the CSV header lacks the declared column(s) {}; every declared column needs a header cell (a row's cell may be empty: null){}",
            missing.join(", "),
            if near.is_empty() {
                String::new()
            } else {
                format!(" ({}: names are case-sensitive)", near.join(", "))
            }
        ))
    }

    /// Decodes a chunk of CSV records (no header) whose first record starts on line
    /// `first_line`; `header` names the cells ([`Self::csv_columns`] must accept it). An empty
    /// cell is absent.
    pub fn csv(
        &self,
        chunk: &[u8],
        first_line: u64,
        header: &CsvHeader,
        batch_size: usize,
    ) -> Decoded {
        let map = self.csv_columns(header).unwrap_or_default();
        let mut asm = Assembler::new(self, batch_size, memchr::memchr_iter(b'\n', chunk).count());
        let mut line_no = first_line;
        let mut start = 0;
        while start < chunk.len() {
            let end = super::csv::record_end(chunk, start);
            let rec = &chunk[start..end];
            let at = start;
            let pos = line_no;
            line_no += 1 + rec.iter().filter(|b| **b == b'\n').count() as u64;
            start = end + 1;
            let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
            if rec.is_empty() {
                continue;
            }
            asm.out.records += 1;
            let text = match std::str::from_utf8(rec) {
                Ok(t) => t,
                Err(e) => {
                    asm.reject(
                        (
                            RejectReason::InvalidUtf8,
                            format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                        ),
                        pos,
                        rec,
                    );
                    continue;
                }
            };
            // Cells borrow the record (a quoted one is unescaped into its own string): per record.
            let mut texts = Vec::new();
            let mut row = self.empty_row();
            let mut cells = Vec::with_capacity(self.columns.len());
            if let Err(e) = split_record(text, &mut texts) {
                asm.reject(e, pos, rec);
                continue;
            }
            if texts.len() != map.len() {
                asm.reject(
                    (
                        RejectReason::Malformed,
                        format!(
                            "CSV record has {} fields, the header has {}",
                            texts.len(),
                            map.len()
                        ),
                    ),
                    pos,
                    rec,
                );
                continue;
            }
            for (k, cell) in texts.iter().enumerate() {
                match map[k] {
                    // An empty cell is a null (as JSON's `null` is).
                    Some(c) if cell.is_empty() => row.values[c] = Some(RawValue::Null),
                    Some(c) => row.values[c] = Some(RawValue::Text(cell.as_ref())),
                    None => {
                        row.note_string(&header.names()[k], cell);
                        row.unknown_fields += 1;
                    }
                }
            }
            asm.row(&mut row, &mut cells, pos, rec, at);
        }
        asm.finish()
    }

    /// Checks row `row`'s values against the columns, in column order.
    /// Each value is taken out of its slot, so a row checked to the end is empty again.
    fn check<'a>(
        &self,
        row: &mut DeclaredRow<'a>,
        cells: &mut Vec<Cell<'a>>,
    ) -> Result<(), Invalid> {
        cells.clear();
        if let Some(f) = &row.card_number_in {
            return Err((
                RejectReason::CardNumber,
                format!("`{f}` holds what looks like a card number; send a token instead"),
            ));
        }
        for (c, v) in self.columns.iter().zip(row.values.iter_mut()) {
            let v = v.take();
            cells.push(check_value(c, v.as_ref())?);
        }
        row.dirty = false;
        Ok(())
    }
}

/// A value of column `c` as it fits the column's type, or why it does not.
fn check_value<'a>(c: &Column, v: Option<&RawValue<'a>>) -> Result<Cell<'a>, Invalid> {
    let name = &c.name;
    let ty = c.kind.sql();
    let wrong = |v: &RawValue<'_>, hint: &str| {
        (
            RejectReason::WrongType,
            format!("column `{name}` is {ty}, but holds {}{hint}", v.type_name()),
        )
    };
    let v = match v {
        None if c.nullable => return Ok(Cell::Null),
        None => {
            return Err((
                RejectReason::MissingField,
                format!("column `{name}` is NOT NULL, but the record has no `{name}`"),
            ));
        }
        Some(RawValue::Null) if c.nullable => return Ok(Cell::Null),
        Some(RawValue::Null) => {
            return Err((
                RejectReason::NullField,
                format!("column `{name}` is NOT NULL, but the record's `{name}` is null"),
            ));
        }
        Some(v) => v,
    };
    // A card number is a card number whatever column it was sent in (a quoted one in a number
    // column is said to be a card, not a wrong type; CSV cells go through the number checks).
    if c.kind != ColumnKind::Utf8
        && let RawValue::Str(s) = v
        && contains_card_number(s.as_bytes())
    {
        return Err(card(name));
    }
    let out_of_range = |what: &str| {
        (
            RejectReason::OutOfRange,
            format!("column `{name}` is {ty}, but {what} is out of its range"),
        )
    };
    let too_long = |n: usize| {
        (
            RejectReason::OutOfRange,
            format!("column `{name}` is VARCHAR({n}), but holds a longer text"),
        )
    };
    match c.kind {
        ColumnKind::Utf8 => {
            let s: Cow<'a, str> = match v {
                RawValue::Str(s) => s.clone(),
                RawValue::Text(t) => Cow::Borrowed(t),
                v => return Err(wrong(v, "; text is written in quotes")),
            };
            if contains_card_number(s.as_bytes()) {
                return Err(card(name));
            }
            if let Some(n) = c.max_chars
                && s.len() > n
                && s.chars().count() > n
            {
                return Err(too_long(n));
            }
            Ok(Cell::Str(s))
        }
        ColumnKind::Int64 | ColumnKind::Int32 => {
            let n = match v {
                RawValue::Int(n) => *n,
                RawValue::Text(t) => match strict_int(t) {
                    Some(Ok(n)) => n,
                    Some(Err(())) => return Err(out_of_range(&format!("{t:?}"))),
                    None => {
                        return Err((
                            RejectReason::WrongType,
                            format!("column `{name}` is {ty}, but holds {:?}", redact_cell(t)),
                        ));
                    }
                },
                // Only a whole number beyond 64 bits is out of range; `12.0` or `1e3` is not
                // an integer as written.
                RawValue::Float(f) if f.abs() >= 9.223_372_036_854_776e18 => {
                    return Err(out_of_range("the number"));
                }
                RawValue::Float(_) => {
                    return Err(wrong(
                        v,
                        "; write a whole number without a fraction or exponent",
                    ));
                }
                RawValue::Str(_) => return Err(wrong(v, "; numbers are written without quotes")),
                v => return Err(wrong(v, "")),
            };
            if card_like(n) {
                return Err(card(name));
            }
            if c.kind == ColumnKind::Int32 && i32::try_from(n).is_err() {
                return Err(out_of_range(&n.to_string()));
            }
            Ok(Cell::Int(n))
        }
        ColumnKind::Float64 => {
            let f = match v {
                RawValue::Int(n) => {
                    if card_like(*n) {
                        return Err(card(name));
                    }
                    // Beyond 2^53 an integer may not survive as a DOUBLE: never rounded silently.
                    if (*n as f64) as i64 != *n || n.unsigned_abs() > 1 << 53 {
                        return Err(out_of_range(&n.to_string()));
                    }
                    *n as f64
                }
                RawValue::Float(f) => {
                    if f.fract() == 0.0 && f.abs() < 1e19 && card_like(*f as i64) {
                        return Err(card(name));
                    }
                    *f
                }
                RawValue::Text(t) => match t.trim().parse::<f64>() {
                    Ok(f)
                        if t.bytes()
                            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
                    {
                        if f.fract() == 0.0 && f.abs() < 1e19 && card_like(f as i64) {
                            return Err(card(name));
                        }
                        f
                    }
                    _ => {
                        return Err((
                            RejectReason::WrongType,
                            format!("column `{name}` is {ty}, but holds {:?}", redact_cell(t)),
                        ));
                    }
                },
                RawValue::Str(_) => return Err(wrong(v, "; numbers are written without quotes")),
                v => return Err(wrong(v, "")),
            };
            if !f.is_finite() {
                return Err(out_of_range("the number"));
            }
            Ok(Cell::Float(f))
        }
        ColumnKind::Bool => match v {
            RawValue::Bool(b) => Ok(Cell::Bool(*b)),
            RawValue::Text(t) if t.eq_ignore_ascii_case("true") => Ok(Cell::Bool(true)),
            RawValue::Text(t) if t.eq_ignore_ascii_case("false") => Ok(Cell::Bool(false)),
            v => Err(wrong(v, "; write true or false")),
        },
        ColumnKind::Timestamp => {
            // A JSON time is an RFC 3339 string or an epoch-millisecond number (as the payment
            // event's); a CSV cell is either, as text.
            let ms = match v {
                RawValue::Int(ms) => Some(*ms),
                RawValue::Str(s) => parse_rfc3339_millis(s),
                RawValue::Text(t) => match strict_int(t) {
                    Some(ms) => ms.ok(),
                    None => parse_rfc3339_millis(t),
                },
                v => return Err(wrong(v, "; write an RFC 3339 time or epoch milliseconds")),
            };
            let Some(ms) = ms else {
                let text = match v {
                    RawValue::Str(s) => s.as_ref(),
                    RawValue::Text(t) => t,
                    _ => "",
                };
                return Err((
                    RejectReason::BadTimestamp,
                    format!(
                        "column `{name}` is TIMESTAMP, but {:?} is not an RFC 3339 time with an offset (2026-11-01T12:00:00Z) or epoch milliseconds",
                        redact_cell(text)
                    ),
                ));
            };
            // The payment event's range: windows and watermarks compute on it without overflow.
            if !(0..=super::row::MAX_EVENT_TIME).contains(&ms) {
                return Err((
                    RejectReason::BadTimestamp,
                    format!(
                        "column `{name}` is TIMESTAMP, but {ms} is outside 1970-01-01 to 9999-12-31 in epoch milliseconds (microseconds or nanoseconds?)"
                    ),
                ));
            }
            Ok(Cell::Int(ms))
        }
    }
}

/// Whether an integer value reads as a card number: 13 to 19 digits that pass the Luhn check,
/// other than a 13-digit number starting with 1 to 3 (an epoch-millisecond time from 2001 to
/// 2065: no scheme issues 13 digits outside Visa's 4), the rule `produce` applies too.
fn card_like(n: i64) -> bool {
    let v = n.unsigned_abs();
    if v < 1_000_000_000_000 {
        return false;
    }
    let digits = v.to_string();
    if digits.len() == 13 && matches!(digits.as_bytes()[0], b'1'..=b'3') {
        return false;
    }
    contains_card_number(digits.as_bytes())
}

fn card(name: &str) -> Invalid {
    (
        RejectReason::CardNumber,
        format!("column `{name}` holds what looks like a card number; send a token instead"),
    )
}

/// A cell's text for an error message, card numbers masked, long text cut.
fn redact_cell(t: &str) -> String {
    let t: String = t.chars().take(40).collect();
    super::card::redact_value(&t)
}

/// `t` as an integer written strictly (optional `-`, digits only): `Some(Err)` when it is one
/// but beyond i64, `None` when it is not one.
fn strict_int(t: &str) -> Option<Result<i64, ()>> {
    let d = t.strip_prefix('-').unwrap_or(t);
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(t.parse::<i64>().map_err(|_| ()))
}

/// A column being built.
enum Builder {
    Utf8(StrColumn),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(kind: ColumnKind, rows: usize) -> Self {
        match kind {
            ColumnKind::Utf8 => Builder::Utf8(StrColumn::with_capacity(rows, rows * 16)),
            ColumnKind::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            ColumnKind::Int32 => Builder::Int32(Int32Builder::with_capacity(rows)),
            ColumnKind::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            ColumnKind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnKind::Timestamp => Builder::Timestamp(
                TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    /// Appends a checked cell (its kind matches the column's).
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (Builder::Utf8(b), Cell::Str(s)) => b.push(Some(s)),
            (Builder::Int64(b), Cell::Int(v)) => b.append_value(*v),
            (Builder::Int32(b), Cell::Int(v)) => b.append_value(*v as i32),
            (Builder::Float64(b), Cell::Float(v)) => b.append_value(*v),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Builder::Timestamp(b), Cell::Int(v)) => b.append_value(*v),
            (Builder::Utf8(b), _) => b.push(None),
            (Builder::Int64(b), _) => b.append_null(),
            (Builder::Int32(b), _) => b.append_null(),
            (Builder::Float64(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Collects checked rows into batches of a fixed size.
struct Assembler<'d> {
    decoder: &'d DeclaredDecoder,
    builders: Vec<Builder>,
    rows: usize,
    positions: Vec<u64>,
    spans: Vec<(u32, u32)>,
    hashes: Vec<u64>,
    batch_size: usize,
    out: Decoded,
}

impl<'d> Assembler<'d> {
    fn new(decoder: &'d DeclaredDecoder, batch_size: usize, expected_rows: usize) -> Self {
        let batch_size = batch_size.max(1);
        let cap = batch_size.min(expected_rows.max(1)).min(8192);
        Assembler {
            decoder,
            builders: decoder
                .columns
                .iter()
                .map(|c| Builder::new(c.kind, cap))
                .collect(),
            rows: 0,
            positions: Vec::with_capacity(cap),
            spans: Vec::with_capacity(cap),
            hashes: Vec::with_capacity(cap),
            batch_size,
            out: Decoded::default(),
        }
    }

    /// Checks and appends one parsed record (counted by the caller), `bytes` at `at` in its
    /// chunk.
    fn row<'a>(
        &mut self,
        row: &mut DeclaredRow<'a>,
        cells: &mut Vec<Cell<'a>>,
        pos: u64,
        bytes: &[u8],
        at: usize,
    ) {
        if let Err(e) = self.push(row, cells, pos, span(at, at + bytes.len())) {
            self.reject(e, pos, bytes);
        }
    }

    /// Checks and appends one parsed record (counted by the caller) whose record is at `sp` in
    /// its chunk; the caller dead-letters it when it does not fit.
    fn push<'a>(
        &mut self,
        row: &mut DeclaredRow<'a>,
        cells: &mut Vec<Cell<'a>>,
        pos: u64,
        sp: (u32, u32),
    ) -> Result<(), Invalid> {
        self.out.unknown_fields += u64::from(row.unknown_fields);
        self.decoder.check(row, cells)?;
        let mut h = PayloadHasher::new();
        for (i, (b, cell)) in self.builders.iter_mut().zip(cells.iter()).enumerate() {
            b.append(cell);
            match cell {
                Cell::Null => {}
                Cell::Str(s) => h.bytes(i, s.as_bytes()),
                Cell::Int(v) => h.int(i, *v),
                Cell::Float(v) => h.int(i, v.to_bits() as i64),
                Cell::Bool(v) => h.int(i, i64::from(*v)),
            }
        }
        self.rows += 1;
        self.hashes.push(h.finish());
        self.positions.push(pos);
        self.spans.push(sp);
        if self.rows >= self.batch_size {
            self.flush();
        }
        Ok(())
    }

    fn reject(&mut self, (reason, detail): Invalid, pos: u64, bytes: &[u8]) {
        self.out
            .rejects
            .push(Reject::new(reason, detail, pos, bytes));
    }

    fn flush(&mut self) {
        if self.rows == 0 {
            return;
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch =
            RecordBatch::try_new(std::sync::Arc::clone(self.decoder.events.arrow()), columns)
                .expect("checked cells fit the declared columns");
        self.rows = 0;
        self.out.batches.push(DecodedBatch {
            batch,
            positions: std::mem::take(&mut self.positions),
            payload_hashes: std::mem::take(&mut self.hashes),
            raw_spans: std::mem::take(&mut self.spans),
            source: None,
        });
    }

    fn finish(mut self) -> Decoded {
        self.flush();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn decoder() -> DeclaredDecoder {
        let ts = crate::schema::timestamp_type();
        let arrow = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("ts", ts, false),
            Field::new("amount_minor", DataType::Int64, true),
            Field::new("qty", DataType::Int32, true),
            Field::new("score", DataType::Float64, true),
            Field::new("gift", DataType::Boolean, true),
            Field::new("note", DataType::Utf8, true).with_metadata(
                [(MAX_CHARS.to_string(), "24".to_string())]
                    .into_iter()
                    .collect(),
            ),
        ]));
        let events = EventSchema::declared("orders", arrow, Some("order_id"), "ts").unwrap();
        DeclaredDecoder::new(Arc::new(events)).unwrap()
    }

    #[test]
    fn json_values_fill_their_columns_in_any_order_and_spelling() {
        let d = decoder();
        let text = concat!(
            r#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":1250,"qty":2,"score":0.5,"gift":true,"note":"hi"}"#,
            "\n",
            r#"{ "note" : null, "extra": {"a": [1, "x"]}, "ts": 1793491200001, "order_id": "o\u0032" }"#,
            "\n\n",
        );
        let out = d.json_lines(text.as_bytes(), 1, 100, 3);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        // An epoch-millisecond time in a BIGINT is no card number (one in ten passes Luhn).
        let t = r#"{"order_id":"o","ts":1,"amount_minor":1700000000004,"note":"ééééééééééééééééééééééé"}"#;
        assert!(d.json_lines(t.as_bytes(), 1, 10, 1).rejects.is_empty());
        assert_eq!((out.records, out.unknown_fields), (2, 1));
        let b = &out.batches[0].batch;
        assert_eq!(b.num_rows(), 2);
        let ids = b.column(0).as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1)), ("o1", "o2"));
        let ts = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_793_491_200_000);
        assert_eq!(ts.value(1), 1_793_491_200_001);
        assert!(b.column(2).is_null(1) && b.column(6).is_null(1));
        assert_eq!(
            b.column(4)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0),
            0.5
        );
        assert!(b.column(5).as_boolean().value(0));
        assert_eq!(out.batches[0].positions, vec![1, 2]);
    }

    #[test]
    fn values_that_do_not_fit_are_rejected_naming_the_column() {
        let d = decoder();
        let base = r#""order_id":"o1","ts":"2026-11-01T00:00:00Z""#;
        for (members, reason, needle) in [
            (
                r#""amount_minor":"12""#,
                RejectReason::WrongType,
                "column `amount_minor` is BIGINT",
            ),
            (
                r#""amount_minor":12.5"#,
                RejectReason::WrongType,
                "`amount_minor`",
            ),
            (
                r#""amount_minor":123456789012345678901"#,
                RejectReason::OutOfRange,
                "`amount_minor`",
            ),
            (
                r#""qty":3000000000"#,
                RejectReason::OutOfRange,
                "column `qty` is INT",
            ),
            (
                r#""gift":"yes""#,
                RejectReason::WrongType,
                "column `gift` is BOOLEAN",
            ),
            (
                r#""score":"0.5""#,
                RejectReason::WrongType,
                "column `score` is DOUBLE",
            ),
            (
                r#""note":5"#,
                RejectReason::WrongType,
                "column `note` is VARCHAR",
            ),
            (
                r#""note":"4111 1111 1111 1111""#,
                RejectReason::CardNumber,
                "column `note`",
            ),
            (
                r#""other":"4111111111111111""#,
                RejectReason::CardNumber,
                "`other`",
            ),
            (
                r#""amount_minor":4111111111111111"#,
                RejectReason::CardNumber,
                "column `amount_minor`",
            ),
            (
                r#""gift":"4111 1111 1111 1111""#,
                RejectReason::CardNumber,
                "column `gift`",
            ),
            (
                r#""score":4111111111111111"#,
                RejectReason::CardNumber,
                "column `score`",
            ),
            (
                r#""score":9007199254740993"#,
                RejectReason::OutOfRange,
                "column `score`",
            ),
            (
                r#""amount_minor":12.0"#,
                RejectReason::WrongType,
                "whole number",
            ),
            (
                r#""note":"ééééééééééééééééééééééééé""#,
                RejectReason::OutOfRange,
                "VARCHAR(24)",
            ),
        ] {
            let line = format!("{{{base},{members}}}");
            let out = d.json_lines(line.as_bytes(), 7, 100, 1);
            assert_eq!(out.records, 1);
            assert!(out.batches.is_empty(), "{line}");
            let r = &out.rejects[0];
            assert_eq!((r.reason, r.position), (reason, 7), "{line}: {}", r.detail);
            assert!(r.detail.contains(needle), "{line}: {}", r.detail);
            assert!(!r.raw.contains("4111111111111111") && !r.detail.contains("4111"));
        }
        for (line, reason) in [
            (
                r#"{"ts":"2026-11-01T00:00:00Z"}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"order_id":null,"ts":"2026-11-01T00:00:00Z"}"#,
                RejectReason::NullField,
            ),
            (
                r#"{"order_id":"o","ts":"yesterday"}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"order_id":"o","ts":"2026-11-01T00:00:00"}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"order_id":"o","ts":"1793491200000"}"#,
                RejectReason::BadTimestamp,
            ),
            (r#"{"order_id":"o","ts":-1}"#, RejectReason::BadTimestamp),
            (
                r#"{"order_id":"o","ts":1793491200000000}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"order_id":"o","ts":-9223372036854775808}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"order_id":"o","order_id":"p","ts":1}"#,
                RejectReason::InvalidValue,
            ),
            (r#"{"order_id":"o""#, RejectReason::Malformed),
        ] {
            let out = d.json_lines(line.as_bytes(), 1, 100, 1);
            assert_eq!(out.rejects.len(), 1, "{line}");
            assert_eq!(
                out.rejects[0].reason, reason,
                "{line}: {}",
                out.rejects[0].detail
            );
        }
    }

    #[test]
    fn csv_cells_are_parsed_strictly_by_column_type() {
        let d = decoder();
        let header =
            CsvHeader::parse_names("ts,order_id,amount_minor,colour,gift,qty,score,note").unwrap();
        assert!(d.csv_columns(&header).is_ok());
        let text = "2026-11-01T00:00:00Z,o1,12,red,TRUE,,,\n1793491200000,o2,,blue,,,,\n2026-11-01T00:00:00Z,o3,1.5,x,,,,\n";
        let out = d.csv(text.as_bytes(), 2, &header, 100);
        assert_eq!((out.records, out.unknown_fields), (3, 3));
        assert_eq!(out.batches[0].batch.num_rows(), 2);
        assert_eq!(out.rejects[0].reason, RejectReason::WrongType);
        assert_eq!(out.rejects[0].position, 4);
        let missing = CsvHeader::parse_names("ts,Order_Id,amount_minor").unwrap();
        let e = d.csv_columns(&missing).unwrap_err();
        assert!(
            e.contains("order_id") && e.contains("case-sensitive"),
            "{e}"
        );
    }

    #[test]
    fn parquet_columns_are_read_by_name_and_checked_like_json_values() {
        use datafusion::arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
        let d = decoder();
        let schema = Arc::new(Schema::new(vec![
            Field::new("extra", DataType::Utf8, true),
            Field::new("amount_minor", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("order_id", DataType::Utf8, true),
            Field::new("qty", DataType::Utf8, true),
            Field::new("score", DataType::Utf8, true),
            Field::new("gift", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        assert!(d.parquet_columns(&schema).is_ok());
        let s = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                s(vec![Some("x"), Some("4111111111111111"), None]),
                Arc::new(Int32Array::from(vec![Some(5), Some(6), Some(7)])),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(1_793_491_200_000_000),
                    Some(1_793_491_200_000_000),
                    None,
                ])),
                s(vec![Some("o1"), Some("o2"), Some("o3")]),
                s(vec![None, None, None]),
                s(vec![None, None, None]),
                s(vec![None, None, None]),
                s(vec![None, None, None]),
            ],
        )
        .unwrap();
        let out = d.parquet(&batch, 1, 100);
        assert_eq!((out.records, out.unknown_fields), (3, 3));
        assert_eq!(out.batches[0].batch.num_rows(), 1);
        let reasons: Vec<_> = out.rejects.iter().map(|r| (r.reason, r.position)).collect();
        assert_eq!(
            reasons,
            [(RejectReason::CardNumber, 2), (RejectReason::NullField, 3)]
        );
        // A string where a number is declared is refused, naming the column.
        let e = d.parquet(
            &RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("order_id", DataType::Utf8, false),
                    Field::new("ts", DataType::Utf8, false),
                    Field::new("qty", DataType::Utf8, false),
                ])),
                vec![
                    s(vec![Some("o")]),
                    s(vec![Some("2026-11-01T00:00:00Z")]),
                    s(vec![Some("2")]),
                ],
            )
            .unwrap(),
            1,
            10,
        );
        assert_eq!(
            e.rejects[0].reason,
            RejectReason::WrongType,
            "{:?}",
            e.rejects
        );
        assert!(e.rejects[0].detail.contains("column `qty`"));
        let missing = Schema::new(vec![Field::new("ts", DataType::Utf8, false)]);
        assert!(
            d.parquet_columns(&missing)
                .unwrap_err()
                .contains("order_id")
        );
    }

    #[test]
    fn equal_values_hash_alike_whatever_their_spelling() {
        let d = decoder();
        let a = d.json_lines(
            br#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":5}"#,
            1,
            10,
            1,
        );
        let b = d.json_lines(
            br#"{"amount_minor":5, "x":1, "ts":1793491200000,"order_id":"o1"}"#,
            1,
            10,
            1,
        );
        let c = d.json_lines(
            br#"{"order_id":"o1","ts":"2026-11-01T00:00:00Z","amount_minor":6}"#,
            1,
            10,
            1,
        );
        let h = |d: &Decoded| d.batches[0].payload_hashes[0];
        assert_eq!(h(&a), h(&b));
        assert_ne!(h(&a), h(&c));
    }
}
