//! A log segment: one file of record batches, appended and read by offset.
//!
//! ```text
//! batch := len u32 | crc32c u32 | base_offset u64 | count u32 | first_ts i64 | max_ts i64 | records
//! record := key_len u32 (u32::MAX: no key) | key | value_len u32 | value | timestamp i64
//! ```
//! `len` counts the bytes after itself; the CRC32C covers everything after the CRC. Offsets are
//! dense: a batch's records are `base_offset .. base_offset + count`. Opening a segment scans it
//! and truncates at the first batch that is short, has a bad CRC or a non-contiguous offset — a
//! torn write from a crash — so every fully written batch survives and nothing corrupt is ever
//! returned.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes of a batch header after the length field.
const HEADER: usize = 4 + 8 + 4 + 8 + 8;
/// Largest batch accepted when reading back (guards against a garbage length).
const MAX_BATCH: usize = 64 << 20;

/// An error of the segment store.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The file could not be read or written.
    #[error("log segment {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A batch is larger than a segment accepts.
    #[error(
        "a batch of {0} bytes is larger than the {MAX_BATCH}-byte limit; append fewer records at a time"
    )]
    TooLarge(usize),
}

/// One record as stored: optional key, value and timestamp (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset in the partition (assigned on append).
    pub offset: u64,
    /// Partitioning key, if any.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub value: Vec<u8>,
    /// Timestamp, epoch milliseconds.
    pub timestamp: i64,
}

/// A record to append: optional key, value and timestamp (epoch ms).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Partitioning key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Timestamp, epoch milliseconds.
    pub timestamp: i64,
}

/// An open segment file.
pub struct Segment {
    path: PathBuf,
    file: File,
    base_offset: u64,
    next_offset: u64,
    size: u64,
    /// (first offset, file position, max timestamp) of every batch: the in-memory sparse index
    /// used to seek by offset and by time.
    batches: Vec<(u64, u64, i64)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Segment {
    /// Opens (or creates) the segment at `path` whose first offset is `base_offset`, recovering
    /// from a torn tail.
    pub fn open(path: &Path, base_offset: u64) -> Result<Self, SegmentError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path))?;
        let mut pos = 0usize;
        let mut next = base_offset;
        let mut batches = Vec::new();
        while let Some((batch_base, count, len, max_ts)) = valid_batch(&bytes[pos..]) {
            if batch_base != next {
                break;
            }
            batches.push((batch_base, pos as u64, max_ts));
            next += count as u64;
            pos += len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                segment = %path.display(),
                valid_bytes = pos,
                dropped_bytes = bytes.len() - pos,
                "truncating a torn or corrupt segment tail"
            );
            file.set_len(pos as u64).map_err(io(path))?;
        }
        file.seek(SeekFrom::Start(pos as u64)).map_err(io(path))?;
        Ok(Segment {
            path: path.to_path_buf(),
            file,
            base_offset,
            next_offset: next,
            size: pos as u64,
            batches,
        })
    }

    /// The offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset of this segment.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends records as one batch; returns the offset of the first. With `sync`, the data is
    /// on stable storage when this returns.
    pub fn append(&mut self, records: &[NewRecord<'_>], sync: bool) -> Result<u64, SegmentError> {
        if records.is_empty() {
            return Ok(self.next_offset);
        }
        let base = self.next_offset;
        let mut body =
            Vec::with_capacity(HEADER + records.iter().map(|r| 16 + r.value.len()).sum::<usize>());
        body.extend_from_slice(&[0; 4]); // crc, filled below
        body.extend_from_slice(&base.to_le_bytes());
        body.extend_from_slice(&(records.len() as u32).to_le_bytes());
        let first_ts = records[0].timestamp;
        let max_ts = records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(first_ts);
        body.extend_from_slice(&first_ts.to_le_bytes());
        body.extend_from_slice(&max_ts.to_le_bytes());
        for r in records {
            match r.key {
                Some(k) => {
                    body.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    body.extend_from_slice(k);
                }
                None => body.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
            body.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
            body.extend_from_slice(r.value);
            body.extend_from_slice(&r.timestamp.to_le_bytes());
        }
        if body.len() > MAX_BATCH {
            return Err(SegmentError::TooLarge(body.len()));
        }
        let crc = crc32c::crc32c(&body[4..]);
        body[..4].copy_from_slice(&crc.to_le_bytes());
        let mut framed = Vec::with_capacity(body.len() + 4);
        framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        framed.extend_from_slice(&body);
        self.file.write_all(&framed).map_err(io(&self.path))?;
        if sync {
            self.file.sync_data().map_err(io(&self.path))?;
        }
        self.batches.push((base, self.size, max_ts));
        self.size += framed.len() as u64;
        self.next_offset += records.len() as u64;
        Ok(base)
    }

    /// The first offset of the first batch holding a record at or after `timestamp` (by the batch's
    /// max timestamp, as Kafka's time index does), or `None` when every record is older.
    pub fn offset_for_time(&self, timestamp: i64) -> Option<u64> {
        self.batches
            .iter()
            .find(|(_, _, max_ts)| *max_ts >= timestamp)
            .map(|(base, _, _)| *base)
    }

    /// Reads up to `max` records starting at `offset`.
    pub fn read(&self, offset: u64, max: usize) -> Result<Vec<Record>, SegmentError> {
        let mut out = Vec::new();
        if offset >= self.next_offset || max == 0 {
            return Ok(out);
        }
        // The batch holding `offset`: the last one starting at or before it.
        let i = self
            .batches
            .partition_point(|(b, _, _)| *b <= offset)
            .saturating_sub(1);
        let mut f = &self.file;
        for &(_, pos, _) in &self.batches[i..] {
            let mut len = [0u8; 4];
            f.seek(SeekFrom::Start(pos)).map_err(io(&self.path))?;
            f.read_exact(&mut len).map_err(io(&self.path))?;
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            f.read_exact(&mut body).map_err(io(&self.path))?;
            for r in decode_records(&body) {
                if r.offset >= offset {
                    out.push(r);
                    if out.len() == max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// If `b` starts with a complete, checksummed batch: (base offset, record count, framed length,
/// max timestamp).
fn valid_batch(b: &[u8]) -> Option<(u64, u32, usize, i64)> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    if !(HEADER..=MAX_BATCH).contains(&len) {
        return None;
    }
    let body = b.get(4..4 + len)?;
    let crc = u32::from_le_bytes(body[..4].try_into().ok()?);
    if crc32c::crc32c(&body[4..]) != crc {
        return None;
    }
    let base = u64::from_le_bytes(body[4..12].try_into().ok()?);
    let count = u32::from_le_bytes(body[12..16].try_into().ok()?);
    // The records must parse exactly to the end of the batch.
    if decode_records(body).len() != count as usize {
        return None;
    }
    let max_ts = i64::from_le_bytes(body[24..32].try_into().ok()?);
    Some((base, count, 4 + len, max_ts))
}

/// Decodes the records of a batch body (after the length field); stops at malformed data.
fn decode_records(body: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let Some(base) = body
        .get(4..12)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    else {
        return out;
    };
    let mut p = HEADER;
    let take = |p: &mut usize, n: usize| -> Option<&[u8]> {
        let s = body.get(*p..*p + n)?;
        *p += n;
        Some(s)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4"));
    while p < body.len() {
        let Some(kl) = take(&mut p, 4).map(u32_at) else {
            return out;
        };
        let key = if kl == u32::MAX {
            None
        } else {
            match take(&mut p, kl as usize) {
                Some(k) => Some(k.to_vec()),
                None => return out,
            }
        };
        let Some(vl) = take(&mut p, 4).map(u32_at) else {
            return out;
        };
        let Some(value) = take(&mut p, vl as usize).map(<[u8]>::to_vec) else {
            return out;
        };
        let Some(ts) = take(&mut p, 8).map(|s| i64::from_le_bytes(s.try_into().expect("8"))) else {
            return out;
        };
        out.push(Record {
            offset: base + out.len() as u64,
            key,
            value,
            timestamp: ts,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    type Owned = (Option<Vec<u8>>, Vec<u8>, i64);

    fn random_batch(rng: &mut rand::rngs::StdRng) -> Vec<Owned> {
        (0..rng.random_range(1..20))
            .map(|_| {
                let key = rng
                    .random_bool(0.7)
                    .then(|| (0..rng.random_range(0..12)).map(|_| rng.random()).collect());
                let value = (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect();
                (key, value, rng.random_range(0..1_000_000))
            })
            .collect()
    }

    fn append(seg: &mut Segment, batch: &[Owned]) -> u64 {
        let refs: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|(k, v, t)| NewRecord {
                key: k.as_deref(),
                value: v,
                timestamp: *t,
            })
            .collect();
        seg.append(&refs, false).unwrap()
    }

    #[test]
    fn appends_and_reads_by_offset_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut all = Vec::new();
        {
            let mut seg = Segment::open(&path, 100).unwrap();
            for _ in 0..50 {
                let b = random_batch(&mut rng);
                assert_eq!(append(&mut seg, &b), 100 + all.len() as u64);
                all.extend(b);
            }
        }
        let seg = Segment::open(&path, 100).unwrap();
        assert_eq!(seg.next_offset(), 100 + all.len() as u64);
        for _ in 0..100 {
            let from = rng.random_range(0..all.len() + 3);
            let max = rng.random_range(1..40);
            let got = seg.read(100 + from as u64, max).unwrap();
            let want: Vec<_> = all.iter().enumerate().skip(from).take(max).collect();
            assert_eq!(got.len(), want.len());
            for (r, (i, (k, v, t))) in got.iter().zip(want) {
                assert_eq!(
                    (r.offset, &r.key, &r.value, r.timestamp),
                    (100 + i as u64, k, v, *t)
                );
            }
        }
    }

    #[test]
    fn seeks_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::open(&dir.path().join("0.log"), 0).unwrap();
        append(
            &mut seg,
            &[(None, b"a".to_vec(), 10), (None, b"b".to_vec(), 30)],
        );
        append(
            &mut seg,
            &[(None, b"c".to_vec(), 20), (None, b"d".to_vec(), 50)],
        );
        assert_eq!(seg.offset_for_time(0), Some(0));
        assert_eq!(seg.offset_for_time(30), Some(0));
        assert_eq!(seg.offset_for_time(31), Some(2));
        assert_eq!(seg.offset_for_time(51), None);
        // The index is rebuilt on reopen.
        let reopened = Segment::open(&dir.path().join("0.log"), 0).unwrap();
        assert_eq!(reopened.offset_for_time(31), Some(2));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_truncated_and_full_batches_survive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for trial in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.log");
            let mut ends = vec![0u64];
            let mut counts = vec![0u64];
            {
                let mut seg = Segment::open(&path, 0).unwrap();
                for _ in 0..rng.random_range(1..8) {
                    let b = random_batch(&mut rng);
                    append(&mut seg, &b);
                    ends.push(seg.size());
                    counts.push(seg.next_offset());
                }
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let cut = rng.random_range(0..=bytes.len());
            if trial % 2 == 0 {
                bytes.truncate(cut);
            } else if cut < bytes.len() {
                bytes[cut] ^= 1 << rng.random_range(0..8);
            }
            std::fs::write(&path, &bytes).unwrap();
            let seg = Segment::open(&path, 0).unwrap();
            // Every batch that ends before the damage survives; nothing after it does.
            let survivors = ends.iter().filter(|e| **e <= cut as u64).count() - 1;
            let survivors = if trial % 2 == 1 && cut == bytes.len() {
                ends.len() - 1
            } else {
                survivors
            };
            assert_eq!(
                seg.next_offset(),
                counts[survivors],
                "trial {trial}, damage at {cut}"
            );
            assert_eq!(seg.size(), ends[survivors]);
            assert_eq!(
                seg.read(0, usize::MAX).unwrap().len() as u64,
                counts[survivors]
            );
        }
    }
}
