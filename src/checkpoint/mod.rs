//! Checkpoint storage: versioned, checksummed snapshots of a running query, kept in an
//! `object_store`: the local filesystem by default, or an
//! S3-compatible bucket (`s3://bucket/prefix`).
//!
//! ```text
//! <root>/chk-0000000042/state        the query's state (see `job::saved_state`: CRC32C inside)
//! <root>/chk-0000000042/_COMPLETE    {"epoch":42,"bytes":N,"crc32c":C} — written last
//! <root>/savepoints/<name>/state     a named snapshot, same format
//! <root>/savepoints/<name>/_COMPLETE
//! ```
//! A checkpoint becomes the latest only once its `_COMPLETE` marker exists, which is written
//! after the state object is stored (each object is put atomically). Reading back checks the
//! marker, the size and the checksum; a partial or corrupt checkpoint is skipped with a log line
//! and the previous one is used. Old checkpoints are pruned, keeping the last `keep`.

use std::sync::Arc;

use datafusion::object_store::aws::AmazonS3Builder;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use futures::TryStreamExt;

use crate::error::{Error, Result};

/// Where checkpoints of one query live.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    /// Local directory behind the store, when it is the filesystem (for fsync).
    local: Option<std::path::PathBuf>,
    rt: tokio::runtime::Runtime,
    keep: usize,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Complete {
    epoch: u64,
    bytes: u64,
    crc32c: u32,
}

fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    let e = e.to_string();
    // With no credentials in the environment, the S3 client falls back to the cloud instance
    // metadata endpoint; off a cloud instance that answers with an opaque 403 or a timeout.
    let hint = if e.contains("169.254.169.254") || e.contains("instance metadata") {
        ". No S3 credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_REGION; AWS_ENDPOINT=http://host:port for MinIO or another S3-compatible server, AWS_ALLOW_HTTP=true for plain http)"
    } else {
        ""
    };
    Error::State {
        operator: "checkpoint store".into(),
        message: format!("{what}: {e}{hint}"),
    }
}

impl CheckpointStore {
    /// Checkpoints in the directory `dir` (created if missing), keeping the last `keep`.
    ///
    /// A `file://` URL or a plain path is the local filesystem; `s3://bucket/prefix` an
    /// S3-compatible store.
    pub fn open(location: &str, keep: usize) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| store_err("runtime", e))?;
        let dir = match location.split_once("://") {
            None => std::path::PathBuf::from(location),
            Some(("file", rest)) => std::path::PathBuf::from(rest),
            Some(("s3", rest)) => return Self::s3(location, rest, rt, keep),
            Some((scheme, _)) => {
                return Err(Error::Config {
                    what: "checkpoint location".into(),
                    message: format!(
                        "`{scheme}://` is not a supported checkpoint store; use a local directory, file:// or s3://"
                    ),
                });
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir.display().to_string(), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| store_err(&dir.display().to_string(), e))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| store_err(&dir.display().to_string(), e))?;
        Ok(CheckpointStore {
            store: Arc::new(store),
            root: StorePath::from(""),
            local: Some(dir),
            rt,
            keep: keep.max(1),
        })
    }

    /// An S3-compatible bucket: `s3://bucket/prefix`, configured from the usual `AWS_*`
    /// environment variables (`AWS_ENDPOINT` for another S3-compatible server; plain `http://`
    /// endpoints are allowed).
    fn s3(url: &str, rest: &str, rt: tokio::runtime::Runtime, keep: usize) -> Result<Self> {
        let prefix = rest
            .split_once('/')
            .map_or("", |(_, p)| p.trim_matches('/'));
        let mut b = AmazonS3Builder::from_env().with_url(url);
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_default();
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
        }
        let store = b.build().map_err(|e| Error::Config {
            what: "checkpoint location".into(),
            message: format!("{url}: {e}"),
        })?;
        Ok(CheckpointStore {
            store: Arc::new(store),
            root: StorePath::from(prefix),
            local: None,
            rt,
            keep: keep.max(1),
        })
    }

    fn path(&self, parts: &[&str]) -> StorePath {
        let mut p = self.root.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    fn put(&self, parts: &[&str], bytes: Vec<u8>) -> Result<()> {
        let path = self.path(parts);
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map_err(|e| store_err(&format!("writing {path}"), e))?;
        // The store renames atomically; make it durable too when it is a local disk.
        if let Some(dir) = &self.local {
            let file = parts.iter().fold(dir.clone(), |d, p| d.join(p));
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&file)
                .and_then(|_| sync(file.parent().expect("in a directory")))
                .map_err(|e| store_err(&format!("syncing {}", file.display()), e))?;
        }
        Ok(())
    }

    fn get(&self, parts: &[&str]) -> Result<Option<Vec<u8>>> {
        let path = self.path(parts);
        let r = self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(datafusion::object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| store_err(&format!("reading {path}"), e))
    }

    fn write_at(&self, dir: &[&str], epoch: u64, bytes: Vec<u8>) -> Result<()> {
        let complete = Complete {
            epoch,
            bytes: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        let mut state = dir.to_vec();
        state.push("state");
        self.put(&state, bytes)?;
        let mut marker = dir.to_vec();
        marker.push("_COMPLETE");
        self.put(&marker, serde_json::to_vec(&complete).expect("serializes"))
    }

    fn read_at(&self, dir: &[&str]) -> Result<Option<(u64, Vec<u8>)>> {
        let mut marker = dir.to_vec();
        marker.push("_COMPLETE");
        let Some(m) = self.get(&marker)? else {
            return Ok(None);
        };
        let m: Complete = serde_json::from_slice(&m)
            .map_err(|e| store_err(&format!("{} marker", dir.join("/")), e))?;
        let mut state = dir.to_vec();
        state.push("state");
        let bytes = self
            .get(&state)?
            .ok_or_else(|| store_err(&dir.join("/"), "the state object is missing"))?;
        if bytes.len() as u64 != m.bytes || crc32c::crc32c(&bytes) != m.crc32c {
            return Err(store_err(
                &dir.join("/"),
                "the state does not match its checksum: torn or corrupt",
            ));
        }
        Ok(Some((m.epoch, bytes)))
    }

    fn epochs(&self) -> Result<Vec<u64>> {
        let listed = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&self.root)))
            .map_err(|e| store_err("listing checkpoints", e))?;
        let mut epochs: Vec<u64> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// The highest checkpoint number in the store, complete or not (0: none). A run numbers its
    /// checkpoints after it, whatever it restored, so an older state is never taken for newer.
    pub fn newest_epoch(&self) -> Result<u64> {
        Ok(self.epochs()?.last().copied().unwrap_or(0))
    }

    /// Stores checkpoint `epoch`, then prunes old ones.
    pub fn write(&self, epoch: u64, bytes: Vec<u8>) -> Result<()> {
        let name = format!("chk-{epoch:010}");
        self.write_at(&[&name], epoch, bytes)?;
        self.prune()
    }

    /// The newest complete, intact checkpoint: `(epoch, state bytes)`. Damaged ones are skipped
    /// with a warning.
    pub fn latest(&self) -> Result<Option<(u64, Vec<u8>)>> {
        for epoch in self.epochs()?.into_iter().rev() {
            let name = format!("chk-{epoch:010}");
            match self.read_at(&[&name]) {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => tracing::warn!(
                    checkpoint = %name,
                    "checkpoint is incomplete (no _COMPLETE marker); using the previous one"
                ),
                Err(e) => tracing::warn!(
                    checkpoint = %name,
                    error = %e,
                    "checkpoint is corrupt; using the previous one"
                ),
            }
        }
        Ok(None)
    }

    /// Deletes all but the newest `keep` checkpoints.
    pub fn prune(&self) -> Result<()> {
        let epochs = self.epochs()?;
        let n = epochs.len().saturating_sub(self.keep);
        for epoch in &epochs[..n] {
            let dir = self.path(&[&format!("chk-{epoch:010}")]);
            let r = self.rt.block_on(async {
                let objects: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
                for o in objects {
                    self.store.delete(&o.location).await?;
                }
                Ok::<_, datafusion::object_store::Error>(())
            });
            r.map_err(|e| store_err("pruning", e))?;
            if let Some(local) = &self.local {
                let _ = std::fs::remove_dir(local.join(format!("chk-{epoch:010}")));
            }
        }
        Ok(())
    }

    /// Stores a named savepoint.
    pub fn write_savepoint(&self, name: &str, epoch: u64, bytes: Vec<u8>) -> Result<()> {
        self.write_at(&["savepoints", name], epoch, bytes)
    }

    /// The names of the savepoints stored, sorted.
    pub fn savepoints(&self) -> Result<Vec<String>> {
        let dir = self.path(&["savepoints"]);
        let listed = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&dir)))
            .map_err(|e| store_err("listing savepoints", e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| Some(p.filename()?.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads a named savepoint.
    pub fn savepoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.read_at(&["savepoints", name])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_intact_checkpoint_wins_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(dir.path().to_str().unwrap(), 3).unwrap();
        assert!(s.latest().unwrap().is_none());
        for e in 1..=5u64 {
            s.write(e, vec![e as u8; 100]).unwrap();
        }
        assert_eq!(s.epochs().unwrap(), vec![3, 4, 5]);
        assert_eq!(s.latest().unwrap().unwrap(), (5, vec![5; 100]));
        // A torn state file: the previous checkpoint is used.
        std::fs::write(dir.path().join("chk-0000000005/state"), [5u8; 40]).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().0, 4);
        // A checkpoint without its marker (crash mid-write) is not the latest either.
        std::fs::remove_file(dir.path().join("chk-0000000004/_COMPLETE")).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().0, 3);
        s.write_savepoint("before-upgrade", 3, vec![1, 2, 3])
            .unwrap();
        assert_eq!(
            s.savepoint("before-upgrade").unwrap().unwrap(),
            (3, vec![1, 2, 3])
        );
        assert!(s.savepoint("nope").unwrap().is_none());
        assert_eq!(s.savepoints().unwrap(), vec!["before-upgrade".to_string()]);
        assert!(CheckpointStore::open("gopher://x", 3).is_err());
    }

    /// Issue 13.12: no credentials is said in words, with the variables to set.
    #[test]
    fn missing_s3_credentials_are_named_not_a_bare_403() {
        let e = store_err(
            "listing checkpoints",
            "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token: 403 Forbidden",
        )
        .to_string();
        assert!(
            e.contains("No S3 credentials were found") && e.contains("AWS_ACCESS_KEY_ID"),
            "{e}"
        );
        let other = store_err("listing checkpoints", "bucket does not exist").to_string();
        assert!(!other.contains("credentials"), "{other}");
    }
}
