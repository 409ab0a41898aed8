//! The declared decoder's fast path: one pass from a JSON line to the values of its columns,
//! each checked against its column's type as it is met.
//!
//! The general route ([`parse_declared`](super::super::json::parse_declared), then
//! [`check_value`](super::check::check_value)) builds a tagged value per member, moves it
//! into a checked cell and only then into its column: three copies of every value and two
//! matches on its type, which made a declared source cost half again as much CPU as the
//! payment decoder on the same lines. [`FastDeclared::row`] reads each value once, as its
//! column wants it, in any key order, with whitespace, unknown members of any shape (skipped
//! and screened as the general route screens them), nullable columns absent or `null`. Like
//! the payment decoder's fast path it only ever accepts: at the first thing it does not expect
//! — an escape, a value of the wrong type, a number that could be a card number, a member given
//! twice, anything invalid — it gives up (`None`) and the caller takes the general route,
//! which decides and names the reason. What it accepts the general route accepts with the same
//! values (the tests hold it to that over generated and mutated lines).
//!
//! Schemas with metadata columns or more than 64 columns take the general route throughout.

use super::super::card::contains_card_number;
use super::super::fast::{FastPath, literal, skip_number, skip_value, ws};
use super::super::json::find_special;
use super::super::parquet::ParquetColumns;
use super::super::row::RawValue;
use super::{ColumnKind, DeclaredDecoder};

/// The values of one record, indexed by column, each checked and ready to append, as its
/// column's kind reads it: a string as a word its reader turns back into text (the byte range
/// `from << 32 | to` of its contents in a JSON line or CSV record, no escapes in it; the index
/// of its Parquet column), an integer or epoch milliseconds (`as u64`), a float's bits, a
/// boolean as 0 or 1. One word per column, so appending a row matches on the column alone.
#[derive(Debug, Default)]
pub(super) struct FastRow {
    pub(super) vals: Vec<u64>,
    /// Columns met in the line (`null` or not).
    pub(super) seen: u64,
    /// Columns with a value; the others are null.
    pub(super) present: u64,
    /// Members outside the schema, skipped.
    pub(super) unknown: u32,
}

/// The fast path's memory between lines: the time parser's minute (events arrive roughly in
/// time order). It changes how fast a line is read, never what is accepted.
#[derive(Default)]
pub(super) struct FastDeclared {
    time: FastPath,
}

impl FastDeclared {
    /// Reads the line `text` (without its newline) into `row` if every value fits its column;
    /// `None` when the general route must decide.
    #[inline(always)]
    pub(super) fn row(&mut self, d: &DeclaredDecoder, text: &str, row: &mut FastRow) -> Option<()> {
        let b = text.as_bytes();
        row.seen = 0;
        row.present = 0;
        row.unknown = 0;
        let mut i = ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                let (column, colon) = match d.keys.find(b, i) {
                    Some((k, skip)) => (Some(k), i + skip - 1),
                    // Whitespace before the colon, a long name, an escape, or a name outside
                    // the schema.
                    None => {
                        let end = find_special(b, i + 1);
                        if b.get(end) != Some(&b'"') {
                            return None;
                        }
                        let colon = ws(b, end + 1);
                        if b.get(colon) != Some(&b':') {
                            return None;
                        }
                        // SAFETY: `i` and `end` index ASCII quotes of `text`: char boundaries.
                        let key = unsafe { text.get_unchecked(i + 1..end) };
                        // A name `find` would have found (short enough for a pattern, the
                        // colon right after its quote) is no column's when it was not found
                        // (the fast path's schemas have at most 64 columns, all in the table).
                        let k = if key.len() <= 14 && colon == end + 1 {
                            None
                        } else {
                            d.column(key)
                        };
                        // The general route screens an unknown name like a value.
                        if k.is_none() && contains_card_number(key.as_bytes()) {
                            return None;
                        }
                        (k, colon)
                    }
                };
                let at = ws(b, colon + 1);
                i = match column {
                    None => {
                        row.unknown += 1;
                        skip_value(b, at, 0)?
                    }
                    Some(k) => {
                        let bit = 1u64 << k;
                        if row.seen & bit != 0 {
                            return None;
                        }
                        row.seen |= bit;
                        let (v, end) = self.value(d, k, text, at)?;
                        if let Some(v) = v {
                            row.vals[k] = v;
                            row.present |= bit;
                        }
                        end
                    }
                };
                i = ws(b, i);
                match b.get(i) {
                    Some(b',') => i = ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        // Only whitespace may follow the object; every NOT NULL column must have been seen
        // (a `null` in one was declined where it was met).
        (ws(b, i) == b.len() && row.seen & d.required == d.required).then_some(())
    }

    /// The value at `b[at]` of column `k`, checked against its type (`None` for `null`), with
    /// where it ends.
    #[inline(always)]
    fn value(
        &mut self,
        d: &DeclaredDecoder,
        k: usize,
        text: &str,
        at: usize,
    ) -> Option<(Option<u64>, usize)> {
        let b = text.as_bytes();
        let c = &d.columns[k];
        let first = *b.get(at)?;
        if first == b'n' {
            return c
                .nullable
                .then(|| literal(b, at, b"null"))
                .flatten()
                .map(|end| (None, end));
        }
        match c.kind {
            ColumnKind::Utf8 => {
                let (s, end) = string(text, at)?;
                if contains_card_number(s.as_bytes()) {
                    return None;
                }
                if let Some(n) = c.max_chars
                    && s.len() > n
                    && s.chars().count() > n
                {
                    return None;
                }
                // Chunks are a few MiB: a line's offsets fit in 32 bits (spans are kept so too).
                debug_assert!(end <= u32::MAX as usize);
                Some((Some(((at as u64 + 1) << 32) | (end as u64 - 1)), end))
            }
            ColumnKind::Int64 | ColumnKind::Int32 => {
                let (v, end) = integer(b, at)?;
                // From 10^12 an integer may be a card number: the general route judges it.
                if v.unsigned_abs() >= 1_000_000_000_000
                    || (c.kind == ColumnKind::Int32 && i32::try_from(v).is_err())
                {
                    return None;
                }
                Some((Some(v as u64), end))
            }
            ColumnKind::Timestamp => {
                let (ms, end) = if first == b'"' {
                    let (s, end) = string(text, at)?;
                    if contains_card_number(s.as_bytes()) {
                        return None;
                    }
                    (self.time.event_time(s)?, end)
                } else {
                    let (ms, end) = integer(b, at)?;
                    (
                        (0..=super::super::row::MAX_EVENT_TIME)
                            .contains(&ms)
                            .then_some(ms)?,
                        end,
                    )
                };
                Some((Some(ms as u64), end))
            }
            ColumnKind::Float64 => {
                if !matches!(first, b'-' | b'0'..=b'9') {
                    return None;
                }
                let end = skip_number(b, at)?;
                // SAFETY: a number is ASCII: `at..end` are char boundaries.
                let s = unsafe { text.get_unchecked(at..end) };
                let integral = !s.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'));
                let f = if integral {
                    // As the general route reads it: an integer, exact in a DOUBLE below 10^12
                    // (and no card number there).
                    let (v, _) = integer(b, at)?;
                    if v.unsigned_abs() >= 1_000_000_000_000 {
                        return None;
                    }
                    v as f64
                } else {
                    let f: f64 = s.parse().ok()?;
                    // A whole value from 10^12 may be a card number; an infinite one is out of
                    // range: both the general route's to say.
                    if !f.is_finite() || (f.fract() == 0.0 && f.abs() >= 1e12) {
                        return None;
                    }
                    f
                };
                Some((Some(f.to_bits()), end))
            }
            ColumnKind::Bool => match first {
                b't' => literal(b, at, b"true").map(|end| (Some(1), end)),
                b'f' => literal(b, at, b"false").map(|end| (Some(0), end)),
                _ => None,
            },
        }
    }
}

impl FastDeclared {
    /// Reads the CSV record `text` (no quotes in it: the caller checks) into `row` by the header's
    /// column map `map` (a declared column per header cell, `None` for an extra one), each cell
    /// checked as [`check_value`](super::check::check_value) checks a CSV cell; `None` when the
    /// general route must decide (a cell that does not fit, an empty cell in a NOT NULL column, a
    /// card number, the wrong number of cells).
    pub(super) fn csv_row(
        &mut self,
        d: &DeclaredDecoder,
        map: &[Option<usize>],
        text: &str,
        row: &mut FastRow,
    ) -> Option<()> {
        row.seen = 0;
        row.present = 0;
        row.unknown = 0;
        let mut at = 0;
        let mut cells = super::super::csv::cells(text);
        for target in map {
            let cell = cells.next()?;
            let from = at;
            at += cell.len() + 1;
            let Some(k) = *target else {
                // Screened as the general route screens an extra cell (any text, numbers too).
                if contains_card_number(cell.as_bytes()) {
                    return None;
                }
                row.unknown += 1;
                continue;
            };
            let bit = 1u64 << k;
            row.seen |= bit;
            // An empty cell is a null.
            if cell.is_empty() {
                if !d.columns[k].nullable {
                    return None;
                }
                continue;
            }
            row.vals[k] = self.csv_value(d, k, cell, from)?;
            row.present |= bit;
        }
        (cells.next().is_none() && row.present & d.required == d.required).then_some(())
    }

    /// The value of CSV cell `cell` (at byte `from` of its record) in column `k`.
    #[inline(always)]
    fn csv_value(&mut self, d: &DeclaredDecoder, k: usize, cell: &str, from: usize) -> Option<u64> {
        let c = &d.columns[k];
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        match c.kind {
            ColumnKind::Utf8 => {
                if contains_card_number(cell.as_bytes()) {
                    return None;
                }
                if let Some(n) = c.max_chars
                    && cell.len() > n
                    && cell.chars().count() > n
                {
                    return None;
                }
                let to = from + cell.len();
                debug_assert!(to <= u32::MAX as usize);
                Some(((from as u64) << 32) | to as u64)
            }
            ColumnKind::Int64 | ColumnKind::Int32 => {
                let d_ = cell.strip_prefix('-').unwrap_or(cell);
                if d_.is_empty() || d_.len() > 18 || !digits(d_) {
                    return None;
                }
                let v: i64 = cell.parse().ok()?;
                // From 10^12 an integer may be a card number: the general route judges it.
                if v.unsigned_abs() >= 1_000_000_000_000
                    || (c.kind == ColumnKind::Int32 && i32::try_from(v).is_err())
                {
                    return None;
                }
                Some(v as u64)
            }
            ColumnKind::Timestamp => {
                let ms = if digits(cell) {
                    if cell.len() > 18 {
                        return None;
                    }
                    let ms: i64 = cell.parse().ok()?;
                    (0..=super::super::row::MAX_EVENT_TIME)
                        .contains(&ms)
                        .then_some(ms)?
                } else {
                    self.time.event_time(cell)?
                };
                Some(ms as u64)
            }
            ColumnKind::Float64 => {
                if !cell
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                {
                    return None;
                }
                let f: f64 = cell.parse().ok()?;
                // A whole value from 10^12 may be a card number; an infinite one is out of
                // range: both the general route's to say.
                if !f.is_finite() || (f.fract() == 0.0 && f.abs() >= 1e12) {
                    return None;
                }
                Some(f.to_bits())
            }
            ColumnKind::Bool => {
                if cell.eq_ignore_ascii_case("true") {
                    Some(1)
                } else if cell.eq_ignore_ascii_case("false") {
                    Some(0)
                } else {
                    None
                }
            }
        }
    }
}

impl FastDeclared {
    /// Reads row `i` of the Parquet columns `cols` into `row` by the column map `map` (a
    /// declared column per Parquet column, `None` for an extra one), each cell checked as
    /// [`check_value`](super::check::check_value) checks the value
    /// [`ParquetColumns::cell`] makes of it; `None` when the general route must decide (a cell of
    /// another type than its column's, a null in a NOT NULL column, a possible card number, a
    /// list or struct anywhere). A string column's word is its Parquet column's index.
    #[inline(always)]
    pub(super) fn parquet_row(
        &mut self,
        d: &DeclaredDecoder,
        cols: &ParquetColumns,
        map: &[Option<usize>],
        i: usize,
        row: &mut FastRow,
    ) -> Option<()> {
        row.seen = 0;
        row.present = 0;
        row.unknown = 0;
        for (k, target) in map.iter().enumerate() {
            // A list or struct is screened through its text: the general route's.
            let v = cols.value(k, i)?;
            let Some(c) = *target else {
                // Screened as the general route screens an extra column's string.
                if let RawValue::Str(s) = &v
                    && contains_card_number(s.as_bytes())
                {
                    return None;
                }
                row.unknown += 1;
                continue;
            };
            let bit = 1u64 << c;
            row.seen |= bit;
            let col = &d.columns[c];
            let word = match (col.kind, v) {
                (_, RawValue::Null) if col.nullable => continue,
                (ColumnKind::Utf8, RawValue::Str(s)) => {
                    if contains_card_number(s.as_bytes()) {
                        return None;
                    }
                    if let Some(n) = col.max_chars
                        && s.len() > n
                        && s.chars().count() > n
                    {
                        return None;
                    }
                    k as u64
                }
                // From 10^12 an integer may be a card number: the general route judges it.
                (ColumnKind::Int64 | ColumnKind::Int32, RawValue::Int(n))
                    if n.unsigned_abs() < 1_000_000_000_000
                        && (col.kind == ColumnKind::Int64 || i32::try_from(n).is_ok()) =>
                {
                    n as u64
                }
                (ColumnKind::Timestamp, RawValue::Int(ms))
                    if (0..=super::super::row::MAX_EVENT_TIME).contains(&ms) =>
                {
                    ms as u64
                }
                // A card number is refused in any column, a time's fraction digits too.
                (ColumnKind::Timestamp, RawValue::Str(s))
                    if !contains_card_number(s.as_bytes()) =>
                {
                    self.time.event_time(&s)? as u64
                }
                (ColumnKind::Float64, RawValue::Int(n)) if n.unsigned_abs() < 1_000_000_000_000 => {
                    (n as f64).to_bits()
                }
                // A whole value from 10^12 may be a card number; an infinite one is out of
                // range: both the general route's to say.
                (ColumnKind::Float64, RawValue::Float(f))
                    if f.is_finite() && !(f.fract() == 0.0 && f.abs() >= 1e12) =>
                {
                    f.to_bits()
                }
                (ColumnKind::Bool, RawValue::Bool(b)) => u64::from(b),
                _ => return None,
            };
            row.vals[c] = word;
            row.present |= bit;
        }
        (row.present & d.required == d.required).then_some(())
    }
}

/// The strings of a [`FastRow`] read from `text`: a word is the byte range of one.
#[inline(always)]
pub(super) fn in_text<'t>(text: &'t str) -> impl Fn(u64) -> &'t str {
    move |v| {
        let b = &text.as_bytes()[(v >> 32) as usize..v as u32 as usize];
        // SAFETY: the fast paths' ranges start and end at ASCII bytes of `text` (quotes, commas,
        // a record's ends): char boundaries of UTF-8.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// The string at `text[at]` (a quote) without escapes, with where it ends (past its closing
/// quote).
#[inline(always)]
fn string(text: &str, at: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let end = find_special(b, at + 1);
    if b.get(end) != Some(&b'"') {
        return None;
    }
    // SAFETY: `at` and `end` index ASCII quotes of `text`: char boundaries.
    Some((unsafe { text.get_unchecked(at + 1..end) }, end + 1))
}

/// The JSON integer at `b[at]` (an optional `-`, at most 18 digits, no leading zero) with where
/// it ends; a fraction or exponent after it is the caller's to refuse (it is no separator).
#[inline(always)]
fn integer(b: &[u8], at: usize) -> Option<(i64, usize)> {
    let neg = b.get(at) == Some(&b'-');
    let start = at + usize::from(neg);
    let mut j = start;
    match b.get(j)? {
        b'0' => j += 1,
        b'1'..=b'9' => {
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
        }
        _ => return None,
    }
    if j - start > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in &b[start..j] {
        v = v * 10 + (c - b'0') as i64;
    }
    Some((if neg { -v } else { v }, j))
}
