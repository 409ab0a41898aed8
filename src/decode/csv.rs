//! CSV (with a header row) → [`RawRow`].
//!
//! RFC 4180 quoting: fields may be quoted, quotes doubled inside, and quoted fields may span
//! lines. Every cell is untyped text ([`RawValue::Text`]); validation parses numbers strictly, so
//! `12.5` in `amount_minor` is rejected exactly as it would be in JSON. An empty cell is absent.

use super::MAX_AMOUNT;
use super::card::{contains_card_number, redact};
use super::fast::{FastPath, check};
use super::reject::RejectReason;
use super::row::{Invalid, RawRow, RawValue, ValidRow};
use crate::schema::{FieldId, NUM_FIELDS};

/// The UTF-8 byte-order mark some tools write at the start of a text file.
pub const BOM: &str = "\u{FEFF}";

/// Why a CSV header row was refused (the file is then not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvHeaderError {
    /// The header row is not a well-formed CSV record.
    #[error("the CSV header is malformed: {0}")]
    Malformed(String),
    /// Required event fields have no column.
    #[error(
        "the CSV header lacks required column(s) {}; the first line must name the event fields",
        .0.join(", ")
    )]
    Missing(Vec<&'static str>),
    /// A column name appears more than once (which one holds the field would be a guess). Also
    /// for a Parquet schema. The name is redacted of card numbers.
    #[error("column name {0:?} appears more than once in the header (columns {1} and {2})")]
    Duplicate(String, usize, usize),
}

/// The header row: which event field each column holds (`None` for extra columns).
#[derive(Debug, Clone)]
pub struct CsvHeader {
    columns: Vec<Option<FieldId>>,
    names: Vec<String>,
}

impl CsvHeader {
    /// A header whose cells name the columns of a declared source: split and checked for
    /// repeated names only (the declared decoder checks which columns it needs).
    pub fn parse_names(line: &str) -> Result<Self, CsvHeaderError> {
        let line = line.strip_prefix(BOM).unwrap_or(line);
        let mut cells = Vec::new();
        split_record(line, &mut cells).map_err(|e| CsvHeaderError::Malformed(e.1))?;
        let names: Vec<String> = cells.iter().map(|c| c.trim().to_string()).collect();
        for (k, name) in names.iter().enumerate() {
            if let Some(first) = names[..k].iter().position(|n| n == name && !n.is_empty()) {
                return Err(CsvHeaderError::Duplicate(redact(name), first + 1, k + 1));
            }
        }
        Ok(CsvHeader {
            columns: vec![None; names.len()],
            names,
        })
    }

    /// The header's cells, trimmed.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parses the header record. A leading byte-order mark is skipped; a name given twice is
    /// refused ([`CsvHeaderError::Duplicate`], as JSON refuses a repeated field).
    pub fn parse(line: &str) -> Result<Self, CsvHeaderError> {
        let line = line.strip_prefix(BOM).unwrap_or(line);
        let mut cells = Vec::new();
        split_record(line, &mut cells).map_err(|e| CsvHeaderError::Malformed(e.1))?;
        let names: Vec<String> = cells.iter().map(|c| c.trim().to_string()).collect();
        for (k, name) in names.iter().enumerate() {
            // Empty names (trailing commas) name no column.
            if name.is_empty() {
                continue;
            }
            if let Some(first) = names[..k].iter().position(|n| n == name) {
                // The name is echoed, redacted: a header can be a pasted data row.
                return Err(CsvHeaderError::Duplicate(redact(name), first + 1, k + 1));
            }
        }
        let columns: Vec<Option<FieldId>> = names
            .iter()
            .map(|n| FieldId::from_name(n.as_bytes()))
            .collect();
        let missing: Vec<&'static str> = FieldId::ALL
            .iter()
            .filter(|f| f.required() && !columns.contains(&Some(**f)))
            .map(|f| f.name())
            .collect();
        if !missing.is_empty() {
            return Err(CsvHeaderError::Missing(missing));
        }
        Ok(CsvHeader { columns, names })
    }
}

/// Splits one CSV record (without its line terminator) into cells, unquoting them.
pub(super) fn split_record<'a>(
    rec: &'a str,
    cells: &mut Vec<std::borrow::Cow<'a, str>>,
) -> Result<(), Invalid> {
    use std::borrow::Cow;
    cells.clear();
    let b = rec.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            let mut out = String::new();
            let mut j = i + 1;
            let mut seg = j;
            loop {
                match b.get(j) {
                    None => {
                        return Err((
                            RejectReason::Malformed,
                            "unterminated quoted CSV field".into(),
                        ));
                    }
                    Some(b'"') if b.get(j + 1) == Some(&b'"') => {
                        out.push_str(&rec[seg..=j]);
                        j += 2;
                        seg = j;
                    }
                    Some(b'"') => {
                        out.push_str(&rec[seg..j]);
                        j += 1;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            cells.push(Cow::Owned(out));
            match b.get(j) {
                None => return Ok(()),
                Some(b',') => i = j + 1,
                Some(_) => {
                    return Err((
                        RejectReason::Malformed,
                        format!(
                            "unexpected character after a quoted CSV field at byte {}",
                            j + 1
                        ),
                    ));
                }
            }
        } else {
            let end = memchr::memchr(b',', &b[i..]).map_or(b.len(), |k| i + k);
            if b[i..end].contains(&b'"') {
                return Err((
                    RejectReason::Malformed,
                    "a quote inside an unquoted CSV field".into(),
                ));
            }
            cells.push(Cow::Borrowed(&rec[i..end]));
            if end == b.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

/// Parses one CSV record into `row`; `cells` holds the unquoted cells, which `row` borrows.
pub(super) fn parse_record<'a>(
    header: &CsvHeader,
    rec: &'a str,
    cells: &'a mut Vec<std::borrow::Cow<'a, str>>,
    row: &mut RawRow<'a>,
) -> Result<(), Invalid> {
    split_record(rec, cells)?;
    let cells: &'a Vec<std::borrow::Cow<'a, str>> = cells;
    if cells.len() != header.columns.len() {
        return Err((
            RejectReason::Malformed,
            format!(
                "CSV record has {} fields, the header has {}",
                cells.len(),
                header.columns.len()
            ),
        ));
    }
    for (k, cell) in cells.iter().enumerate() {
        let text: &'a str = cell.as_ref();
        match header.columns[k] {
            Some(f) => {
                row.note_field(f, text);
                if !text.is_empty() {
                    row.values[f as usize] = Some(RawValue::Text(text));
                }
            }
            None => {
                // A cell is untyped: one that is an integer is screened as JSON screens a
                // number in an extra field (not at all), any other as a string.
                if !is_integer(text) {
                    row.note_string(&header.names[k], text);
                }
                row.unknown_fields += 1;
            }
        }
    }
    Ok(())
}

/// The CSV fast path: a record without quotes (the caller knows from [`record_end`]) read
/// straight into `row`, each cell checked as [`parse_record`] and
/// [`validate`](super::validate) check it, with the number of extra columns; `None` for
/// anything else (a cell that does not fit, a card number, the wrong number of cells), which
/// the general route then decides and names. Like
/// the JSON fast path it only ever accepts, and what it accepts the general route accepts with
/// the same values. It saves the general route's cell list, its row of tagged values and a
/// second reading of each value: the CSV replay of a million events cost twice the JSON one.
pub(super) fn fast_record<'a>(
    header: &CsvHeader,
    rec: &'a str,
    time: &mut FastPath,
    row: &mut ValidRow<'a>,
) -> Option<u32> {
    debug_assert!(!rec.contains('"'), "a quoted record is the general route's");
    row.strs = [None; NUM_FIELDS];
    row.fee_minor = None;
    let mut event_time = None;
    let mut amount = None;
    let mut unknown = 0;
    let mut cells = cells(rec);
    for column in &header.columns {
        let text = cells.next()?;
        match column {
            // An empty cell is absent.
            Some(_) if text.is_empty() => {}
            Some(FieldId::EventTime) => event_time = Some(text),
            Some(FieldId::AmountMinor) => amount = Some(minor_units(text)?),
            Some(FieldId::FeeMinor) => row.fee_minor = Some(minor_units(text)?),
            Some(f) => row.strs[*f as usize] = Some(text),
            None => {
                // Screened as `parse_record` screens an extra cell.
                if !is_integer(text) && contains_card_number(text.as_bytes()) {
                    return None;
                }
                unknown += 1;
            }
        }
    }
    if cells.next().is_some() {
        return None;
    }
    row.amount_minor = amount?;
    // RFC 3339 only: epoch milliseconds in a cell are the general route's.
    row.event_time = time.event_time(event_time?)?;
    check(row)?;
    Some(unknown)
}

/// The cells of a record without quotes, as `rec.split(',')` gives them, found eight bytes at
/// a time. A CSV cell is a few bytes long: `split`'s searcher (set up per cell, then a byte
/// loop) was a fifth of a CSV replay's samples, more than the checks of the cells it found.
pub(super) struct Cells<'a> {
    rec: &'a str,
    at: usize,
    done: bool,
}

/// The cells of `rec`, which holds no quote.
pub(super) fn cells(rec: &str) -> Cells<'_> {
    Cells {
        rec,
        at: 0,
        done: false,
    }
}

impl<'a> Iterator for Cells<'a> {
    type Item = &'a str;

    #[inline(always)]
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let b = self.rec.as_bytes();
        let start = self.at;
        let end = next_comma(b, start).unwrap_or_else(|| {
            self.done = true;
            b.len()
        });
        self.at = end + 1;
        // SAFETY: `start` is 0 or just past an ASCII comma, `end` an ASCII comma or the end:
        // char boundaries of `rec`.
        Some(unsafe { self.rec.get_unchecked(start..end) })
    }
}

/// The index of the first `,` in `b` from `from` on.
#[inline(always)]
fn next_comma(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let w =
            u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ (ONES * u64::from(b','));
        // The lowest set high bit marks the first zero byte of `w`, the first comma (a higher
        // one may be a borrow's false alarm, never a lower one).
        let zero = w.wrapping_sub(ONES) & !w & HIGH;
        if zero != 0 {
            return Some(i + zero.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b',').map(|k| i + k)
}

/// An amount cell the general route reads to the same value and accepts: digits only (a sign
/// is the general route's to judge), at most 18 of them, at most [`MAX_AMOUNT`].
#[inline(always)]
fn minor_units(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = b.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
    (v <= MAX_AMOUNT).then_some(v)
}

/// Whether `t` is written as a JSON integer would be: `-?[0-9]+`.
fn is_integer(t: &str) -> bool {
    let d = t.strip_prefix('-').unwrap_or(t);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Finds the end of the CSV record starting at `start` (the index of its `\n`, or the end of
/// `b`), honouring quotes so a newline inside a quoted field does not end the record; and
/// whether the record holds a quote (only then can it span lines). Quotes and newlines are
/// searched for, not every byte looked at.
pub fn record_end(b: &[u8], start: usize) -> (usize, bool) {
    let mut in_quotes = false;
    let mut quoted = false;
    for i in memchr::memchr2_iter(b'"', b'\n', &b[start.min(b.len())..]) {
        match b[start + i] {
            b'"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            _ if !in_quotes => return (start + i, quoted),
            _ => {}
        }
    }
    (b.len(), quoted)
}

/// Index just past the last complete record of `b` (0 if none): past its last newline outside
/// quotes.
pub fn last_record_end(b: &[u8]) -> usize {
    let mut in_quotes = false;
    let mut last = 0;
    for i in memchr::memchr2_iter(b'"', b'\n', b) {
        match b[i] {
            b'"' => in_quotes = !in_quotes,
            _ if !in_quotes => last = i + 1,
            _ => {}
        }
    }
    last
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_are_what_split_gives() {
        use rand::seq::IndexedRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let parts = ["", ",", ",", "a", "bc", "ü", "12345678", "-", "\r", " "];
        for _ in 0..20_000 {
            let n = rng.random_range(0..30);
            let rec: String = (0..n).map(|_| *parts.choose(&mut rng).unwrap()).collect();
            let want: Vec<&str> = rec.split(',').collect();
            let got: Vec<&str> = super::cells(&rec).collect();
            assert_eq!(got, want, "{rec:?}");
        }
    }

    use super::*;

    #[test]
    fn header_and_records() {
        let h = CsvHeader::parse(
            "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency,extra",
        )
        .unwrap();
        let rec = r#"e1,capture,2026-11-01T00:00:00Z,p1,"m,1","c""1",100,EUR,"#;
        let mut cells = Vec::new();
        let mut row = RawRow::default();
        parse_record(&h, rec, &mut cells, &mut row).unwrap();
        assert_eq!(
            row.values[FieldId::MerchantId as usize],
            Some(RawValue::Text("m,1"))
        );
        assert_eq!(
            row.values[FieldId::CardId as usize],
            Some(RawValue::Text("c\"1"))
        );
        assert_eq!(row.unknown_fields, 1);
    }

    /// Item 11: a column named twice is refused, naming it (and a byte-order mark is skipped).
    #[test]
    fn a_header_naming_a_column_twice_is_refused() {
        let base =
            "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency";
        for (extra, dup) in [
            (",card_id", "card_id"),
            (", amount_minor", "amount_minor"),
            (",x,x", "x"),
        ] {
            let err = CsvHeader::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(
                matches!(&err, CsvHeaderError::Duplicate(n, _, _) if n == dup),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("{dup:?}")), "{err}");
        }
        // Empty names (trailing commas) are no columns.
        assert!(CsvHeader::parse(&format!("{base},,")).is_ok());
        assert!(CsvHeader::parse(&format!("\u{feff}{base}")).is_ok());
        // A pasted data row as the header is not echoed.
        let err =
            CsvHeader::parse(&format!("{base},4539148803436467,4539148803436467")).unwrap_err();
        assert!(!err.to_string().contains("4539148803436467"), "{err}");
    }

    #[test]
    fn header_must_name_required_fields() {
        assert!(CsvHeader::parse("event_id,amount").is_err());
    }

    #[test]
    fn record_end_respects_quotes() {
        let b = b"a,\"x\ny\",c\nnext";
        assert_eq!(record_end(b, 0), (9, true));
        assert_eq!(record_end(b, 10), (b.len(), false));
        assert_eq!(last_record_end(b), 10);
        assert_eq!(last_record_end(b"a,\"x\ny"), 0);
        assert_eq!(last_record_end(b"a\nb\n"), 4);
    }
}
