//! `connector = 'table'`: a live result table a server reads (batch SQL, pgwire, SSE), named
//! after its sink, backed by a topic of the embedded log so that it survives a restart.
//!
//! ```text
//!  CREATE SINK settlement WITH (connector = 'table', retain = '2 hours')
//!    rows ─▶ TopicSink (`_results.settlement`, transactional) ─▶ rebuilt from on restart
//!        └─▶ ResultTable `settlement` in the run's ResultTables ─▶ readers
//! ```
//! The topic is the durable copy and takes part in the checkpoints' two-phase commit like any
//! log sink (exactly-once); the in-memory table shows rows as soon as they are emitted and tells
//! committed subscribers when their checkpoint commits them. A run without a server
//! (`paystream run`) writes the topic only: a later `serve` rebuilds the table from it.

mod result_table;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;

pub use self::result_table::{Change, Lagged, ResultTable, Row, SUBSCRIBER_BACKLOG};

use super::{Prepared, Recovery, Sink, SinkConnector, SinkContext, TopicSink, write_batch};
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::{Error, Result};
use crate::log::{StartAt, TopicConsumer};
use crate::operators::RowTimes;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "table",
    example: "connector = 'table', retain = '2 hours'",
    declare,
};

/// How long windowed rows are kept by default, in event time.
pub const DEFAULT_RETAIN: &str = "2 hours";
/// Rows a table keeps at most by default.
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

/// The topic a result table named `name` is kept in, unless its sink says otherwise.
pub fn results_topic(name: &str) -> String {
    format!("_results.{name}")
}

/// `WITH (…)` options of a table sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSinkOptions {
    /// How long windowed rows are kept, in event time (default [`DEFAULT_RETAIN`]).
    retain: Option<String>,
    /// Rows kept at most (default [`DEFAULT_MAX_ROWS`]).
    max_rows: Option<String>,
    /// The topic that keeps the rows (default `_results.<sink>`).
    topic: Option<String>,
}

/// A declared table sink.
#[derive(Debug, Clone)]
struct Declared {
    name: String,
    topic: String,
    retain_ms: i64,
    max_rows: usize,
}

fn declare(
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: TableSinkOptions = from_options(options)?;
    let retain = o.retain.as_deref().unwrap_or(DEFAULT_RETAIN);
    let retain_ms = crate::time::parse_duration_millis(retain)
        .map_err(|e| OptionError::Invalid(format!("retain: {e}")))?;
    let max_rows = match o.max_rows {
        None => DEFAULT_MAX_ROWS,
        Some(m) => m.parse::<usize>().ok().filter(|m| *m > 0).ok_or_else(|| {
            OptionError::Invalid(format!("max_rows must be a positive number, not '{m}'"))
        })?,
    };
    Ok(Arc::new(Declared {
        name: name.to_string(),
        topic: o.topic.unwrap_or_else(|| results_topic(name)),
        retain_ms,
        max_rows,
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn log_topic(&self) -> Option<&str> {
        Some(&self.topic)
    }

    fn result_table(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn describe(&self) -> String {
        format!("result table {} (topic {})", self.name, self.topic)
    }

    fn where_to_look(&self) -> String {
        format!(
            "`SELECT * FROM {}` on a running `paystream serve`, or `paystream consume {}`.",
            self.name, self.topic
        )
    }

    fn committed_results(
        &self,
        sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        let records: u64 = sink_offsets.get(&self.topic).map_or(0, |o| o.iter().sum());
        Ok((records > 0).then(|| format!("result table {} ({records} rows)", self.name)))
    }

    fn open(&self, ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        let producer = ctx.producer(&self.topic, None)?;
        let topic = if ctx.exactly_once {
            TopicSink::transactional(self.topic.clone(), producer, ctx.log.clone())
        } else {
            TopicSink::new(self.topic.clone(), producer)
        }
        .created_topic(ctx.created_topic(&self.topic));
        let table = ctx
            .results
            .as_ref()
            .map(|r| r.table(&self.name, self.retain_ms, self.max_rows));
        Ok(Box::new(TableSink {
            topic,
            topic_name: self.topic.clone(),
            log: ctx.log.clone(),
            table,
            transactional: ctx.exactly_once,
            keys: None,
            buf: Vec::new(),
            key_buf: Vec::new(),
        }))
    }
}

/// The result tables of a process, by name: what a server reads and its jobs' table sinks
/// write.
#[derive(Debug, Default)]
pub struct ResultTables {
    tables: Mutex<BTreeMap<String, Arc<ResultTable>>>,
}

impl ResultTables {
    /// The table named `name`, created (empty) if there is none, keeping rows as told.
    pub fn table(&self, name: &str, retain_ms: i64, max_rows: usize) -> Arc<ResultTable> {
        let mut tables = self.tables.lock().expect("result tables lock");
        let t = tables
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ResultTable::new(name, retain_ms, max_rows)));
        t.configure(retain_ms, max_rows);
        Arc::clone(t)
    }

    /// The table named `name`, created (empty, with the default retention) if there is none.
    pub fn get_or_create(&self, name: &str) -> Arc<ResultTable> {
        let mut tables = self.tables.lock().expect("result tables lock");
        let t = tables.entry(name.to_string()).or_insert_with(|| {
            let retain = crate::time::parse_duration_millis(DEFAULT_RETAIN).unwrap_or(7_200_000);
            Arc::new(ResultTable::new(name, retain, DEFAULT_MAX_ROWS))
        });
        Arc::clone(t)
    }

    /// The table named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Arc<ResultTable>> {
        self.tables
            .lock()
            .expect("result tables lock")
            .get(name)
            .cloned()
    }

    /// Every table, by name.
    pub fn all(&self) -> Vec<Arc<ResultTable>> {
        let tables = self.tables.lock().expect("result tables lock");
        tables.values().cloned().collect()
    }

    /// Forgets the table named `name` (its query was deleted).
    pub fn remove(&self, name: &str) {
        self.tables.lock().expect("result tables lock").remove(name);
    }
}

/// Writes rows to the table's topic and, in a server, to its in-memory table.
struct TableSink {
    topic: TopicSink,
    topic_name: String,
    log: crate::log::Log,
    table: Option<Arc<ResultTable>>,
    /// Rows become committed only with their checkpoint.
    transactional: bool,
    /// A changelog's key columns.
    keys: Option<Vec<usize>>,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
}

impl TableSink {
    fn push_rows(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        if table.schema().is_none() {
            table.set_schema(batch.schema());
        }
        self.buf.clear();
        write_batch(&mut self.buf, batch);
        self.key_buf.clear();
        if let Some(k) = &self.keys {
            write_batch(&mut self.key_buf, &batch.project(k)?);
        }
        // A changelog's last column says what each row does.
        let ops = self.keys.as_ref().and_then(|_| {
            let last = batch.column(batch.num_columns().checked_sub(1)?);
            last.as_any().downcast_ref::<StringArray>().cloned()
        });
        let mut keys = self
            .key_buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty());
        let lines = self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let rows = lines.enumerate().map(|(i, line)| {
            let key = keys.next();
            let change = match (&ops, key) {
                (Some(ops), Some(_))
                    if ops.is_valid(i) && ops.value(i) == crate::sql::OP_DELETE =>
                {
                    Change::Delete
                }
                (_, Some(_)) => Change::Upsert,
                _ => Change::Append,
            };
            (times.get(i), key, change, line)
        });
        table.push(rows, !self.transactional);
        Ok(())
    }
}

/// Reads the committed rows of `topic` back into `table` (a restart's, or a stopped query's
/// table shown again).
pub fn rebuild(log: &crate::log::Log, topic: &str, table: &ResultTable) -> Result<()> {
    let err = |e: crate::log::LogError| Error::Output {
        target: format!("topic {topic}"),
        source: std::io::Error::other(e.to_string()),
    };
    let mut consumer = TopicConsumer::open(log, topic, &StartAt::Earliest).map_err(err)?;
    let mut rows: Vec<(i64, Option<Vec<u8>>, Vec<u8>)> = Vec::new();
    while consumer
        .poll(|_, r| rows.push((r.timestamp, r.key.map(<[u8]>::to_vec), r.value.to_vec())))
        .map_err(err)?
        > 0
    {}
    table.restore(rows.iter().map(|(t, k, v)| {
        let change = match k {
            None => Change::Append,
            Some(_) if v.ends_with(b"\"op\":\"delete\"}") || v == b"null" => Change::Delete,
            Some(_) => Change::Upsert,
        };
        (*t, k.as_deref(), change, v.as_slice())
    }));
    Ok(())
}

impl Sink for TableSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.write_results(batch, &RowTimes::All(crate::log::producer_now_ms()))
    }

    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        self.topic.write_results(batch, times)?;
        self.push_rows(batch, times)
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        self.write_record_at(json, crate::log::producer_now_ms())
    }

    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        self.topic.write_record_at(json, time)?;
        if let Some(t) = &self.table {
            t.push([(time, None, Change::Append, json)], !self.transactional);
        }
        Ok(())
    }

    fn key_rows_by(&mut self, columns: &[usize]) {
        self.topic.key_rows_by(columns);
        self.keys = Some(columns.to_vec());
    }

    fn rows_schema(&mut self, schema: &SchemaRef) {
        if let Some(t) = &self.table {
            t.set_schema(Arc::clone(schema));
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.topic.flush()
    }

    fn flush_if_due(&mut self) -> Result<()> {
        self.topic.flush_if_due()
    }

    /// Aligns the topic with the restored checkpoint, then reads its committed rows back.
    fn recover(&mut self, to: &Recovery<'_>) -> Result<()> {
        self.topic.recover(to)?;
        match &self.table {
            Some(t) => rebuild(&self.log, &self.topic_name, t),
            None => Ok(()),
        }
    }

    /// The topic's pre-commit, and a commit that releases the rows to committed readers.
    fn pre_commit(&mut self, epoch: u64) -> Result<Prepared> {
        let mut prepared = self.topic.pre_commit(epoch)?;
        if let Some(t) = &self.table {
            let (t, mark) = (Arc::clone(t), t.mark());
            prepared.commits.insert(
                format!("table {}", t.name()),
                Box::new(move || {
                    t.commit(mark);
                    Ok(())
                }),
            );
        }
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FsyncPolicy, Log};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(keys: &[&str], values: &[i64], ops: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
            Field::new("op", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(StringArray::from(ops.to_vec())),
            ],
        )
        .unwrap()
    }

    /// A checkpointed table sink shows rows at once, releases them to committed readers with
    /// their checkpoint, and a restart (a new sink recovering to the checkpoint) rebuilds the
    /// table from the topic: the latest row per key, without what the checkpoint did not cover.
    #[test]
    fn a_changelog_table_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        let tables = Arc::new(ResultTables::default());
        let declared = declare("totals", &BTreeMap::new()).unwrap();
        let open = || {
            let mut ctx = SinkContext::new(&log, FsyncPolicy::Never, true)
                .with_results(Some(Arc::clone(&tables)));
            let mut s = declared.open(&mut ctx).unwrap();
            s.key_rows_by(&[0]);
            s
        };
        let mut sink = open();
        sink.write_results(
            &batch(&["a", "b"], &[1, 2], &["insert", "insert"]),
            &RowTimes::All(10),
        )
        .unwrap();
        let table = tables.get("totals").unwrap();
        let (_, mut committed) = table.subscribe(true);
        assert_eq!(table.len(), 2);
        let prepared = sink.pre_commit(1).unwrap();
        let offsets = prepared.offsets.clone();
        assert!(committed.try_recv().is_err());
        prepared.commit().unwrap();
        assert!(committed.try_recv().unwrap().contains("\"k\":\"a\""));
        // After the checkpoint: `a` updated, `b` deleted, never committed.
        sink.write_results(
            &batch(&["a", "b"], &[5, 2], &["update", "delete"]),
            &RowTimes::All(20),
        )
        .unwrap();
        sink.flush().unwrap();
        assert_eq!(table.snapshot().1.len(), 1);
        drop(sink);
        let mut sink = open();
        sink.recover(&Recovery {
            epoch: 1,
            offsets: &offsets,
        })
        .unwrap();
        let rows = table.snapshot().1;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().any(|r| r.contains("\"v\":1")), "{rows:?}");
    }
}
