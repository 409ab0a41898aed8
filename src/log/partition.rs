//! A partition: an ordered run of segments in one directory, rolled by size.
//!
//! ```text
//! <dir>/00000000000000000000.log   offsets 0 ..
//! <dir>/00000000000000004096.log   offsets 4096 ..   (the active segment, appended to)
//! ```
//! Segments are named by their base offset. Only the active (last) segment can have a torn tail
//! after a crash, and opening it truncates that tail; a gap between earlier segments means the
//! disk lost data, and opening fails rather than skipping it.

use std::path::{Path, PathBuf};

use super::segment::{NewRecord, Record, Segment, SegmentError};

/// An error of a partition.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// A segment failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The directory could not be read or created.
    #[error("log partition {path}: {source}")]
    Io {
        /// The partition directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Segments do not follow each other.
    #[error(
        "log partition {path}: segment {segment} starts at offset {base} but the previous one ends at {expected}; the partition lost data and cannot be opened safely"
    )]
    Gap {
        /// The partition directory.
        path: PathBuf,
        /// The segment file that does not follow.
        segment: String,
        /// Its base offset.
        base: u64,
        /// Where the previous segment ended.
        expected: u64,
    },
}

/// An open partition.
pub struct Partition {
    dir: PathBuf,
    segments: Vec<Segment>,
    segment_bytes: u64,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

impl Partition {
    /// Opens (or creates) the partition in `dir`; the active segment rolls once it holds
    /// `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, PartitionError> {
        let io = |source| PartitionError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        for base in bases {
            if let Some(prev) = segments.last()
                && prev.next_offset() != base
            {
                return Err(PartitionError::Gap {
                    path: dir.to_path_buf(),
                    segment: format!("{base:020}.log"),
                    base,
                    expected: prev.next_offset(),
                });
            }
            segments.push(Segment::open(&segment_path(dir, base), base)?);
        }
        Ok(Partition {
            dir: dir.to_path_buf(),
            segments,
            segment_bytes: segment_bytes.max(1),
        })
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.segments[0].base_offset()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a partition has a segment")
    }

    /// Appends records as one batch, rolling to a new segment first if the active one is full.
    pub fn append(&mut self, records: &[NewRecord<'_>], sync: bool) -> Result<u64, PartitionError> {
        if self.active().size() >= self.segment_bytes {
            let base = self.next_offset();
            self.segments
                .push(Segment::open(&segment_path(&self.dir, base), base)?);
        }
        let last = self.segments.last_mut().expect("a partition has a segment");
        Ok(last.append(records, sync)?)
    }

    /// Reads up to `max` records from `offset`, across segments.
    pub fn read(&self, offset: u64, max: usize) -> Result<Vec<Record>, PartitionError> {
        let mut out = Vec::new();
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let mut from = offset.max(self.start_offset());
        for seg in &self.segments[first..] {
            if out.len() >= max {
                break;
            }
            let got = seg.read(from, max - out.len())?;
            if let Some(last) = got.last() {
                from = last.offset + 1;
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// The first offset holding a record at or after `timestamp`, if any.
    pub fn offset_for_time(&self, timestamp: i64) -> Option<u64> {
        self.segments
            .iter()
            .find_map(|s| s.offset_for_time(timestamp))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn rolls_segments_and_reads_across_them_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut values: Vec<Vec<u8>> = Vec::new();
        {
            let mut p = Partition::open(dir.path(), 2_000).unwrap();
            for _ in 0..120 {
                let batch: Vec<Vec<u8>> = (0..rng.random_range(1..10))
                    .map(|_| (0..rng.random_range(1..60)).map(|_| rng.random()).collect())
                    .collect();
                let recs: Vec<NewRecord<'_>> = batch
                    .iter()
                    .map(|v| NewRecord {
                        key: None,
                        value: v,
                        timestamp: values.len() as i64,
                    })
                    .collect();
                assert_eq!(p.append(&recs, false).unwrap(), values.len() as u64);
                values.extend(batch);
            }
            assert!(
                p.segment_count() > 3,
                "segments rolled: {}",
                p.segment_count()
            );
        }
        let p = Partition::open(dir.path(), 2_000).unwrap();
        assert_eq!(p.next_offset(), values.len() as u64);
        for _ in 0..200 {
            let from = rng.random_range(0..values.len() as u64 + 2);
            let max = rng.random_range(1..100);
            let got = p.read(from, max).unwrap();
            let want: Vec<&Vec<u8>> = values.iter().skip(from as usize).take(max).collect();
            assert_eq!(
                got.iter().map(|r| &r.value).collect::<Vec<_>>(),
                want,
                "from {from} max {max}"
            );
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, r)| r.offset == from + i as u64)
            );
        }
        // Timestamps rise with offsets here: everything before the found offset is older.
        let all = p.read(0, usize::MAX).unwrap();
        for t in [0, 17, 250, all.last().unwrap().timestamp] {
            let o = p.offset_for_time(t).unwrap() as usize;
            assert!(all[..o].iter().all(|r| r.timestamp < t), "t {t}");
            assert!(all[o].timestamp >= t, "t {t}");
        }
        assert_eq!(p.offset_for_time(all.last().unwrap().timestamp + 1), None);
    }

    #[test]
    fn a_missing_middle_segment_is_an_error_not_a_silent_gap() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut p = Partition::open(dir.path(), 10).unwrap();
            for i in 0..5u8 {
                p.append(
                    &[NewRecord {
                        key: None,
                        value: &[i; 20],
                        timestamp: 0,
                    }],
                    false,
                )
                .unwrap();
            }
            assert_eq!(p.segment_count(), 5);
        }
        std::fs::remove_file(dir.path().join(format!("{:020}.log", 2))).unwrap();
        let err = Partition::open(dir.path(), 10)
            .err()
            .expect("a gap must fail")
            .to_string();
        assert!(err.contains("lost data"), "{err}");
    }
}
