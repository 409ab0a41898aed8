//! The RabbitMQ source's reader thread: takes deliveries from the consumer, gathers them into
//! chunks of about [`CHUNK`] bytes (one JSON value a line), hands them to the decoders, and
//! sends ticks while nothing arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::Consumer;

use super::{Live, Queue, position};
use crate::connector::runtime::block_on;
use crate::error::Result;
use crate::source::ChunkTag;
use crate::source::decoders::{Feed, Job};
use crate::source::log::{CHUNK, TICK, append_line};

/// How long deliveries wait in a partly filled chunk before it is sent anyway.
const LINGER: Duration = Duration::from_millis(50);

pub(super) struct RabbitReader {
    pub(super) consumer: Consumer,
    pub(super) queue: Queue,
    /// The channel (its number, and what the checkpoints acknowledged so far).
    pub(super) live: Arc<Live>,
    /// The source's handle on the channel, replaced when the reader reconnects.
    pub(super) slot: Arc<Mutex<Option<Arc<Live>>>>,
    /// `--until-end`: the messages waiting in the queue at the start.
    pub(super) until: Option<u64>,
    pub(super) feed: Feed,
    pub(super) stop: Arc<AtomicBool>,
}

/// Deliveries not yet sent.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The first delivery's number on this read (positions of dead letters).
    first: Option<u64>,
    /// The last delivery tag.
    last_tag: u64,
    records: usize,
    times: Vec<i64>,
}

impl RabbitReader {
    pub(super) fn run(mut self) {
        if let Err(e) = self.read() {
            let _ = self.feed.ticks.send(Err(e));
        }
    }

    fn read(&mut self) -> Result<()> {
        let mut pending = Pending::default();
        let (mut seq, mut delivered) = (0u64, 0u64);
        let mut last_sent = Instant::now();
        let mut last_flush = Instant::now();
        let (mut last_tag, mut last_ask) = (0u64, Instant::now());
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.until.is_some_and(|u| delivered >= u) {
                self.send(&mut pending, &mut seq);
                return Ok(());
            }
            let next = block_on(async {
                tokio::time::timeout(Duration::from_millis(20), self.consumer.next()).await
            });
            let idle = match next {
                Ok(Some(Ok(d))) => {
                    if pending.bytes.capacity() == 0 {
                        pending.bytes = self
                            .feed
                            .recycled
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                        pending.bytes.clear();
                    }
                    pending.first.get_or_insert(d.delivery_tag);
                    pending.last_tag = d.delivery_tag;
                    last_tag = d.delivery_tag;
                    pending.records += 1;
                    let secs = d.properties.timestamp().unwrap_or(0);
                    pending.times.push((secs as i64).saturating_mul(1000));
                    append_line(&mut pending.bytes, &d.data);
                    delivered += 1;
                    if pending.bytes.len() >= CHUNK {
                        if !self.send(&mut pending, &mut seq) {
                            return Ok(());
                        }
                        last_sent = Instant::now();
                    }
                    false
                }
                Ok(next) => {
                    // The connection or channel was lost (the server restarted), or the server
                    // cancelled the consumer: consume again on a new channel (a deleted queue is
                    // an error then). What was delivered and not acknowledged comes again; the
                    // deduplication drops what was counted.
                    let why = match next {
                        Some(Err(e)) => e.to_string(),
                        _ => "the server cancelled the consumer".into(),
                    };
                    tracing::warn!(server = %self.queue.server.describe(), queue = %self.queue.name, "consuming failed, reconnecting: {}", crate::connector::secret::mask_in(&why, &self.queue.server.url));
                    if !self.send(&mut pending, &mut seq) {
                        return Ok(());
                    }
                    let (live, consumer, waiting) = self.queue.consume()?;
                    *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&live));
                    (self.live, self.consumer, last_tag) = (live, consumer, 0);
                    if let Some(u) = &mut self.until {
                        *u = delivered + u64::from(waiting);
                    }
                    true
                }
                Err(_) => true,
            };
            if (idle || last_flush.elapsed() >= LINGER) && pending.first.is_some() {
                last_flush = Instant::now();
                if !self.send(&mut pending, &mut seq) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
            // Every delivery the server allows is unacknowledged: only a checkpoint frees more.
            let blocked = idle
                && last_tag.saturating_sub(self.live.acked.load(Ordering::Acquire))
                    >= u64::from(self.queue.prefetch)
                && last_ask.elapsed() >= Duration::from_millis(50);
            if blocked || (idle && last_sent.elapsed() >= TICK) {
                if blocked {
                    last_ask = Instant::now();
                }
                if !self.feed.tick(&mut seq, blocked) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
        }
    }

    /// Sends the pending deliveries as one chunk (nothing if there are none); false once the
    /// run has ended.
    fn send(&self, q: &mut Pending, seq: &mut u64) -> bool {
        let Some(first) = q.first else {
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
                partition: 0,
                end: Some(position(self.live.generation, q.last_tag)),
                last: false,
                wants_checkpoint: false,
            },
            times: q.times,
            meta: None,
        };
        *seq += 1;
        self.feed.jobs.send(job).is_ok()
    }
}
