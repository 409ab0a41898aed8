//! Exactly-once file sinks: one part file per checkpoint, committed by atomic rename.
//!
//! ```text
//! <dir>/.<name>.inprogress                  rows since the last checkpoint (never read)
//! <dir>/.<name>.part-0000000007.pending     flushed + fsynced before checkpoint 7 is written
//! <dir>/<name>.part-0000000007.jsonl        renamed once checkpoint 7 is durable: committed
//! ```
//! Readers take the `*.part-*.jsonl` files in name order. Recovery to checkpoint R commits the
//! pending parts up to R (their checkpoint completed; only the rename was lost), deletes pending
//! and committed parts after R and the in-progress file — the same two-phase commit as the sink
//! topics.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::sink::{Prepared, Recovery, Sink, write_batch};

/// Part files of one file sink.
pub struct PartFiles {
    dir: PathBuf,
    name: String,
    file: Option<BufWriter<File>>,
}

/// Part files shared by the sink (writing rows) and the job (committing checkpoints).
pub type SharedPartFiles = Arc<Mutex<PartFiles>>;

impl PartFiles {
    /// Part files named after `path` (its directory is created).
    pub fn open(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Config {
                what: "file sink path".into(),
                message: format!("{} does not name a file", path.display()),
            })?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Self::err(&dir, e))?;
        Ok(PartFiles {
            dir,
            name,
            file: None,
        })
    }

    fn err(path: &Path, e: std::io::Error) -> Error {
        Error::Output {
            target: format!("file sink {}", path.display()),
            source: e,
        }
    }

    fn inprogress(&self) -> PathBuf {
        self.dir.join(format!(".{}.inprogress", self.name))
    }

    fn pending(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!(".{}.part-{epoch:010}.pending", self.name))
    }

    /// The committed part file of checkpoint `epoch`.
    pub fn committed(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("{}.part-{epoch:010}.jsonl", self.name))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.file.is_none() {
            let p = self.inprogress();
            let f = File::create(&p).map_err(|e| Self::err(&p, e))?;
            self.file = Some(BufWriter::with_capacity(1 << 16, f));
        }
        let p = self.inprogress();
        let f = self.file.as_mut().expect("opened above");
        f.write_all(bytes).map_err(|e| Self::err(&p, e))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Self::err(&self.dir, e))
    }

    /// Phase one, before checkpoint `epoch` is written: the rows so far become its pending part.
    pub fn pre_commit(&mut self, epoch: u64) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let p = self.inprogress();
        let f = f.into_inner().map_err(|e| Self::err(&p, e.into_error()))?;
        f.sync_all().map_err(|e| Self::err(&p, e))?;
        std::fs::rename(&p, self.pending(epoch)).map_err(|e| Self::err(&p, e))?;
        self.sync_dir()
    }

    /// Phase two, once checkpoint `epoch` is durable: its pending part becomes visible.
    pub fn commit(&mut self, epoch: u64) -> Result<()> {
        let p = self.pending(epoch);
        if p.exists() {
            std::fs::rename(&p, self.committed(epoch)).map_err(|e| Self::err(&p, e))?;
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Checkpoint numbers of the committed part files, ascending.
    pub fn committed_parts(&self) -> Result<Vec<u64>> {
        let prefix = format!("{}.part-", self.name);
        let mut v: Vec<u64> = std::fs::read_dir(&self.dir)
            .map_err(|e| Self::err(&self.dir, e))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix(&prefix)?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Recovery to checkpoint `restored` (0: none): see the module documentation.
    pub fn recover(&mut self, restored: u64) -> Result<()> {
        self.file = None;
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Self::err(&self.dir, e))?;
        let pending_prefix = format!(".{}.part-", self.name);
        let committed_prefix = format!("{}.part-", self.name);
        for e in rd.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            let epoch_of = |rest: &str, suffix: &str| -> Option<u64> {
                rest.strip_suffix(suffix)?.parse().ok()
            };
            if let Some(rest) = fname.strip_prefix(&pending_prefix)
                && let Some(epoch) = epoch_of(rest, ".pending")
            {
                if epoch <= restored {
                    self.commit(epoch)?;
                } else {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if let Some(rest) = fname.strip_prefix(&committed_prefix)
                && let Some(epoch) = epoch_of(rest, ".jsonl")
                && epoch > restored
            {
                tracing::warn!(file = %e.path().display(), restored, "removing a part committed after the restored checkpoint");
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_file(self.inprogress());
        self.sync_dir()
    }
}

/// A [`Sink`] writing JSON rows into part files.
pub struct PartFileSink {
    files: SharedPartFiles,
    buf: Vec<u8>,
}

impl PartFileSink {
    /// A sink writing into `files`.
    pub fn new(files: SharedPartFiles) -> Self {
        PartFileSink {
            files,
            buf: Vec::with_capacity(1 << 16),
        }
    }
}

impl Sink for PartFileSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.buf.clear();
        write_batch(&mut self.buf, batch);
        self.files.lock().expect("part files lock").write(&self.buf)
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let mut f = self.files.lock().expect("part files lock");
        f.write(json)?;
        f.write(b"\n")
    }

    fn flush(&mut self) -> Result<()> {
        let mut f = self.files.lock().expect("part files lock");
        let p = f.inprogress();
        match f.file.as_mut() {
            Some(w) => w.flush().map_err(|e| PartFiles::err(&p, e)),
            None => Ok(()),
        }
    }

    /// Commits the pending parts the restored checkpoint covers, deletes the later ones.
    fn recover(&mut self, to: &Recovery<'_>) -> Result<()> {
        self.files
            .lock()
            .expect("part files lock")
            .recover(to.epoch)
    }

    /// The rows so far become checkpoint `epoch`'s pending part; its commit renames it.
    fn pre_commit(&mut self, epoch: u64) -> Result<Prepared> {
        let key = {
            let mut f = self.files.lock().expect("part files lock");
            f.pre_commit(epoch)?;
            format!("file {}", f.inprogress().display())
        };
        let files = Arc::clone(&self.files);
        let mut prepared = Prepared::default();
        prepared.commits.insert(
            key,
            Box::new(move || files.lock().expect("part files lock").commit(epoch)),
        );
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_commit_in_two_phases_and_recovery_keeps_exactly_the_restored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("alerts");
        let files: SharedPartFiles = Arc::new(Mutex::new(PartFiles::open(&path).unwrap()));
        let mut sink = PartFileSink::new(Arc::clone(&files));
        sink.write_record(b"{\"a\":1}").unwrap();
        sink.flush().unwrap();
        files.lock().unwrap().pre_commit(1).unwrap();
        files.lock().unwrap().commit(1).unwrap();
        sink.write_record(b"{\"a\":2}").unwrap();
        files.lock().unwrap().pre_commit(2).unwrap(); // checkpoint 2 written, commit lost
        sink.write_record(b"{\"a\":3}").unwrap();
        files.lock().unwrap().pre_commit(3).unwrap(); // checkpoint 3 never completed
        sink.write_record(b"{\"a\":4}").unwrap(); // in progress
        sink.flush().unwrap();
        let mut f = files.lock().unwrap();
        f.recover(2).unwrap();
        let read = |e: u64| {
            std::fs::read_to_string(path.with_file_name(format!("alerts.part-{e:010}.jsonl"))).ok()
        };
        assert_eq!(read(1).as_deref(), Some("{\"a\":1}\n"));
        assert_eq!(read(2).as_deref(), Some("{\"a\":2}\n"));
        assert_eq!(read(3), None);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(f.committed_parts().unwrap(), vec![1, 2]);
        // Rolling back to a savepoint before 2 removes its committed part.
        f.recover(1).unwrap();
        assert_eq!(read(2), None);
        assert_eq!(f.committed_parts().unwrap(), vec![1]);
    }
}
