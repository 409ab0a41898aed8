//! The NATS source's reader thread: pulls messages, gathers them into chunks of about
//! [`CHUNK`] bytes (one JSON value a line; a gap in the stream sequence starts a new chunk, so
//! positions stay exact), hands them to the decoders, and sends ticks while nothing arrives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;

use crate::connector::amqp::block_on;
use crate::connector::nats::Server;
use crate::decode::Decoded;
use crate::error::Result;
use crate::source::decoders::{Feed, Job};
use crate::source::log::{CHUNK, TICK, append_line};
use crate::source::{Chunk, ChunkTag};

/// How long messages wait in a partly filled chunk before it is sent anyway.
const LINGER: Duration = Duration::from_millis(50);

pub(super) struct NatsReader {
    pub(super) consumer: PullConsumer,
    pub(super) server: Server,
    pub(super) unacked: Arc<Mutex<BTreeMap<u64, jetstream::Message>>>,
    /// `--until-end`: the messages pending for the consumer at the start.
    pub(super) until: Option<u64>,
    pub(super) stop: Arc<AtomicBool>,
    /// The last sequence a checkpoint acknowledged.
    pub(super) acked: Arc<AtomicU64>,
    /// Unacknowledged messages the server delivers at most.
    pub(super) max_pending: u64,
}

/// Messages not yet sent.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    first: Option<u64>,
    /// The sequence after the last message.
    end: u64,
    records: usize,
    times: Vec<i64>,
    last: Option<jetstream::Message>,
}

impl NatsReader {
    pub(super) fn run(mut self, feed: Feed) {
        if let Err(e) = self.read(&feed) {
            let _ = feed.ticks.send(Err(e));
        }
    }

    fn read(&mut self, feed: &Feed) -> Result<()> {
        let mut messages =
            block_on(self.consumer.messages()).map_err(|e| self.server.error("consume", &e))?;
        let mut pending = Pending::default();
        let (mut seq, mut delivered, mut last_seq) = (0u64, 0u64, 0u64);
        let (mut last_sent, mut last_flush, mut last_ask) =
            (Instant::now(), Instant::now(), Instant::now());
        let mut warned = None::<Instant>;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.until.is_some_and(|u| delivered >= u) {
                self.send(feed, &mut pending, &mut seq);
                return Ok(());
            }
            let next = block_on(async {
                tokio::time::timeout(Duration::from_millis(20), messages.next()).await
            });
            let idle = match next {
                Ok(Some(Ok(m))) => {
                    let info = m.info().map_err(|e| self.server.error("consume", &e))?;
                    let (s, time) = (
                        info.stream_sequence,
                        (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
                    );
                    if pending.first.is_some() && s != pending.end {
                        if !self.send(feed, &mut pending, &mut seq) {
                            return Ok(());
                        }
                        last_sent = Instant::now();
                    }
                    if pending.bytes.capacity() == 0 {
                        pending.bytes = feed
                            .recycled
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                        pending.bytes.clear();
                    }
                    pending.first.get_or_insert(s);
                    pending.end = s + 1;
                    pending.records += 1;
                    pending.times.push(time);
                    append_line(&mut pending.bytes, &m.message.payload);
                    pending.last = Some(m);
                    delivered += 1;
                    last_seq = s;
                    if pending.bytes.len() >= CHUNK {
                        if !self.send(feed, &mut pending, &mut seq) {
                            return Ok(());
                        }
                        last_sent = Instant::now();
                    }
                    false
                }
                Ok(Some(Err(e))) => {
                    // The client reconnects by itself; the job waits meanwhile.
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(server = %self.server.describe(), "nats source: {e}; waiting for the server");
                        warned = Some(Instant::now());
                    }
                    true
                }
                Ok(None) => {
                    return Err(self
                        .server
                        .error("consume", &"the consumer's message stream ended"));
                }
                Err(_) => true,
            };
            if (idle || last_flush.elapsed() >= LINGER) && pending.first.is_some() {
                last_flush = Instant::now();
                if !self.send(feed, &mut pending, &mut seq) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
            // Every message the server allows is unacknowledged: only a checkpoint frees more.
            let blocked = idle
                && last_seq.saturating_sub(self.acked.load(Ordering::Acquire)) >= self.max_pending
                && last_ask.elapsed() >= Duration::from_millis(50);
            if blocked || (idle && last_sent.elapsed() >= TICK) {
                if blocked {
                    last_ask = Instant::now();
                }
                let tick = Chunk {
                    seq,
                    decoded: Decoded::default(),
                    tag: ChunkTag {
                        wants_checkpoint: blocked,
                        ..ChunkTag::default()
                    },
                    record_times: None,
                };
                seq += 1;
                if feed.ticks.send(Ok(tick)).is_err() {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
        }
    }

    /// Sends the pending messages as one chunk (nothing if there are none), keeping its last
    /// message to acknowledge; false once the run has ended.
    fn send(&self, feed: &Feed, q: &mut Pending, seq: &mut u64) -> bool {
        let Some(first) = q.first else {
            return true;
        };
        let q = std::mem::take(q);
        if let Some(m) = q.last {
            self.unacked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(q.end - 1, m);
        }
        feed.bytes
            .fetch_add(q.bytes.len() as u64, Ordering::Relaxed);
        let job = Job::Json {
            seq: *seq,
            bytes: q.bytes,
            first_line: first,
            lines: q.records,
            tag: ChunkTag {
                partition: 0,
                end: Some(q.end - 1),
                last: false,
                wants_checkpoint: false,
            },
            times: q.times,
        };
        *seq += 1;
        feed.jobs.send(job).is_ok()
    }
}
