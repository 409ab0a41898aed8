//! The sink side of a checkpoint: what [`super::Sink::pre_commit`] hands the checkpoint.
//!
//! ```text
//!  barrier ─▶ Sink::pre_commit(epoch): records durable, not visible ─▶ Prepared { offsets, commits }
//!          ─▶ checkpoint written (state + source positions + Prepared.offsets)   ← the commit point
//!          ─▶ Prepared.commits run: the records become visible (markers moved, parts renamed)
//! ```
//! A crash before the checkpoint is durable rolls back to the previous one (the sink's
//! recovery discards what was pre-committed after it); a crash after it rolls forward (recovery
//! makes visible what the checkpoint covers). Each commit action is idempotent.

use std::collections::BTreeMap;

use crate::error::Result;

/// A sink's second phase: makes what it pre-committed visible. Runs after the checkpoint is
/// durable, possibly on another thread while the run goes on.
pub type CommitAction = Box<dyn FnOnce() -> Result<()> + Send>;

/// Where a checkpointed job restarts from, for [`super::Sink::recover`].
#[derive(Debug, Clone, Copy)]
pub struct Recovery<'a> {
    /// The restored checkpoint's number (0: none; the part files of an emptied sink start
    /// over from the reset's number).
    pub epoch: u64,
    /// The sink topics' end offsets it recorded (empty without one: a topic is then aligned
    /// to its last committed marker).
    pub offsets: &'a BTreeMap<String, Vec<u64>>,
}

/// What the sinks pre-committed for one checkpoint.
pub struct Prepared {
    /// When phase one began (the checkpoint's duration counts from it).
    pub started: std::time::Instant,
    /// Per sink topic, the end offset of each partition: what the checkpoint records, so a
    /// recovery to it truncates the topic back there.
    pub offsets: BTreeMap<String, Vec<u64>>,
    /// The commit actions, one per transactional target (a topic, a part-file directory),
    /// keyed by it: sinks sharing a target give one action.
    pub commits: BTreeMap<String, CommitAction>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("offsets", &self.offsets)
            .field("commits", &self.commits.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            started: std::time::Instant::now(),
            offsets: BTreeMap::new(),
            commits: BTreeMap::new(),
        }
    }
}

impl Prepared {
    /// Adds what another sink pre-committed (this one's start is kept: the earlier).
    pub fn merge(&mut self, other: Prepared) {
        self.started = self.started.min(other.started);
        self.offsets.extend(other.offsets);
        for (k, c) in other.commits {
            self.commits.entry(k).or_insert(c);
        }
    }

    /// Runs every commit action, in target order.
    pub fn commit(self) -> Result<()> {
        self.commits.into_values().try_for_each(|c| c())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::log::{FsyncPolicy, Log, Producer, TopicConfig, committed_offset};
    use crate::sink::{PartFileSink, PartFiles, Sink, TopicSink};

    /// Phase one makes records durable and records where they end, but only the commit action
    /// moves the committed marker; two sinks of one topic give one action; a part-file sink's
    /// part appears only on commit.
    #[test]
    fn pre_commit_hides_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        log.create_topic("out", &TopicConfig::default()).unwrap();
        let producer = Arc::new(Mutex::new(Producer::new(
            log.writer("out", FsyncPolicy::Never).unwrap(),
            None,
        )));
        let mut a = TopicSink::transactional("out", Arc::clone(&producer), log.clone());
        let mut b = TopicSink::transactional("out", producer, log.clone());
        a.write_record(b"{\"n\":1}").unwrap();
        b.write_record(b"{\"n\":2}").unwrap();
        let files = Arc::new(Mutex::new(
            PartFiles::open(&dir.path().join("parts").join("rows")).unwrap(),
        ));
        let mut c = PartFileSink::new(Arc::clone(&files));
        c.write_record(b"{\"n\":3}").unwrap();

        let mut prepared = a.pre_commit(1).unwrap();
        prepared.merge(b.pre_commit(1).unwrap());
        prepared.merge(c.pre_commit(1).unwrap());
        assert_eq!(prepared.offsets["out"], vec![2]);
        assert_eq!(prepared.commits.len(), 2, "{prepared:?}");
        let marker = log.partition_dir("out", 0);
        assert_eq!(committed_offset(&marker).unwrap(), None);
        let committed = files.lock().unwrap().committed(1);
        assert!(!committed.exists());

        prepared.commit().unwrap();
        assert_eq!(committed_offset(&marker).unwrap(), Some(2));
        assert_eq!(std::fs::read_to_string(&committed).unwrap(), "{\"n\":3}\n");

        // Checkpoint 2 pre-committed but never written: recovery to 1 discards its records.
        a.write_record(b"{\"n\":4}").unwrap();
        c.write_record(b"{\"n\":5}").unwrap();
        let lost = {
            let mut p = a.pre_commit(2).unwrap();
            p.merge(c.pre_commit(2).unwrap());
            p
        };
        assert_eq!(lost.offsets["out"], vec![3]);
        drop((a, b, c, lost));
        let offsets: std::collections::BTreeMap<String, Vec<u64>> =
            [("out".to_string(), vec![2])].into();
        let to = crate::sink::Recovery {
            epoch: 1,
            offsets: &offsets,
        };
        let producer = Arc::new(Mutex::new(Producer::new(
            log.writer("out", FsyncPolicy::Never).unwrap(),
            None,
        )));
        let mut a = TopicSink::transactional("out", Arc::clone(&producer), log.clone());
        a.recover(&to).unwrap();
        assert_eq!(producer.lock().unwrap().end_offsets(), vec![2]);
        assert_eq!(committed_offset(&marker).unwrap(), Some(2));
        let files = Arc::new(Mutex::new(
            PartFiles::open(&dir.path().join("parts").join("rows")).unwrap(),
        ));
        PartFileSink::new(Arc::clone(&files)).recover(&to).unwrap();
        let f = files.lock().unwrap();
        assert_eq!(f.committed_parts().unwrap(), vec![1]);
        assert!(!f.committed(2).exists());
    }
}
