//! A live result table: the rows a `connector = 'table'` sink emitted, kept in memory for the
//! readers a server has (batch SQL, pgwire, Server-Sent Events), rebuilt from the sink's own
//! topic when the job restarts.
//!
//! ```text
//!  TableSink::write_results ─▶ ResultTable::push ─▶ rows (retained)   ◀── snapshot (SQL, pgwire)
//!                                               └─▶ emitted channel   ──▶ SSE / WebSocket
//!  checkpoint durable ─▶ ResultTable::commit(mark) ─▶ committed channel ─▶ `?committed=true`
//! ```
//! Rows are kept as the JSON the sink writes to its topic (the form every reader sends on),
//! each with the event time it stands for and a sequence number. A windowed (append) table
//! keeps a row until the newest row's time — which the watermark has passed — is more than
//! `retain` past it, and never more than `max_rows`; a changelog table (an updating query,
//! rows keyed by group key) keeps the latest row per key and forgets deleted keys.
//!
//! Readers never block the writer: the channels are bounded broadcasts, and a subscriber that
//! falls behind by more than their capacity is told so ([`Lagged`]) and dropped by its server.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::broadcast;

pub use tokio::sync::broadcast::error::RecvError as Lagged;

/// Rows a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BACKLOG: usize = 16_384;

/// One retained row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Emission order within the table.
    pub seq: u64,
    /// The event time it stands for (a window's end, an event's time), epoch ms.
    pub time: i64,
    /// The row as a JSON object.
    pub json: Arc<str>,
}

/// What a new row does to a changelog table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An append table's row.
    Append,
    /// The key's latest row (insert or update).
    Upsert,
    /// The key is gone.
    Delete,
}

/// A result table (see the module documentation).
#[derive(Debug)]
pub struct ResultTable {
    name: String,
    retain_ms: AtomicI64,
    max_rows: AtomicUsize,
    inner: Mutex<Inner>,
    emitted: broadcast::Sender<Arc<str>>,
    committed: broadcast::Sender<Arc<str>>,
}

#[derive(Debug, Default)]
struct Inner {
    schema: Option<SchemaRef>,
    /// An append table's rows, in emission order.
    rows: VecDeque<Row>,
    /// A changelog table's latest row per key.
    latest: HashMap<Box<[u8]>, Row>,
    /// Rows emitted but not yet committed, for committed subscribers.
    uncommitted: VecDeque<Arc<str>>,
    /// The sequence number of the next row.
    next_seq: u64,
    /// Rows numbered below this are committed.
    committed_seq: u64,
    /// The newest row time seen (the watermark has passed it).
    max_time: i64,
    /// Rows appended since every row was last checked against the retention.
    since_sweep: usize,
}

impl Inner {
    /// Numbers a row and applies it: appended, or its key's latest, or its key forgotten.
    /// Returns its JSON, shared with the table.
    fn apply(&mut self, time: i64, key: Option<&[u8]>, change: Change, json: &[u8]) -> Arc<str> {
        let json: Arc<str> = Arc::from(String::from_utf8_lossy(json));
        let row = Row {
            seq: self.next_seq,
            time,
            json: Arc::clone(&json),
        };
        self.next_seq += 1;
        self.since_sweep += 1;
        self.max_time = self.max_time.max(time);
        match (change, key) {
            (Change::Upsert, Some(k)) => {
                self.latest.insert(k.into(), row);
            }
            (Change::Delete, Some(k)) => {
                self.latest.remove(k);
            }
            _ => self.rows.push_back(row),
        }
        json
    }
}

impl ResultTable {
    /// An empty table named `name` keeping windowed rows `retain_ms` of event time, at most
    /// `max_rows`.
    pub fn new(name: impl Into<String>, retain_ms: i64, max_rows: usize) -> Self {
        ResultTable {
            name: name.into(),
            retain_ms: AtomicI64::new(retain_ms),
            max_rows: AtomicUsize::new(max_rows.max(1)),
            inner: Mutex::new(Inner {
                max_time: i64::MIN,
                ..Inner::default()
            }),
            emitted: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            committed: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }

    /// Keeps windowed rows `retain_ms` of event time, at most `max_rows` (what the sink that
    /// fills it declares).
    pub fn configure(&self, retain_ms: i64, max_rows: usize) {
        self.retain_ms.store(retain_ms, Ordering::Relaxed);
        self.max_rows.store(max_rows.max(1), Ordering::Relaxed);
        self.evict(&mut self.lock());
    }

    /// The table's name (its sink's).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("result table lock")
    }

    /// The schema of its rows, once known.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.lock().schema.clone()
    }

    /// Sets the schema of its rows (the query's output).
    pub fn set_schema(&self, schema: SchemaRef) {
        self.lock().schema = Some(schema);
    }

    /// Rows retained now.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.rows.len() + inner.latest.len()
    }

    /// Rows emitted but not yet committed.
    pub fn uncommitted(&self) -> usize {
        self.lock().uncommitted.len()
    }

    /// Whether no row is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds rows as they are emitted: each its time, its key (a changelog's), what it does
    /// and its JSON. `committed`: they need no checkpoint (a run without checkpoints).
    pub fn push<'a>(
        &self,
        rows: impl IntoIterator<Item = (i64, Option<&'a [u8]>, Change, &'a [u8])>,
        committed: bool,
    ) {
        let mut inner = self.lock();
        for (time, key, change, json) in rows {
            let json = inner.apply(time, key, change, json);
            // No receiver is not an error: nobody is watching.
            let _ = self.emitted.send(Arc::clone(&json));
            if committed {
                let _ = self.committed.send(json);
            } else {
                inner.uncommitted.push_back(json);
            }
        }
        if committed {
            inner.committed_seq = inner.next_seq;
        }
        self.evict(&mut inner);
    }

    fn evict(&self, inner: &mut Inner) {
        let cutoff = inner
            .max_time
            .saturating_sub(self.retain_ms.load(Ordering::Relaxed));
        let max_rows = self.max_rows.load(Ordering::Relaxed);
        while let Some(front) = inner.rows.front() {
            if front.time < cutoff || inner.rows.len() > max_rows {
                inner.rows.pop_front();
            } else {
                break;
            }
        }
        // Rows come nearly in time order (several workers' windows interleave), so an old row
        // can sit behind a newer front: every row is checked once as many rows have come as
        // the table holds, a constant cost per row.
        if inner.since_sweep >= inner.rows.len().max(64) {
            inner.rows.retain(|r| r.time >= cutoff);
            inner.since_sweep = 0;
        }
    }

    /// Where the rows emitted so far end: a checkpoint's pre-commit takes it, its commit
    /// passes it to [`Self::commit`].
    pub fn mark(&self) -> u64 {
        self.lock().next_seq
    }

    /// Rows numbered below `mark` are committed: committed subscribers get them now.
    pub fn commit(&self, mark: u64) {
        let mut inner = self.lock();
        let n = mark.saturating_sub(inner.committed_seq) as usize;
        let n = n.min(inner.uncommitted.len());
        for json in inner.uncommitted.drain(..n) {
            let _ = self.committed.send(json);
        }
        inner.committed_seq = inner.committed_seq.max(mark);
    }

    /// Replaces the contents with committed rows (a restart's, read back from the topic):
    /// `(time, key, change, json)` each, in their order.
    pub fn restore<'a>(
        &self,
        rows: impl IntoIterator<Item = (i64, Option<&'a [u8]>, Change, &'a [u8])>,
    ) {
        // One lock throughout: no reader sees the table half restored. Restored rows are not
        // news: nobody is sent them (a new subscriber asks for them).
        let mut inner = self.lock();
        let schema = inner.schema.take();
        *inner = Inner {
            schema,
            max_time: i64::MIN,
            ..Inner::default()
        };
        for (time, key, change, json) in rows {
            inner.apply(time, key, change, json);
        }
        inner.committed_seq = inner.next_seq;
        self.evict(&mut inner);
    }

    /// The retained rows in emission order (committed ones only, if asked), with a receiver of
    /// every row emitted (or committed) after them: nothing between is missed or repeated.
    pub fn subscribe(&self, committed: bool) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let inner = self.lock();
        let rx = if committed {
            self.committed.subscribe()
        } else {
            self.emitted.subscribe()
        };
        let mut rows = retained(&inner, self.retain_ms.load(Ordering::Relaxed));
        if committed {
            rows.retain(|r| r.seq < inner.committed_seq);
        }
        (rows.into_iter().map(|r| r.json).collect(), rx)
    }

    /// The retained rows now, in emission order, with the schema (for a batch query).
    pub fn snapshot(&self) -> (Option<SchemaRef>, Vec<Arc<str>>) {
        let inner = self.lock();
        let rows = retained(&inner, self.retain_ms.load(Ordering::Relaxed))
            .into_iter()
            .map(|r| r.json)
            .collect();
        (inner.schema.clone(), rows)
    }
}

/// An append table's rows (those the retention keeps: an old row behind a newer one may not
/// be swept yet), or a changelog table's latest rows, in emission order.
fn retained(inner: &Inner, retain_ms: i64) -> Vec<Row> {
    let cutoff = inner.max_time.saturating_sub(retain_ms);
    let mut rows: Vec<Row> = inner
        .rows
        .iter()
        .filter(|r| r.time >= cutoff)
        .cloned()
        .collect();
    if !inner.latest.is_empty() {
        let start = rows.len();
        rows.extend(inner.latest.values().cloned());
        rows[start..].sort_by_key(|r| r.seq);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(t: &ResultTable, rows: &[(i64, &str)], committed: bool) {
        t.push(
            rows.iter()
                .map(|(time, j)| (*time, None, Change::Append, j.as_bytes())),
            committed,
        );
    }

    fn jsons(rows: &[Arc<str>]) -> Vec<&str> {
        rows.iter().map(|r| &**r).collect()
    }

    /// Windowed rows go once the newest row is more than `retain` past them, or beyond
    /// `max_rows`; a row exactly `retain` old stays.
    #[test]
    fn retention_is_in_event_time_and_rows() {
        let t = ResultTable::new("w", 1_000, 100);
        append(&t, &[(1_000, "a"), (1_500, "b")], true);
        append(&t, &[(2_000, "c")], true);
        // 1000 is exactly `retain` before 2000: it stays.
        assert_eq!(jsons(&t.snapshot().1), ["a", "b", "c"]);
        append(&t, &[(2_600, "d")], true);
        assert_eq!(jsons(&t.snapshot().1), ["c", "d"]);
        let t = ResultTable::new("w", i64::MAX, 2);
        append(&t, &[(1, "a"), (2, "b"), (3, "c")], true);
        assert_eq!(jsons(&t.snapshot().1), ["b", "c"]);
        // An old row behind a newer one goes too, by the time as many rows came as are held.
        let t = ResultTable::new("w", 100, 1_000);
        append(&t, &[(1_000, "new"), (10, "old")], true);
        for i in 0..64 {
            append(&t, &[(1_000 + i, "x")], true);
        }
        assert!(!jsons(&t.snapshot().1).contains(&"old"));
        // Readers never see it, swept or not.
        let t = ResultTable::new("w", 100, 1_000);
        append(&t, &[(1_000, "new"), (10, "old")], true);
        assert_eq!(jsons(&t.snapshot().1), ["new"]);
        assert_eq!(t.len(), 2, "not swept yet");
    }

    /// A changelog table keeps the latest row per key, forgets deleted keys, and lists rows
    /// in the order their latest versions were emitted.
    #[test]
    fn a_changelog_keeps_the_latest_row_per_key() {
        let t = ResultTable::new("c", 0, 10);
        let rows = [
            (1, &b"k1"[..], Change::Upsert, &b"k1 v1"[..]),
            (2, b"k2", Change::Upsert, b"k2 v1"),
            (3, b"k1", Change::Upsert, b"k1 v2"),
            (4, b"k3", Change::Upsert, b"k3 v1"),
            (5, b"k2", Change::Delete, b"k2 gone"),
        ];
        t.push(rows.iter().map(|(t, k, c, j)| (*t, Some(*k), *c, *j)), true);
        assert_eq!(jsons(&t.snapshot().1), ["k1 v2", "k3 v1"]);
    }

    /// A subscriber gets the retained rows and then every later row once; a committed
    /// subscriber sees rows only when their checkpoint commits them.
    #[test]
    fn subscribers_miss_nothing_and_committed_ones_wait() {
        let t = ResultTable::new("s", i64::MAX, 100);
        append(&t, &[(1, "r1")], false);
        let (before, mut live) = t.subscribe(false);
        let (none_yet, mut safe) = t.subscribe(true);
        assert_eq!(jsons(&before), ["r1"]);
        assert!(none_yet.is_empty());
        let mark = t.mark();
        append(&t, &[(2, "r2")], false);
        assert_eq!(&*live.try_recv().unwrap(), "r2");
        assert!(safe.try_recv().is_err(), "nothing committed yet");
        t.commit(mark);
        assert_eq!(&*safe.try_recv().unwrap(), "r1");
        assert!(safe.try_recv().is_err(), "r2 waits for the next checkpoint");
        t.commit(t.mark());
        assert_eq!(&*safe.try_recv().unwrap(), "r2");
        assert_eq!(jsons(&t.subscribe(true).0), ["r1", "r2"]);
    }

    /// A subscriber that falls behind by more than the backlog is told how far, never blocks
    /// the writer.
    #[test]
    fn a_slow_subscriber_lags_without_blocking() {
        let t = ResultTable::new("s", i64::MAX, 10);
        let (_, mut rx) = t.subscribe(false);
        for i in 0..SUBSCRIBER_BACKLOG + 5 {
            append(&t, &[(i as i64, "x")], true);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
        assert_eq!(t.len(), 10);
    }

    /// A restore replaces the contents with committed rows and tells no subscriber.
    #[test]
    fn a_restore_replaces_the_rows() {
        let t = ResultTable::new("r", i64::MAX, 10);
        append(&t, &[(1, "old")], false);
        let (_, mut rx) = t.subscribe(false);
        t.restore([(5, None, Change::Append, &b"kept"[..])]);
        assert!(rx.try_recv().is_err());
        assert_eq!(jsons(&t.subscribe(true).0), ["kept"]);
    }
}
