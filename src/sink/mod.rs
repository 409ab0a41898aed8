//! Sinks: where results, dead letters and late events go.
//!
//! Last stage on the data's path (source → decode → operators → **sink**). A [`Sink`] takes
//! result batches and pre-formatted JSON records and takes part in the checkpoints' two-phase
//! commit; rows are formatted apart from transport (`json.rs`). Each connector `CREATE SINK`
//! names is a directory ([`log`](mod@log): a topic of the embedded log, [`file`](mod@file): part files or a stream)
//! with a [`SinkConnector`]; [`WriterSink`] writes JSON Lines to a file or stdout, [`MemorySink`]
//! keeps everything in memory for tests and embedding.

mod commit;
mod connector;
pub mod file;
mod json;
pub mod kafka;
pub mod log;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod table;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;

pub use self::commit::{CommitAction, Prepared, Recovery};
pub use self::connector::{SinkConnector, SinkContext};
pub use self::file::{FileSinkOptions, PartFileSink, PartFiles, SharedPartFiles};
pub use self::json::{
    dead_letter_json, event_json, late_json, text_value, write_batch, write_json_str, write_row,
    write_value,
};
pub use self::log::{FLUSH_EVERY, LogSinkOptions, SharedProducer, TopicSink, align_sink};
pub use self::table::{ResultTable, ResultTables};

use crate::error::{Error, Result};
use crate::operators::RowTimes;

/// A destination for result rows and JSON records.
///
/// **Exactly-once** is a two-phase commit driven by checkpoint barriers. When a barrier reaches
/// the sinks, every record before it has been written to them and none after it. The engine
/// then calls [`Sink::pre_commit`] with the checkpoint's number: the sink makes those records
/// durable but not yet visible to committed readers, and returns the offsets the checkpoint must
/// record and the action that makes them visible. The checkpoint — operator state, source
/// positions and those offsets — is written; only once it is durable are the commit actions run
/// (on the checkpoint thread, in order, while the sink already receives the next epoch's
/// records). On start, a job recovers each sink to its restored checkpoint before the first
/// record: what was pre-committed after it is discarded, what it covers made visible. A sink
/// that cannot hide records until a commit (a stream such as `/dev/stdout`) is at-least-once:
/// its `pre_commit` only flushes.
pub trait Sink: Send {
    /// Writes result rows.
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Writes one JSON record (no trailing newline).
    fn write_record(&mut self, json: &[u8]) -> Result<()>;
    /// Writes result rows, each standing for the event time in `times` (a window's end, an
    /// event's time). A sink that keeps a timestamp per record stamps it; others write the rows
    /// as [`Self::write_batch`] does.
    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        let _ = times;
        self.write_batch(batch)
    }
    /// Writes one JSON record standing for event time `time` (epoch ms): a late event's time, a
    /// dead letter's source record time. As [`Self::write_record`] where no timestamp is kept.
    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        let _ = time;
        self.write_record(json)
    }
    /// Key each result record by the values of these columns (a changelog's group keys), for
    /// a sink whose records have keys: a key's rows then stay in order in one partition. The
    /// default ignores it (a file holds the changelog in order anyway).
    fn key_rows_by(&mut self, columns: &[usize]) {
        let _ = columns;
    }
    /// The schema of the result rows it will be given (its query's output), told once before
    /// the first; a sink that serves its rows as a table keeps it. The default ignores it.
    fn rows_schema(&mut self, schema: &datafusion::arrow::datatypes::SchemaRef) {
        let _ = schema;
    }
    /// Flushes buffered output.
    fn flush(&mut self) -> Result<()>;
    /// On start of a checkpointed job, before the first record: discards what was
    /// pre-committed after checkpoint `to` and makes visible what it covers. The default does
    /// nothing (a sink with nothing to hide).
    fn recover(&mut self, to: &Recovery<'_>) -> Result<()> {
        let _ = to;
        Ok(())
    }
    /// Phase one of checkpoint `epoch` (see the trait's documentation). The default flushes:
    /// at-least-once.
    fn pre_commit(&mut self, epoch: u64) -> Result<Prepared> {
        let _ = epoch;
        self.flush()?;
        Ok(Prepared::default())
    }
    /// Called between steps of a run: flush if output has waited long enough that a reader
    /// (a tailing consumer, a dashboard) should see it.
    fn flush_if_due(&mut self) -> Result<()> {
        Ok(())
    }
}

/// JSON Lines to any writer.
pub struct WriterSink {
    name: String,
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    buf: Vec<u8>,
    last_flush: std::time::Instant,
}

impl WriterSink {
    /// A sink writing to `w`; `name` appears in errors (e.g. `--output out.jsonl`).
    pub fn new(name: impl Into<String>, w: Box<dyn Write + Send>) -> Self {
        WriterSink {
            name: name.into(),
            out: std::io::BufWriter::with_capacity(1 << 16, w),
            buf: Vec::with_capacity(1 << 16),
            last_flush: std::time::Instant::now(),
        }
    }

    /// A sink appending to the file at `path` (created if missing, with its directory).
    pub fn append(option: &str, path: &Path) -> Result<Self> {
        make_parent(option, path)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Output {
                target: format!("{option} {}", path.display()),
                source: e,
            })?;
        Ok(Self::new(
            format!("{option} {}", path.display()),
            Box::new(f),
        ))
    }

    /// A sink creating (truncating) the file at `path` (and its directory if missing).
    pub fn create(option: &str, path: &Path) -> Result<Self> {
        make_parent(option, path)?;
        let f = std::fs::File::create(path).map_err(|e| Error::Output {
            target: format!("{option} {}", path.display()),
            source: e,
        })?;
        Ok(Self::new(
            format!("{option} {}", path.display()),
            Box::new(f),
        ))
    }

    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        Self::new("standard output", Box::new(std::io::stdout()))
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::Output {
            target: self.name.clone(),
            source: e,
        }
    }
}

/// Creates the directory `path` is in when it is missing: `path = 'out/settlement.jsonl'`
/// works on a fresh checkout (the part-file sink does the same).
fn make_parent(option: &str, path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.exists() => std::fs::create_dir_all(dir).map_err(|e| Error::Output {
            target: format!("{option} {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl Sink for WriterSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.buf.clear();
        write_batch(&mut self.buf, batch);
        let r = self.out.write_all(&self.buf);
        r.map_err(|e| self.io(e))
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let r = self
            .out
            .write_all(json)
            .and_then(|_| self.out.write_all(b"\n"));
        r.map_err(|e| self.io(e))
    }

    fn flush(&mut self) -> Result<()> {
        self.last_flush = std::time::Instant::now();
        let r = self.out.flush();
        r.map_err(|e| self.io(e))
    }

    fn flush_if_due(&mut self) -> Result<()> {
        if !self.out.buffer().is_empty() && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }
}

/// Drops everything (an output nobody asked for).
pub struct NullSink;

impl Sink for NullSink {
    fn write_batch(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
    fn write_record(&mut self, _json: &[u8]) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a [`MemorySink`] collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// Result batches, in emission order.
    pub batches: Vec<RecordBatch>,
    /// JSON records, in emission order.
    pub records: Vec<String>,
}

/// Collects output in memory.
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<Mutex<Collected>>);

impl Sink for MemorySink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.0
            .lock()
            .expect("sink lock")
            .batches
            .push(batch.clone());
        Ok(())
    }
    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        self.0
            .lock()
            .expect("sink lock")
            .records
            .push(String::from_utf8_lossy(json).into_owned());
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
