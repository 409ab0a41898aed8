//! Jobs: a query file run as a whole — its source, its queries and its sinks — by `paystream run`.
//!
//! ```text
//!  query file ─parse─▶ source + INSERTs + sinks ─plan each SELECT─▶ engine (one source read,
//!                                                                     every query) ─▶ sink topics
//! ```
//! A `log` source runs continuously until stopped (or, with `until_end`, to the topic's current
//! end), taking checkpoints (see [`transactions`]): at each barrier the sinks pre-commit (their
//! records durable, not visible), then the operator and router state, the source offsets and
//! the sink topics' end offsets are written together as one checkpoint (see [`saved_state`]), and only then are the
//! sink records committed to `read_committed` readers and the offsets to the consumer group named
//! after the job. A restart restores the latest checkpoint and rolls the sinks back to it.
//!
//! **Delivery guarantee: exactly-once** for log topics and file sinks of a job over a log
//! source, after a clean stop or a crash. A job over a `file` source appends to its sinks and is
//! at-least-once. What `--reset-state` does with results already committed is [`SinkReset`].
//!
//! [`Job::prepare`] parses, plans and validates a query file without side effects;
//! [`Job::spawn`] runs it behind a [`JobHandle`] (stop, savepoint, live metrics, join).
//! [`load_events`] is `replay FILE --into TOPIC` for CSV and Parquet files.

mod load;
pub mod saved_state;
pub mod savepoint;
mod sink_reset;
pub mod status;
pub mod transactions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use self::load::load_events;

/// A job running on its own thread ([`Job::spawn`]).
pub type JobHandle = crate::engine::RunHandle<JobOutcome>;
/// A live snapshot of a job's counters.
pub type JobMetrics = crate::engine::RunMetrics;
/// Where a spawned job is.
pub type JobState = crate::engine::RunState;
pub use self::sink_reset::SinkReset;

use self::saved_state::SavedState;
use crate::checkpoint::CheckpointStore;
use crate::engine::{
    Checkpoint, Checkpoints, OnStop, Progress, QueryRun, RunOptions, RunSpec, Summary,
};
use crate::error::{Error, Result};
use crate::log::{FsyncPolicy, Log};
use crate::sink::{Recovery, Sink, SinkConnector, SinkContext};
use crate::source::SourceContext;
use crate::sql::query_file::{
    DEAD_LETTERS, EventTimeSettings, LATE_EVENTS, QueryFile, SourceDecl, parse_query_file,
    split_by_source,
};
use crate::sql::{StreamPlan, plan_query_over};
use crate::time::parse_duration_millis;

/// How to run a job.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The embedded log's data directory.
    pub data_dir: PathBuf,
    /// Workers per query (default: the saved state's, else `SET workers`, else all cores).
    pub workers: Option<usize>,
    /// Stop at the source topic's current end (and emit open windows) instead of tailing.
    pub until_end: bool,
    /// Ignore saved state and start from the earliest offsets.
    pub reset_state: bool,
    /// With `reset_state`: what to do with results the job already committed to its sinks
    /// (required when there are any).
    pub sink_reset: Option<SinkReset>,
    /// Durability of sink topics.
    pub fsync: FsyncPolicy,
    /// Rows per decoded batch.
    pub batch_size: usize,
    /// Checkpoint interval (default: `SET checkpoint_interval`, else 10 s).
    pub checkpoint_interval: Option<Duration>,
    /// Where checkpoints go (a directory or `file://` URL; default
    /// `<data-dir>/_queries/<job>/checkpoints`).
    pub checkpoint_location: Option<String>,
    /// Start from this savepoint instead of the latest checkpoint.
    pub from_savepoint: Option<String>,
    /// Set (e.g. by SIGUSR1) to take a savepoint at the next barrier.
    pub savepoint_request: Option<std::sync::Arc<AtomicBool>>,
    /// The live result tables `connector = 'table'` sinks fill (a server's).
    pub results: Option<Arc<crate::sink::ResultTables>>,
}

impl JobOptions {
    /// Defaults for the data directory `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        JobOptions {
            data_dir: data_dir.into(),
            workers: None,
            until_end: false,
            reset_state: false,
            sink_reset: None,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            batch_size: crate::engine::defaults::BATCH_SIZE,
            checkpoint_interval: None,
            checkpoint_location: None,
            from_savepoint: None,
            savepoint_request: None,
            results: None,
        }
    }
}

/// A sink a job's queries write.
pub struct QuerySink {
    /// Its name.
    pub name: String,
    /// What it writes to.
    pub connector: Arc<dyn SinkConnector>,
    /// The rows its (first) query writes.
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    /// An updating query's key columns (its rows are changes to the row of their key, the
    /// last column saying which: insert, update or delete); `None` for appended rows.
    pub keys: Option<Vec<String>>,
}

/// What a job run did.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The job's name (the query file's stem; also its consumer group).
    pub name: String,
    /// Counters of this run.
    pub summary: Summary,
    /// Whether state was restored at the start.
    pub resumed: bool,
    /// Checkpoints taken: (duration, bytes) each, the final one last.
    pub checkpoints: Vec<(Duration, usize)>,
    /// Where the job's dead letters go.
    pub dead_letters: Arc<dyn SinkConnector>,
}

fn config_err(what: &str, message: impl Into<String>) -> Error {
    Error::Config {
        what: what.into(),
        message: message.into(),
    }
}

/// A job's name: its query file's stem, with anything but letters, digits and `-` made `_`. It
/// names the job's state directory and its consumer group.
pub fn job_name(query_file: &Path) -> String {
    query_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The topic a query file's source reads (`None` for a file source), for a caller that watches
/// the job's lag.
pub fn source_topic(query_file: &Path) -> Result<Option<String>> {
    let text = std::fs::read_to_string(query_file).map_err(|e| Error::Input {
        path: query_file.to_path_buf(),
        message: format!("cannot read the query file: {e}"),
    })?;
    let file = parse_query_file(&text)?;
    Ok(file
        .sources
        .first()
        .and_then(|s| s.connector.log_topic().map(str::to_string)))
}

/// The directory where a job keeps its saved state.
pub fn state_dir(data_dir: &Path, job: &str) -> PathBuf {
    data_dir.join("_queries").join(job)
}

/// Runs a query file until it is stopped (log source) or its input ends (file source): reads
/// it, [`Job::prepare`]s it under the file's [`job_name`] and [`Job::run`]s it.
pub fn run_query_file(
    path: &Path,
    opts: &JobOptions,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<JobOutcome> {
    Job::from_file(path)?.run(opts, progress, stop)
}

/// A query file parsed, planned and checked: nothing opened, created or read yet but the text.
/// [`Job::run`] runs it on the calling thread; [`Job::spawn`] on its own, behind a
/// [`JobHandle`].
#[derive(Debug, Clone)]
pub struct Job {
    name: String,
    file: QueryFile,
    /// The sources it reads, sorted by name (several when its queries read several: a union
    /// of different streams), which is the order of its source's streams.
    sources: Vec<SourceDecl>,
    times: EventTimeSettings,
    plans: Vec<(String, StreamPlan)>,
    /// The reference tables its queries may join (`CREATE TABLE`), read when it starts.
    tables: Vec<Arc<crate::table::ReferenceTable>>,
}

impl Job {
    /// Starts the job on a thread of its own. `opts.savepoint_request`, when set, is the flag
    /// [`JobHandle::savepoint`] sets (a signal may set it too); `stop`, when given, is the flag
    /// [`JobHandle::stop`] sets. A job over a log source reports its lag in the metrics.
    pub fn spawn(self, mut opts: JobOptions, stop: Option<Arc<AtomicBool>>) -> JobHandle {
        let savepoint = opts
            .savepoint_request
            .get_or_insert_with(Arc::default)
            .clone();
        // Each source's topic, or `None` for one without (a file: one partition); the source's
        // partitions follow one another in this order.
        let topics: Vec<Option<String>> = self
            .sources
            .iter()
            .map(|s| s.connector.log_topic().map(str::to_string))
            .collect();
        let lag = topics.iter().any(Option::is_some).then(|| {
            let log = Log::new(&opts.data_dir);
            Box::new(move |positions: &crate::source::Positions| {
                let mut lags = crate::source::Positions::new();
                let mut first = 0u32;
                for topic in &topics {
                    let Some(topic) = topic else {
                        first += 1;
                        continue;
                    };
                    let stats = log.partition_stats(topic).ok()?;
                    for s in &stats {
                        let p = first + s.partition;
                        let read = positions.get(&p).copied().unwrap_or(0);
                        lags.insert(p, s.end_offset.saturating_sub(read));
                    }
                    first += stats.len() as u32;
                }
                Some(lags)
            }) as crate::engine::LagProbe
        });
        let name = self.name().to_string();
        let handle = JobHandle::spawn(name, stop.unwrap_or_default(), savepoint, move |p, s| {
            self.run(&opts, p, s)
        });
        match lag {
            Some(l) => handle.with_lag(l),
            None => handle,
        }
    }

    /// Reads and prepares the query file at `path`, named after it ([`job_name`]).
    pub fn from_file(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            message: format!("cannot read the query file: {e}"),
        })?;
        Job::prepare(job_name(path), &path.display().to_string(), &text)
    }

    /// Reads and prepares the query file at `path` as one job per set of sources its queries
    /// read ([`split_by_source`]): a file that is one job is named after the file
    /// ([`job_name`]), each job of a file of several `<file>.<source>` (`<file>.<a>-<b>` for
    /// a job over two sources).
    pub fn from_file_per_source(path: &Path) -> Result<Vec<Job>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            message: format!("cannot read the query file: {e}"),
        })?;
        let origin = path.display().to_string();
        let in_file = |e: Error| match e {
            Error::Plan { position, message } => Error::Plan {
                position: format!("{origin}, {position}"),
                message,
            },
            e => e,
        };
        let shares = split_by_source(&text).map_err(in_file)?;
        let name = job_name(path);
        match shares.as_slice() {
            [one] => Ok(vec![Job::prepare(name, &origin, &one.text)?]),
            _ => shares
                .iter()
                .map(|s| Job::prepare(format!("{name}.{}", s.name()), &origin, &s.text))
                .collect(),
        }
    }

    /// Parses, plans and validates `query_text` (the text of a query file) as job `name`,
    /// without side effects; errors carry `origin` (a file's path), the line and the column.
    pub fn prepare(name: impl Into<String>, origin: &str, query_text: &str) -> Result<Job> {
        let text = query_text;
        let in_file = |e: Error| match e {
            Error::Plan { position, message } => Error::Plan {
                position: format!("{origin}, {position}"),
                message,
            },
            e => e,
        };
        let file = parse_query_file(text).map_err(in_file)?;
        let name = name.into();
        let mut sources = file.sources.clone();
        if sources.is_empty() {
            return Err(in_file(Error::Plan {
                position: "line 1".into(),
                message: "the query file declares no source; add e.g. CREATE SOURCE payments WITH (connector = 'log', topic = 'payments')".into(),
            }));
        }
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        // Settings are checked before anything is opened or created.
        let times = sources
            .iter()
            .map(|s| file.event_time_settings(s))
            .collect::<Result<Vec<_>>>()
            .map_err(in_file)?;
        let times = EventTimeSettings::widest(times);
        let limits = file.window_limits();
        let catalog: Vec<(String, Arc<crate::schema::EventSchema>)> = sources
            .iter()
            .map(|s| (s.name.clone(), Arc::clone(&s.events)))
            .collect();
        let tables: Vec<Arc<crate::table::ReferenceTable>> = file
            .tables
            .iter()
            .map(|t| crate::table::ReferenceTable::new(t.clone()))
            .collect();
        let mut plans: Vec<(String, StreamPlan)> = Vec::new();
        let (mut dense_taken, mut dense_refused) = (false, None);
        for ins in &file.inserts {
            if ins.sink == DEAD_LETTERS || ins.sink == LATE_EVENTS {
                return Err(in_file(Error::Plan {
                    position: format!("line {}", ins.line),
                    message: format!(
                        "`{}` receives rejected or late events; INSERT INTO another sink",
                        ins.sink
                    ),
                }));
            }
            if !file.sinks.iter().any(|s| s.name == ins.sink) {
                return Err(in_file(Error::Plan {
                    position: format!("line {}", ins.line),
                    message: format!(
                        "sink `{}` is not declared; add CREATE SINK {} WITH (connector = 'log', topic = '{}')",
                        ins.sink, ins.sink, ins.sink
                    ),
                }));
            }
            let plan = plan_query_over(&ins.select, &catalog, &tables, &limits)
                .map_err(in_file)?
                .named(format!(
                    "the query at line {} of {} (INSERT INTO {})",
                    ins.line, origin, ins.sink
                ));
            // A job reads all its sources into every query.
            if sources.len() > 1 && plan.stream_names().len() != sources.len() {
                return Err(in_file(Error::Plan {
                    position: format!("line {}", ins.line),
                    message: "this query does not read every source of the file, and the file is run here as one job over all of them; run it with `paystream run`, which runs one job per set of sources its queries read".into(),
                }));
            }
            // Checked when the file was parsed, like every setting. `SET dense_windows` fills
            // the queries that can take it; it is refused only when none of the file's can.
            let plan =
                match crate::sql::query_file::with_plan_settings(&file.settings, plan.clone()) {
                    Ok(plan) => {
                        dense_taken = true;
                        plan
                    }
                    Err(message) => {
                        dense_refused.get_or_insert(in_file(Error::Plan {
                            position: format!("line {}", ins.line),
                            message,
                        }));
                        let mut others = file.settings.clone();
                        others.remove("dense_windows");
                        crate::sql::query_file::with_plan_settings(&others, plan)
                            .map_err(Error::Internal)?
                    }
                };
            plans.push((ins.sink.clone(), plan));
        }
        if let (false, Some(e)) = (dense_taken, dense_refused) {
            return Err(e);
        }
        Ok(Job {
            name,
            file,
            sources,
            times,
            plans,
            tables,
        })
    }

    /// The job's name (its state directory and its consumer group).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log topic its source reads, if it reads one (of several sources, the first's).
    pub fn source_topic(&self) -> Option<&str> {
        self.sources.iter().find_map(|s| s.connector.log_topic())
    }

    /// Every local file it reads or writes (file sources and sinks, reference tables over
    /// files), as declared (a relative path is relative to the working directory).
    pub fn local_files(&self) -> Vec<PathBuf> {
        let sources = self.sources.iter().filter_map(|s| s.connector.file_path());
        let sinks = self
            .file
            .sinks
            .iter()
            .filter_map(|s| s.connector.file_path());
        let tables = self.tables.iter().filter_map(|t| t.file_path());
        sources
            .chain(sinks)
            .chain(tables)
            .map(Path::to_path_buf)
            .collect()
    }

    /// The sinks its queries write, in the order of their INSERTs.
    pub fn query_sinks(&self) -> Vec<QuerySink> {
        let mut out: Vec<QuerySink> = Vec::new();
        for (sink, plan) in &self.plans {
            if out.iter().any(|s| &s.name == sink) {
                continue;
            }
            if let Some(decl) = self.file.sinks.iter().find(|s| &s.name == sink) {
                let schema = Arc::clone(&plan.output_schema);
                let keys = plan
                    .changelog_keys()
                    .map(|k| k.iter().map(|i| schema.field(*i).name().clone()).collect());
                out.push(QuerySink {
                    name: sink.clone(),
                    connector: Arc::clone(&decl.connector),
                    schema,
                    keys,
                });
            }
        }
        out
    }

    /// The log topics its sources read.
    pub fn source_topics(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter_map(|s| s.connector.log_topic())
            .collect()
    }

    /// Runs the job on the calling thread until it is stopped (a log source) or its input ends
    /// (a file source).
    pub fn run(
        &self,
        opts: &JobOptions,
        progress: Arc<Progress>,
        stop: Arc<AtomicBool>,
    ) -> Result<JobOutcome> {
        let Job {
            name,
            file,
            sources,
            times,
            plans,
            tables,
        } = self;
        // A source or sink waiting for its server gives up when the job is stopped.
        let _stop_scope = crate::connector::waiting::StopScope::new(&self.name, &stop);
        let name = name.clone();
        for t in tables {
            t.attach_log(&opts.data_dir);
        }
        let log = Log::new(&opts.data_dir);
        let topics: Vec<String> = self
            .source_topics()
            .into_iter()
            .map(str::to_string)
            .collect();
        // Each source by its topic, or its name when it has none.
        let ids: Vec<String> = sources
            .iter()
            .map(|s| {
                s.connector
                    .log_topic()
                    .map_or_else(|| s.name.clone(), str::to_string)
            })
            .collect();
        // What its dead letters and late events are named after.
        let base = ids.join("-");
        let mut readers = sources
            .iter()
            .map(|s| {
                s.connector.source(&SourceContext {
                    events: Arc::clone(&s.events),
                    log: &log,
                    job: &name,
                    until_end: opts.until_end,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // What a checkpoint records as its source, checked when it is restored: of several,
        // each with its partition count too, since a checkpoint's positions number their
        // partitions one source after the other.
        let source_id = match readers.len() {
            1 => base.clone(),
            _ => {
                let mut parts = Vec::with_capacity(readers.len());
                for (id, r) in ids.iter().zip(&readers) {
                    parts.push(format!("{id}:{}", r.origins()?.len()));
                }
                parts.join("-")
            }
        };
        let reader: Arc<dyn crate::source::Source> = match readers.len() {
            1 => readers.remove(0),
            _ => Arc::new(crate::source::MergedSource::new(readers)?),
        };
        // A declared source's columns and roles are part of what the state must fit: the same
        // SELECT over other columns (or another id or time column) keeps other state.
        let declared: String = sources
            .iter()
            .filter(|s| s.events.is_declared())
            .map(|s| {
                let e = &s.events;
                let columns: Vec<String> = e
                    .arrow()
                    .fields()
                    .iter()
                    .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
                    .collect();
                let of = match sources.len() {
                    1 => String::new(),
                    _ => format!(" {}", s.name),
                };
                format!(
                    "\n-- declared source{of}: {}; id {:?}; time {}",
                    columns.join(", "),
                    e.id_column(),
                    e.event_time_column()
                )
            })
            .collect();
        let sqls: Vec<String> = plans
            .iter()
            .map(|(_, p)| format!("{}{declared}", p.sql.trim()))
            .collect();
        let partitioning: Vec<String> = plans
            .iter()
            .map(|(_, p)| saved_state::partitioning_of(p))
            .collect();
        let resumable = sources.iter().filter(|s| s.connector.resumable()).count();
        if resumable != 0 && resumable != sources.len() {
            return Err(config_err(
                "sources",
                "a job over several sources reads them all from log topics (checkpointed, resumed) or all from files (read whole each run); it cannot mix the two",
            ));
        }
        // A log source runs with checkpoints: restore the latest (or a savepoint) first, since the
        // sink topics are aligned with it as they are opened.
        let store = match resumable != 0 {
            true => {
                let location = opts.checkpoint_location.clone().unwrap_or_else(|| {
                    state_dir(&opts.data_dir, &name)
                        .join("checkpoints")
                        .display()
                        .to_string()
                });
                Some(Arc::new(CheckpointStore::open(&location, 3)?))
            }
            false => None,
        };
        let mut workers = match (opts.workers, file.settings.get("workers")) {
            (Some(w), _) => w,
            (None, Some(w)) => w.parse().ok().filter(|w| *w > 0).ok_or_else(|| {
                config_err("SET workers", format!("'{w}' is not a positive number"))
            })?,
            (None, None) => crate::engine::defaults::workers(),
        };
        // A reset (new, or one an earlier start began) starts from nothing but must not forget what
        // its sinks already hold; a savepoint, chosen explicitly, supersedes a pending reset.
        let reset = match &store {
            Some(store) if opts.from_savepoint.is_none() => sink_reset::reset_in_force(
                &log,
                store,
                file,
                &name,
                opts.reset_state,
                opts.sink_reset,
            )?,
            Some(_) => {
                sink_reset::drop_pending_reset(&opts.data_dir, &name);
                None
            }
            None => None,
        };
        let restored = match (&store, &reset) {
            (Some(store), None) => restore(store, opts, &sqls, &source_id, &partitioning)?,
            _ => None,
        };
        // Tables as the restored checkpoint saw them, else read now: a missing or bad table
        // stops the job before it reads anything.
        for t in tables {
            let saved = restored
                .as_ref()
                .and_then(|s| s.tables.iter().find(|(n, _)| n == t.name()));
            match saved.map(|(_, bytes)| t.restore(bytes)) {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    tracing::warn!(table = %t.name(), "the table is declared otherwise than when the checkpoint was taken; reading it from its source");
                    t.load()?;
                }
                Some(Err(e)) => {
                    tracing::warn!(table = %t.name(), "the table's rows in the checkpoint cannot be read ({e}); reading it from its source");
                    t.load()?;
                }
                None => t.load()?,
            }
        }
        let reset = reset.unwrap_or_default();
        if store.is_some() {
            sink_reset::report_changed_sinks(&opts.data_dir, &name, file, restored.is_some())?;
        }
        let mut sinks = SinkFactory {
            ctx: SinkContext::new(&log, opts.fsync, store.is_some())
                .with_results(opts.results.clone())
                .with_job(&name),
            align: store.is_some().then(|| match &restored {
                Some(s) => s.sinks.clone(),
                // Emptied topics are aligned to where they start.
                None => reset.truncate.clone(),
            }),
            restored_epoch: restored.as_ref().map_or(reset.files_epoch, |s| s.epoch),
        };
        for t in &topics {
            log.topic_config(t)?;
        }
        // A sink as declared, or a log topic named after it when the file does not declare it.
        let declared = |sink_name: &str, default_topic: String| {
            file.sinks
                .iter()
                .find(|s| s.name == sink_name)
                .map(|s| Arc::clone(&s.connector))
                .unwrap_or_else(|| crate::sink::log::declare_topic(default_topic))
        };
        // A first start (no checkpoint to restore) rolls file sinks back to epoch 0, which
        // deletes every committed part: results an earlier run made (its checkpoints since
        // removed, or another job's). Refuse instead, unless told to truncate.
        let first_start = store.is_some()
            && restored.is_none()
            && sinks.restored_epoch == 0
            && opts.sink_reset != Some(SinkReset::Truncate);
        // A job over files reads them whole on every run and appends to its file sinks and
        // declared sink topics: a second run would add every result again. Say so rather than
        // count twice — every sink is looked at before any is emptied.
        if store.is_none() {
            let mut to_empty = Vec::new();
            let mut topics_to_empty = Vec::new();
            let all = [
                (DEAD_LETTERS.to_string(), format!("{base}.dlq")),
                (LATE_EVENTS.to_string(), format!("{base}.late")),
            ]
            .into_iter()
            .chain(plans.iter().map(|(sink, _)| (sink.clone(), sink.clone())));
            for (sink_name, default_topic) in all {
                let connector = declared(&sink_name, default_topic);
                // A declared log topic is appended to as a file is. The default `.dlq` and
                // `.late` topics are named after the source, so jobs over files that name
                // their sources alike share them: they are not this job's to refuse or empty.
                let is_declared = file.sinks.iter().any(|s| s.name == sink_name);
                if let Some(topic) = connector.log_topic().filter(|_| is_declared) {
                    let held: u64 = match log.partition_stats(topic) {
                        Ok(stats) => stats.iter().map(|s| s.end_offset - s.start_offset).sum(),
                        Err(crate::log::LogError::NoSuchTopic { .. }) => 0,
                        Err(e) => return Err(e.into()),
                    };
                    match (held, opts.sink_reset) {
                        (0, _) | (_, Some(SinkReset::Keep)) => {}
                        (_, Some(SinkReset::Truncate)) => topics_to_empty.push(topic.to_string()),
                        (_, None) => {
                            return Err(config_err(
                                &format!("sink `{sink_name}`"),
                                format!(
                                    "topic {topic} already holds {held} records of an earlier run, and job {name} reads its files whole on every run, so running again would write every result a second time; run with --reset-state --truncate-sinks to replace them (--reset-state --keep-sinks appends)"
                                ),
                            ));
                        }
                    }
                    continue;
                }
                let Some(path) = connector.file_path() else {
                    continue;
                };
                if crate::sink::file::is_stream(path)
                    || !std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
                {
                    continue;
                }
                match opts.sink_reset {
                    Some(SinkReset::Keep) => {}
                    Some(SinkReset::Truncate) => to_empty.push(path.to_path_buf()),
                    None => {
                        return Err(config_err(
                            &format!("sink `{sink_name}`"),
                            format!(
                                "{} already holds results of an earlier run, and job {name} reads its files whole on every run, so running again would write every result a second time; move the file away, or run with --reset-state --truncate-sinks to replace what it holds (--reset-state --keep-sinks appends)",
                                path.display()
                            ),
                        ));
                    }
                }
            }
            sink_reset::empty_topics(&log, &name, &topics_to_empty, opts.fsync)?;
            for path in to_empty {
                std::fs::File::create(&path).map_err(|e| {
                    config_err(
                        "--truncate-sinks",
                        format!("cannot empty {}: {e}", path.display()),
                    )
                })?;
            }
        }
        let mut open_sink = |sink_name: &str, default_topic: String| -> Result<Box<dyn Sink>> {
            let connector = declared(sink_name, default_topic);
            if first_start && let Some(held) = connector.committed_results(&BTreeMap::new())? {
                return Err(config_err(
                    &format!("sink `{sink_name}`"),
                    format!(
                        "{held} already holds results committed by an earlier run, and job {name} has no checkpoint of them, so starting would delete them; move them away (or point the sink elsewhere), or run with --reset-state --truncate-sinks to delete them and start over"
                    ),
                ));
            }
            if let Some(topic) = connector.log_topic()
                && let Some(src) = topics.iter().find(|t| *t == topic)
            {
                return Err(config_err(
                    &format!("sink `{sink_name}`"),
                    format!(
                        "it writes the source topic `{src}`; the query would read its own output"
                    ),
                ));
            }
            sinks.open(connector.as_ref())
        };
        let dead_letters = declared(DEAD_LETTERS, format!("{base}.dlq"));
        let dead_letter = open_sink(DEAD_LETTERS, format!("{base}.dlq"))?;
        let late = open_sink(LATE_EVENTS, format!("{base}.late"))?;
        let mut queries = Vec::with_capacity(plans.len());
        for (sink, plan) in plans {
            queries.push(QueryRun {
                name: sink.clone(),
                plan: plan.clone(),
                results: open_sink(sink, sink.clone())?,
            });
        }
        // Keyed once every sink is open: a sink then knows whether another writes its topic.
        for q in &mut queries {
            q.results.rows_schema(&q.plan.output_schema);
            if let Some(keys) = q.plan.changelog_keys() {
                q.results.key_rows_by(keys);
            }
        }
        sink_reset::rewind_groups(&log, &reset)?;

        let run_options = RunOptions {
            watermark_delay: times.watermark_delay,
            max_skew: times.max_skew,
            dedup_ttl: times.dedup_ttl,
            idle_timeout: Some(Duration::from_millis(times.idle_timeout.max(0) as u64)),
            workers,
            batch_size: opts.batch_size,
            speed: None,
        };
        let summary;
        let mut checkpoints = Vec::new();
        let mut resumed = false;

        match &store {
            None => {
                let mut spec = RunSpec::new(reader, queries);
                spec.dead_letter = dead_letter;
                spec.late = late;
                spec.options = run_options;
                summary = crate::engine::run(spec, progress, stop)?.summary;
            }
            Some(store) => {
                if let Some(s) = &restored {
                    if opts.workers.is_some_and(|w| w != s.workers) {
                        tracing::warn!(
                            requested = workers,
                            saved = s.workers,
                            "the restored state is partitioned over {} workers; using that",
                            s.workers
                        );
                    }
                    workers = s.workers;
                    resumed = true;
                    tracing::info!(job = %name, epoch = s.epoch, positions = ?s.pipeline.positions, "restored checkpoint");
                }
                let interval = match (
                    opts.checkpoint_interval,
                    file.settings.get("checkpoint_interval"),
                ) {
                    (Some(i), _) => i,
                    (None, Some(v)) => Duration::from_millis(
                        parse_duration_millis(v)
                            .map_err(|e| config_err("SET checkpoint_interval", e))?
                            .max(1) as u64,
                    ),
                    (None, None) => Duration::from_secs(10),
                };
                let source = reader;
                let mut committer = transactions::Committer {
                    store: Arc::clone(store),
                    topic: source_id.clone(),
                    source: Arc::clone(&source),
                    progress: Arc::clone(&progress),
                    queries: sqls.clone(),
                    partitioning: partitioning.clone(),
                    tables: tables.clone(),
                    workers,
                    // Numbering continues past every checkpoint in the store (after a reset, or a
                    // savepoint older than the latest checkpoint), so pruning keeps the new ones.
                    epoch: restored
                        .as_ref()
                        .map_or(reset.epoch_base, |s| s.epoch)
                        .max(store.newest_epoch()?),
                    taken: Vec::new(),
                    inflight: None,
                };
                let epoch0 = committer.epoch;
                let restore = restored.map(|s| s.pipeline);
                let request = opts.savepoint_request.clone().unwrap_or_default();
                let out = {
                    let c = &mut committer;
                    let job = name.as_str();
                    let hook = move |cp: Checkpoint| {
                        let sp = cp.savepoint.then(|| format!("{job}-{}", cp.epoch));
                        c.commit(cp.epoch, cp.state, cp.prepared, sp, false)
                    };
                    let mut spec = RunSpec::new(source, queries);
                    spec.dead_letter = dead_letter;
                    spec.late = late;
                    spec.options = RunOptions {
                        workers,
                        ..run_options
                    };
                    spec.restore = restore;
                    spec.checkpoints = Some(Checkpoints {
                        interval: Some(interval),
                        request,
                        first_epoch: epoch0 + 1,
                        on_checkpoint: Box::new(hook),
                    });
                    spec.on_stop = OnStop::Snapshot;
                    let out = crate::engine::run(spec, progress, stop)?;
                    let (state, (epoch, prepared)) = out.state.zip(out.last).ok_or_else(|| {
                        Error::Internal("a job over a log ended without its state".into())
                    })?;
                    (out.summary, state, epoch, prepared)
                };
                // The stop is a checkpoint too: a restart continues exactly here.
                committer.commit(out.2, out.1, out.3, None, true)?;
                tracing::info!(job = %name, checkpoints = committer.epoch - epoch0, "stopped");
                checkpoints = std::mem::take(&mut committer.taken);
                summary = out.0;
            }
        }
        sinks.sync()?;
        Ok(JobOutcome {
            name,
            summary,
            resumed,
            checkpoints,
            dead_letters,
        })
    }
}

/// The state to start from: a named savepoint, else the latest intact checkpoint (unless reset).
fn restore(
    store: &CheckpointStore,
    opts: &JobOptions,
    sqls: &[String],
    topic: &str,
    partitioning: &[String],
) -> Result<Option<SavedState>> {
    let found = match &opts.from_savepoint {
        Some(sp) => Some(store.savepoint(sp)?.ok_or_else(|| Error::State {
            operator: "savepoint".into(),
            message: format!(
                "there is no savepoint `{sp}`; `paystream savepoint --list JOB` lists them and `paystream savepoint JOB` takes one"
            ),
        })?),
        None if opts.reset_state => None,
        None => store.latest()?,
    };
    let Some((epoch, bytes)) = found else {
        return Ok(None);
    };
    let path = Path::new("checkpoint");
    let s = SavedState::decode(path, &bytes)?;
    if s.queries == sqls && s.topic != topic {
        return Err(Error::State {
            operator: format!("checkpoint {epoch}"),
            message: format!(
                "this state was saved reading `{}` and the job now reads `{topic}` (a source, or the partition count of one of several, changed), so its positions do not fit; run with --reset-state to start over from the earliest offsets",
                s.topic
            ),
        });
    }
    if s.queries != sqls || s.topic != topic {
        return Err(Error::State {
            operator: format!("checkpoint {epoch}"),
            message: "the query file changed since this state was saved, so the state does not fit it (its queries or source differ); run with --reset-state to start over from the earliest offsets".into(),
        });
    }
    // Keyed state lives on the worker of its key: it fits only the same spreading (a newer
    // version may spread a query it ran on one worker).
    if s.workers > 1
        && let Some(saved) = &s.partitioning
        && saved.as_slice() != partitioning
    {
        return Err(Error::State {
            operator: format!("checkpoint {epoch}"),
            message: "this state was saved with the queries' events spread over the workers differently (by another key, or on one worker), so its keyed state is on other workers than its keys now go to; run with --reset-state to start over".into(),
        });
    }
    Ok(Some(s))
}

/// Opens declared sinks and recovers them to the restored checkpoint.
struct SinkFactory<'a> {
    /// What the connectors open with (shared producers among them).
    ctx: SinkContext<'a>,
    /// For a checkpointed job: sink offsets of the restored checkpoint (empty when none); each
    /// sink topic is aligned with them when opened.
    align: Option<BTreeMap<String, Vec<u64>>>,
    /// The restored checkpoint's number (0: none), for file sinks' recovery.
    restored_epoch: u64,
}

impl SinkFactory<'_> {
    /// Opens the sink `c` declares; a checkpointed job's sink is recovered to the restored
    /// checkpoint ([`Sink::recover`]) before it gets a record.
    fn open(&mut self, c: &dyn SinkConnector) -> Result<Box<dyn Sink>> {
        let mut sink = c.open(&mut self.ctx)?;
        if let Some(offsets) = &self.align {
            sink.recover(&Recovery {
                epoch: self.restored_epoch,
                offsets,
            })?;
        }
        Ok(sink)
    }

    /// Makes every sink topic durable.
    fn sync(&mut self) -> Result<()> {
        self.ctx.sync()
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    /// A checkpoint whose queries were spread over the workers otherwise than they are now is
    /// refused: its keyed state would sit on workers its keys no longer go to.
    #[test]
    fn a_state_spread_otherwise_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().display().to_string(), 3).unwrap();
        let saved = |partitioning: Option<Vec<String>>| SavedState {
            queries: vec!["SELECT 1".into()],
            workers: 2,
            partitioning,
            topic: "payments".into(),
            epoch: 1,
            sinks: BTreeMap::new(),
            pipeline: crate::engine::PipelineState {
                router: vec![],
                operators: vec![vec![vec![], vec![]]],
                positions: BTreeMap::new(),
            },
            tables: Vec::new(),
        };
        let opts = JobOptions::new(dir.path());
        let sqls = ["SELECT 1".to_string()];
        let now = ["by keys merchant_id@4".to_string()];
        store
            .write(1, saved(Some(vec!["single".into()])).encode())
            .unwrap();
        let e = restore(&store, &opts, &sqls, "payments", &now).unwrap_err();
        assert!(e.to_string().contains("--reset-state"), "{e}");
        store.write(2, saved(Some(now.to_vec())).encode()).unwrap();
        assert!(
            restore(&store, &opts, &sqls, "payments", &now)
                .unwrap()
                .is_some()
        );
        // A state from before the spreading was recorded is taken as it is.
        store.write(3, saved(None).encode()).unwrap();
        assert!(
            restore(&store, &opts, &sqls, "payments", &now)
                .unwrap()
                .is_some()
        );
    }
}
