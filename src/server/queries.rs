//! The queries a server runs: submitted, kept in the data directory, resumed on restart.
//!
//! ```text
//!  POST /api/queries ─▶ submit::query_text ─▶ Job::prepare (no side effects; 400 on error)
//!                    ─▶ saved in <data-dir>/_serve/queries/<name>.json ─▶ Job::spawn ─▶ running
//!  DELETE           ─▶ stop (final checkpoint) ─▶ stopped (kept, its table still readable)
//!  DELETE again     ─▶ forgotten (its state directory and topics stay: nothing the user made
//!                      is destroyed)
//!  serve restarts   ─▶ every saved query not stopped is spawned again from its checkpoint
//! ```
//! Each query is a job of its own (its own read of its topics, its own checkpoints under
//! `<data-dir>/_queries/<name>`), so a failing query shows its error and stops nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use super::submit::{self, Refusal};
use crate::job::savepoint::{SavepointWait, await_savepoint};
use crate::job::{Job, JobHandle, JobMetrics, JobOptions, JobState};
use crate::log::Log;
use crate::sink::ResultTables;

/// A query as kept in the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedQuery {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) sql: String,
    /// When it was submitted, epoch ms.
    pub(crate) created_ms: i64,
    /// Stopped by the user: not resumed on restart.
    pub(crate) stopped: bool,
}

/// Where a query is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryState {
    Running,
    Stopping,
    Stopped,
    Failed(String),
}

impl QueryState {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            QueryState::Running => "running",
            QueryState::Stopping => "stopping",
            QueryState::Stopped => "stopped",
            QueryState::Failed(_) => "failed",
        }
    }
}

/// A sink of a query, for readers.
#[derive(Debug, Clone)]
pub(crate) struct SinkInfo {
    pub(crate) name: String,
    pub(crate) connector: &'static str,
    /// A result table (its name is the sink's).
    pub(crate) table: bool,
    /// The log topic it writes (a result table's durable copy).
    pub(crate) topic: Option<String>,
    pub(crate) schema: SchemaRef,
    /// An updating query's key columns; `None` when its rows are appended.
    pub(crate) keys: Option<Vec<String>>,
}

struct Entry {
    saved: SavedQuery,
    sinks: Vec<SinkInfo>,
    handle: Option<JobHandle>,
    state: QueryState,
    /// (when, events read) samples over the last ~10 s, for the throughput.
    samples: VecDeque<(Instant, u64)>,
    /// The metrics when the run ended (a stopped query keeps showing them).
    last: Option<JobMetrics>,
}

/// One query as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct QueryView {
    pub(crate) saved: SavedQuery,
    pub(crate) state: QueryState,
    pub(crate) sinks: Vec<SinkInfo>,
    pub(crate) metrics: Option<JobMetrics>,
    /// Events per second over the last 10 s.
    pub(crate) events_per_second: f64,
}

/// Why a request about queries failed.
#[derive(Debug)]
pub(crate) enum QueryError {
    /// The query is invalid (400).
    Invalid(Refusal),
    /// No such query (404).
    NotFound(String),
    /// A conflict with another query (409).
    Conflict(String),
    /// The request cannot be served now (503).
    Unavailable(String),
}

/// The server's queries.
pub(crate) struct Queries {
    data_dir: PathBuf,
    log: Log,
    results: Arc<ResultTables>,
    opts: JobOptions,
    /// The directory submitted queries may read and write files in (canonical).
    files: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Held through a submission: two submissions of one name never both start.
    submitting: Mutex<()>,
    next_id: AtomicU64,
}

impl Queries {
    /// The queries of `data_dir` (none running yet: [`Self::resume`] starts the saved ones).
    pub(crate) fn new(opts: JobOptions, results: Arc<ResultTables>, files: PathBuf) -> Self {
        Queries {
            files,
            data_dir: opts.data_dir.clone(),
            log: Log::new(&opts.data_dir),
            results,
            opts,
            entries: Mutex::new(BTreeMap::new()),
            submitting: Mutex::new(()),
            next_id: AtomicU64::new(1),
        }
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join("_serve").join("queries")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().expect("queries lock")
    }

    fn save(&self, q: &SavedQuery) -> Result<(), QueryError> {
        let dir = self.dir();
        let write = || -> Result<(), String> {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let bytes = serde_json::to_vec_pretty(q).map_err(|e| e.to_string())?;
            crate::log::write_atomic(&dir.join(format!("{}.json", q.name)), &bytes)
                .map_err(|e| e.to_string())
        };
        write().map_err(|e| {
            QueryError::Unavailable(format!(
                "cannot save query {} in {}: {e}",
                q.name,
                dir.display()
            ))
        })
    }

    /// Starts every saved query that was not stopped; a query that no longer prepares shows
    /// its error (failed) and stops nothing else. Returns how many were started.
    pub(crate) fn resume(&self) -> usize {
        let mut saved: Vec<SavedQuery> = std::fs::read_dir(self.dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let bytes = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice::<SavedQuery>(&bytes) {
                    Ok(q) => Some(q),
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), "skipping an unreadable saved query: {err}");
                        None
                    }
                }
            })
            .collect();
        saved.sort_by_key(|q| q.created_ms);
        let mut started = 0;
        for q in saved {
            // Submitted in this process already (before the server ran).
            if self.lock().contains_key(&q.name) {
                continue;
            }
            if let Some(n) = q.id.strip_prefix('q').and_then(|n| n.parse::<u64>().ok()) {
                self.next_id.fetch_max(n + 1, Ordering::Relaxed);
            }
            if q.stopped {
                // Not run, but its tables are shown again as they were.
                let sinks = self
                    .prepare(&q.name, &q.sql)
                    .map(|(_, s)| s)
                    .unwrap_or_default();
                for s in sinks.iter().filter(|s| s.table) {
                    let t = self.results.get_or_create(&s.name);
                    t.set_schema(Arc::clone(&s.schema));
                    if let Some(topic) = &s.topic
                        && self.log.topic_config(topic).is_ok()
                        && let Err(e) = crate::sink::table::rebuild(&self.log, topic, &t)
                    {
                        tracing::warn!(query = %q.name, "cannot read result table {} back: {e}", s.name);
                    }
                }
                self.insert(q, sinks, None, QueryState::Stopped);
                continue;
            }
            match self.prepare(&q.name, &q.sql) {
                Ok((job, sinks)) => {
                    let handle = self.spawn(job, &sinks);
                    self.insert(q, sinks, Some(handle), QueryState::Running);
                    started += 1;
                }
                Err(r) => {
                    self.insert(q, Vec::new(), None, QueryState::Failed(r.error));
                }
            }
        }
        started
    }

    /// Waits until every running query has recovered (its result tables read back from their
    /// topics, its state restored) or ended: until then a subscriber would miss restored rows.
    pub(crate) fn wait_recovered(&self) {
        loop {
            let pending = self.lock().values().any(|e| {
                e.handle.as_ref().is_some_and(|h| {
                    !h.progress().started.load(Ordering::Acquire) && h.state() != JobState::Ended
                })
            });
            if !pending {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn insert(
        &self,
        saved: SavedQuery,
        sinks: Vec<SinkInfo>,
        handle: Option<JobHandle>,
        state: QueryState,
    ) {
        let name = saved.name.clone();
        self.lock().insert(
            name,
            Entry {
                saved,
                sinks,
                handle,
                state,
                samples: VecDeque::new(),
                last: None,
            },
        );
    }

    /// Parses, plans and checks query `name` without side effects.
    fn prepare(&self, name: &str, sql: &str) -> Result<(Job, Vec<SinkInfo>), Refusal> {
        let text = submit::query_text(name, sql, &self.log)?;
        let job =
            Job::prepare(name, "query", &text.text).map_err(|e| submit::refusal(&e, &text))?;
        for path in job.local_files() {
            submit::confined(&path, &self.files, &text)?;
        }
        let sinks = job
            .query_sinks()
            .into_iter()
            .map(|s| SinkInfo {
                table: s.connector.result_table().is_some(),
                topic: s.connector.log_topic().map(str::to_string),
                connector: s.connector.name(),
                name: s.name,
                schema: s.schema,
                keys: s.keys,
            })
            .collect();
        Ok((job, sinks))
    }

    fn spawn(&self, job: Job, sinks: &[SinkInfo]) -> JobHandle {
        // Listed (empty) at once; the sink sets its retention and reads its rows back.
        for s in sinks.iter().filter(|s| s.table) {
            self.results
                .get_or_create(&s.name)
                .set_schema(Arc::clone(&s.schema));
        }
        let mut opts = self.opts.clone();
        opts.results = Some(Arc::clone(&self.results));
        opts.savepoint_request = None;
        job.spawn(opts, None)
    }

    /// Submits query `name`: checked first (nothing starts when it is invalid), then saved and
    /// started. A name already running is a conflict; a stopped or failed one is replaced.
    pub(crate) fn submit(&self, name: &str, sql: &str) -> Result<QueryView, QueryError> {
        if !submit::valid_name(name) {
            return Err(QueryError::Invalid(Refusal {
                error: format!(
                    "invalid query name {name:?}: use lower-case letters, digits and '_', starting with a letter (it names the query's result table, which SQL reads in lower case)"
                ),
                line: None,
                column: None,
            }));
        }
        let _one_at_a_time = self.submitting.lock().expect("submit lock");
        if let Some(e) = self.lock().get(name)
            && matches!(e.state, QueryState::Running | QueryState::Stopping)
        {
            return Err(QueryError::Conflict(format!(
                "query {name} is already running; stop it first (DELETE /api/queries/{name}) or choose another name"
            )));
        }
        let (job, sinks) = self.prepare(name, sql).map_err(QueryError::Invalid)?;
        {
            let entries = self.lock();
            for s in sinks.iter().filter(|s| s.table) {
                if let Some((other, e)) = entries.iter().find(|(n, e)| {
                    n.as_str() != name && e.sinks.iter().any(|o| o.table && o.name == s.name)
                }) {
                    return Err(QueryError::Conflict(format!(
                        "result table {} belongs to query {other} ({}); name the sink otherwise, or delete {other} first",
                        s.name,
                        e.state.label()
                    )));
                }
            }
        }
        let saved = SavedQuery {
            id: format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
            name: name.to_string(),
            sql: sql.to_string(),
            created_ms: crate::log::producer_now_ms(),
            stopped: false,
        };
        self.save(&saved)?;
        let handle = self.spawn(job, &sinks);
        self.insert(saved, sinks, Some(handle), QueryState::Running);
        self.view(name)
            .ok_or_else(|| QueryError::NotFound(name.to_string()))
    }

    /// Notes runs that ended (stopped, or failed with their error) and samples throughput.
    pub(crate) fn tick(&self) {
        let mut entries = self.lock();
        for e in entries.values_mut() {
            let Some(h) = &e.handle else { continue };
            let now = Instant::now();
            let m = h.metrics();
            e.samples.push_back((now, m.read));
            while e
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
            {
                e.samples.pop_front();
            }
            match h.state() {
                JobState::Running => e.state = QueryState::Running,
                JobState::Stopping => e.state = QueryState::Stopping,
                JobState::Ended => {
                    let h = e.handle.take().expect("handle");
                    e.last = Some(h.metrics());
                    e.state = match h.join() {
                        Ok(_) => QueryState::Stopped,
                        Err(err) => {
                            tracing::warn!(query = %e.saved.name, "query failed: {err}");
                            QueryState::Failed(err.to_string())
                        }
                    };
                    e.samples.clear();
                }
            }
        }
    }

    /// Asks query `name` to stop (a final checkpoint) and waits for it; a query already
    /// stopped or failed is forgotten instead. Returns the state after. Blocks: call it off
    /// the runtime.
    pub(crate) fn stop(&self, name: &str) -> Result<&'static str, QueryError> {
        {
            let mut entries = self.lock();
            let e = entries
                .get_mut(name)
                .ok_or_else(|| QueryError::NotFound(name.to_string()))?;
            match &e.handle {
                Some(h) => h.stop(),
                None => {
                    let gone = entries.remove(name).expect("entry");
                    let _ = std::fs::remove_file(self.dir().join(format!("{name}.json")));
                    for s in gone.sinks.iter().filter(|s| s.table) {
                        self.results.remove(&s.name);
                    }
                    return Ok("deleted");
                }
            }
            e.saved.stopped = true;
            let saved = e.saved.clone();
            drop(entries);
            self.save(&saved)?;
        }
        loop {
            self.tick();
            match self.lock().get(name) {
                None => return Ok("deleted"),
                Some(e) if e.handle.is_none() => return Ok(e.state.label()),
                Some(_) => {}
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Takes a savepoint of query `name` and waits for it: its name. Blocks (the checkpoint
    /// store is synchronous): call it off the runtime.
    pub(crate) fn savepoint(&self, name: &str) -> Result<String, QueryError> {
        let store_dir = crate::job::state_dir(&self.data_dir, name).join("checkpoints");
        let store = || {
            crate::checkpoint::CheckpointStore::open(&store_dir.display().to_string(), 3)
                .map_err(|e| QueryError::Unavailable(e.to_string()))
        };
        let before = {
            let entries = self.lock();
            let e = entries
                .get(name)
                .ok_or_else(|| QueryError::NotFound(name.to_string()))?;
            let h = e.handle.as_ref().ok_or_else(|| {
                QueryError::Conflict(format!(
                    "query {name} is {}; a savepoint needs a running query",
                    e.state.label()
                ))
            })?;
            // Epochs go on across restarts: the store's latest, not this run's count.
            let before = store()?.latest().ok().flatten().map_or(0, |(e, _)| e);
            h.savepoint();
            before
        };
        let store = store()?;
        let alive = || {
            self.lock().get(name).is_some_and(|e| {
                e.handle
                    .as_ref()
                    .is_some_and(|h| h.state() != JobState::Ended)
            })
        };
        match await_savepoint(&store, name, before, Duration::from_secs(120), alive) {
            Ok(SavepointWait::Taken(sp)) => Ok(sp),
            Ok(SavepointWait::Ended) => Err(QueryError::Conflict(format!(
                "query {name} ended before its savepoint"
            ))),
            Ok(SavepointWait::TimedOut) => Err(QueryError::Unavailable(format!(
                "query {name} took no savepoint within 2 minutes"
            ))),
            Err(e) => Err(QueryError::Unavailable(e.to_string())),
        }
    }

    fn view_of(e: &Entry) -> QueryView {
        let metrics = e
            .handle
            .as_ref()
            .map(|h| h.metrics())
            .or_else(|| e.last.clone());
        let events_per_second = match (e.samples.front(), e.samples.back()) {
            (Some((t0, r0)), Some((t1, r1))) if t1 > t0 => {
                (r1 - r0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        QueryView {
            saved: e.saved.clone(),
            state: e.state.clone(),
            sinks: e.sinks.clone(),
            metrics,
            events_per_second,
        }
    }

    /// Query `name` now.
    pub(crate) fn view(&self, name: &str) -> Option<QueryView> {
        self.lock().get(name).map(Self::view_of)
    }

    /// The sinks of query `name` (no metrics: nothing is read from disk).
    pub(crate) fn sinks(&self, name: &str) -> Option<Vec<SinkInfo>> {
        self.lock().get(name).map(|e| e.sinks.clone())
    }

    /// Every query now, by name.
    pub(crate) fn views(&self) -> Vec<QueryView> {
        self.lock().values().map(Self::view_of).collect()
    }

    /// Stops every running query (a final checkpoint each) and waits for them.
    pub(crate) fn stop_all(&self) {
        let handles: Vec<(String, JobHandle)> = {
            let mut entries = self.lock();
            entries
                .iter_mut()
                .filter_map(|(n, e)| e.handle.take().map(|h| (n.clone(), h)))
                .collect()
        };
        for (_, h) in &handles {
            h.stop();
        }
        for (name, h) in handles {
            if let Err(e) = h.join() {
                tracing::warn!(query = %name, "query failed while stopping: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GenConfig, generate};
    use crate::log::{FsyncPolicy, Producer, TopicConfig};

    /// After `resume` and `wait_recovered` (what a server does before it says it is ready),
    /// a running query's result table already holds every row it had when the server stopped:
    /// a subscriber or a `SELECT` never sees a table still being read back.
    #[test]
    fn a_resumed_table_is_read_back_before_ready() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        log.create_topic(
            "payments",
            &TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .unwrap();
        let mut events = Vec::new();
        let cfg = GenConfig {
            events: 5_000,
            // About 50 s of event time: most windows close.
            rate: 100.0,
            ..GenConfig::default()
        };
        generate(&cfg, &mut events).unwrap();
        let mut p = Producer::new(log.writer("payments", FsyncPolicy::Never).unwrap(), None);
        p.send_json_lines(&events, 1, &mut |_| {}).unwrap();
        p.finish().unwrap();
        let sql = "SELECT merchant_id, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' SECOND) GROUP BY merchant_id, window_start, window_end";
        let mut opts = JobOptions::new(dir.path());
        opts.workers = Some(1);
        let results = Arc::new(ResultTables::default());
        let q = Queries::new(opts.clone(), Arc::clone(&results), dir.path().into());
        q.submit("per_second", sql).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while q
            .view("per_second")
            .and_then(|v| v.metrics)
            .map_or(0, |m| m.read)
            < 5_000
        {
            assert!(Instant::now() < deadline, "the query never read its events");
            std::thread::sleep(Duration::from_millis(20));
        }
        q.stop_all();
        let rows = results.get("per_second").unwrap().len();
        assert!(rows > 100, "{rows}");

        let results = Arc::new(ResultTables::default());
        let q = Queries::new(opts, Arc::clone(&results), dir.path().into());
        assert_eq!(q.resume(), 1);
        q.wait_recovered();
        assert_eq!(results.get("per_second").unwrap().len(), rows);
        q.stop_all();
    }
}
