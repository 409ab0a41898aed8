//! Servers the process is waiting for: a connector that cannot reach its server (down at
//! start, gone mid-run) registers the wait here while it retries, so the job's status — the
//! `run` status line, `paystream status`, the status file — says what it is waiting for and
//! since when, rather than only a warning in the log.
//!
//! Each wait belongs to the job whose thread waits — the job's name and stop flag are the
//! thread's ([`StopScope`], set by the job; the engine's threads inherit them), so a job's
//! status shows its own waits ([`now_for`]), and a retry loop asks [`give_up`] whether its job
//! was stopped before it sleeps again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One wait: the server (as messages name it, password masked), since when, and the last
/// error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingFor {
    /// The server as messages name it (`rabbitmq amqp://guest:***@host:5672/%2f`).
    pub server: String,
    /// When the wait began (epoch ms).
    pub since_ms: i64,
    /// The last attempt's error, secrets masked.
    pub reason: String,
}

/// A wait in the registry: the job it belongs to (none outside a job), and what it is.
type Entry = (Option<Arc<str>>, WaitingFor);

/// Every wait in progress, by id.
static WAITS: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A wait in progress; dropping it (the server answered, or the connector gave up) ends it.
#[derive(Debug)]
pub(crate) struct Wait {
    id: u64,
    /// When this wait first saw its job stopped.
    stop_seen: std::cell::Cell<Option<std::time::Instant>>,
}

impl Wait {
    /// Begins waiting for `server` (described with its password masked) because of `reason`.
    pub(crate) fn begin(server: &str, reason: &str) -> Wait {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let job = JOB.with(|s| s.borrow().as_ref().map(|t| Arc::clone(&t.name)));
        WAITS.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            (
                job,
                WaitingFor {
                    server: server.to_string(),
                    since_ms: crate::log::producer_now_ms(),
                    reason: reason.to_string(),
                },
            ),
        );
        Wait {
            id,
            stop_seen: std::cell::Cell::new(None),
        }
    }

    /// The latest reason (the error of the last attempt).
    pub(crate) fn reason(&self, reason: &str) {
        if let Some(w) = WAITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.id)
        {
            w.1.reason = reason.to_string();
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        WAITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Records the wait for `server` in `slot` (beginning it, or updating its reason).
pub(crate) fn note(slot: &mut Option<Wait>, server: &str, reason: &str) {
    match slot {
        Some(w) => w.reason(reason),
        None => *slot = Some(Wait::begin(server, reason)),
    }
}

/// The job a thread works for: its name and stop flag.
#[derive(Clone)]
pub(crate) struct JobTag {
    name: Arc<str>,
    stop: Arc<AtomicBool>,
}

thread_local! {
    static JOB: RefCell<Option<JobTag>> = const { RefCell::new(None) };
}

/// Makes `job` the one this thread's waits belong to.
pub(crate) fn set_job(job: Option<JobTag>) {
    JOB.with(|s| *s.borrow_mut() = job);
}

/// This thread's job, for a thread it starts.
pub(crate) fn job() -> Option<JobTag> {
    JOB.with(|s| s.borrow().clone())
}

/// The thread works for job `name` (stopped by `stop`) for as long as the value lives; the
/// previous job is restored after.
pub(crate) struct StopScope(Option<JobTag>);

impl StopScope {
    pub(crate) fn new(name: &str, stop: &Arc<AtomicBool>) -> StopScope {
        let previous = job();
        set_job(Some(JobTag {
            name: name.into(),
            stop: Arc::clone(stop),
        }));
        StopScope(previous)
    }
}

impl Drop for StopScope {
    fn drop(&mut self) {
        set_job(self.0.take());
    }
}

/// How long a wait goes on after its job was stopped: a stop's final checkpoint rides out a
/// brief hiccup, but a server that stays away does not hold the stop for minutes.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the retry loop of `wait` should give up: its job was stopped [`GRACE`] ago (or
/// more) while it waited.
pub(crate) fn give_up(wait: &Option<Wait>) -> bool {
    let Some(w) = wait.as_ref().filter(|_| stopped()) else {
        return false;
    };
    let seen = w.stop_seen.get().unwrap_or_else(std::time::Instant::now);
    w.stop_seen.set(Some(seen));
    seen.elapsed() >= GRACE
}

/// Whether the job this thread works for was stopped.
pub(crate) fn stopped() -> bool {
    JOB.with(|s| {
        s.borrow()
            .as_ref()
            .is_some_and(|t| t.stop.load(Ordering::Relaxed))
    })
}

/// The servers job `job` waits for now (and those waited for outside any job), one entry per
/// server (the longest wait), by server.
pub(crate) fn now_for(job: &str) -> Vec<WaitingFor> {
    let mut by_server: BTreeMap<String, WaitingFor> = BTreeMap::new();
    let waits = WAITS.lock().unwrap_or_else(|e| e.into_inner());
    let mine = waits
        .values()
        .filter(|(j, _)| j.as_deref().is_none_or(|j| j == job))
        .map(|(_, w)| w);
    for w in mine {
        match by_server.get(&w.server) {
            Some(o) if o.since_ms <= w.since_ms => {}
            _ => {
                by_server.insert(w.server.clone(), w.clone());
            }
        }
    }
    by_server.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_shows_on_its_job_until_it_is_dropped() {
        let server = "rabbitmq amqp://guest:***@127.0.0.1:1/%2f (waiting test)";
        let of = |job: &str| {
            now_for(job)
                .into_iter()
                .filter(|w| w.server == server)
                .collect::<Vec<_>>()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let scope = StopScope::new("waiting-test-a", &stop);
        assert!(of("waiting-test-a").is_empty());
        let mut slot = None;
        note(&mut slot, server, "Connection refused");
        note(&mut slot, server, "timed out");
        let w = of("waiting-test-a");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].reason, "timed out");
        assert!(of("waiting-test-b").is_empty(), "another job's status");
        // A thread the job starts works for it too.
        let inherited = crate::engine::spawn("waiting-test", || job().map(|j| j.name.to_string()))
            .join()
            .unwrap();
        assert_eq!(inherited.as_deref(), Some("waiting-test-a"));
        assert!(!give_up(&slot));
        stop.store(true, Ordering::Relaxed);
        assert!(!give_up(&slot), "a stop has its grace");
        drop(slot);
        assert!(of("waiting-test-a").is_empty());
        drop(scope);
        assert!(job().is_none());
    }
}
