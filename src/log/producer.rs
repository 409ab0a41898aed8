//! Producing JSON Lines into a topic: one record per line, keyed by a JSON field (by default
//! `card_id`) and stamped with its `event_time`, batched per partition.
//!
//! The producer does not validate events — like a Kafka producer, it stores what it is given;
//! the query reading the topic dead-letters invalid records with their partition and offset. It
//! only needs the key and the timestamp, which it finds with a SIMD substring search instead of
//! parsing each line. Two things it does refuse, before anything is written: a record holding a
//! card number (see [`super::screen`]; counted as screened, not stored) and a record larger than
//! the topic's `max_record_bytes` (an error naming the record and the limit; the records before
//! it are still appended by [`Producer::finish`]).

use memchr::memmem::Finder;

use super::batch::RECORD_FRAMING;
use super::screen::holds_card_number;
use super::{BatchBuilder, LogError, MAX_BATCH_BYTES, TopicWriter};
use crate::time::parse_rfc3339_millis;

/// Bytes a partition's batch collects before it is appended.
const BATCH_BYTES: usize = 1 << 20;

/// Writes records into a topic, batching per partition.
pub struct Producer {
    writer: TopicWriter,
    batches: Vec<BatchBuilder>,
    key: Option<Finder<'static>>,
    time: Finder<'static>,
    produced: u64,
    stored_bytes: u64,
    screened: u64,
    /// JSON records without the key field (spread round-robin).
    unkeyed: u64,
    max_record_bytes: usize,
    now_ms: i64,
    /// The partition of the last record sent.
    last_partition: Option<u32>,
}

/// What became of a JSON record offered to [`Producer::send_json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Batched for its partition.
    Stored,
    /// Refused: it holds a card number (nothing of it was written).
    Screened,
}

impl Producer {
    /// A producer into `writer`'s topic, keying JSON records by the field `key_field` (records
    /// without it, or with `None`, are spread round-robin).
    pub fn new(writer: TopicWriter, key_field: Option<&str>) -> Self {
        let batches = (0..writer.partitions())
            .map(|_| BatchBuilder::with_capacity(BATCH_BYTES + (64 << 10)))
            .collect();
        Producer {
            max_record_bytes: writer.max_record_bytes(),
            writer,
            batches,
            key: key_field.map(|k| Finder::new(format!("\"{k}\"").as_bytes()).into_owned()),
            time: Finder::new(b"\"event_time\"").into_owned(),
            produced: 0,
            stored_bytes: 0,
            screened: 0,
            unkeyed: 0,
            now_ms: now_ms(),
            last_partition: None,
        }
    }

    /// Records sent so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The largest record (key plus value) the topic accepts.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Bytes of the values sent so far.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// JSON records sent so far without the key field, so spread round-robin (none when the
    /// producer has no key field).
    pub fn unkeyed(&self) -> u64 {
        self.unkeyed
    }

    /// JSON records refused so far because they hold a card number.
    pub fn screened(&self) -> u64 {
        self.screened
    }

    /// Sends one record. A record (key and value) over the topic's `max_record_bytes` is refused
    /// with [`LogError::RecordTooLarge`] before anything of it is written.
    pub fn send(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
    ) -> Result<(), LogError> {
        let bytes = value.len() + key.map_or(0, <[u8]>::len);
        if bytes > self.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                topic: self.writer.topic().to_string(),
                record: format!("record {}", self.produced + self.screened + 1),
                bytes: bytes as u64,
                limit: self.max_record_bytes as u64,
            });
        }
        let p = self.writer.route(key);
        self.last_partition = Some(p);
        let b = &mut self.batches[p as usize];
        // A batch never passes the format's limit: append what is batched before a record
        // that would take it over.
        if !b.is_empty() && b.byte_len() + bytes + RECORD_FRAMING > MAX_BATCH_BYTES {
            self.writer.append(p, b)?;
        }
        b.push(key, value, timestamp);
        self.produced += 1;
        self.stored_bytes += value.len() as u64;
        if b.byte_len() >= BATCH_BYTES {
            self.writer.append(p, b)?;
        }
        Ok(())
    }

    /// Keys the next JSON records by `key_field` (`None`: round-robin).
    pub fn set_key_field(&mut self, key_field: Option<&str>) {
        self.key = key_field.map(|k| Finder::new(format!("\"{k}\"").as_bytes()).into_owned());
    }

    /// The partition the last record sent went to.
    pub fn last_partition(&self) -> Option<u32> {
        self.last_partition
    }

    /// Sends one JSON record, keyed and timestamped from its fields, unless it holds a card
    /// number.
    pub fn send_json(&mut self, line: &[u8]) -> Result<Sent, LogError> {
        if holds_card_number(line) {
            self.screened += 1;
            return Ok(Sent::Screened);
        }
        let key = self.key.as_ref().and_then(|f| json_field(line, f));
        if self.key.is_some() && key.is_none() {
            self.unkeyed += 1;
        }
        let ts = json_field(line, &self.time)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(parse_rfc3339_millis)
            .unwrap_or(self.now_ms);
        self.send(key, line, ts)?;
        Ok(Sent::Stored)
    }

    /// Sends a tombstone of `key`: a `null` value under that record key, which deletes the key
    /// from a table read from the topic and, in a compacted topic, the key's earlier records.
    /// A key that holds a card number is refused like a record that does.
    pub fn send_tombstone(&mut self, key: &[u8]) -> Result<Sent, LogError> {
        if holds_card_number(key) {
            self.screened += 1;
            return Ok(Sent::Screened);
        }
        self.send(Some(key), b"null", self.now_ms)?;
        Ok(Sent::Stored)
    }

    /// Sends every non-blank line of `chunk` (which should end at a line boundary), whose first
    /// line is line `first_line` (1-based) of the input; a trailing `\r` is dropped. Returns the
    /// number of lines in the chunk (blank ones included) and calls `screened(line)` for each
    /// record refused for holding a card number. An oversized record's error names its line.
    pub fn send_json_lines(
        &mut self,
        chunk: &[u8],
        first_line: u64,
        screened: &mut dyn FnMut(u64),
    ) -> Result<u64, LogError> {
        let mut start = 0;
        let mut line_no = first_line;
        let mut line_at = |line: &[u8], p: &mut Self, no: u64| -> Result<(), LogError> {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            match p.send_json(line) {
                Ok(Sent::Stored) => Ok(()),
                Ok(Sent::Screened) => {
                    screened(no);
                    Ok(())
                }
                Err(LogError::RecordTooLarge {
                    topic,
                    bytes,
                    limit,
                    ..
                }) => Err(LogError::RecordTooLarge {
                    topic,
                    record: format!("line {no}"),
                    bytes,
                    limit,
                }),
                Err(e) => Err(e),
            }
        };
        for end in memchr::memchr_iter(b'\n', chunk) {
            line_at(&chunk[start..end], self, line_no)?;
            line_no += 1;
            start = end + 1;
        }
        if start < chunk.len() {
            line_at(&chunk[start..], self, line_no)?;
            line_no += 1;
        }
        Ok(line_no - first_line)
    }

    /// Appends every pending batch and hands index entries to the OS.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.now_ms = now_ms();
        for (p, b) in self.batches.iter_mut().enumerate() {
            if !b.is_empty() {
                self.writer.append(p as u32, b)?;
            }
        }
        self.writer.flush()
    }

    /// The offset after the last record appended, per partition (pending batches excluded:
    /// flush first).
    pub fn end_offsets(&self) -> Vec<u64> {
        self.writer.end_offsets()
    }

    /// Truncates partition `p` to `offset`, dropping pending records (aborts a transaction).
    pub fn truncate_to(&mut self, p: u32, offset: u64) -> Result<(), LogError> {
        if let Some(b) = self.batches.get_mut(p as usize) {
            b.clear();
        }
        self.writer.truncate_to(p, offset)
    }

    /// Makes the topic compacted from now on (see [`TopicWriter::enable_compaction`]).
    pub fn enable_compaction(&mut self) -> Result<(), LogError> {
        self.writer.enable_compaction()
    }

    /// The topic written.
    pub fn topic(&self) -> &str {
        self.writer.topic()
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.writer.sync()
    }

    /// Flushes, makes everything durable and returns the writer.
    pub fn finish(mut self) -> Result<TopicWriter, LogError> {
        self.flush()?;
        self.writer.sync()?;
        Ok(self.writer)
    }
}

/// Wall-clock time, epoch milliseconds (the timestamp of records without an event time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The raw value of a top-level JSON field: a string's contents (without quotes) or a scalar's
/// token. `None` when the field is absent or `null`.
fn json_field<'a>(line: &'a [u8], name: &Finder<'_>) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(i) = name.find(&line[from..]) {
        let mut p = from + i + name.needle().len();
        from = p;
        while line.get(p).is_some_and(u8::is_ascii_whitespace) {
            p += 1;
        }
        if line.get(p) != Some(&b':') {
            continue; // a value that happens to spell the name
        }
        p += 1;
        while line.get(p).is_some_and(u8::is_ascii_whitespace) {
            p += 1;
        }
        return match line.get(p)? {
            b'"' => {
                let s = p + 1;
                let mut e = s;
                loop {
                    e += memchr::memchr2(b'"', b'\\', &line[e..])?;
                    if line[e] == b'\\' {
                        e += 2;
                    } else {
                        break;
                    }
                }
                Some(&line[s..e])
            }
            _ => {
                let e = p + line[p..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
                    .unwrap_or(line.len() - p);
                let v = &line[p..e];
                (v != b"null" && !v.is_empty()).then_some(v)
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_fields_not_values_that_spell_them() {
        let f = Finder::new(b"\"card_id\"");
        let line = br#"{"note":"card_id","card_id" : "card_1\"x","n":1}"#;
        assert_eq!(json_field(line, &f), Some(&br#"card_1\"x"#[..]));
        let f = Finder::new(b"\"n\"");
        assert_eq!(json_field(line, &f), Some(&b"1"[..]));
        assert_eq!(json_field(br#"{"n":null}"#, &f), None);
        assert_eq!(json_field(br#"{"m":1}"#, &f), None);
        assert_eq!(json_field(br#"{"n":"#, &f), None);
    }
}
