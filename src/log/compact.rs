//! Log compaction: a compacted topic keeps, per key, the latest record forever, as Kafka's
//! `cleanup.policy=compact` does.
//!
//! **Why.** A changelog (a running GROUP BY's insert/update/delete rows, keyed by the group
//! key) and a reference table read from a topic only need each key's latest row; a
//! changelog's delete row (`"op": "delete"`) is a tombstone too. Age or size
//! retention would delete old keys that were never updated; keeping everything grows without
//! bound. Compaction bounds a topic by its number of live keys instead, so a compacted topic is
//! not subject to retention.
//!
//! **What survives.** A pass over a partition reads every record below the *bound* (below) and
//! notes each key's latest offset. In the sealed segments it may rewrite (never the active one),
//! a record is kept iff it has no key, or it is the latest record of its key. A *tombstone* — a
//! value that is empty or JSON `null`, possibly with whitespace around it, or a JSON object
//! whose `op` is `"delete"` — deletes its key:
//! the records before it go, and it goes too once its segment's last write is older than the
//! topic's `delete_retention_ms` (a consumer that was away for less than that still sees the
//! delete). Offsets never change: a rewritten segment has gaps, one batch per run of surviving
//! offsets of an original batch, and ends with an end marker (see `batch`).
//!
//! **Transactions.** A partition with a `committed` marker (see `txn`) may hold records at or
//! past the committed offset that a recovery will truncate. So the bound is the committed
//! offset: only records below it can supersede an earlier one (an aborted update must not take
//! the committed value with it), and only sealed segments that end at or below it are
//! rewritten (a truncation never touches a compacted segment). A partition without a marker
//! has no bound. A truncation below the committed offset (restoring an older savepoint) cannot
//! bring back records compaction already removed.
//!
//! **How, crash-safe.** Segments are rewritten oldest first, so a crash midway may leave
//! superseded records for the next pass but never an old value whose tombstone is already gone.
//! Each is written to `<base>.log.compacting` with fresh indexes, fsynced, then renamed over the
//! old files, log first; the copy keeps the old log's modification time. A crash leaves either
//! segment whole: opening the partition removes an unfinished copy, or finishes the index
//! renames of one whose log was already swapped ([`recover_temps`]). A reader with the old file
//! open reads it to its end; segments are not merged, so the number of files stays the same.
//!
//! **When.** When a segment rolls (and when a topic's writer opens), if the sealed bytes
//! written since the last pass (`<partition>/compacted` holds where it ended) are at least
//! [`MIN_DIRTY_RATIO`] of the sealed bytes it may rewrite ([`due`]); segments with nothing to
//! remove are not rewritten. An expired tombstone is dropped at the next pass.
//! [`super::TopicWriter::compact`] and `paystream topic compact` run a pass now.
//!
//! **Cost.** A pass reads the partition once to find each key's latest offset, then each
//! segment it may rewrite once more (twice if it rewrites it), and holds each distinct key below
//! the bound in memory once (key bytes plus about 50 bytes). It runs in the writer's thread: the
//! append whose roll triggers it waits for it, which the dirty ratio keeps to a bounded share of
//! the bytes written.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::LogError;
use super::batch::{BatchBuilder, BatchView, RecordRef, end_marker, view_checked};
use super::partition::Sealed;
use super::segment::{
    Next, SegmentCursor, SegmentWriter, TEMP_SUFFIX, io_err, segment_path, temp_path,
};
use super::topic::write_atomic;

/// How long a tombstone stays by default after its segment's last write: a day.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 3_600_000;

/// A pass runs when the sealed bytes written since the last one are at least this share of
/// the sealed bytes it may rewrite (half: each byte is rewritten a bounded number of times).
pub const MIN_DIRTY_RATIO: f64 = 0.5;

/// The compaction settings of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// A tombstone is removed once its segment's last write is at least this old, ms.
    pub delete_retention_ms: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
        }
    }
}

/// What a compaction pass did (summed over partitions for a topic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Sealed segments the pass could rewrite (wholly below the committed offset).
    pub segments: usize,
    /// Of those, the segments rewritten (the others had nothing to remove).
    pub segments_rewritten: usize,
    /// Records left in those segments.
    pub records_kept: u64,
    /// Records removed: superseded ones and expired tombstones.
    pub records_removed: u64,
    /// Of the removed, tombstones (superseded, or past `delete_retention_ms`).
    pub tombstones_removed: u64,
    /// Bytes of those segments before the pass.
    pub bytes_before: u64,
    /// Bytes of those segments after it.
    pub bytes_after: u64,
}

impl std::ops::AddAssign for CompactStats {
    fn add_assign(&mut self, o: Self) {
        self.segments += o.segments;
        self.segments_rewritten += o.segments_rewritten;
        self.records_kept += o.records_kept;
        self.records_removed += o.records_removed;
        self.tombstones_removed += o.tombstones_removed;
        self.bytes_before += o.bytes_before;
        self.bytes_after += o.bytes_after;
    }
}

/// Whether a record's value deletes its key: empty or JSON `null`, whitespace around allowed,
/// or a changelog's delete row (a JSON object whose `op` is `"delete"`, what an updating
/// query writes when a key is gone): without the last, every key a changelog ever had would
/// stay in its topic forever.
pub fn is_tombstone(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    if v.is_empty() || v == b"null" {
        return true;
    }
    // Cheap test first; only a candidate is parsed (a string holding the text is escaped).
    v.first() == Some(&b'{')
        && memchr::memmem::find(v, b"\"delete\"").is_some()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(v).is_ok_and(|o| {
            o.get(crate::sql::CHANGELOG_OP).and_then(|op| op.as_str())
                == Some(crate::sql::OP_DELETE)
        })
}

/// Where the last pass over the partition in `dir` ended (0 before the first).
pub(super) fn cleaned_offset(dir: &Path) -> Result<u64, LogError> {
    let path = dir.join("compacted");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<Marker>(&b)
            .map(|m| m.offset)
            .map_err(|e| LogError::Corrupt {
                path,
                message: format!(
                    "{e}; it only says where the last compaction ended: delete it and the next compaction reads the whole partition"
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Records where the last pass ended (durably, atomically).
pub(super) fn set_cleaned_offset(dir: &Path, offset: u64) -> Result<(), LogError> {
    let json = serde_json::to_vec(&Marker { offset }).expect("marker serializes");
    write_atomic(&dir.join("compacted"), &json)
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    offset: u64,
}

/// The sealed segments and where each ends (the next one's base, or the active segment's).
fn with_ends(sealed: &[Sealed], active_base: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
    (0..sealed.len()).map(move |i| (i, sealed.get(i + 1).map_or(active_base, |n| n.base)))
}

/// Whether a pass is due: sealed segments below `committed` (all without one) that ended after
/// `cleaned` make up at least [`MIN_DIRTY_RATIO`] of those segments' bytes.
pub(super) fn due(
    sealed: &[Sealed],
    active_base: u64,
    committed: Option<u64>,
    cleaned: u64,
) -> bool {
    let bound = committed.unwrap_or(u64::MAX);
    let (mut clean, mut dirty) = (0u64, 0u64);
    for (i, end) in with_ends(sealed, active_base).take_while(|(_, end)| *end <= bound) {
        if end <= cleaned {
            clean += sealed[i].size;
        } else {
            dirty += sealed[i].size;
        }
    }
    dirty > 0 && dirty as f64 >= MIN_DIRTY_RATIO * (clean + dirty) as f64
}

/// Compacts the partition in `dir` (see the module documentation): `sealed` are its sealed
/// segments (sizes updated for those rewritten), `active_base` its active segment. Returns what
/// was done and the offset the pass covered (recorded for [`due`]).
pub(super) fn compact_partition(
    dir: &Path,
    sealed: &mut [Sealed],
    active_base: u64,
    policy: &Compaction,
) -> Result<(CompactStats, u64), LogError> {
    let bound = super::txn::committed_offset(dir)?.unwrap_or(u64::MAX);
    let eligible: Vec<(usize, u64)> = with_ends(sealed, active_base)
        .take_while(|(_, end)| *end <= bound)
        .collect();
    let mut stats = CompactStats::default();
    let Some(&(_, covered)) = eligible.last() else {
        return Ok((stats, cleaned_offset(dir)?));
    };
    let latest = latest_offsets(dir, sealed, active_base, bound)?;
    let now = SystemTime::now();
    for (i, end) in eligible {
        let base = sealed[i].base;
        let path = segment_path(dir, base, "log");
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(io_err(&path))?;
        let expired = now
            .duration_since(modified)
            .unwrap_or(Duration::ZERO)
            .as_millis()
            >= u128::from(policy.delete_retention_ms);
        let keep = |r: &RecordRef<'_>| match r.key {
            None => true,
            Some(k) => latest.get(k) == Some(&r.offset) && !(expired && is_tombstone(r.value)),
        };
        let mut seg = CompactStats {
            segments: 1,
            bytes_before: sealed[i].size,
            ..CompactStats::default()
        };
        for_each_batch(&path, |v| {
            for r in v.records() {
                if keep(&r) {
                    seg.records_kept += 1;
                } else {
                    seg.records_removed += 1;
                    seg.tombstones_removed += u64::from(is_tombstone(r.value));
                }
            }
            Ok(())
        })?;
        if seg.records_removed > 0 {
            sealed[i].size = rewrite(dir, base, end, modified, &keep)?;
            seg.segments_rewritten = 1;
            tracing::info!(
                segment = %path.display(),
                kept = seg.records_kept,
                removed = seg.records_removed,
                bytes_before = seg.bytes_before,
                bytes_after = sealed[i].size,
                "compacted a segment"
            );
        }
        seg.bytes_after = sealed[i].size;
        stats += seg;
    }
    if covered != cleaned_offset(dir)? {
        set_cleaned_offset(dir, covered)?;
    }
    Ok((stats, covered))
}

/// Each key's latest offset below `bound`, over every segment. Every sealed segment must read
/// whole up to the next one's base: a pass over damage could keep a superseded record or drop
/// the latest one, so it refuses.
fn latest_offsets(
    dir: &Path,
    sealed: &[Sealed],
    active_base: u64,
    bound: u64,
) -> Result<HashMap<Vec<u8>, u64>, LogError> {
    let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
    let segments = with_ends(sealed, active_base)
        .map(|(i, end)| (sealed[i].base, Some(end)))
        .chain([(active_base, None)]);
    for (base, end) in segments {
        if base >= bound {
            break;
        }
        let path = segment_path(dir, base, "log");
        let mut next = base;
        for_each_batch(&path, |v| {
            next = v.next_offset();
            for r in v.records().take_while(|r| r.offset < bound) {
                if let Some(k) = r.key {
                    match latest.get_mut(k) {
                        Some(o) => *o = r.offset,
                        None => {
                            latest.insert(k.to_vec(), r.offset);
                        }
                    }
                }
            }
            Ok(())
        })?;
        if let Some(end) = end
            && next != end
        {
            return Err(LogError::Corrupt {
                path,
                message: format!(
                    "cannot compact the partition: this sealed segment ends at offset {next}, not at the next segment's base {end} (records are missing); compaction needs every record readable. `paystream consume TOPIC --skip-corrupt` shows what is lost"
                ),
            });
        }
    }
    Ok(latest)
}

/// Calls `f` with each batch of the segment file at `path`, which must read whole to its end.
fn for_each_batch(
    path: &Path,
    mut f: impl FnMut(&BatchView<'_>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut c = SegmentCursor::open(path.to_path_buf(), 0)?;
    loop {
        let at_end = match c.next_batch()? {
            Next::Batch(v) => {
                f(&v)?;
                continue;
            }
            Next::End => true,
            Next::Corrupt => false,
        };
        if at_end && c.remaining()? == 0 {
            return Ok(());
        }
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "cannot compact the partition: the batch at byte {} is damaged; compaction needs every record readable. `paystream consume TOPIC --skip-corrupt` reads past the damage and names what it skips",
                c.pos
            ),
        });
    }
}

/// Rewrites segment `base` (ending at offset `end`, last written at `modified`) with the
/// records `keep` accepts, then swaps it in; returns its new size.
fn rewrite(
    dir: &Path,
    base: u64,
    end: u64,
    modified: SystemTime,
    keep: &dyn Fn(&RecordRef<'_>) -> bool,
) -> Result<u64, LogError> {
    let path = segment_path(dir, base, "log");
    let mut out = SegmentWriter::create_temp(dir, base)?;
    let mut run = BatchBuilder::with_capacity(1 << 16);
    let mut run_start = 0;
    let flush = |run: &mut BatchBuilder, start: u64, out: &mut SegmentWriter| {
        if run.is_empty() {
            return Ok(());
        }
        let bytes = run.seal(start);
        let v = view_checked(bytes);
        out.append(bytes, &v)?;
        run.clear();
        Ok::<(), LogError>(())
    };
    let written = for_each_batch(&path, |v| {
        for r in v.records() {
            if keep(&r) {
                if run.is_empty() {
                    run_start = r.offset;
                }
                run.push(r.key, r.value, r.timestamp);
            } else {
                flush(&mut run, run_start, &mut out)?;
            }
        }
        // A run never spans two original batches: it stays within the batch size limit.
        flush(&mut run, run_start, &mut out)
    })
    .and_then(|()| {
        let marker = end_marker(end);
        out.append(&marker, &view_checked(&marker))?;
        out.finish_temp(modified)
    });
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            remove_temps(dir, base);
            return Err(e);
        }
    };
    // Log first: until the indexes follow, a reader's index may not fit the new log, which
    // readers check (`SegmentCursor::open_at_hint`); [`recover_temps`] finishes after a crash.
    let tmp = temp_path(dir, base, "log");
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    for ext in ["index", "timeindex"] {
        let (tmp, to) = (temp_path(dir, base, ext), segment_path(dir, base, ext));
        std::fs::rename(&tmp, &to).map_err(io_err(&to))?;
    }
    sync_dir(dir)?;
    Ok(size)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes the copy of segment `base` being written (after a failed rewrite; best effort, the
/// next open removes what is left).
fn remove_temps(dir: &Path, base: u64) {
    // Indexes first: leftover index copies without their log would read as a swap that
    // happened (see `recover_temps`).
    for ext in ["index", "timeindex", "log"] {
        let _ = std::fs::remove_file(temp_path(dir, base, ext));
    }
}

/// Settles what a crash left of a rewrite in the partition `dir` (the writer calls it when it
/// opens): a copy whose log is still `<base>.log.compacting` was not swapped in, so it is
/// removed and the old segment stays; indexes left without it belong to a log already swapped
/// in, so they are renamed into place.
pub(super) fn recover_temps(dir: &Path) -> Result<(), LogError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let suffix = format!(".{TEMP_SUFFIX}");
    let mut bases: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(&suffix)?;
            stem.split('.').next()?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases.dedup();
    for &base in &bases {
        if temp_path(dir, base, "log").exists() {
            tracing::warn!(partition = %dir.display(), base, "removing an unfinished compaction of a segment (the process stopped while writing it); the segment is unchanged");
            for ext in ["log", "index", "timeindex"] {
                let p = temp_path(dir, base, ext);
                if let Err(e) = std::fs::remove_file(&p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(io_err(&p)(e));
                }
            }
        } else {
            for ext in ["index", "timeindex"] {
                let (tmp, to) = (temp_path(dir, base, ext), segment_path(dir, base, ext));
                if tmp.exists() {
                    std::fs::rename(&tmp, &to).map_err(io_err(&to))?;
                }
            }
        }
    }
    if !bases.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}
