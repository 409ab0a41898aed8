//! A sink into a topic of the embedded log: one record per JSON row.
//!
//! Several sinks of one run may write the same topic (two INSERTs into one sink, dead letters of
//! several queries); they share one [`Producer`], since a topic has one writer. Records have no
//! key (round-robin over the topic's partitions) and are stamped with the event time they stand
//! for: a result with its window's end (a per-event result with its event's time), a late event
//! with its event time, a dead letter with its source record's timestamp; a record without one
//! (a run over a file rejecting an unparseable line) with the wall time it was written. Output is flushed to the log at most [`FLUSH_EVERY`] after it was produced, so a
//! tailing consumer sees results as windows close.
//!
//! A changelog's rows (a running GROUP BY) are keyed by their group key
//! ([`Sink::key_rows_by`]); when the run created the topic, it is made compacted then, so it
//! keeps the latest row per key rather than expiring old keys (an existing topic keeps its
//! configuration).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::log::{Log, Producer, commit_offset, committed_offset};
use crate::operators::RowTimes;
use crate::sink::{Prepared, Recovery, Sink, write_batch};

/// How long output may wait in memory before it is appended to the log.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A producer shared by the sinks writing one topic.
pub type SharedProducer = Arc<Mutex<Producer>>;

/// Writes JSON rows and records into a topic.
pub struct TopicSink {
    topic: String,
    /// Set for a checkpointed job: records become visible to `read_committed` readers only
    /// when a checkpoint commits them (the partitions' committed markers move).
    transactional: Option<crate::log::Log>,
    keyed: bool,
    /// Result columns whose values key each result record ([`Sink::key_rows_by`]).
    key_columns: Option<Vec<usize>>,
    /// The run created the topic: keyed rows make it compacted.
    created_topic: Arc<std::sync::atomic::AtomicBool>,
    /// Making the topic compacted failed (reported at the next write).
    failed: Option<crate::log::LogError>,
    producer: SharedProducer,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
    last_flush: Instant,
    dirty: bool,
}

impl TopicSink {
    /// A sink writing through `producer` into `topic`.
    pub fn new(topic: impl Into<String>, producer: SharedProducer) -> Self {
        TopicSink {
            topic: topic.into(),
            transactional: None,
            keyed: false,
            key_columns: None,
            created_topic: Arc::default(),
            failed: None,
            producer,
            buf: Vec::with_capacity(1 << 16),
            key_buf: Vec::new(),
            last_flush: Instant::now(),
            dirty: false,
        }
    }

    /// A sink whose records are keyed and timestamped from their JSON fields, as `produce` does
    /// (the producer's key field, `event_time`): for loading events into a topic.
    pub fn keyed(topic: impl Into<String>, producer: SharedProducer) -> Self {
        TopicSink {
            keyed: true,
            ..Self::new(topic, producer)
        }
    }

    /// A sink of a checkpointed job: each checkpoint records the topic's end offsets and, once
    /// durable, moves its partitions' committed markers there (see [`Sink::pre_commit`]).
    pub fn transactional(
        topic: impl Into<String>,
        producer: SharedProducer,
        log: crate::log::Log,
    ) -> Self {
        TopicSink {
            transactional: Some(log),
            ..Self::new(topic, producer)
        }
    }

    /// Says whether this run created the topic (see the module documentation).
    pub fn created_topic(mut self, created: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.created_topic = created;
        self
    }

    fn err(&self, e: crate::log::LogError) -> Error {
        Error::Output {
            target: format!("topic {}", self.topic),
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn now_ms() -> i64 {
        crate::log::producer_now_ms()
    }
}

impl TopicSink {
    /// Appends the rows of `batch`, row `i` stamped `time(i)` (unless keyed: a keyed record's
    /// timestamp is its `event_time`).
    fn append_rows(&mut self, batch: &RecordBatch, time: impl Fn(usize) -> i64) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(self.err(e));
        }
        self.buf.clear();
        write_batch(&mut self.buf, batch);
        // Each row's key: its key columns as a JSON object.
        self.key_buf.clear();
        if let Some(k) = &self.key_columns {
            write_batch(&mut self.key_buf, &batch.project(k)?);
        }
        let mut keys = self
            .key_buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty());
        let mut p = self.producer.lock().expect("producer lock");
        let lines = self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        for (i, line) in lines.enumerate() {
            let key = keys.next();
            let r = if self.keyed {
                // Rows here passed validation, which refuses card numbers as the screen does;
                // one the screen still refuses must not vanish silently.
                match p.send_json(line) {
                    Ok(crate::log::Sent::Stored) => Ok(()),
                    Ok(crate::log::Sent::Screened) => Err(crate::log::LogError::Invalid(
                        "a validated event holds a card number the log refuses; this is a bug"
                            .into(),
                    )),
                    Err(e) => Err(e),
                }
            } else {
                p.send(key, line, time(i))
            };
            r.map_err(|e| self.err(e))?;
        }
        self.dirty = true;
        Ok(())
    }
}

impl Sink for TopicSink {
    fn key_rows_by(&mut self, columns: &[usize]) {
        self.key_columns = Some(columns.to_vec());
        if self
            .created_topic
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            // Changelog rows keyed by group key: keep the latest per key, forever.
            let r = self
                .producer
                .lock()
                .expect("producer lock")
                .enable_compaction();
            self.failed = r.err();
        }
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let now = Self::now_ms();
        self.append_rows(batch, |_| now)
    }

    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        self.append_rows(batch, |i| times.get(i))
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let now = Self::now_ms();
        self.write_record_at(json, now)
    }

    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        let r = self
            .producer
            .lock()
            .expect("producer lock")
            .send(None, json, time);
        r.map_err(|e| self.err(e))?;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let r = self.producer.lock().expect("producer lock").flush();
        r.map_err(|e| self.err(e))?;
        self.dirty = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    fn flush_if_due(&mut self) -> Result<()> {
        if self.dirty && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Aligns the topic with the restored checkpoint ([`align_sink`]).
    fn recover(&mut self, to: &Recovery<'_>) -> Result<()> {
        let Some(log) = self.transactional.clone() else {
            return Ok(());
        };
        let mut p = self.producer.lock().expect("producer lock");
        align_sink(&log, &mut p, to.offsets.get(&self.topic).map(Vec::as_slice))
    }

    /// Flushes and fsyncs the topic and records its end offsets; the commit moves the committed
    /// markers to them. Sinks sharing the topic give the same offsets and one commit.
    fn pre_commit(&mut self, _epoch: u64) -> Result<Prepared> {
        let Some(log) = self.transactional.clone() else {
            self.flush()?;
            return Ok(Prepared::default());
        };
        let ends = {
            let mut p = self.producer.lock().expect("producer lock");
            p.flush().and_then(|_| p.sync()).map_err(|e| self.err(e))?;
            p.end_offsets()
        };
        self.dirty = false;
        self.last_flush = Instant::now();
        let mut prepared = Prepared::default();
        prepared.offsets.insert(self.topic.clone(), ends.clone());
        let topic = self.topic.clone();
        prepared.commits.insert(
            format!("topic {topic}"),
            Box::new(move || {
                for (p, end) in ends.iter().enumerate() {
                    crate::log::commit_offset(&log.partition_dir(&topic, p as u32), *end)?;
                }
                Ok(())
            }),
        );
        Ok(prepared)
    }
}

/// Makes a sink topic's partitions agree with a restored checkpoint: everything after the
/// checkpoint's offsets (or, without one, after the last committed marker) is aborted; a topic
/// never written transactionally starts its first transaction at its current end.
pub fn align_sink(log: &Log, producer: &mut Producer, restored: Option<&[u64]>) -> Result<()> {
    let topic = producer.topic().to_string();
    let ends = producer.end_offsets();
    for (p, end) in ends.iter().enumerate() {
        let dir = log.partition_dir(&topic, p as u32);
        let target = restored
            .and_then(|r| r.get(p).copied())
            .or(committed_offset(&dir)?)
            .unwrap_or(*end)
            .min(*end);
        if target < *end {
            tracing::info!(
                topic,
                partition = p,
                aborted = end - target,
                "aborting uncommitted sink records"
            );
            producer.truncate_to(p as u32, target)?;
        }
        commit_offset(&dir, target)?;
    }
    Ok(())
}
