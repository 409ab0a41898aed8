//! The Kafka source's reader thread: polls the consumer, gathers each partition's records into
//! chunks of about [`CHUNK`] bytes (one JSON value a line), hands them to the decoders, and
//! sends ticks while nothing arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;

use super::super::ChunkTag;
use super::super::decoders::{Feed, Job};
use super::super::log::{CHUNK, TICK, append_line};
use crate::connector::kafka::{Brokers, Quiet, transient};
use crate::error::Result;

/// How long records wait in a partly filled chunk before it is sent anyway.
const LINGER: Duration = Duration::from_millis(50);

/// One partition's records not yet sent.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    first: Option<u64>,
    end: u64,
    records: usize,
    times: Vec<i64>,
}

pub(super) struct KafkaReader {
    pub(super) consumer: BaseConsumer<Quiet>,
    pub(super) brokers: Brokers,
    /// Per partition, the offset of the next record to read.
    pub(super) position: Vec<u64>,
    /// `--until-end`: each partition's end offset as of the start.
    pub(super) until: Option<Vec<u64>>,
    pub(super) feed: Feed,
    pub(super) stop: Arc<AtomicBool>,
}

impl KafkaReader {
    pub(super) fn run(mut self) {
        if let Err(e) = self.read() {
            let _ = self.feed.ticks.send(Err(e));
        }
    }

    /// `--until-end`: whether every partition reached its end as of the start, or the end
    /// the broker reported (`eof`).
    fn done(&self, eof: &[bool]) -> bool {
        self.until
            .as_ref()
            .is_some_and(|u| (0..self.position.len()).all(|p| self.position[p] >= u[p] || eof[p]))
    }

    fn read(&mut self) -> Result<()> {
        let n = self.position.len();
        let mut pending: Vec<Pending> = (0..n).map(|_| Pending::default()).collect();
        let mut seq = 0u64;
        let mut last_sent = Instant::now();
        let mut last_flush = Instant::now();
        let (mut warned, mut wait, mut last_error) = (None::<Instant>, None, Instant::now());
        let mut eof = vec![false; n];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.done(&eof) {
                for (p, q) in pending.iter_mut().enumerate() {
                    if !self.send(q, p, &mut seq) {
                        return Ok(());
                    }
                }
                return Ok(());
            }
            let mut idle = false;
            match self.consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    drop(wait.take()); // the server answers again
                    let (p, offset) = (m.partition() as usize, m.offset().max(0) as u64);
                    let limit = self.until.as_ref().map_or(u64::MAX, |u| u[p]);
                    if p < n && offset >= self.position[p] && offset < limit {
                        // Positions of records are counted from a chunk's first offset: a gap
                        // (compaction, transaction markers) starts a new chunk.
                        if pending[p].first.is_some() && offset != pending[p].end {
                            if !self.send(&mut pending[p], p, &mut seq) {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                        }
                        let q = &mut pending[p];
                        if q.bytes.capacity() == 0 {
                            q.bytes = self
                                .feed
                                .recycled
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                            q.bytes.clear();
                        }
                        q.first.get_or_insert(offset);
                        q.end = offset + 1;
                        q.records += 1;
                        q.times.push(m.timestamp().to_millis().unwrap_or(0));
                        append_line(&mut q.bytes, m.payload().unwrap_or_default());
                        self.position[p] = offset + 1;
                        if q.bytes.len() >= CHUNK {
                            if !self.send(q, p, &mut seq) {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(e) = eof.get_mut(p as usize) {
                        *e = true;
                    }
                    idle = true;
                }
                Some(Err(e)) if transient(&e) => {
                    // librdkafka reconnects by itself; the job waits meanwhile.
                    let reason = self.brokers.mask(&e.to_string());
                    crate::connector::waiting::note(&mut wait, &self.brokers.describe(), &reason);
                    last_error = Instant::now();
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(brokers = %self.brokers.bootstrap, "kafka source: {reason}; waiting for the broker");
                        warned = Some(Instant::now());
                    }
                    idle = true;
                }
                Some(Err(e)) => return Err(self.brokers.error("consume", &e)),
                None => {
                    // No error for a while on an idle topic: the broker answers again.
                    if last_error.elapsed() >= Duration::from_secs(5) {
                        drop(wait.take());
                    }
                    idle = true;
                }
            }
            if idle || last_flush.elapsed() >= LINGER {
                last_flush = Instant::now();
                for (p, q) in pending.iter_mut().enumerate() {
                    if q.first.is_some() {
                        if !self.send(q, p, &mut seq) {
                            return Ok(());
                        }
                        last_sent = Instant::now();
                    }
                }
            }
            // Ticks also while only records outside the read arrive (a finished partition).
            if last_sent.elapsed() >= TICK {
                if !self.feed.tick(&mut seq, false) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
        }
    }

    /// Sends partition `p`'s pending records as one chunk (nothing if there are none); false
    /// once the run has ended.
    fn send(&self, q: &mut Pending, p: usize, seq: &mut u64) -> bool {
        let Some(first) = q.first.take() else {
            return true;
        };
        let q = std::mem::take(q);
        self.feed
            .bytes
            .fetch_add(q.bytes.len() as u64, Ordering::Relaxed);
        let job = Job::Json {
            seq: *seq,
            bytes: q.bytes,
            first_line: first,
            lines: q.records,
            tag: ChunkTag {
                partition: p as u32,
                end: Some(q.end),
                last: false,
                wants_checkpoint: false,
            },
            times: q.times,
        };
        *seq += 1;
        self.feed.jobs.send(job).is_ok()
    }
}
