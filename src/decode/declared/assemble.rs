//! Checked rows into Arrow batches of the declared columns, with their positions, spans and
//! payload hashes ([`Assembler`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanBuilder, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};

use super::super::payload_hash::PayloadHasher;
use super::super::prim_column::PrimColumn;
use super::super::reject::Reject;
use super::super::row::Invalid;
use super::super::str_column::{StrColumn, empty_strings};
use super::super::taken::rows_of;
use super::super::{Decoded, DecodedBatch, Redecode, span};
use super::check::Cell;
use super::fast::FastRow;
use super::{ColumnKind, DeclaredDecoder, DeclaredRow};

/// A column being built.
enum Builder {
    Utf8(StrColumn),
    /// A `VARCHAR` column no query reads: as many empty strings as the batch has rows
    /// ([`DeclaredDecoder::projected`]).
    LeftOut,
    Int64(PrimColumn<i64>),
    Int32(PrimColumn<i32>),
    Float64(PrimColumn<f64>),
    Bool(BooleanBuilder),
    Timestamp(PrimColumn<i64>),
    /// A column whose values every accepted row holds unchanged in a column of its source (a
    /// Parquet batch's strings, integers, times): nothing is appended row by row; a batch
    /// takes its rows' values (a slice when they are consecutive, as they are unless a row
    /// was refused between them). Its rows are the spans' starts ([`Assembler::take_from`]).
    Taken(ArrayRef),
}

impl Builder {
    pub(super) fn new(kind: ColumnKind, rows: usize, built: bool) -> Self {
        match kind {
            ColumnKind::Utf8 if !built => Builder::LeftOut,
            ColumnKind::Utf8 => Builder::Utf8(StrColumn::with_capacity(rows, rows * 16)),
            ColumnKind::Int64 => Builder::Int64(PrimColumn::with_capacity(rows)),
            ColumnKind::Int32 => Builder::Int32(PrimColumn::with_capacity(rows)),
            ColumnKind::Float64 => Builder::Float64(PrimColumn::with_capacity(rows)),
            ColumnKind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnKind::Timestamp => Builder::Timestamp(PrimColumn::with_capacity(rows)),
        }
    }

    /// Appends a checked cell (its kind matches the column's).
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (Builder::LeftOut | Builder::Taken(_), _) => {}
            (Builder::Utf8(b), Cell::Str(s)) => b.push(Some(s)),
            (Builder::Int64(b), Cell::Int(v)) => b.push(*v),
            (Builder::Int32(b), Cell::Int(v)) => b.push(*v as i32),
            (Builder::Float64(b), Cell::Float(v)) => b.push(*v),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Builder::Timestamp(b), Cell::Int(v)) => b.push(*v),
            (b, _) => b.append_null(),
        }
    }

    /// Appends a null.
    #[inline(always)]
    fn append_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.push(None),
            Builder::LeftOut | Builder::Taken(_) => {}
            Builder::Int64(b) => b.push_null(),
            Builder::Int32(b) => b.push_null(),
            Builder::Float64(b) => b.push_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Timestamp(b) => b.push_null(),
        }
    }

    /// The column of the batch's `rows` rows, whose records are at `spans`.
    pub(super) fn finish(&mut self, rows: usize, spans: &[(u32, u32)]) -> ArrayRef {
        match self {
            Builder::Taken(a) => rows_of(a, spans),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::LeftOut => Arc::new(empty_strings(rows)),
            Builder::Int64(b) => Arc::new(b.finish::<Int64Type>()),
            Builder::Int32(b) => Arc::new(b.finish::<Int32Type>()),
            Builder::Float64(b) => Arc::new(b.finish::<Float64Type>()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => {
                Arc::new(b.finish::<TimestampMillisecondType>().with_timezone("UTC"))
            }
        }
    }
}

/// Collects checked rows into batches of a fixed size.
pub(super) struct Assembler<'d> {
    decoder: &'d DeclaredDecoder,
    builders: Vec<Builder>,
    /// The builders that build, as bits by column: the others are [`Builder::LeftOut`].
    building: u64,
    /// The columns whose [`FastRow`] value is a string's byte range, as bits.
    strings: u64,
    rows: usize,
    positions: Vec<u64>,
    spans: Vec<(u32, u32)>,
    hashes: Vec<u64>,
    batch_size: usize,
    /// How the rows are decoded again whole, when the builders leave columns out.
    redecode: Option<Redecode>,
    pub(super) out: Decoded,
}

impl<'d> Assembler<'d> {
    /// An assembler of `decoder`'s rows in batches of `batch_size`, building only the columns
    /// the decoder builds when `project` (JSON Lines, which the late output can decode again),
    /// all of them otherwise.
    pub(super) fn new(
        decoder: &'d DeclaredDecoder,
        batch_size: usize,
        expected_rows: usize,
        project: bool,
    ) -> Self {
        let batch_size = batch_size.max(1);
        let cap = batch_size.min(expected_rows.max(1)).min(8192);
        let redecode = match (project, &decoder.whole) {
            (true, Some(whole)) => Some(Redecode::Declared(Arc::clone(whole))),
            _ => None,
        };
        let builders: Vec<Builder> = decoder
            .columns
            .iter()
            .zip(&decoder.built)
            .map(|(c, built)| Builder::new(c.kind, cap, *built || redecode.is_none()))
            .collect();
        // Only the fast path reads the masks, and it runs with at most 64 columns.
        let bits = |f: &dyn Fn(usize) -> bool| {
            (0..builders.len().min(64))
                .filter(|&i| f(i))
                .fold(0u64, |m, i| m | 1 << i)
        };
        let building = bits(&|i| !matches!(builders[i], Builder::LeftOut));
        let strings = bits(&|i| decoder.columns[i].kind == ColumnKind::Utf8);
        Assembler {
            decoder,
            builders,
            building,
            strings,
            redecode,
            rows: 0,
            positions: Vec::with_capacity(cap),
            spans: Vec::with_capacity(cap),
            hashes: Vec::with_capacity(cap),
            batch_size,
            out: Decoded::default(),
        }
    }

    /// Column `c` takes its values from `column` (of the column's Arrow type) at the rows the
    /// spans start at, instead of row by row: every row appended must hold its value there
    /// unchanged (or null where it is null).
    pub(super) fn take_from(&mut self, c: usize, column: ArrayRef) {
        self.builders[c] = Builder::Taken(column);
        if c < 64 {
            self.building &= !(1u64 << c);
        }
    }

    /// Checks and appends one parsed record (counted by the caller), `bytes` at `at` in its
    /// chunk.
    pub(super) fn row<'a>(
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
    pub(super) fn push<'a>(
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
            // Metadata (offset, timestamp …) differs between a record and its producer's
            // retry, which is the same event: the hash reads the payload's values alone.
            if self.decoder.columns[i].meta {
                continue;
            }
            match cell {
                Cell::Null => {}
                Cell::Str(s) => h.bytes(i, s.as_bytes()),
                Cell::Int(v) => h.int(i, *v),
                Cell::Float(v) => h.int(i, v.to_bits() as i64),
                Cell::Bool(v) => h.int(i, i64::from(*v)),
            }
        }
        self.appended(h.finish(), pos, sp);
        Ok(())
    }

    /// Appends one record the fast path read (counted by the caller), at `sp` in its chunk (a
    /// line's byte range; a Parquet row's `(i, i + 1)`). Its values were checked as they were read; the payload hash is the one
    /// [`Self::push`] computes from the same values.
    ///
    /// The hash is taken in a pass of its own over the present columns, before any builder is
    /// touched: folded among the builders' appends, its state went through memory at every
    /// column, and the column-by-column chain of multiplies stalled on it. The builders then
    /// see only the columns they build (a left-out column is its batch's row count).
    ///
    /// `str_at` turns a string column's word into its text (a byte range of a line, a Parquet
    /// cell).
    pub(super) fn push_fast<'t>(
        &mut self,
        row: &FastRow,
        str_at: impl Fn(u64) -> &'t str,
        pos: u64,
        sp: (u32, u32),
    ) {
        self.out.unknown_fields += u64::from(row.unknown);
        // A null adds nothing to the hash.
        let mut h = PayloadHasher::new();
        let mut bits = row.present;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let v = row.vals[i];
            if self.strings & (1 << i) != 0 {
                h.bytes(i, str_at(v).as_bytes());
            } else {
                // Integers, times, a float's bits, a boolean's 0 or 1: as `push` hashes them.
                h.int(i, v as i64);
            }
        }
        let mut bits = self.building;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let b = &mut self.builders[i];
            if row.present & (1 << i) == 0 {
                b.append_null();
                continue;
            }
            let v = row.vals[i];
            match b {
                Builder::LeftOut | Builder::Taken(_) => {}
                Builder::Utf8(b) => b.push(Some(str_at(v))),
                Builder::Int64(b) | Builder::Timestamp(b) => b.push(v as i64),
                Builder::Int32(b) => b.push(v as i32),
                Builder::Float64(b) => b.push(f64::from_bits(v)),
                Builder::Bool(b) => b.append_value(v != 0),
            }
        }
        self.appended(h.finish(), pos, sp);
    }

    /// Records the row just appended to the builders.
    fn appended(&mut self, hash: u64, pos: u64, sp: (u32, u32)) {
        self.rows += 1;
        self.hashes.push(hash);
        self.positions.push(pos);
        self.spans.push(sp);
        if self.rows >= self.batch_size {
            self.flush();
        }
    }

    pub(super) fn reject(&mut self, (reason, detail): Invalid, pos: u64, bytes: &[u8]) {
        self.out
            .rejects
            .push(Reject::new(reason, detail, pos, bytes));
    }

    fn flush(&mut self) {
        if self.rows == 0 {
            return;
        }
        let rows = self.rows;
        let spans = &self.spans;
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| b.finish(rows, spans))
            .collect();
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
            projected: self.redecode.clone(),
        });
    }

    pub(super) fn finish(mut self) -> Decoded {
        self.flush();
        self.out
    }
}
