//! Metadata columns: values a broker keeps beside a record's payload, declared as columns of
//! the source in Flink's spelling:
//!
//! ```sql
//! CREATE SOURCE payments (
//!     event_id      VARCHAR NOT NULL,
//!     amount_minor  BIGINT,
//!     kafka_key     VARCHAR   METADATA FROM 'key',
//!     kafka_offset  BIGINT    METADATA FROM 'offset',
//!     kafka_time    TIMESTAMP METADATA FROM 'timestamp',
//!     trace_id      VARCHAR   METADATA FROM 'header.trace_id',
//!     WATERMARK FOR kafka_time AS kafka_time - INTERVAL '5' SECOND
//! ) WITH (connector = 'kafka', topic = 'payments', dedup_key = 'event_id');
//! ```
//!
//! The source's reader renders each record's metadata ([`RecordMeta`]) beside the payload;
//! the declared decoder puts the values in their columns and checks them as it checks any
//! value. A metadata column is not read from the payload (a payload member of the same name
//! is an unknown member, skipped), and it is left out of the payload hash: a producer's retry
//! lands at another offset with another timestamp, yet it is the same event, a duplicate.

use std::fmt;

use super::ColumnKind;

/// The field metadata key of a metadata column: its [`MetaKey`]'s spelling.
pub const METADATA: &str = "paystream.metadata";

/// What a metadata column holds (`METADATA FROM '…'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaKey {
    /// The topic's name.
    Topic,
    /// The record's partition.
    Partition,
    /// The record's offset in its partition.
    Offset,
    /// The record's timestamp (the producer's, or the broker's append time).
    Timestamp,
    /// The record's key, as text (null when the record has none).
    Key,
    /// Every header, as a JSON object of text values (`{}` when there are none).
    Headers,
    /// One header's value, as text (null when the record lacks it; the last when repeated).
    Header(String),
}

impl MetaKey {
    /// Every kind of record metadata ([`Self::kind_name`]), as errors list them and a source
    /// that has them all offers them.
    pub const KINDS: &'static [&'static str] = &[
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "headers",
        "header.<name>",
    ];

    /// The kinds, quoted, as a message lists them: `'topic', 'partition', …`.
    pub fn kinds_listed() -> String {
        Self::KINDS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key `METADATA FROM 'key'` names, or what to write instead.
    pub fn parse(key: &str) -> Result<MetaKey, String> {
        Ok(match key {
            "topic" => MetaKey::Topic,
            "partition" => MetaKey::Partition,
            "offset" => MetaKey::Offset,
            "timestamp" => MetaKey::Timestamp,
            "key" => MetaKey::Key,
            "headers" => MetaKey::Headers,
            _ => match key.strip_prefix("header.") {
                Some(name) if !name.is_empty() => MetaKey::Header(name.to_string()),
                _ => {
                    return Err(format!(
                        "METADATA FROM '{key}': there is no such record metadata; use one of {}",
                        Self::kinds_listed()
                    ));
                }
            },
        })
    }

    /// The column types it can be read as: the first is the one to suggest.
    pub fn kinds(&self) -> &'static [ColumnKind] {
        match self {
            MetaKey::Partition => &[ColumnKind::Int32, ColumnKind::Int64],
            MetaKey::Offset => &[ColumnKind::Int64],
            MetaKey::Timestamp => &[ColumnKind::Timestamp],
            MetaKey::Topic | MetaKey::Key | MetaKey::Headers | MetaKey::Header(_) => {
                &[ColumnKind::Utf8]
            }
        }
    }

    /// The kind of record metadata, as a source lists what it offers
    /// ([`crate::source::SourceConnector::record_metadata`]): a header's name is left out.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MetaKey::Topic => "topic",
            MetaKey::Partition => "partition",
            MetaKey::Offset => "offset",
            MetaKey::Timestamp => "timestamp",
            MetaKey::Key => "key",
            MetaKey::Headers => "headers",
            MetaKey::Header(_) => "header.<name>",
        }
    }
}

impl fmt::Display for MetaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaKey::Header(name) => write!(f, "header.{name}"),
            other => f.write_str(other.kind_name()),
        }
    }
}

/// One metadata value of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaValue {
    /// Absent (a record without a key, a header not sent).
    Null,
    /// A number (partition, offset, timestamp in epoch milliseconds).
    Int(i64),
    /// Text: bytes `start..end` of [`RecordMeta::text`].
    Text(u32, u32),
    /// A value that is no text (a key that is not UTF-8): the record is dead-lettered with
    /// this reason.
    Invalid(&'static str),
}

/// The metadata of a chunk's records: for record `i` (its `i`-th line), the values of the
/// source's metadata columns in column order, `columns` of them a record.
#[derive(Debug, Default, Clone)]
pub struct RecordMeta {
    /// Metadata columns per record.
    pub columns: usize,
    /// `columns` values per record, record after record.
    pub values: Vec<MetaValue>,
    /// The text values' bytes.
    pub text: String,
}

impl RecordMeta {
    /// Empty metadata of records with `columns` metadata columns.
    pub fn new(columns: usize) -> Self {
        RecordMeta {
            columns,
            ..RecordMeta::default()
        }
    }

    /// Appends a text value.
    pub fn push_text(&mut self, text: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        self.values
            .push(MetaValue::Text(start, self.text.len() as u32));
    }

    /// Appends bytes as a text value, or as [`MetaValue::Invalid`] with `not_text` when they
    /// are not UTF-8.
    pub fn push_bytes(&mut self, bytes: &[u8], not_text: &'static str) {
        match std::str::from_utf8(bytes) {
            Ok(t) => self.push_text(t),
            Err(_) => self.values.push(MetaValue::Invalid(not_text)),
        }
    }

    /// Metadata column `c` of record `i`; `None` when the record has none (a bug of the
    /// source, which the decoder reports as the record's reject rather than guess).
    pub fn get(&self, i: usize, c: usize) -> Option<MetaValue> {
        self.values.get(i * self.columns + c).copied()
    }

    /// The text of a [`MetaValue::Text`].
    pub fn text(&self, start: u32, end: u32) -> &str {
        &self.text[start as usize..end as usize]
    }
}

/// The metadata columns of `fields`, in column order: (index, name, key). The one reading of
/// the [`METADATA`] field metadata: the source renders, and the decoder fills, these.
pub fn metadata_keys(
    fields: &datafusion::arrow::datatypes::Fields,
) -> Vec<(usize, String, MetaKey)> {
    fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let key = f.metadata().get(METADATA)?;
            Some((i, f.name().clone(), MetaKey::parse(key).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_as_written() {
        for k in [
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "headers",
            "header.trace-id",
        ] {
            assert_eq!(MetaKey::parse(k).unwrap().to_string(), k);
        }
        let e = MetaKey::parse("leader-epoch").unwrap_err();
        assert!(e.contains("'offset'"), "{e}");
        assert!(MetaKey::parse("header.").is_err());
    }

    #[test]
    fn values_are_found_by_record_and_column() {
        let mut m = RecordMeta::new(2);
        m.push_text("k1");
        m.values.push(MetaValue::Int(7));
        m.push_bytes(&[0xff, 0xfe], "not UTF-8");
        m.values.push(MetaValue::Null);
        let MetaValue::Text(a, b) = m.get(0, 0).unwrap() else {
            panic!("text")
        };
        assert_eq!(m.text(a, b), "k1");
        assert_eq!(m.get(0, 1), Some(MetaValue::Int(7)));
        assert_eq!(m.get(1, 0), Some(MetaValue::Invalid("not UTF-8")));
        assert_eq!(m.get(1, 1), Some(MetaValue::Null));
        assert_eq!(m.get(2, 0), None);
    }
}
