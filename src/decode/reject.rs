//! Rejected records: why a record was not accepted, and where it came from.
//!
//! A reject is data, not an error: it goes to the dead-letter output and a counter, and the run
//! goes on. Its raw text is redacted of anything that looks like a card number before it is kept.

use std::fmt;
use std::sync::Arc;

use super::card::{redact, redact_bytes};

/// Why a record was dead-lettered. The code (`as_str`) is part of the dead-letter format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// Not a JSON object / CSV record, or truncated.
    Malformed,
    /// A required field is absent.
    MissingField,
    /// A required field is `null`.
    NullField,
    /// A field has the wrong JSON type (`"10"`, `12.5` or `1e3` for an amount).
    WrongType,
    /// A number outside its range (negative or oversized amount).
    OutOfRange,
    /// `event_type` is not one of the known types.
    UnknownEventType,
    /// `currency` is not an ISO 4217 code.
    UnknownCurrency,
    /// A field's value does not have the required form (`event_id`, country, `mcc`, `status`).
    InvalidValue,
    /// `event_time` cannot be parsed.
    BadTimestamp,
    /// `event_time` is further ahead of the watermark than the allowed skew.
    FutureTimestamp,
    /// A string field looks like a card number.
    CardNumber,
    /// The same `event_id` arrived again with a different payload.
    DuplicateConflict,
}

impl RejectReason {
    /// The stable reason code written to the dead-letter output.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::Malformed => "malformed",
            RejectReason::MissingField => "missing_field",
            RejectReason::NullField => "null_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::UnknownCurrency => "unknown_currency",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::CardNumber => "card_number",
            RejectReason::DuplicateConflict => "duplicate_conflict",
        }
    }
}

impl RejectReason {
    /// Every reason, in declaration order (the index of [`ReasonCounts`]).
    pub const ALL: [RejectReason; 13] = [
        RejectReason::InvalidUtf8,
        RejectReason::Malformed,
        RejectReason::MissingField,
        RejectReason::NullField,
        RejectReason::WrongType,
        RejectReason::OutOfRange,
        RejectReason::UnknownEventType,
        RejectReason::UnknownCurrency,
        RejectReason::InvalidValue,
        RejectReason::BadTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::CardNumber,
        RejectReason::DuplicateConflict,
    ];
}

/// Dead letters counted by reason: what a run's end reports when many records were rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasonCounts([u64; RejectReason::ALL.len()]);

impl ReasonCounts {
    /// Counts one record rejected for `reason`.
    pub fn add(&mut self, reason: RejectReason) {
        self.0[reason as usize] += 1;
    }

    /// Reasons with their counts, most frequent first (ties in declaration order); zeros left out.
    pub fn top(&self) -> Vec<(RejectReason, u64)> {
        let mut v: Vec<_> = RejectReason::ALL
            .iter()
            .map(|r| (*r, self.0[*r as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        v
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a source numbers its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionKind {
    /// 1-based line in a text file (JSON Lines, CSV).
    Line,
    /// 1-based row in a Parquet file.
    Row,
    /// Offset in a log partition.
    Offset,
}

impl PositionKind {
    /// The JSON key used for this kind of position.
    pub fn key(self) -> &'static str {
        match self {
            PositionKind::Line => "line",
            PositionKind::Row => "row",
            PositionKind::Offset => "offset",
        }
    }
}

/// Where records come from: a file path, or a topic and partition, and how positions count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file path, or the topic.
    pub name: Arc<str>,
    /// What positions mean.
    pub kind: PositionKind,
    /// The log partition, for a topic.
    pub partition: Option<u32>,
}

impl Origin {
    /// A file whose positions count `kind`.
    pub fn file(name: impl Into<Arc<str>>, kind: PositionKind) -> Self {
        Origin {
            name: name.into(),
            kind,
            partition: None,
        }
    }

    /// A log partition; positions are offsets.
    pub fn partition(topic: impl Into<Arc<str>>, partition: u32) -> Self {
        Origin {
            name: topic.into(),
            kind: PositionKind::Offset,
            partition: Some(partition),
        }
    }

    /// Writes the origin and `position` as JSON members (without braces):
    /// `"file":…,"line":N` for a file, `"topic":…,"partition":P,"offset":N` for a log.
    pub fn write_json(&self, position: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        match self.partition {
            Some(p) => {
                out.extend_from_slice(b"\"topic\":");
                crate::sink::write_json_str(out, &self.name);
                let _ = write!(out, ",\"partition\":{p},\"offset\":{position}");
            }
            None => {
                out.extend_from_slice(b"\"file\":");
                crate::sink::write_json_str(out, &self.name);
                let _ = write!(out, ",\"{}\":{position}", self.kind.key());
            }
        }
    }
}

/// A record that was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Reason code.
    pub reason: RejectReason,
    /// Human detail: what was wrong and what was expected.
    pub detail: String,
    /// Position of the record within its origin.
    pub position: u64,
    /// The raw record, redacted of card-number-like values.
    pub raw: String,
}

impl Reject {
    /// Builds a reject from raw bytes, redacting them and the detail: card numbers in the text
    /// as it stands and in its JSON string literals decoded ([`redact`]) are masked, so no
    /// detail or raw record ever holds one, whatever built the detail.
    pub fn new(reason: RejectReason, detail: String, position: u64, raw: &[u8]) -> Self {
        Reject {
            reason,
            detail: redact(&detail),
            position,
            raw: redact_bytes(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_counts_rank_the_most_frequent_first() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
        let mut c = ReasonCounts::default();
        assert!(c.top().is_empty());
        c.add(RejectReason::Malformed);
        for _ in 0..3 {
            c.add(RejectReason::CardNumber);
        }
        c.add(RejectReason::InvalidUtf8);
        assert_eq!(
            c.top(),
            vec![
                (RejectReason::CardNumber, 3),
                (RejectReason::InvalidUtf8, 1),
                (RejectReason::Malformed, 1)
            ]
        );
    }
}
