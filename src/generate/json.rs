//! Generated events as JSON Lines (`docs/EVENTS.md`), compact, keys in schema order,
//! absent optional fields left out, times as RFC 3339 UTC with milliseconds.
//!
//! The bytes are exactly what `gen` wrote before it had other formats, malformed lines
//! included: the same seed keeps giving the same file.

use std::io::{self, Write};

use super::RecordWriter;
use super::model::{Cell, Corruption, Row};
use crate::schema::FieldId;
use crate::time::format_rfc3339_millis;

/// Writes one JSON object a line.
pub(super) struct JsonOut<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
}

impl<'w> JsonOut<'w> {
    pub(super) fn new(out: &'w mut dyn Write) -> Self {
        JsonOut {
            out,
            buf: Vec::with_capacity(512),
        }
    }
}

/// Appends `row` as one compact JSON line (with its `\n`). Generated strings need no
/// escaping: they are ids, codes and words of `[A-Za-z0-9_]`.
pub(super) fn write_row(out: &mut Vec<u8>, row: &Row) {
    out.push(b'{');
    let mut first = true;
    for f in FieldId::ALL {
        let cell = row.cell(f);
        if cell == Cell::Absent {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(f.name().as_bytes());
        out.extend_from_slice(b"\":");
        match cell {
            Cell::Str(s) => {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            Cell::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            Cell::Time(ms) => {
                out.push(b'"');
                format_rfc3339_millis(ms, out);
                out.push(b'"');
            }
            Cell::Absent => unreachable!("skipped above"),
        }
    }
    out.extend_from_slice(b"}\n");
}

/// Turns a valid line into one of the invalid kinds the dead-letter output must catch.
fn corrupt(line: &[u8], how: Corruption) -> Vec<u8> {
    let s = String::from_utf8_lossy(line).trim_end().to_string();
    let bad = match how {
        Corruption::Truncated => s[..s.len() / 2].to_string(),
        Corruption::AmountAsText => s
            .replacen("\"amount_minor\":", "\"amount_minor\":\"", 1)
            .replacen(",\"currency\"", "\",\"currency\"", 1),
        Corruption::NegativeAmount => s.replacen("\"amount_minor\":", "\"amount_minor\":-", 1),
        Corruption::UnknownCurrency => {
            let i = s.find("\"currency\":\"").map_or(0, |i| i + 12);
            format!("{}ZZZ{}", &s[..i], &s[i + 3..])
        }
        Corruption::MissingMerchant => s.replacen("\"merchant_id\"", "\"merchant\"", 1),
        Corruption::CardNumber => s.replacen(
            "\"card_id\":\"card_",
            &format!("\"card_id\":\"{}_", super::model::TEST_CARD_NUMBER),
            1,
        ),
        Corruption::FractionalAmount => s.replacen(",\"currency\"", ".5,\"currency\"", 1),
        Corruption::BadTime => s.replacen("\"event_time\":\"2", "\"event_time\":\"x2", 1),
        Corruption::NotAnEvent => "this is not json".to_string(),
    };
    let mut v = bad.into_bytes();
    v.push(b'\n');
    v
}

impl RecordWriter for JsonOut<'_> {
    fn record(&mut self, row: &Row, bad: Option<Corruption>) -> io::Result<()> {
        self.buf.clear();
        write_row(&mut self.buf, row);
        match bad {
            None => self.out.write_all(&self.buf),
            Some(how) => self.out.write_all(&corrupt(&self.buf, how)),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
