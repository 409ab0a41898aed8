//! Transactions on sink topics: what a `read_committed` reader may see.
//!
//! A query writing a sink topic appends its results as they come, but they only become visible
//! to `read_committed` readers (the default for `consume` and for queries reading a topic) when
//! the checkpoint that covers them completes. The commit is a marker per partition — the offset
//! up to which records are committed, replaced atomically:
//!
//! ```text
//! <topic>/<partition>/committed      {"offset": N}     records < N are visible
//! ```
//! A partition without a marker was never written transactionally (e.g. by `produce`): all of it
//! is visible. On recovery a query truncates its sink partitions to the offsets its restored
//! checkpoint recorded and re-writes the markers, so records written after the last completed
//! checkpoint are aborted — never seen by a `read_committed` reader — and each result appears
//! exactly once.

use std::path::{Path, PathBuf};

use super::LogError;
use super::topic::write_atomic;

/// What a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Only records of completed transactions (the default).
    #[default]
    ReadCommitted,
    /// Everything appended, including records a recovery may still abort.
    ReadUncommitted,
}

fn marker(dir: &Path) -> PathBuf {
    dir.join("committed")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    offset: u64,
}

/// The committed offset of the partition in `dir`; `None` when it is not transactional.
pub fn committed_offset(dir: &Path) -> Result<Option<u64>, LogError> {
    let path = marker(dir);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<Marker>(&b)
            .map(|m| Some(m.offset))
            .map_err(|e| LogError::Corrupt {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::Io { path, source: e }),
    }
}

/// Commits the partition in `dir` up to `offset` (durably, atomically).
pub fn commit_offset(dir: &Path, offset: u64) -> Result<(), LogError> {
    let json = serde_json::to_vec(&Marker { offset }).expect("marker serializes");
    write_atomic(&marker(dir), &json)
}
