//! Waiting for a savepoint a running job was asked for (`paystream savepoint JOB` signals the
//! job's process; a server sets the job's flag). The job takes it at its next barrier and names
//! it `<job>-<epoch>`; the asker only knows the store's latest epoch before it asked, so it
//! looks for the first savepoint after that one.

use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointStore;
use crate::error::Result;

/// How waiting for a savepoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointWait {
    /// Taken: its name.
    Taken(String),
    /// The job ended first.
    Ended,
    /// None within the time allowed.
    TimedOut,
}

/// Waits until job `job` has written the savepoint it was asked for after checkpoint `before`
/// (the store's latest epoch when it was asked), while `alive()` says the job still runs, up
/// to `timeout`.
pub fn await_savepoint(
    store: &CheckpointStore,
    job: &str,
    before: u64,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<SavepointWait> {
    let deadline = Instant::now() + timeout;
    let mut epoch = before + 1;
    loop {
        let name = format!("{job}-{epoch}");
        if store.savepoint(&name)?.is_some() {
            return Ok(SavepointWait::Taken(name));
        }
        // Checkpoints taken since are not it: the savepoint is a later epoch.
        if let Some((latest, _)) = store.latest()?
            && latest > epoch
        {
            epoch += 1;
            continue;
        }
        if !alive() {
            return Ok(SavepointWait::Ended);
        }
        if Instant::now() > deadline {
            return Ok(SavepointWait::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_savepoint_after_the_asking_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().display().to_string(), 3).unwrap();
        let wait = |alive: bool| {
            await_savepoint(&store, "j", 1, Duration::from_millis(100), || alive).unwrap()
        };
        assert_eq!(wait(true), SavepointWait::TimedOut);
        assert_eq!(wait(false), SavepointWait::Ended);
        // An older savepoint is not the one asked for, nor a plain checkpoint since.
        store.write(1, b"one".to_vec()).unwrap();
        store.write_savepoint("j-1", 1, b"one".to_vec()).unwrap();
        store.write(2, b"two".to_vec()).unwrap();
        assert_eq!(wait(true), SavepointWait::TimedOut);
        // The savepoint at the checkpoint after those is.
        store.write(3, b"three".to_vec()).unwrap();
        store.write_savepoint("j-3", 3, b"three".to_vec()).unwrap();
        assert_eq!(wait(true), SavepointWait::Taken("j-3".into()));
    }
}
