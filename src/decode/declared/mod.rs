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

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, make_array};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::card::contains_card_number;
use super::csv::{CsvHeader, split_record};
use super::reject::RejectReason;
use super::row::{Invalid, RawValue, Screen, screen_into};
use super::{Decoded, ParquetColumns, Projection, RawSource, span};
use crate::schema::EventSchema;

mod assemble;
mod check;
mod fast;
mod meta;
#[cfg(test)]
mod tests;

pub use self::meta::{METADATA, MetaKey, MetaValue, RecordMeta, metadata_keys};

use self::assemble::Assembler;
use self::check::{Cell, check_value};
use self::fast::{FastDeclared, FastRow};

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
    /// A metadata column (`METADATA FROM '…'`): its value comes from the record's
    /// [`RecordMeta`], never from the payload.
    meta: bool,
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

/// Decodes records into batches of a declared schema. Built once per source from its
/// [`EventSchema`]; shared by its decoder threads.
#[derive(Debug, Clone)]
pub struct DeclaredDecoder {
    events: Arc<EventSchema>,
    columns: Vec<Column>,
    /// The columns' names (rows share them for messages).
    names: Arc<[String]>,
    /// The JSON keys' patterns, for finding a member's column without reading its key twice.
    keys: super::json::DeclaredKeys,
    /// The metadata columns' indices and keys, in their order in [`RecordMeta`].
    meta_columns: Vec<(usize, MetaKey)>,
    /// Bit `i` set for each NOT NULL column `i` (the fast path's columns, at most 64).
    required: u64,
    /// Whether records take the fast path first ([`fast`]), and Parquet columns are sliced
    /// rather than copied: no metadata columns, at most 64 columns.
    fast: bool,
    /// Whether each column is built; a `VARCHAR` column no query reads is left out (empty
    /// strings), its values still read, checked and hashed ([`Self::projected`]).
    built: Vec<bool>,
    /// The decoder building every column, when this one leaves some out: late events are
    /// decoded again by it, whole.
    whole: Option<Arc<DeclaredDecoder>>,
}

impl DeclaredDecoder {
    /// The decoder of `events`, whose columns must all have a [`ColumnKind`] (the declaration
    /// checked that).
    pub fn new(events: Arc<EventSchema>) -> crate::error::Result<Self> {
        let mut columns = events
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
                    meta: false,
                })
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        // The same list, in the same order, as the source renders.
        let meta_columns: Vec<(usize, MetaKey)> = metadata_keys(events.arrow().fields())
            .into_iter()
            .map(|(i, _, key)| (i, key))
            .collect();
        for (i, _) in &meta_columns {
            columns[*i].meta = true;
        }
        let names: Arc<[String]> = columns.iter().map(|c| c.name.clone()).collect();
        // A metadata column is no JSON member's column: a member of its name is unknown.
        let keys = super::json::DeclaredKeys::new(
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.meta)
                .map(|(i, c)| (i, c.name.as_str())),
        );
        let fast = meta_columns.is_empty() && columns.len() <= 64;
        let required = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.nullable)
            .fold(0u64, |m, (i, _)| {
                m | 1u64.checked_shl(i as u32).unwrap_or(0)
            });
        Ok(DeclaredDecoder {
            built: vec![true; columns.len()],
            events,
            columns,
            names,
            keys,
            meta_columns,
            required,
            fast,
            whole: None,
        })
    }

    /// This decoder building only the columns `projection` may read, with the id and the time
    /// (dedup, watermarks) and every column that is not `VARCHAR` (a few bytes a row); the
    /// decoder itself when that is all of them. A schema without an id breaks ties between
    /// events of one time on all its columns, and metadata columns cannot be read again from a
    /// record alone: those build every column.
    pub fn projected(self: &Arc<Self>, projection: &Projection) -> Arc<DeclaredDecoder> {
        let Some(id) = self.events.id_column() else {
            return Arc::clone(self);
        };
        if !self.meta_columns.is_empty() {
            return Arc::clone(self);
        }
        let time = self.events.event_time_column();
        let built: Vec<bool> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.kind != ColumnKind::Utf8 || i == id || i == time || projection.reads(&c.name)
            })
            .collect();
        // The decoder building every column, even if this one was projected before.
        let whole = self.whole.clone().unwrap_or_else(|| Arc::clone(self));
        if built.iter().all(|b| *b) {
            return whole;
        }
        Arc::new(DeclaredDecoder {
            built,
            whole: Some(whole),
            ..DeclaredDecoder::clone(self)
        })
    }

    /// The same decoder without its fast path, for holding the fast path to the general route.
    #[cfg(test)]
    fn general_route_only(mut self) -> Self {
        self.fast = false;
        self
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

    /// The column named `key`, if one is (a metadata column is none: its value is not read
    /// from the payload). Linear over the columns, length first: a schema has a few dozen
    /// columns at most, and a hash of the key cost more than comparing lengths.
    #[inline]
    fn column(&self, key: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.len() == key.len() && c.name == key && !c.meta)
    }

    /// Fills the metadata columns of the chunk's `i`-th record from `meta`. A card number
    /// anywhere in the record is the reason it is refused, before any other.
    fn fill_metadata<'a>(
        &self,
        meta: Option<&'a RecordMeta>,
        i: usize,
        row: &mut DeclaredRow<'a>,
    ) -> Result<(), Invalid> {
        let mut fault = None;
        let meta = meta.filter(|m| m.columns == self.meta_columns.len());
        for (j, (c, key)) in self.meta_columns.iter().enumerate() {
            let column = &self.columns[*c];
            let name = &column.name;
            let v = match meta.and_then(|m| m.get(i, j).map(|v| (m, v))) {
                None => {
                    fault.get_or_insert((
                        RejectReason::MissingField,
                        format!(
                            "column `{name}` is a METADATA column, but the record came without metadata (only a Kafka source has it)"
                        ),
                    ));
                    continue;
                }
                Some((_, MetaValue::Null)) if !column.nullable => {
                    fault.get_or_insert((
                        RejectReason::NullField,
                        format!(
                            "column `{name}` is NOT NULL, but the record has no {key} (METADATA FROM '{key}')"
                        ),
                    ));
                    continue;
                }
                Some((_, MetaValue::Null)) => RawValue::Null,
                Some((_, MetaValue::Int(v))) => RawValue::Int(v),
                Some((m, MetaValue::Text(a, b))) => {
                    let t = m.text(a, b);
                    row.note_string(name, t);
                    RawValue::Str(std::borrow::Cow::Borrowed(t))
                }
                Some((_, MetaValue::Invalid(why))) => {
                    fault.get_or_insert((
                        RejectReason::InvalidValue,
                        format!("column `{name}`: {why}"),
                    ));
                    continue;
                }
            };
            row.values[*c] = Some(v);
        }
        match fault {
            None => Ok(()),
            // The check reports the card number first.
            Some(_) if row.card_number_in.is_some() => Ok(()),
            // A card number in a payload column is screened by the check, which a metadata
            // fault would pre-empt: looked for here first.
            Some(f) => Err(self
                .columns
                .iter()
                .zip(&row.values)
                .find_map(|(c, v)| {
                    let text: &str = match v {
                        Some(RawValue::Str(s)) => s,
                        Some(RawValue::Text(t)) => t,
                        _ => return None,
                    };
                    contains_card_number(text.as_bytes()).then(|| check::card(&c.name))
                })
                .unwrap_or(f)),
        }
    }

    /// Decodes a chunk of JSON Lines whose first line is number `first_line` (blank lines are
    /// skipped, their numbers counted); `lines` (about how many the chunk holds) sizes the
    /// columns. `meta` holds the metadata columns' values, line by line (a broker's records:
    /// the `i`-th line is the `i`-th record).
    pub fn json_lines<'a>(
        &self,
        chunk: &'a [u8],
        first_line: u64,
        batch_size: usize,
        lines: usize,
        meta: Option<&'a RecordMeta>,
    ) -> Decoded {
        let mut asm = Assembler::new(self, batch_size, lines, true);
        let mut row = self.empty_row();
        let mut cells = Vec::with_capacity(self.columns.len());
        let mut fast = FastDeclared::default();
        let mut fast_row = FastRow {
            vals: vec![0; self.columns.len()],
            ..FastRow::default()
        };
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
            if self.fast && fast.row(self, text, &mut fast_row).is_some() {
                asm.push_fast(
                    &fast_row,
                    fast::in_text(text),
                    this,
                    span(at, at + line.len()),
                );
                continue;
            }
            // A checked row leaves its slots empty; any other is emptied here.
            if row.dirty {
                row.clear();
            }
            row.dirty = true;
            let mut parsed =
                super::json::parse_declared(text, |k| self.column(k), &self.keys, &mut row);
            if parsed.is_ok() && !self.meta_columns.is_empty() {
                parsed = self.fill_metadata(meta, (this - first_line) as usize, &mut row);
            }
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
        let mut asm = Assembler::new(self, batch_size, batch.num_rows(), false);
        let mut cells = Vec::with_capacity(self.columns.len());
        let mut fast = FastDeclared::default();
        let mut fast_row = FastRow {
            vals: vec![0; self.columns.len()],
            ..FastRow::default()
        };
        // A row accepted holds a text, integer or time cell unchanged: such columns are sliced
        // out of the file's batch instead of copied row by row (a shortcut as the fast path
        // is, and held to the general route with it).
        for (k, target) in map.iter().enumerate().filter(|_| self.fast) {
            let (Some(c), Some(column)) = (*target, cols.plain(k)) else {
                continue;
            };
            let field = self.events.arrow().field(c).data_type();
            let same = match (self.columns[c].kind, column.data_type()) {
                (ColumnKind::Utf8, DataType::Utf8) | (ColumnKind::Int64, DataType::Int64) => {
                    Some(column)
                }
                // Epoch milliseconds, as the declared timestamp holds them.
                (ColumnKind::Timestamp, DataType::Int64) => column
                    .to_data()
                    .into_builder()
                    .data_type(field.clone())
                    .build()
                    .ok()
                    .map(make_array),
                _ => None,
            };
            if let Some(column) = same.filter(|a| a.data_type() == field) {
                asm.take_from(c, column);
            }
        }
        for i in 0..batch.num_rows() {
            let pos = first_row + i as u64;
            asm.out.records += 1;
            if self.fast
                && fast
                    .parquet_row(self, &cols, &map, i, &mut fast_row)
                    .is_some()
            {
                asm.push_fast(
                    &fast_row,
                    |k| cols.str_at(k as usize, i),
                    pos,
                    span(i, i + 1),
                );
                continue;
            }
            let mut row = self.empty_row();
            for (k, target) in map.iter().enumerate() {
                let (v, text) = cols.cell(k, i);
                match (&v, text) {
                    (RawValue::Str(s), _) if target.is_none() => row.note_string(names[k], s),
                    (RawValue::Compound(_), Some(t)) => row.note_string(names[k], &t),
                    _ => {}
                }
                match target {
                    Some(c) => row.values[*c] = Some(v),
                    None => row.unknown_fields += 1,
                }
            }
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
        let mut asm = Assembler::new(
            self,
            batch_size,
            memchr::memchr_iter(b'\n', chunk).count(),
            false,
        );
        let mut line_no = first_line;
        let mut start = 0;
        let mut fast = FastDeclared::default();
        let mut fast_row = FastRow {
            vals: vec![0; self.columns.len()],
            ..FastRow::default()
        };
        while start < chunk.len() {
            let (end, quoted) = super::csv::record_end(chunk, start);
            let rec = &chunk[start..end];
            let at = start;
            let pos = line_no;
            line_no += 1;
            // Only a quoted field can hold a newline.
            if quoted {
                line_no += memchr::memchr_iter(b'\n', rec).count() as u64;
            }
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
            if self.fast && !quoted && fast.csv_row(self, &map, text, &mut fast_row).is_some() {
                asm.push_fast(
                    &fast_row,
                    fast::in_text(text),
                    pos,
                    span(at, at + rec.len()),
                );
                continue;
            }
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
            cells.push(check_value(c, v)?);
        }
        // The count was taken; a row left as checked starts the next record from zero.
        row.unknown_fields = 0;
        row.dirty = false;
        Ok(())
    }
}
