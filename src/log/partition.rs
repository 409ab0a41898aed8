//! A partition: an ordered run of segments in one directory. One writer appends and rolls; any
//! number of readers (threads or processes) read by offset and tail new batches.
//!
//! ```text
//! <topic>/<partition>/00000000000000000000.log (.index, .timeindex)   offsets 0 ..
//! <topic>/<partition>/00000000000000004096.log (.index, .timeindex)   offsets 4096 .. (active)
//! ```
//! Segments are named by their base offset. Only the active (last) segment can have a torn tail
//! after a crash, and opening the writer truncates it; a gap between segments means the disk lost
//! data, and opening fails rather than skipping it. Retention deletes whole sealed segments,
//! oldest first. A compacted topic's partitions are not subject to retention: compaction (see
//! `compact`) rewrites sealed segments instead, leaving gaps between batches inside a segment
//! (never between segments: a compacted segment's end marker says where it ends).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::batch::{BatchBuilder, Parsed, RecordRef, end_marker, parse_batch, view_checked};
use super::compact::{self, CompactStats, Compaction};
use super::segment::{
    Fresh, Next, SegmentCursor, SegmentWriter, io_err, position_hint, read_offset_index,
    read_time_index, segment_path,
};
use super::txn::{Isolation, committed_offset};
use super::{FsyncPolicy, LogError};

/// Base offsets of the segments in `dir`, ascending.
pub(super) fn segment_bases(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Retention of a topic: sealed segments older than `max_age` (by last write) or beyond
/// `max_bytes` per partition are deleted, oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    /// Maximum age of a segment's last write, ms; `None` keeps forever.
    pub max_age_ms: Option<u64>,
    /// Maximum bytes per partition; `None` for no limit.
    pub max_bytes: Option<u64>,
}

/// A sealed segment of the writer: its base offset and size in bytes.
pub(super) struct Sealed {
    pub(super) base: u64,
    pub(super) size: u64,
}

/// The single writer of a partition.
pub struct PartitionWriter {
    dir: PathBuf,
    sealed: Vec<Sealed>,
    active: SegmentWriter,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    last_sync: Instant,
    dirty: bool,
    retention: Retention,
    /// Set for a compacted topic: compaction instead of retention when a segment rolls.
    compaction: Option<Compaction>,
    /// Sealed segments ending at or before this offset were compacted by the last pass.
    cleaned: u64,
}

impl PartitionWriter {
    /// Opens (or creates) the partition in `dir` for appending, recovering a torn tail; the active
    /// segment rolls once it holds `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64, fsync: FsyncPolicy) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        compact::recover_temps(dir)?;
        let mut bases = segment_bases(dir)?;
        if bases.is_empty() {
            bases.push(0);
        }
        let mut last = *bases.last().expect("non-empty");
        if let Some(end) = valid_end_past_damage(dir, last)? {
            // Damage inside the active segment with valid batches after it: truncating at the
            // damage would destroy acknowledged records. Seal the segment as it is (readers
            // report the damage, or skip it with --skip-corrupt) and append to a new one.
            tracing::warn!(
                segment = %segment_path(dir, last, "log").display(),
                next_segment = end,
                "the active segment is damaged but valid batches follow the damage; sealing it as it is and appending to a new segment (readers stop at the damage unless told to skip it with --skip-corrupt)"
            );
            bases.push(end);
            last = end;
        }
        let active = SegmentWriter::open(dir, last)?;
        let mut sealed = Vec::with_capacity(bases.len());
        for pair in bases.windows(2) {
            let path = segment_path(dir, pair[0], "log");
            let size = std::fs::metadata(&path).map_err(io_err(&path))?.len();
            sealed.push(Sealed {
                base: pair[0],
                size,
            });
        }
        check_contiguous(dir, &bases)?;
        Ok(PartitionWriter {
            dir: dir.to_path_buf(),
            sealed,
            active,
            segment_bytes: segment_bytes.max(1),
            fsync,
            last_sync: Instant::now(),
            dirty: false,
            retention: Retention::default(),
            compaction: None,
            cleaned: compact::cleaned_offset(dir)?,
        })
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.active.next_offset()
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.sealed.first().map_or(self.active.base(), |s| s.base)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Bytes stored.
    pub fn size(&self) -> u64 {
        self.sealed.iter().map(|s| s.size).sum::<u64>() + self.active.size()
    }

    /// Appends the batch, assigning its offsets; returns the first. The batch is cleared. The
    /// records are written to the OS when this returns, and durable per the fsync policy.
    pub fn append(&mut self, batch: &mut BatchBuilder) -> Result<u64, LogError> {
        if batch.is_empty() {
            return Ok(self.next_offset());
        }
        if !batch.within_limit() {
            // Written, it would read as damage (a garbage length) and lose what follows it.
            return Err(LogError::Invalid(format!(
                "refusing to append a batch of {} bytes to {}: batches are limited to {} bytes; send fewer or smaller records per batch",
                batch.byte_len(),
                self.dir.display(),
                super::MAX_BATCH_BYTES
            )));
        }
        if self.active.size() >= self.segment_bytes {
            self.roll()?;
        }
        let base = self.next_offset();
        let bytes = batch.seal(base);
        // Valid by construction: the builder framed it; only debug builds check again.
        debug_assert!(matches!(parse_batch(bytes), Parsed::Batch(_)));
        let view = view_checked(bytes);
        self.active.append(bytes, &view)?;
        batch.clear();
        self.dirty = true;
        match self.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync()?,
            _ => {}
        }
        Ok(base)
    }

    /// Retention applied whenever a segment rolls.
    pub fn set_retention(&mut self, r: Retention) {
        self.retention = r;
    }

    /// Makes the partition compacted (`Some`): when a segment rolls, compaction runs instead of
    /// retention, which no longer deletes anything.
    pub fn set_compaction(&mut self, c: Option<Compaction>) {
        self.compaction = c;
    }

    fn roll(&mut self) -> Result<(), LogError> {
        self.active.sync()?;
        let next = SegmentWriter::open(&self.dir, self.next_offset())?;
        let old = std::mem::replace(&mut self.active, next);
        self.sealed.push(Sealed {
            base: old.base(),
            size: old.size(),
        });
        sync_dir(&self.dir)?;
        self.maintain()
    }

    /// The periodic upkeep, run when a segment rolls and when a topic's writer opens: retention,
    /// or for a compacted partition a compaction pass when enough new sealed data is waiting.
    /// A compaction that fails is reported and retried at the next roll: the records are all
    /// still there, and appending goes on.
    pub(super) fn maintain(&mut self) -> Result<(), LogError> {
        let Some(policy) = self.compaction else {
            let r = self.retention;
            self.apply_retention(&r)?;
            return Ok(());
        };
        let due = compact::due(
            &self.sealed,
            self.active.base(),
            super::txn::committed_offset(&self.dir)?,
            self.cleaned,
        );
        if due && let Err(e) = self.compact(&policy) {
            tracing::warn!(partition = %self.dir.display(), "compaction skipped, to be retried when the next segment rolls (or run `paystream topic compact`): {e}");
        }
        Ok(())
    }

    /// Compacts the sealed segments now (see `compact`): each key's latest record stays, and
    /// segments with nothing to remove are left as they are.
    pub fn compact(&mut self, policy: &Compaction) -> Result<CompactStats, LogError> {
        self.active.flush_indexes()?;
        // The pass drops records superseded by later ones, some of them maybe only in the
        // active segment: those must be on disk before what they supersede goes.
        self.active.sync()?;
        let (stats, cleaned) =
            compact::compact_partition(&self.dir, &mut self.sealed, self.active.base(), policy)?;
        self.cleaned = cleaned;
        Ok(stats)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.active.sync()?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Hands buffered index entries to the OS; syncs if the interval policy is due.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.active.flush_indexes()?;
        if let FsyncPolicy::Interval(d) = self.fsync
            && self.last_sync.elapsed() >= d
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Removes every record at or after `offset`, which must be a batch boundary at or after the
    /// first stored offset: aborts what a transaction wrote after its last commit.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        if offset >= self.next_offset() {
            return Ok(());
        }
        if offset < self.start_offset() {
            return Err(LogError::Invalid(format!(
                "cannot truncate {} to offset {offset}: retention already deleted it",
                self.dir.display()
            )));
        }
        self.active.flush_indexes()?;
        let bases = segment_bases(&self.dir)?;
        let keep = bases
            .iter()
            .copied()
            .filter(|b| *b <= offset)
            .max()
            .unwrap_or(0);
        let mut c = SegmentCursor::open(segment_path(&self.dir, keep, "log"), 0)?;
        let mut pos = 0u64;
        let mut kept_end = keep;
        while let Next::Batch(v) = c.next_batch()? {
            if v.base_offset >= offset {
                break;
            }
            if v.next_offset() > offset {
                return Err(LogError::Invalid(format!(
                    "cannot truncate {} to offset {offset}: it is inside a batch",
                    self.dir.display()
                )));
            }
            pos += v.framed_len as u64;
            kept_end = v.next_offset();
        }
        // `offset` in a compacted segment's gap: an end marker keeps the next offset there.
        let marker = (kept_end < offset).then(|| end_marker(offset));
        for b in bases.iter().filter(|b| **b > keep) {
            for ext in ["index", "timeindex", "log"] {
                let p = segment_path(&self.dir, *b, ext);
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let path = segment_path(&self.dir, keep, "log");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_len(pos)?;
                if let Some(m) = &marker {
                    std::os::unix::fs::FileExt::write_all_at(&f, m, pos)?;
                }
                f.sync_all()
            })
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        if self.cleaned > offset {
            // Offsets from `offset` on are written again, uncompacted. Below it, compaction may
            // already have removed a key's record that a removed later one superseded (an older
            // savepoint restored into a compacted sink): the replay writes that key again only
            // if its value changes again.
            tracing::warn!(partition = %self.dir.display(), offset, compacted_to = self.cleaned, "truncating a compacted partition below where compaction ran: keys whose latest record before this offset was removed stay absent until the replay writes them again");
            compact::set_cleaned_offset(&self.dir, offset)?;
        }
        tracing::info!(partition = %self.dir.display(), offset, "truncated (aborted uncommitted records)");
        let (retention, compaction) = (self.retention, self.compaction);
        *self = PartitionWriter::open(&self.dir, self.segment_bytes, self.fsync)?;
        self.retention = retention;
        self.compaction = compaction;
        Ok(())
    }

    /// Deletes sealed segments beyond the retention; returns how many.
    pub fn apply_retention(&mut self, r: &Retention) -> Result<usize, LogError> {
        let mut deleted = 0;
        let now = SystemTime::now();
        while let Some(first) = self.sealed.first() {
            let path = segment_path(&self.dir, first.base, "log");
            let too_old = r.max_age_ms.is_some_and(|age| {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d > Duration::from_millis(age))
            });
            let too_big = r.max_bytes.is_some_and(|max| self.size() > max);
            if !(too_old || too_big) {
                break;
            }
            for ext in ["index", "timeindex", "log"] {
                let p = segment_path(&self.dir, first.base, ext);
                if let Err(e) = std::fs::remove_file(&p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(io_err(&p)(e));
                }
            }
            tracing::info!(partition = %self.dir.display(), base = first.base, "retention deleted a segment");
            self.sealed.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        let _ = self.active.flush_indexes();
        if self.fsync != FsyncPolicy::Never {
            let _ = self.sync();
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Sealed segments must follow each other. One that ends short of the next (damage, or a lost
/// file) is reported and left for readers to refuse or skip (`--skip-corrupt`): appending to the
/// active segment makes nothing worse. Segments that overlap cannot be told apart: an error.
fn check_contiguous(dir: &Path, bases: &[u64]) -> Result<(), LogError> {
    for pair in bases.windows(2) {
        let end = sealed_end(dir, pair[0])?;
        if end < pair[1] {
            tracing::warn!(
                partition = %dir.display(),
                segment = %format!("{:020}.log", pair[0]),
                lost_offsets = %format!("{end}..{}", pair[1]),
                "a sealed segment is damaged or missing records; readers stop there unless told to skip the damage (--skip-corrupt)"
            );
        } else if end != pair[1] {
            return Err(LogError::Gap {
                path: dir.to_path_buf(),
                segment: format!("{:020}.log", pair[1]),
                base: pair[1],
                expected: end,
            });
        }
    }
    Ok(())
}

/// For a segment with damage that valid batches follow: the offset after its last valid batch.
/// `None` when the segment is intact or its damage is a tail (nothing valid after it).
fn valid_end_past_damage(dir: &Path, base: u64) -> Result<Option<u64>, LogError> {
    let path = segment_path(dir, base, "log");
    if !path.exists() {
        return Ok(None);
    }
    let mut c = SegmentCursor::open(path, 0)?;
    let mut next = base;
    let mut past_damage = false;
    loop {
        let (valid, end) = match c.next_batch()? {
            // A batch past `next` follows a gap compaction left (offsets only grow).
            Next::Batch(v) if v.base_offset >= next => (Some(v.next_offset()), false),
            Next::End => (None, true),
            _ => (None, false),
        };
        if let Some(n) = valid {
            next = n;
            continue;
        }
        if end && c.remaining()? == 0 {
            break;
        }
        match c.resync(next)? {
            Some((skip, at)) => {
                past_damage |= skip > 0;
                next = at;
            }
            None => break,
        }
    }
    Ok(past_damage.then_some(next))
}

/// The offset after the last valid batch of the segment at `base` (scans from its last index
/// entry; a compacted segment's end marker is its last batch).
fn sealed_end(dir: &Path, base: u64) -> Result<u64, LogError> {
    let index = read_offset_index(dir, base);
    let (rel, pos) = index.last().copied().unwrap_or((0, 0));
    let mut c =
        SegmentCursor::open_at_hint(segment_path(dir, base, "log"), u64::from(pos), u64::MAX)?;
    // Where the scan starts: the indexed batch, or the segment's start when the hint was stale.
    let mut next = if c.pos == 0 {
        base
    } else {
        base + u64::from(rel)
    };
    while let Next::Batch(v) = c.next_batch()? {
        next = v.next_offset();
    }
    Ok(next)
}

/// Damaged data a reader in skip mode stepped over (see [`PartitionReader::skip_corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The segment file.
    pub path: PathBuf,
    /// Byte position of the damage in it.
    pub position: u64,
    /// Bytes stepped over.
    pub bytes: u64,
    /// The offsets lost: `from..to` (`to` is `None` for a damaged tail of the active segment,
    /// whose extent is unknown until a writer truncates it).
    pub from: u64,
    /// See `from`.
    pub to: Option<u64>,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(
                f,
                "skipped offsets {}..{} ({} damaged bytes at byte {} of {})",
                self.from,
                to,
                self.bytes,
                self.position,
                self.path.display()
            ),
            None => write!(
                f,
                "skipped a damaged tail from offset {} ({} bytes at byte {} of {}; a writer truncates it when it opens the partition)",
                self.from,
                self.bytes,
                self.position,
                self.path.display()
            ),
        }
    }
}

/// A reader of one partition: reads forward from an offset and sees new batches as they land.
pub struct PartitionReader {
    dir: PathBuf,
    /// Segment bases known, ascending (refreshed when the reader runs off the last one).
    bases: Vec<u64>,
    cursor: Option<(u64, SegmentCursor)>,
    next_offset: u64,
    isolation: Isolation,
    /// The committed offset last read (read_committed): records at or after it are not returned.
    limit: Option<u64>,
    /// Step over damaged batches (reporting them) instead of failing.
    skip_corrupt: bool,
    /// Damage stepped over and not yet taken by [`PartitionReader::take_skipped`].
    skipped: Vec<Skipped>,
    /// The position of a damaged tail already reported (reported once).
    tail_reported: Option<(u64, u64)>,
}

impl PartitionReader {
    /// A reader positioned at `offset` (clamped to the first offset still stored).
    pub fn open(dir: &Path, offset: u64) -> Result<Self, LogError> {
        Self::open_with(dir, offset, Isolation::ReadCommitted)
    }

    /// A reader positioned at `offset` with the given isolation.
    pub fn open_with(dir: &Path, offset: u64, isolation: Isolation) -> Result<Self, LogError> {
        let mut r = PartitionReader {
            dir: dir.to_path_buf(),
            bases: Vec::new(),
            cursor: None,
            next_offset: offset,
            isolation,
            limit: None,
            skip_corrupt: false,
            skipped: Vec::new(),
            tail_reported: None,
        };
        r.seek(offset)?;
        Ok(r)
    }

    /// By default a batch that is complete but fails its checksum is an error
    /// ([`LogError::Corrupt`], naming the file, position and offsets), never silently skipped.
    /// With `skip`, the reader steps over the damage to the next valid batch (or segment) and
    /// reports what it skipped through [`PartitionReader::take_skipped`] and a warning.
    pub fn skip_corrupt(&mut self, skip: bool) {
        self.skip_corrupt = skip;
    }

    /// Damage stepped over since the last call (skip mode only).
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.skipped)
    }

    fn note_skipped(&mut self, s: Skipped) {
        tracing::warn!(partition = %self.dir.display(), "{s}");
        self.skipped.push(s);
    }

    /// Whether a record at the reader's position may be returned yet (read_committed stops at
    /// the committed offset, re-reading the marker when it gets there).
    fn visible(&mut self) -> Result<bool, LogError> {
        if self.isolation == Isolation::ReadUncommitted {
            return Ok(true);
        }
        if self.limit.is_some_and(|l| self.next_offset < l) {
            return Ok(true);
        }
        self.limit = committed_offset(&self.dir)?;
        Ok(self.limit.is_none_or(|l| self.next_offset < l))
    }

    /// The offset of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// The first offset still stored.
    pub fn start_offset(&mut self) -> Result<u64, LogError> {
        self.bases = segment_bases(&self.dir)?;
        Ok(self.bases.first().copied().unwrap_or(0))
    }

    /// Moves to `offset`. An offset before the first stored one (deleted by retention) moves to
    /// the first stored one.
    pub fn seek(&mut self, offset: u64) -> Result<(), LogError> {
        self.bases = segment_bases(&self.dir)?;
        let Some(&first) = self.bases.first() else {
            self.cursor = None;
            self.next_offset = offset;
            return Ok(());
        };
        let offset = if offset < first {
            tracing::warn!(partition = %self.dir.display(), requested = offset, first, "offset no longer stored (retention); reading from the first stored offset");
            first
        } else {
            offset
        };
        let i = self.bases.partition_point(|b| *b <= offset) - 1;
        let base = self.bases[i];
        let index = read_offset_index(&self.dir, base);
        let pos = position_hint(&index, base, offset);
        self.cursor = Some((
            base,
            SegmentCursor::open_at_hint(segment_path(&self.dir, base, "log"), pos, offset)?,
        ));
        // An offset in a compacted segment's gap: the next record read is the first after it.
        self.next_offset = offset;
        Ok(())
    }

    /// Moves to the first record (in offset order) with a timestamp at or after `ts`, as Kafka's
    /// offsets-for-times does, or to the end when every record is older.
    pub fn seek_time(&mut self, ts: i64) -> Result<(), LogError> {
        let bases = segment_bases(&self.dir)?;
        for &base in &bases {
            let tindex = read_time_index(&self.dir, base);
            let oindex = read_offset_index(&self.dir, base);
            let k = tindex.partition_point(|(before, _)| *before < ts);
            let (pos, at) = match k.checked_sub(1) {
                Some(k) => {
                    let at = base + u64::from(tindex[k].1);
                    (position_hint(&oindex, base, at), at)
                }
                None => (0, base),
            };
            let mut c = SegmentCursor::open_at_hint(segment_path(&self.dir, base, "log"), pos, at)?;
            while let Next::Batch(v) = c.next_batch()? {
                // An end marker (count 0) holds no record to land on.
                if v.count > 0 && v.max_timestamp >= ts {
                    let at = v
                        .records()
                        .find(|r| r.timestamp >= ts)
                        .map_or(v.base_offset, |r| r.offset);
                    return self.seek(at);
                }
            }
        }
        let end = self.end_offset()?;
        self.seek(end)
    }

    /// The end this reader can reach: the committed offset for read_committed (when the
    /// partition is transactional), else the end of what is written.
    pub fn visible_end_offset(&self) -> Result<u64, LogError> {
        let end = self.end_offset()?;
        if self.isolation == Isolation::ReadCommitted
            && let Some(c) = committed_offset(&self.dir)?
        {
            return Ok(end.min(c));
        }
        Ok(end)
    }

    /// The offset after the last complete batch written so far.
    pub fn end_offset(&self) -> Result<u64, LogError> {
        let bases = segment_bases(&self.dir)?;
        match bases.last() {
            Some(&b) => sealed_end(&self.dir, b),
            None => Ok(0),
        }
    }

    /// Reads the next complete batch and calls `f` for each of its records at or after the
    /// reader's position. Returns the number of records passed, 0 at the (current) end.
    pub fn poll(&mut self, mut f: impl FnMut(RecordRef<'_>)) -> Result<usize, LogError> {
        if !self.visible()? {
            return Ok(0);
        }
        let limit = if self.isolation == Isolation::ReadCommitted {
            self.limit.unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        loop {
            let Some((base, cursor)) = self.cursor.as_mut() else {
                // Nothing existed when opened; see if the partition has a segment now.
                if segment_bases(&self.dir)?.is_empty() {
                    return Ok(0);
                }
                let at = self.next_offset;
                self.seek(at)?;
                continue;
            };
            let base = *base;
            match cursor.next_batch()? {
                Next::Batch(v) => {
                    if v.next_offset() <= self.next_offset {
                        continue; // before the position (a seek lands on a batch boundary)
                    }
                    let mut n = 0;
                    for r in v.records() {
                        if r.offset >= self.next_offset && r.offset < limit {
                            f(r);
                            n += 1;
                        }
                    }
                    if v.next_offset() > limit {
                        // A commit inside a batch (not written by paystream): come back to the
                        // rest once it is committed.
                        self.seek(limit)?;
                    } else {
                        self.next_offset = v.next_offset();
                        if n == 0 {
                            // A compacted segment's end marker: not the end of the partition
                            // (0 would say it is), read on.
                            continue;
                        }
                    }
                    return Ok(n);
                }
                Next::Corrupt => {
                    // Bytes buffered before a concurrent truncation may be stale: judge the
                    // file as it is now before calling it damaged.
                    match cursor.peek_fresh()? {
                        Fresh::Batch => continue,
                        // Being rewritten after a truncation: wait for the rest.
                        Fresh::Incomplete => return Ok(0),
                        Fresh::Corrupt => {
                            if !self.step_over_damage(base)? {
                                return Ok(0);
                            }
                        }
                    }
                }
                Next::End => {
                    // A later segment means this one is complete: move on to it.
                    self.bases = segment_bases(&self.dir)?;
                    match self.bases.iter().find(|b| **b > base) {
                        Some(&next) if next == self.next_offset => {
                            self.cursor = Some((
                                next,
                                SegmentCursor::open(segment_path(&self.dir, next, "log"), 0)?,
                            ));
                        }
                        Some(_) => {
                            if !self.bases.contains(&base) {
                                // Deleted by retention while we read it.
                                let at = self.next_offset;
                                self.seek(at)?;
                                continue;
                            }
                            // The writer may have appended this segment's last batch and rolled
                            // since we read: look again before calling it damage.
                            if cursor.peek_fresh()? == Fresh::Batch {
                                continue;
                            }
                            // A sealed segment that ends short of the next one (a torn batch,
                            // or a lost segment): damage all the same.
                            if !self.step_over_damage(base)? {
                                return Ok(0);
                            }
                        }
                        None => {
                            if !self.bases.contains(&base) {
                                // Deleted by retention while we read it.
                                let at = self.next_offset;
                                self.seek(at)?;
                                continue;
                            }
                            // Bytes that do not make a batch yet: one being written, or a
                            // damaged length with valid batches after it.
                            if cursor.has_partial()
                                && cursor.damaged_before_valid(self.next_offset)?
                            {
                                if !self.step_over_damage(base)? {
                                    return Ok(0);
                                }
                                continue;
                            }
                            cursor.reset();
                            return Ok(0);
                        }
                    }
                }
            }
        }
    }

    /// Damage at the cursor (in segment `base`): an error, or in skip mode a step to the next
    /// valid batch. Returns whether reading can go on now (false: wait at a damaged tail).
    fn step_over_damage(&mut self, base: u64) -> Result<bool, LogError> {
        let Some((_, cursor)) = self.cursor.as_mut() else {
            return Ok(false);
        };
        let path = cursor.path.clone();
        let position = cursor.pos;
        let from = self.next_offset;
        self.bases = segment_bases(&self.dir)?;
        let next_segment = self.bases.iter().copied().find(|b| *b > base);
        if !self.skip_corrupt {
            let extent = match next_segment {
                Some(next) => format!("offsets {from}..{next} cannot be read"),
                None => format!("records from offset {from} on cannot be read"),
            };
            return Err(LogError::Corrupt {
                path,
                message: format!(
                    "the batch at byte {position} (offset {from}) is damaged: it fails its checksum or framing, so {extent}. `paystream consume TOPIC --skip-corrupt` reads past the damage and names what it skips"
                ),
            });
        }
        if let Some((bytes, at)) = cursor.resync(from)? {
            if bytes == 0 {
                // Whole on a fresh read: it was being written, not damaged.
                return Ok(true);
            }
            self.next_offset = at;
            self.note_skipped(Skipped {
                path,
                position,
                bytes,
                from,
                to: Some(at),
            });
            return Ok(true);
        }
        let bytes = cursor.remaining()?;
        match next_segment {
            Some(next) => {
                self.cursor = Some((
                    next,
                    SegmentCursor::open(segment_path(&self.dir, next, "log"), 0)?,
                ));
                self.next_offset = next;
                self.note_skipped(Skipped {
                    path,
                    position,
                    bytes,
                    from,
                    to: Some(next),
                });
                Ok(true)
            }
            None => {
                if self.tail_reported != Some((base, position)) {
                    self.tail_reported = Some((base, position));
                    self.note_skipped(Skipped {
                        path,
                        position,
                        bytes,
                        from,
                        to: None,
                    });
                }
                Ok(false)
            }
        }
    }
}
