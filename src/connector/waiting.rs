//! Servers the process is waiting for: a connector that cannot reach its server (down at
//! start, gone mid-run) registers the wait here while it retries, so the job's status — the
//! `run` status line, `paystream status`, the status file — says what it is waiting for and
//! since when, rather than only a warning in the log.
//!
//! The registry is the process's: a server several jobs of one process share is one entry.
//! A wait also ends when its job is stopped (Ctrl-C, SIGTERM, a server's stop): the job's stop
//! flag is this thread's ([`set_stop`]; the engine's threads inherit it), and a retry loop
//! asks [`stopped`] before it sleeps again.

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

static WAITS: Mutex<BTreeMap<u64, WaitingFor>> = Mutex::new(BTreeMap::new());
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
        WAITS.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            WaitingFor {
                server: server.to_string(),
                since_ms: crate::log::producer_now_ms(),
                reason: reason.to_string(),
            },
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
            w.reason = reason.to_string();
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

thread_local! {
    static STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Makes `stop` (a job's stop flag) the one waits on this thread end on.
pub(crate) fn set_stop(stop: Option<Arc<AtomicBool>>) {
    STOP.with(|s| *s.borrow_mut() = stop);
}

/// [`set_stop`] for as long as the value lives, the previous flag restored after.
pub(crate) struct StopScope(Option<Arc<AtomicBool>>);

impl StopScope {
    pub(crate) fn new(stop: &Arc<AtomicBool>) -> StopScope {
        let previous = stop_flag();
        set_stop(Some(Arc::clone(stop)));
        StopScope(previous)
    }
}

impl Drop for StopScope {
    fn drop(&mut self) {
        set_stop(self.0.take());
    }
}

/// This thread's stop flag, for a thread it starts.
pub(crate) fn stop_flag() -> Option<Arc<AtomicBool>> {
    STOP.with(|s| s.borrow().clone())
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
    STOP.with(|s| {
        s.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    })
}

/// The servers waited for now, one entry per server (the longest wait), by server.
pub(crate) fn now() -> Vec<WaitingFor> {
    let mut by_server: BTreeMap<String, WaitingFor> = BTreeMap::new();
    for w in WAITS.lock().unwrap_or_else(|e| e.into_inner()).values() {
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
    fn a_wait_shows_until_it_is_dropped() {
        let server = "rabbitmq amqp://guest:***@127.0.0.1:1/%2f (waiting test)";
        let mine = || {
            now()
                .into_iter()
                .filter(|w| w.server == server)
                .collect::<Vec<_>>()
        };
        assert!(mine().is_empty());
        let mut slot = None;
        note(&mut slot, server, "Connection refused");
        note(&mut slot, server, "timed out");
        let w = mine();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].reason, "timed out");
        drop(slot);
        assert!(mine().is_empty());
    }
}
