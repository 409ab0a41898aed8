//! The on-disk record batch: the unit the log appends, checksums and reads back.
//!
//! ```text
//! batch  := len u32 | crc32c u32 | base_offset u64 | count u32 | first_ts i64 | max_ts i64 | records
//! record := key_len u32 (u32::MAX: no key) | key | value_len u32 | value | timestamp i64
//! ```
//! All integers are little-endian. `len` counts the bytes after itself; the CRC32C covers
//! everything after the CRC. Offsets are dense within a batch: its records are
//! `base_offset .. base_offset + count`. Records are read in place ([`RecordRef`] borrows the
//! batch bytes), so consuming a partition copies nothing per record.
//!
//! **Gaps (compacted segments).** Between batches offsets may have gaps: compaction (see
//! `compact`) rewrites a sealed segment keeping only some records, each run of consecutive
//! surviving offsets of an original batch as one batch, so a batch may start past where the
//! previous one ended. A rewritten segment always ends with an *end marker*: an empty batch
//! (`count` 0, no records, `max_ts` `i64::MIN`) whose `base_offset` is the segment's end
//! offset, the next segment's base. The end of a segment whose last records were removed thus
//! stays explicit and is never taken for lost data. Readers step over gaps and end markers:
//! the record after an offset in a gap is the first one of the next batch.

/// Bytes before the records: len, crc, base offset, count, first and max timestamps.
pub(super) const BATCH_HEADER: usize = 4 + 4 + 8 + 4 + 8 + 8;
/// Largest batch accepted (guards against a garbage length when reading): the `len` field of a
/// batch is at most this. Writers refuse to seal anything larger, since readers would take it
/// for damage.
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Bytes a record adds besides its key and value: key length, value length, timestamp.
pub(super) const RECORD_FRAMING: usize = 4 + 4 + 8;
/// The largest record (key plus value) a batch can hold: what is left of [`MAX_BATCH_BYTES`]
/// after the batch header and one record's framing. Topics may set a lower limit.
pub const MAX_RECORD_BYTES: usize = MAX_BATCH_BYTES - (BATCH_HEADER - 4) - RECORD_FRAMING;

/// One record, borrowed from the batch that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Offset in the partition.
    pub offset: u64,
    /// Partitioning key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Timestamp, epoch milliseconds.
    pub timestamp: i64,
}

/// Builds one batch in memory: records are appended as they come; the base offset and checksum
/// are filled in by [`BatchBuilder::seal`] when the partition assigns offsets.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_ts: i64,
    max_ts: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(1 << 16)
    }
}

impl BatchBuilder {
    /// An empty batch with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER + bytes);
        buf.resize(BATCH_HEADER, 0);
        BatchBuilder {
            buf,
            count: 0,
            first_ts: 0,
            max_ts: i64::MIN,
        }
    }

    /// Appends a record.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        if self.count == 0 {
            self.first_ts = timestamp;
        }
        self.max_ts = self.max_ts.max(timestamp);
        match key {
            Some(k) => {
                self.buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(k);
            }
            None => self.buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(&timestamp.to_le_bytes());
        self.count += 1;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the sealed batch would be readable: its `len` within [`MAX_BATCH_BYTES`].
    pub fn within_limit(&self) -> bool {
        self.buf.len() - 4 <= MAX_BATCH_BYTES
    }

    /// Bytes the sealed batch will take.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The largest timestamp in the batch (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts
    }

    /// Fills in the header for `base_offset` and returns the framed bytes to write.
    pub fn seal(&mut self, base_offset: u64) -> &[u8] {
        let len = (self.buf.len() - 4) as u32;
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&base_offset.to_le_bytes());
        self.buf[16..20].copy_from_slice(&self.count.to_le_bytes());
        self.buf[20..28].copy_from_slice(&self.first_ts.to_le_bytes());
        self.buf[28..36].copy_from_slice(&self.max_ts.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.truncate(BATCH_HEADER);
        self.count = 0;
        self.max_ts = i64::MIN;
    }
}

/// The end marker of a compacted segment ending at offset `end`: an empty batch based there
/// (see the module documentation).
pub(super) fn end_marker(end: u64) -> Vec<u8> {
    BatchBuilder::with_capacity(0).seal(end).to_vec()
}

/// A checksummed batch, borrowed from the bytes read.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchView<'a> {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Records in the batch.
    pub count: u32,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Framed length (header included): where the next batch starts.
    pub framed_len: usize,
    records: &'a [u8],
}

/// What lies at a position of a segment.
#[derive(Debug)]
pub(super) enum Parsed<'a> {
    /// A complete batch whose checksum and record framing hold.
    Batch(BatchView<'a>),
    /// The bytes end before the batch does (more may still be written).
    Incomplete,
    /// The bytes are not a valid batch (torn or corrupt).
    Corrupt,
}

/// Parses the batch at the start of `b`.
pub(super) fn parse_batch(b: &[u8]) -> Parsed<'_> {
    let Some(len) = b.get(..4) else {
        return Parsed::Incomplete;
    };
    let len = u32::from_le_bytes(len.try_into().expect("4")) as usize;
    if !(BATCH_HEADER - 4..=MAX_BATCH_BYTES).contains(&len) {
        return Parsed::Corrupt;
    }
    let Some(framed) = b.get(..4 + len) else {
        return Parsed::Incomplete;
    };
    let crc = u32::from_le_bytes(framed[4..8].try_into().expect("4"));
    if crc32c::crc32c(&framed[8..]) != crc {
        return Parsed::Corrupt;
    }
    let view = view_checked(framed);
    // The records must parse exactly to the end of the batch.
    if view.records().count() != view.count as usize || !view.records().fully_parsed() {
        return Parsed::Corrupt;
    }
    Parsed::Batch(view)
}

/// The view of a framed batch that [`parse_batch`] already accepted (no checks repeated).
pub(super) fn view_checked(framed: &[u8]) -> BatchView<'_> {
    BatchView {
        base_offset: u64::from_le_bytes(framed[8..16].try_into().expect("8")),
        count: u32::from_le_bytes(framed[16..20].try_into().expect("4")),
        max_timestamp: i64::from_le_bytes(framed[28..36].try_into().expect("8")),
        framed_len: framed.len(),
        records: &framed[BATCH_HEADER..],
    }
}

impl<'a> BatchView<'a> {
    /// The records, in offset order.
    pub(super) fn records(&self) -> Records<'a> {
        Records {
            rest: self.records,
            next_offset: self.base_offset,
            broken: false,
        }
    }

    /// The offset after the last record.
    pub(super) fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }
}

/// Iterator over the records of a batch.
#[derive(Debug, Clone)]
pub(super) struct Records<'a> {
    rest: &'a [u8],
    next_offset: u64,
    broken: bool,
}

impl Records<'_> {
    /// True when iteration ended exactly at the end of the batch (no malformed tail).
    fn fully_parsed(mut self) -> bool {
        for _ in self.by_ref() {}
        !self.broken && self.rest.is_empty()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.rest.is_empty() || self.broken {
            return None;
        }
        let r = self.rest;
        let u32_at = |p: usize| -> Option<u32> {
            Some(u32::from_le_bytes(r.get(p..p + 4)?.try_into().ok()?))
        };
        let parsed = (|| {
            let kl = u32_at(0)?;
            let (key, p) = if kl == u32::MAX {
                (None, 4)
            } else {
                let kl = kl as usize;
                (Some(r.get(4..4 + kl)?), 4 + kl)
            };
            let vl = u32_at(p)? as usize;
            let value = r.get(p + 4..p + 4 + vl)?;
            let p = p + 4 + vl;
            let ts = i64::from_le_bytes(r.get(p..p + 8)?.try_into().ok()?);
            Some((key, value, ts, p + 8))
        })();
        match parsed {
            Some((key, value, timestamp, used)) => {
                self.rest = &r[used..];
                let offset = self.next_offset;
                self.next_offset += 1;
                Some(RecordRef {
                    offset,
                    key,
                    value,
                    timestamp,
                })
            }
            None => {
                self.broken = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_batch_reads_back_and_any_flipped_bit_is_caught() {
        let mut b = BatchBuilder::default();
        b.push(Some(b"card_1"), b"{\"a\":1}", 30);
        b.push(None, b"", 10);
        let bytes = b.seal(7).to_vec();
        let Parsed::Batch(v) = parse_batch(&bytes) else {
            panic!("valid batch")
        };
        assert_eq!((v.base_offset, v.count, v.max_timestamp), (7, 2, 30));
        let recs: Vec<_> = v.records().collect();
        assert_eq!(recs[0].key, Some(&b"card_1"[..]));
        assert_eq!(
            (recs[1].offset, recs[1].key, recs[1].timestamp),
            (8, None, 10)
        );
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(parse_batch(&bad), Parsed::Batch(_)),
                "bit {i} flipped and still accepted"
            );
        }
        assert!(matches!(
            parse_batch(&bytes[..bytes.len() - 1]),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn an_end_marker_is_an_empty_batch_ending_where_it_says() {
        let bytes = end_marker(42);
        let Parsed::Batch(v) = parse_batch(&bytes) else {
            panic!("valid batch")
        };
        assert_eq!((v.base_offset, v.count, v.next_offset()), (42, 0, 42));
        assert_eq!(v.records().count(), 0);
        assert_eq!(v.framed_len, BATCH_HEADER);
    }
}
