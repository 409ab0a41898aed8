//! Reference tables: what the business knows about its merchants, cards and currencies, joined
//! to the stream (`CREATE TABLE merchants (…) WITH (connector = 'file', path = …)`).
//!
//! A side input on the data's path: a table is read whole (a file), held as one Arrow batch,
//! and swapped for a new [`Snapshot`] when its source changes; the lookup join
//! (`operators/lookup_join.rs`) builds its index from the snapshot it sees and rebuilds it when
//! the [`ReferenceTable::version`] moves on.
//!
//! Two views of a table:
//! * **all versions** (what `FOR SYSTEM_TIME AS OF p.event_time` joins): every row, in load
//!   order; with a `PRIMARY KEY` and a `valid_from TIMESTAMP` column, the rows of one key are
//!   its versions, each valid from its `valid_from` until the next one's.
//! * **current contents** (a plain `JOIN`): with a primary key, one row per key, the latest
//!   version (greatest `valid_from`, the later row on a tie; without `valid_from`, the key's
//!   last row: later rows replace earlier ones); without one, every row.

mod file;
mod log;
mod saved;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};

use crate::decode::Format;
use crate::error::{Error, Result};

/// The column whose time a version of a keyed table is valid from.
pub const VALID_FROM: &str = "valid_from";

/// Where a table's rows come from.
#[derive(Debug, Clone)]
pub enum TableSource {
    /// A CSV (header row), JSON Lines or Parquet file, read whole, read again when it changes.
    File {
        /// The file (relative: to the working directory, as a file source's).
        path: PathBuf,
        /// Its format.
        format: Format,
    },
    /// A topic of the embedded log: a changelog keyed by the primary key (`table/log.rs`).
    Log {
        /// The topic.
        topic: String,
    },
}

/// A `CREATE TABLE`: the table's name, columns, key and source.
#[derive(Debug, Clone)]
pub struct TableDecl {
    /// The name queries join.
    pub name: String,
    /// The declared columns.
    pub schema: SchemaRef,
    /// Indices of the `PRIMARY KEY` columns (empty: a plain set of rows).
    pub primary_key: Vec<usize>,
    /// Where the rows come from.
    pub source: TableSource,
    /// Line of the statement.
    pub line: usize,
}

impl TableDecl {
    /// Index of the `valid_from` column, when the table is keyed and has one of TIMESTAMP type.
    pub fn valid_from(&self) -> Option<usize> {
        if self.primary_key.is_empty() {
            return None;
        }
        let i = self.schema.index_of(VALID_FROM).ok()?;
        matches!(self.schema.field(i).data_type(), DataType::Timestamp(..)).then_some(i)
    }
}

/// One loaded state of a table.
#[derive(Debug)]
pub struct Snapshot {
    /// Every row, in load order (all versions).
    pub all: RecordBatch,
    /// The current contents (see the module's doc).
    pub current: RecordBatch,
    /// The table's version this snapshot is.
    pub version: u64,
    /// For a table over a topic: per row of `all`, its record's time (when its version starts
    /// unless the table has `valid_from`), and whether it deletes its key.
    pub changelog: Option<(Vec<i64>, Vec<bool>)>,
    /// What the source was when these rows were read (see `ReferenceTable::stamp`): saved
    /// with them in checkpoints, so a restored table knows whether its source moved on.
    pub stamp: Option<Vec<u64>>,
}

/// A declared table and its current snapshot.
#[derive(Debug)]
pub struct ReferenceTable {
    decl: TableDecl,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// What the source was when it was last read (a file's modified time and length, a topic's
    /// end offsets): a change reloads it.
    stamp: Mutex<Option<Vec<u64>>>,
    /// The embedded log's directory, for a table over a topic ([`Self::attach_log`]).
    log_dir: Mutex<Option<PathBuf>>,
    /// When the file was last looked at ([`Self::refresh_due`]).
    checked: Mutex<Option<std::time::Instant>>,
    /// Held while the table is read again ([`Self::refresh`]).
    refreshing: Mutex<()>,
    version: AtomicU64,
    /// The last snapshot encoded for a checkpoint, by version (`table/saved.rs`): a table
    /// that did not change is not encoded again.
    saved: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// How often a running query looks whether a table's file changed.
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ReferenceTable {
    /// A table not read yet (it is read by [`Self::load`], or on first use).
    pub fn new(decl: TableDecl) -> Arc<Self> {
        Arc::new(ReferenceTable {
            decl,
            snapshot: RwLock::new(None),
            stamp: Mutex::new(None),
            log_dir: Mutex::new(None),
            checked: Mutex::new(None),
            refreshing: Mutex::new(()),
            version: AtomicU64::new(0),
            saved: Mutex::new(None),
        })
    }

    /// Its declaration.
    pub fn decl(&self) -> &TableDecl {
        &self.decl
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.decl.name
    }

    /// The file it reads, if it reads one.
    pub fn file_path(&self) -> Option<&std::path::Path> {
        match &self.decl.source {
            TableSource::File { path, .. } => Some(path),
            TableSource::Log { .. } => None,
        }
    }

    /// Its declared columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.decl.schema
    }

    /// How many times it has been loaded: a join's index built from an older version is stale.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Where the embedded log is, for a table over one of its topics.
    pub fn attach_log(&self, dir: &std::path::Path) {
        *self.log_dir.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
    }

    fn log_dir(&self) -> Result<PathBuf> {
        self.log_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Config {
                what: format!("table `{}`", self.decl.name),
                message: "it reads a topic of the embedded log, and this command has no log: run the query with `paystream run` (or give replay a --data-dir)".into(),
            })
    }

    /// What the source is now (see `stamp`).
    fn stamp_now(&self) -> Option<Vec<u64>> {
        match &self.decl.source {
            TableSource::File { path, .. } => file_stamp(path),
            TableSource::Log { topic } => log::ends(&self.log_dir().ok()?, topic),
        }
    }

    /// Reads the table from its source now (an error says which table, file and row).
    pub fn load(&self) -> Result<()> {
        match &self.decl.source {
            // The stamp before the read: a change made while reading shows as a change.
            TableSource::File { .. } => {
                let stamp = self.stamp_now();
                self.install(file::read(&self.decl)?, None, stamp)
            }
            TableSource::Log { .. } => {
                let dir = self.log_dir()?;
                let l = log::read(&self.decl, &dir, None)?;
                let all = self.checked_rows(&dir, &l)?;
                self.install(all, Some((l.times, l.deleted)), Some(l.ends))
            }
        }
    }

    /// A topic's rows as the table's, after the checks a file's rows get (keys, NOT NULL,
    /// card numbers; tombstones are only keys).
    fn checked_rows(&self, dir: &std::path::Path, l: &log::Loaded) -> Result<RecordBatch> {
        let upserts: Vec<bool> = l.deleted.iter().map(|d| !d).collect();
        let kept = datafusion::arrow::compute::filter_record_batch(
            &l.all,
            &datafusion::arrow::array::BooleanArray::from(upserts),
        )?;
        file::check(&self.decl, &kept).map_err(|m| Error::Input {
            path: dir.join(self.name()),
            message: crate::decode::redact(&format!("table `{}`: {m}", self.name())),
        })?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.decl.schema),
            l.all.columns().to_vec(),
        )?)
    }

    /// Appends what a topic gained since `before` (its end offsets when last read) to the
    /// table: a changelog only grows, and versions that retention or compaction removed from
    /// the topic since stay in the table (a restored table keeps what its checkpoint saw).
    fn load_since(&self, before: &[u64]) -> Result<()> {
        let dir = self.log_dir()?;
        let l = log::read(&self.decl, &dir, Some(before))?;
        let old = self.snapshot()?;
        let (Some((times, deleted)), true) = (&old.changelog, l.all.num_rows() > 0) else {
            // Nothing that is a row (skipped records): the same table, read further.
            *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = Some(l.ends);
            return Ok(());
        };
        let l = self.without_bad_rows(l)?;
        let new = self.checked_rows(&dir, &l)?;
        let all = datafusion::arrow::compute::concat_batches(&self.decl.schema, [&old.all, &new])?;
        let times = times.iter().chain(&l.times).copied().collect();
        let deleted = deleted.iter().chain(&l.deleted).copied().collect();
        self.install(all, Some((times, deleted)), Some(l.ends))
    }

    /// `l` without the upserts that fail the table's checks (a missing key or NOT NULL value,
    /// a card number), skipped with a warning as records that are no row are: a running table
    /// takes the good records of a window even when one is bad (read whole, at the start, a bad
    /// row stops the run instead).
    fn without_bad_rows(&self, l: log::Loaded) -> Result<log::Loaded> {
        let keep: Vec<bool> = (0..l.all.num_rows())
            .map(|i| l.deleted[i] || file::check(&self.decl, &l.all.slice(i, 1)).is_ok())
            .collect();
        let bad = keep.iter().filter(|k| !**k).count();
        if bad == 0 {
            return Ok(l);
        }
        tracing::warn!(table = %self.decl.name, skipped = bad, "records that fail the table's checks (a missing key or NOT NULL value, or a card number) were skipped");
        fn pick<T: Copy>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| *x)
                .collect()
        }
        let mask = datafusion::arrow::array::BooleanArray::from(keep.clone());
        Ok(log::Loaded {
            all: datafusion::arrow::compute::filter_record_batch(&l.all, &mask)?,
            times: pick(&l.times, &keep),
            deleted: pick(&l.deleted, &keep),
            ends: l.ends,
        })
    }

    /// Reads the table again if its source changed since it was read; whether it did. A file
    /// that cannot be read now (being rewritten) keeps the table as it was; a topic that only
    /// grew is read from where it was.
    pub fn refresh(&self) -> Result<bool> {
        // One refresh at a time: two reading from the same stamp would append twice.
        let _one = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.stamp_now();
        let before = self.stamp.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if now.is_none() || now == before {
            return Ok(false);
        }
        // The same topic (identity first), every partition at or past where it was read.
        let grew = match (&self.decl.source, &before, &now) {
            (TableSource::Log { .. }, Some(b), Some(n)) => {
                b.len() == n.len()
                    && b.first() == n.first()
                    && b.iter().zip(n).skip(1).all(|(b, n)| b <= n)
            }
            _ => false,
        };
        let read = match grew {
            true => self.load_since(&before.as_deref().unwrap_or_default()[1..]),
            false => self.load(),
        };
        if let Err(e) = read {
            // Not read again until it changes again (a fix made since is a change).
            *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = now;
            return Err(e);
        }
        Ok(true)
    }

    /// [`Self::refresh`], at most once per [`REFRESH_INTERVAL`] (a query calls it for every
    /// batch). A file that changed but cannot be read (half written, a bad row) keeps the table
    /// as it was, with a warning: the next change is tried again.
    pub fn refresh_due(&self) {
        {
            let mut at = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match *at {
                Some(t) if now.duration_since(t) < REFRESH_INTERVAL => return,
                _ => *at = Some(now),
            }
        }
        if let Err(e) = self.refresh() {
            // (Load errors are redacted: no card number in a log.)
            tracing::warn!(table = %self.decl.name, "the table's file changed but cannot be read, so the table is kept as it was: {e}");
        }
    }

    /// The current snapshot, reading the table first if it has not been.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>> {
        if let Some(s) = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(Arc::clone(s));
        }
        self.load()?;
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::Internal(format!("table `{}` not loaded", self.decl.name)))
    }

    /// Makes `all` the table's rows, read when its source was `stamp`.
    fn install(
        &self,
        all: RecordBatch,
        changelog: Option<(Vec<i64>, Vec<bool>)>,
        stamp: Option<Vec<u64>>,
    ) -> Result<()> {
        let current = current_rows(&self.decl, &all, changelog.as_ref())?;
        let mut slot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp.clone();
        *slot = Some(Arc::new(Snapshot {
            all,
            current,
            version,
            changelog,
            stamp,
        }));
        Ok(())
    }
}

fn file_stamp(path: &std::path::Path) -> Option<Vec<u64>> {
    let m = std::fs::metadata(path).ok()?;
    let modified = m
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    Some(vec![modified, m.len()])
}

/// The current contents of a table whose rows are `all` (see the module's doc); a topic's
/// rows come with their records' times and deletes.
fn current_rows(
    decl: &TableDecl,
    all: &RecordBatch,
    changelog: Option<&(Vec<i64>, Vec<bool>)>,
) -> Result<RecordBatch> {
    if decl.primary_key.is_empty() || all.num_rows() == 0 {
        return Ok(all.clone());
    }
    let keys: Vec<_> = decl
        .primary_key
        .iter()
        .map(|&i| Arc::clone(all.column(i)))
        .collect();
    let rows = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )?
    .convert_columns(&keys)?;
    // By `valid_from`; else the later row (a topic's: the later record) replaces the earlier.
    let times = match decl.valid_from() {
        Some(i) => Some(timestamps_ms(all.column(i).as_ref())?),
        None => None,
    };
    // Per key, the row of its latest version: the greatest time, the later row on a tie.
    let mut latest: hashbrown::HashMap<&[u8], u32> = hashbrown::HashMap::new();
    for r in 0..all.num_rows() {
        let slot = latest.entry(rows.row(r).data()).or_insert(r as u32);
        let newer = match &times {
            Some(t) => t[r] >= t[*slot as usize],
            None => true,
        };
        if newer {
            *slot = r as u32;
        }
    }
    // A key whose latest version deletes it is gone.
    let mut picked: Vec<u32> = latest
        .into_values()
        .filter(|r| changelog.is_none_or(|(_, d)| !d[*r as usize]))
        .collect();
    picked.sort_unstable();
    Ok(take_record_batch(all, &UInt32Array::from(picked))?)
}

/// A timestamp column's values in milliseconds since the epoch (a null as the earliest time:
/// a version without a start is valid from the beginning).
pub fn timestamps_ms(col: &dyn Array) -> Result<Vec<i64>> {
    use datafusion::arrow::datatypes::{
        TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let DataType::Timestamp(unit, _) = col.data_type() else {
        return Err(Error::Internal(format!(
            "a version time of type {}",
            col.data_type()
        )));
    };
    let scaled = |v: Vec<Option<i64>>, f: fn(i64) -> i64| -> Vec<i64> {
        v.into_iter().map(|x| x.map_or(i64::MIN, f)).collect()
    };
    Ok(match unit {
        TimeUnit::Millisecond => scaled(
            col.as_primitive::<TimestampMillisecondType>()
                .iter()
                .collect(),
            |x| x,
        ),
        TimeUnit::Second => scaled(
            col.as_primitive::<TimestampSecondType>().iter().collect(),
            |x| x.saturating_mul(1000),
        ),
        TimeUnit::Microsecond => scaled(
            col.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect(),
            |x| x.div_euclid(1000),
        ),
        TimeUnit::Nanosecond => scaled(
            col.as_primitive::<TimestampNanosecondType>()
                .iter()
                .collect(),
            |x| x.div_euclid(1_000_000),
        ),
    })
}

/// Reads every table of `tables` now, so a missing or bad file stops a run before it starts.
pub fn load_all(tables: &[Arc<ReferenceTable>]) -> Result<()> {
    tables.iter().try_for_each(|t| t.load())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn decl(path: PathBuf, key: bool) -> TableDecl {
        TableDecl {
            name: "merchants".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("merchant_id", DataType::Utf8, !key),
                Field::new("risk_tier", DataType::Utf8, true),
                Field::new(VALID_FROM, crate::schema::timestamp_type(), true),
            ])),
            primary_key: if key { vec![0] } else { vec![] },
            source: TableSource::File {
                path,
                format: Format::Csv,
            },
            line: 1,
        }
    }

    fn column(b: &RecordBatch, i: usize) -> Vec<String> {
        b.column(i)
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or("NULL").to_string())
            .collect()
    }

    #[test]
    fn a_keyed_table_has_every_version_and_its_current_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        // Columns in another order than declared, and one more.
        std::fs::write(
            &path,
            "valid_from,extra,merchant_id,risk_tier\n\
             2026-01-02T00:00:00Z,x,m1,high\n\
             2026-01-01T00:00:00Z,x,m1,low\n\
             2026-01-01T00:00:00Z,x,m2,medium\n",
        )
        .unwrap();
        let t = ReferenceTable::new(decl(path.clone(), true));
        let s = t.snapshot().unwrap();
        assert_eq!(column(&s.all, 0), ["m1", "m1", "m2"]);
        // m1's latest version is the first row (greatest valid_from), not the last.
        assert_eq!(column(&s.current, 1), ["high", "medium"]);
        assert_eq!(s.version, 1);
        // A changed file is read again; an unchanged one is not.
        assert!(!t.refresh().unwrap());
        std::fs::write(&path, "merchant_id,risk_tier\nm3,low\n").unwrap();
        assert!(t.refresh().unwrap());
        let s = t.snapshot().unwrap();
        assert_eq!((column(&s.current, 0), s.version), (vec!["m3".into()], 2));
        assert_eq!(t.version(), 2);
    }

    #[test]
    fn bad_files_are_refused_naming_the_table_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "merchant_id,risk_tier\nm1,low\n,high\n").unwrap();
        let e = ReferenceTable::new(decl(path.clone(), true))
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("table `merchants`") && e.contains("row 2") && e.contains("PRIMARY KEY"),
            "{e}"
        );
        std::fs::write(&path, "merchant_id,risk_tier\nm1,4111111111111111\n").unwrap();
        let e = ReferenceTable::new(decl(path.clone(), false))
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("looks like a card number") && !e.contains("4111"),
            "{e}"
        );
        let e = ReferenceTable::new(decl(dir.path().join("none.csv"), false))
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none.csv") && e.contains("table `merchants`"),
            "{e}"
        );
    }
}
