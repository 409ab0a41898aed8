//! A log segment: one file of record batches plus its two sparse indexes.
//!
//! ```text
//! 00000000000000004096.log        batches (see `batch`), appended
//! 00000000000000004096.index      every ≥ 4 KiB of log: (offset − base u32, file position u32)
//! 00000000000000004096.timeindex  same batches: (max timestamp before the batch i64, offset − base u32)
//! ```
//! The indexes are hints, never the truth: a reader looks up the last entry at or before what it
//! wants and scans batches forward from there, checking every CRC. The writer rebuilds both
//! indexes of the active segment when it opens it, because a crash can leave them behind or ahead
//! of the log. Opening the active segment truncates a torn or corrupt tail at the last valid batch.
//!
//! A compacted segment (see `compact`) has gaps between its batches and ends with an end marker
//! (see `batch`); index entries name the batches that are there. It is rewritten beside the old
//! one as `<base>.log.compacting` (and `.index.compacting`, `.timeindex.compacting`), then
//! renamed over it, log first. A reader that looked up an index before the swap and opens the
//! log after it gets a position that may not fit the new file, so a position from an index is
//! checked ([`SegmentCursor::open_at_hint`]): it must hold a valid batch at or before the
//! offset sought, or the reader scans from the segment's start.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::LogError;
use super::batch::{BATCH_HEADER, BatchView, Parsed, parse_batch, view_checked};

/// Bytes a reader asks for at a time.
const READ: usize = 1 << 20;

/// Bytes of log between two index entries.
pub(super) const INDEX_INTERVAL: u64 = 4096;

/// The path of a segment's file with extension `ext` (`log`, `index`, `timeindex`).
pub(super) fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The path of a compacted copy of a segment's file, before it is renamed over the file.
pub(super) fn temp_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}.{TEMP_SUFFIX}"))
}

/// The suffix of a compacted copy being written (see the module documentation).
pub(super) const TEMP_SUFFIX: &str = "compacting";

pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment being appended to.
pub(super) struct SegmentWriter {
    path: PathBuf,
    log: File,
    index: BufWriter<File>,
    time_index: BufWriter<File>,
    base: u64,
    next_offset: u64,
    size: u64,
    max_ts: i64,
    last_indexed: Option<u64>,
}

impl SegmentWriter {
    /// Opens (or creates) the segment with base offset `base` in `dir` for appending: truncates a
    /// torn tail and rebuilds the indexes.
    pub(super) fn open(dir: &Path, base: u64) -> Result<Self, LogError> {
        let path = segment_path(dir, base, "log");
        let mut log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io_err(&path))?;
        let index = create(&segment_path(dir, base, "index"))?;
        let time_index = create(&segment_path(dir, base, "timeindex"))?;
        let mut w = SegmentWriter {
            path: path.clone(),
            log,
            index,
            time_index,
            base,
            next_offset: base,
            size: 0,
            max_ts: i64::MIN,
            last_indexed: None,
        };
        let mut pos = 0usize;
        while let Parsed::Batch(v) = parse_batch(&bytes[pos..]) {
            // A gap before a batch is compaction's (offsets only grow); a batch going back, or
            // past what a segment's u32 index offsets can name, is not this segment's
            // continuation.
            if v.base_offset < w.next_offset || v.base_offset - base > u64::from(u32::MAX) {
                break;
            }
            w.index_batch(&v, pos as u64)?;
            pos += v.framed_len;
        }
        if pos < bytes.len() {
            let damage = describe_damage(&bytes[pos..], w.next_offset);
            tracing::warn!(
                segment = %path.display(),
                kept_offsets = %format!("{base}..{}", w.next_offset),
                valid_bytes = pos,
                dropped_bytes = bytes.len() - pos,
                dropped = %damage,
                "the active segment ends in a torn or damaged tail; truncating it at the last valid batch and appending after it"
            );
            w.log.set_len(pos as u64).map_err(io_err(&path))?;
            w.log.sync_data().map_err(io_err(&path))?;
        }
        // Appends are positional (`write_at`), so where the file cursor happens to be (after the
        // read above it is at the old end) can never leave a hole before the next batch.
        Ok(w)
    }

    fn index_batch(&mut self, v: &BatchView<'_>, pos: u64) -> Result<(), LogError> {
        if self.last_indexed.is_none_or(|l| pos - l >= INDEX_INTERVAL) {
            let rel = (v.base_offset - self.base) as u32;
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&rel.to_le_bytes());
            e[4..].copy_from_slice(&(pos as u32).to_le_bytes());
            let mut t = [0u8; 12];
            t[..8].copy_from_slice(&self.max_ts.to_le_bytes());
            t[8..].copy_from_slice(&rel.to_le_bytes());
            let r = self
                .index
                .write_all(&e)
                .and_then(|_| self.time_index.write_all(&t));
            r.map_err(io_err(&self.path))?;
            self.last_indexed = Some(pos);
        }
        self.max_ts = self.max_ts.max(v.max_timestamp);
        self.next_offset = v.next_offset();
        self.size = pos + v.framed_len as u64;
        Ok(())
    }

    /// Creates the files of a compacted copy of segment `base` beside it (`<base>.log.compacting`
    /// and its indexes), empty, to append the surviving batches to.
    pub(super) fn create_temp(dir: &Path, base: u64) -> Result<Self, LogError> {
        let path = temp_path(dir, base, "log");
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(SegmentWriter {
            path,
            log,
            index: create(&temp_path(dir, base, "index"))?,
            time_index: create(&temp_path(dir, base, "timeindex"))?,
            base,
            next_offset: base,
            size: 0,
            max_ts: i64::MIN,
            last_indexed: None,
        })
    }

    /// Makes a compacted copy durable, its indexes included (they are renamed into place after
    /// the log, and a crash between the renames must find them whole), with the log's
    /// modification time set to `modified`: the old segment's last write, which tombstone
    /// expiry goes by.
    pub(super) fn finish_temp(mut self, modified: std::time::SystemTime) -> Result<u64, LogError> {
        self.flush_indexes()?;
        let r = self
            .index
            .get_ref()
            .sync_all()
            .and_then(|_| self.time_index.get_ref().sync_all())
            .and_then(|_| self.log.set_modified(modified))
            .and_then(|_| self.log.sync_all());
        r.map_err(io_err(&self.path))?;
        Ok(self.size)
    }

    /// Appends one sealed batch (`bytes`, whose parsed form is `v`). The write reaches the OS
    /// before this returns; [`SegmentWriter::sync`] makes it durable.
    pub(super) fn append(&mut self, bytes: &[u8], v: &BatchView<'_>) -> Result<(), LogError> {
        debug_assert!(v.base_offset >= self.next_offset);
        let pos = self.size;
        self.log
            .write_all_at(bytes, pos)
            .map_err(io_err(&self.path))?;
        self.index_batch(v, pos)
    }

    /// Flushes the indexes and makes the log durable.
    pub(super) fn sync(&mut self) -> Result<(), LogError> {
        self.flush_indexes()?;
        self.log.sync_data().map_err(io_err(&self.path))
    }

    /// Hands buffered index entries to the OS (readers in other processes see them).
    pub(super) fn flush_indexes(&mut self) -> Result<(), LogError> {
        let r = self.index.flush().and_then(|_| self.time_index.flush());
        r.map_err(io_err(&self.path))
    }

    pub(super) fn base(&self) -> u64 {
        self.base
    }
    pub(super) fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub(super) fn size(&self) -> u64 {
        self.size
    }
}

/// What a dropped tail held, as far as can be told: a torn batch (fewer bytes than its length
/// says), or a complete batch that fails its checksum, with the offsets its header claims.
fn describe_damage(tail: &[u8], next_offset: u64) -> String {
    match parse_batch(tail) {
        Parsed::Incomplete => format!(
            "a torn batch ({} bytes, shorter than its length) after offset {next_offset}",
            tail.len()
        ),
        _ if tail.len() >= BATCH_HEADER => {
            let claimed = u64::from_le_bytes(tail[8..16].try_into().expect("8"));
            let count = u32::from_le_bytes(tail[16..20].try_into().expect("4"));
            if claimed == next_offset {
                format!(
                    "a damaged batch claiming offsets {claimed}..{} ({} bytes dropped)",
                    claimed + u64::from(count),
                    tail.len()
                )
            } else {
                format!("{} damaged bytes after offset {next_offset}", tail.len())
            }
        }
        _ => format!("{} damaged bytes after offset {next_offset}", tail.len()),
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, LogError> {
    let f = File::create(path).map_err(io_err(path))?;
    Ok(BufWriter::with_capacity(1 << 14, f))
}

/// The offset index of a segment: `(offset − base, position)` entries; empty when missing.
pub(super) fn read_offset_index(dir: &Path, base: u64) -> Vec<(u32, u32)> {
    let bytes = std::fs::read(segment_path(dir, base, "index")).unwrap_or_default();
    bytes
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_le_bytes(c[..4].try_into().expect("4")),
                u32::from_le_bytes(c[4..].try_into().expect("4")),
            )
        })
        .collect()
}

/// The time index of a segment: `(max timestamp before the batch, offset − base)` entries.
pub(super) fn read_time_index(dir: &Path, base: u64) -> Vec<(i64, u32)> {
    let bytes = std::fs::read(segment_path(dir, base, "timeindex")).unwrap_or_default();
    bytes
        .chunks_exact(12)
        .map(|c| {
            (
                i64::from_le_bytes(c[..8].try_into().expect("8")),
                u32::from_le_bytes(c[8..].try_into().expect("4")),
            )
        })
        .collect()
}

/// The file position to start scanning from to find `offset` (a batch boundary at or before it).
pub(super) fn position_hint(index: &[(u32, u32)], base: u64, offset: u64) -> u64 {
    let rel = offset.saturating_sub(base).min(u64::from(u32::MAX)) as u32;
    let i = index.partition_point(|(r, _)| *r <= rel);
    if i == 0 { 0 } else { u64::from(index[i - 1].1) }
}

/// Reads a segment file from a position: batches are returned only when complete and valid.
pub(super) struct SegmentCursor {
    pub(super) path: PathBuf,
    file: File,
    pub(super) pos: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read_size: usize,
}

/// What a fresh read finds at a cursor ([`SegmentCursor::peek_fresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fresh {
    /// A valid batch.
    Batch,
    /// Nothing, or a batch shorter than its length.
    Incomplete,
    /// Bytes that are not a valid batch.
    Corrupt,
}

/// What the cursor found next.
pub(super) enum Next<'a> {
    Batch(BatchView<'a>),
    /// Nothing complete yet (the end of what is written).
    End,
    /// Bytes that are not a valid batch.
    Corrupt,
}

impl SegmentCursor {
    pub(super) fn open(path: PathBuf, pos: u64) -> Result<Self, LogError> {
        let file = File::open(&path).map_err(io_err(&path))?;
        Ok(SegmentCursor {
            path,
            file,
            pos,
            buf: Vec::new(),
            start: 0,
            end: 0,
            read_size: 64 << 10,
        })
    }

    /// A cursor at `pos`, a position an index gave for `offset`, checked: a fresh read there
    /// must find a valid batch based at or before `offset`, else the cursor starts at the
    /// segment's start (the index belonged to the file before a compaction swapped it, or is
    /// damaged). The batch read to check stays buffered for the first read.
    pub(super) fn open_at_hint(path: PathBuf, pos: u64, offset: u64) -> Result<Self, LogError> {
        let mut c = SegmentCursor::open(path.clone(), pos)?;
        if pos == 0 {
            return Ok(c);
        }
        if matches!(c.next_batch()?, Next::Batch(v) if v.base_offset <= offset) {
            // Nothing was consumed before it: the buffer still starts at `pos`.
            c.start = 0;
            c.pos = pos;
            return Ok(c);
        }
        SegmentCursor::open(path, 0)
    }

    /// The next batch at the cursor; the cursor moves past it.
    pub(super) fn next_batch(&mut self) -> Result<Next<'_>, LogError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            match parse_batch(avail) {
                Parsed::Batch(v) => {
                    let (s, len) = (self.start, v.framed_len);
                    self.start += len;
                    self.pos += len as u64;
                    // Re-borrow for the caller's lifetime (checked above: no second CRC pass).
                    return Ok(Next::Batch(view_checked(&self.buf[s..s + len])));
                }
                Parsed::Corrupt if avail.len() >= 4 => {
                    // A batch being written may still fail its CRC; re-read before calling it
                    // corrupt.
                    if !self.refill()? {
                        return Ok(Next::Corrupt);
                    }
                }
                _ => {
                    if !self.refill()? {
                        return Ok(Next::End);
                    }
                }
            }
        }
    }

    /// Reads more of the file after the buffered bytes; false when nothing new arrived.
    fn refill(&mut self) -> Result<bool, LogError> {
        let kept = self.end - self.start;
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = kept;
        }
        let batch = if kept >= 4 {
            4 + u32::from_le_bytes(self.buf[..4].try_into().expect("4")) as usize
        } else {
            0
        };
        // Reads start small (a seek reads a few batches) and double up to READ for a sequential
        // reader, into a buffer that only ever doubles: growing it to each new exact size
        // re-faulted and zeroed fresh pages on almost every read.
        let want = (kept + self.read_size).max(batch);
        self.read_size = (self.read_size * 2).min(READ);
        if self.buf.len() < want {
            let len = want
                .max(self.buf.len() * 2)
                .min(super::batch::MAX_BATCH_BYTES + 4 + READ);
            self.buf.resize(len, 0);
        }
        let n = self
            .file
            .read_at(&mut self.buf[kept..], self.pos + kept as u64)
            .map_err(io_err(&self.path))?;
        self.end += n;
        Ok(n > 0)
    }

    /// Finds the next valid batch after damage at the cursor: the first position past it where a
    /// batch with a base offset of at least `min_offset` passes its checksum. Returns the bytes
    /// skipped and that batch's base offset, and leaves the cursor there; `None` (cursor
    /// unmoved) when nothing valid follows in this file.
    pub(super) fn resync(&mut self, min_offset: u64) -> Result<Option<(u64, u64)>, LogError> {
        let rest = self.read_rest()?;
        if let Parsed::Batch(v) = parse_batch(&rest)
            && v.base_offset == min_offset
        {
            // Whole now (it was being written): no damage here.
            self.reset();
            return Ok(Some((0, min_offset)));
        }
        for i in 1..rest.len().saturating_sub(BATCH_HEADER) {
            // Cheap header checks first: a plausible length and base offset, then the CRC.
            let h = &rest[i..i + BATCH_HEADER];
            let blen = u32::from_le_bytes(h[..4].try_into().expect("4")) as usize;
            let base = u64::from_le_bytes(h[8..16].try_into().expect("8"));
            if blen < BATCH_HEADER - 4
                || i + 4 + blen > rest.len()
                || base < min_offset
                || base - min_offset > u64::from(u32::MAX)
            {
                continue;
            }
            if let Parsed::Batch(v) = parse_batch(&rest[i..]) {
                let at = v.base_offset;
                self.pos += i as u64;
                self.reset();
                return Ok(Some((i as u64, at)));
            }
        }
        Ok(None)
    }

    /// The file from the cursor to its end, as one read sees it: a prefix of what the writer
    /// wrote (a concurrent truncation only makes it shorter).
    fn read_rest(&self) -> Result<Vec<u8>, LogError> {
        let len = self.file.metadata().map_err(io_err(&self.path))?.len();
        let mut rest = vec![0u8; len.saturating_sub(self.pos) as usize];
        let mut got = 0;
        while got < rest.len() {
            let n = self
                .file
                .read_at(&mut rest[got..], self.pos + got as u64)
                .map_err(io_err(&self.path))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        rest.truncate(got);
        Ok(rest)
    }

    /// Whether the bytes at the cursor are damage: in one fresh read, they are not a batch yet a
    /// valid batch (base offset at least `min_offset`) lies past them — a garbage length that
    /// looks like a torn tail. A batch still being written is never damage: the read sees a
    /// prefix of the file, so a later batch in it means this one is whole. The cursor does not
    /// move.
    pub(super) fn damaged_before_valid(&mut self, min_offset: u64) -> Result<bool, LogError> {
        let at = self.pos;
        let found = self.resync(min_offset)?.is_some_and(|(skip, _)| skip > 0);
        self.pos = at;
        self.reset();
        Ok(found)
    }

    /// What a fresh read finds at the cursor (buffered bytes may be stale after a concurrent
    /// truncation or be a batch caught mid-write). The cursor does not move.
    pub(super) fn peek_fresh(&mut self) -> Result<Fresh, LogError> {
        let at = self.pos;
        self.reset();
        let fresh = match self.next_batch()? {
            Next::Batch(_) => Fresh::Batch,
            Next::End => Fresh::Incomplete,
            Next::Corrupt => Fresh::Corrupt,
        };
        self.pos = at;
        self.reset();
        Ok(fresh)
    }

    /// Whether the last read left bytes at the cursor that do not make a batch (yet).
    pub(super) fn has_partial(&self) -> bool {
        self.end > self.start
    }

    /// Bytes of the file from the cursor to its current end.
    pub(super) fn remaining(&self) -> Result<u64, LogError> {
        let len = self.file.metadata().map_err(io_err(&self.path))?.len();
        Ok(len.saturating_sub(self.pos))
    }

    /// Forgets buffered bytes (after the end was reached, to re-read fresh data).
    pub(super) fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}
