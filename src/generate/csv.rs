//! Generated events as CSV, in the form `replay x.csv` and `replay x.csv --into TOPIC` read
//! (`src/decode/csv.rs`).
//!
//! * A header row naming every event field, in schema order: the reader finds columns by name
//!   and refuses a file whose header lacks a required one.
//! * One record a line, `\n`-terminated; a cell is quoted (RFC 4180, quotes doubled) only when
//!   it holds a comma, a quote or a line break — generated values never do.
//! * An absent optional field is an empty cell: the reader reads an empty cell as absent, which
//!   is what a missing JSON key means (so an authorization-less `status` stays NULL).
//! * Times are RFC 3339 UTC with milliseconds, as in the JSON; amounts are bare integers, which
//!   the reader parses strictly (`12.5`, `+3` or `1e3` are wrong types, as in JSON).
//!
//! Malformed records (`--malformed`) are the JSON mistakes spelled in CSV, each rejected for
//! the same reason as its JSON line except [`Corruption::Truncated`] and
//! [`Corruption::NotAnEvent`] (both `malformed` in either format, by a short field count here)
//! and [`Corruption::AmountAsText`] (every CSV cell is text, so the amount carries its currency
//! after it: `wrong_type` as in JSON).

use std::io::{self, Write};

use super::RecordWriter;
use super::model::{Cell, Corruption, Row};
use crate::schema::FieldId;
use crate::time::format_rfc3339_millis;

/// Writes the header row, then one record a line.
pub(super) struct CsvOut<'w> {
    out: &'w mut dyn Write,
    cells: Vec<String>,
    line: Vec<u8>,
}

impl<'w> CsvOut<'w> {
    /// Writes the header row to `out` (so even an empty output is a CSV file `replay` reads).
    pub(super) fn new(out: &'w mut dyn Write) -> io::Result<Self> {
        let names: Vec<&str> = FieldId::ALL.iter().map(|f| f.name()).collect();
        out.write_all(names.join(",").as_bytes())?;
        out.write_all(b"\n")?;
        Ok(CsvOut {
            out,
            cells: vec![String::new(); FieldId::ALL.len()],
            line: Vec::with_capacity(256),
        })
    }
}

/// Fills `cells` (one per field, in schema order) with `row`'s values as CSV text, unquoted.
fn fill_cells(cells: &mut [String], row: &Row) {
    for (cell, f) in cells.iter_mut().zip(FieldId::ALL) {
        cell.clear();
        match row.cell(f) {
            Cell::Str(s) => cell.push_str(s),
            Cell::Int(v) => cell.push_str(itoa::Buffer::new().format(v)),
            Cell::Time(ms) => {
                let mut b = Vec::with_capacity(24);
                format_rfc3339_millis(ms, &mut b);
                cell.push_str(std::str::from_utf8(&b).expect("RFC 3339 is ASCII"));
            }
            Cell::Absent => {}
        }
    }
}

/// Appends `cell`, quoted when the reader would otherwise split or misread it.
fn push_cell(line: &mut Vec<u8>, cell: &str) {
    if cell
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        line.push(b'"');
        line.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(cell.as_bytes());
    }
}

/// Makes the cells of a record invalid in the way `how` names.
fn corrupt(cells: &mut [String], row: &Row, how: Corruption) {
    let amount = FieldId::AmountMinor as usize;
    match how {
        // Cut by the caller, once the line is written.
        Corruption::Truncated | Corruption::NotAnEvent => {}
        Corruption::AmountAsText => {
            let currency = cells[FieldId::Currency as usize].clone();
            cells[amount].push(' ');
            cells[amount].push_str(&currency);
        }
        Corruption::NegativeAmount => cells[amount].insert(0, '-'),
        Corruption::UnknownCurrency => cells[FieldId::Currency as usize] = "ZZZ".into(),
        Corruption::MissingMerchant => cells[FieldId::MerchantId as usize].clear(),
        Corruption::CardNumber => cells[FieldId::CardId as usize] = row.card_id_with_card_number(),
        Corruption::FractionalAmount => cells[amount].push_str(".5"),
        Corruption::BadTime => cells[FieldId::EventTime as usize].insert(0, 'x'),
    }
}

/// Appends `row` (made invalid when `bad` says so) as one CSV record with its `\n`.
pub(super) fn write_record(
    line: &mut Vec<u8>,
    cells: &mut [String],
    row: &Row,
    bad: Option<Corruption>,
) {
    fill_cells(cells, row);
    if let Some(how) = bad {
        corrupt(cells, row, how);
    }
    if bad == Some(Corruption::NotAnEvent) {
        line.extend_from_slice(b"this is not an event\n");
        return;
    }
    let start = line.len();
    for (k, cell) in cells.iter().enumerate() {
        if k > 0 {
            line.push(b',');
        }
        push_cell(line, cell);
    }
    if bad == Some(Corruption::Truncated) {
        // Half the record, as the JSON line is cut: far fewer cells than the header names.
        line.truncate(start + (line.len() - start) / 2);
    }
    line.push(b'\n');
}

impl RecordWriter for CsvOut<'_> {
    fn record(&mut self, row: &Row, bad: Option<Corruption>) -> io::Result<()> {
        self.line.clear();
        write_record(&mut self.line, &mut self.cells, row, bad);
        self.out.write_all(&self.line)
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{CsvHeader, RejectReason, decode_csv};
    use crate::generate::model::Event;

    fn row() -> Row {
        let e = Event {
            id: 7,
            kind: "capture",
            time: 1_793_491_200_016,
            payment: 3,
            merchant: 42,
            card: 317,
            amount: 1999,
            status: None,
            decline: None,
            fee: Some(88),
            device: 634,
            ip_country: "DE",
        };
        Row::new(&e, 1)
    }

    fn header() -> CsvHeader {
        let names: Vec<&str> = FieldId::ALL.iter().map(|f| f.name()).collect();
        CsvHeader::parse(&names.join(",")).unwrap()
    }

    /// The header row is one the reader accepts, and a record round-trips through it with its
    /// absent fields absent.
    #[test]
    fn records_are_what_the_csv_reader_reads() {
        let mut out = Vec::new();
        CsvOut::new(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        CsvHeader::parse(text.trim_end()).unwrap();

        let mut line = Vec::new();
        let mut cells = vec![String::new(); FieldId::ALL.len()];
        write_record(&mut line, &mut cells, &row(), None);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "evt_1_00000007,capture,2026-11-01T00:00:00.016Z,pay_00000003,m_0042,card_000317,\
             1999,EUR,NL,DE,5999,dev_0000634,cus_000317,,,88\n"
        );
        let d = decode_csv(&line, 2, &header(), 8192);
        assert!(d.rejects.is_empty(), "{:?}", d.rejects);
        assert_eq!(d.batches[0].batch.num_rows(), 1);
        let status = d.batches[0].batch.column(FieldId::Status as usize);
        assert!(datafusion::arrow::array::Array::is_null(status, 0));
    }

    /// Every corruption is dead-lettered, for the reason its JSON line gets where CSV can say
    /// the same thing.
    #[test]
    fn every_corruption_is_rejected() {
        let mut cells = vec![String::new(); FieldId::ALL.len()];
        for (how, reason) in [
            (Corruption::Truncated, RejectReason::Malformed),
            (Corruption::AmountAsText, RejectReason::WrongType),
            (Corruption::NegativeAmount, RejectReason::OutOfRange),
            (Corruption::UnknownCurrency, RejectReason::UnknownCurrency),
            (Corruption::MissingMerchant, RejectReason::MissingField),
            (Corruption::CardNumber, RejectReason::CardNumber),
            (Corruption::FractionalAmount, RejectReason::WrongType),
            (Corruption::BadTime, RejectReason::BadTimestamp),
            (Corruption::NotAnEvent, RejectReason::Malformed),
        ] {
            let mut line = Vec::new();
            write_record(&mut line, &mut cells, &row(), Some(how));
            let d = decode_csv(&line, 2, &header(), 8192);
            assert_eq!(d.records, 1, "{how:?}");
            assert_eq!(d.rejects.len(), 1, "{how:?}");
            assert_eq!(
                d.rejects[0].reason, reason,
                "{how:?}: {}",
                d.rejects[0].detail
            );
        }
    }

    #[test]
    fn cells_that_need_quotes_get_them() {
        let mut line = Vec::new();
        push_cell(&mut line, "a,\"b\"");
        assert_eq!(line, b"\"a,\"\"b\"\"\"");
    }
}
