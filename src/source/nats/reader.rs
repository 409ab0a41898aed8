//! The NATS source's reader thread: pulls messages, gathers them into chunks of about
//! [`CHUNK`] bytes (one JSON value a line), hands them to the decoders, and sends ticks while
//! nothing arrives.
//!
//! Each delivery's consumer sequence is the previous one's plus one; a jump means deliveries
//! went missing (a connection dropped with messages in flight), and the server would send them
//! again only after the acknowledgement wait. So the reader makes the consumer afresh right
//! after the last stream sequence it took, and drops what it has already taken (a
//! redelivery). A stream sequence may skip (a subject filter, deleted messages): a chunk's
//! position is its last sequence; its dead letters are numbered from its first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;

use super::{Consuming, Unacked};
use crate::connector::runtime::block_on;
use crate::error::Result;
use crate::source::ChunkTag;
use crate::source::decoders::{Feed, Job};
use crate::source::log::{CHUNK, TICK, append_line};

/// How long messages wait in a partly filled chunk before it is sent anyway.
const LINGER: Duration = Duration::from_millis(50);

/// How often an idle reader asks the server how its consumer stands: deliveries lost at the end
/// of a burst, or acknowledgements the server never counted, show only there.
const CHECK_EVERY: Duration = Duration::from_secs(2);

pub(super) struct NatsReader {
    pub(super) consumer: PullConsumer,
    pub(super) consuming: Consuming,
    /// The last stream sequence taken (the checkpoint's, at the start).
    pub(super) after: u64,
    pub(super) unacked: Unacked,
    /// `--until-end`: the messages pending for the consumer at the start.
    pub(super) until: Option<u64>,
    pub(super) stop: Arc<AtomicBool>,
    /// Messages delivered up to the last acknowledgement the server confirmed.
    pub(super) acked: Arc<AtomicU64>,
    /// The consumer's generation, advanced when the reader makes it afresh.
    pub(super) generation: Arc<AtomicU64>,
    /// Unacknowledged messages the server delivers at most.
    pub(super) max_pending: u64,
}

/// Messages not yet sent.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    first: Option<u64>,
    /// The last message's stream sequence.
    last_seq: u64,
    records: usize,
    times: Vec<i64>,
    /// The last message (payload dropped), to acknowledge, and the messages delivered up to it.
    last: Option<(jetstream::Message, u64)>,
}

impl NatsReader {
    pub(super) fn run(mut self, feed: Feed) {
        if let Err(e) = self.read(&feed) {
            let _ = feed.ticks.send(Err(e));
        }
    }

    fn read(&mut self, feed: &Feed) -> Result<()> {
        let server = self.consuming.server.clone();
        let mut messages =
            block_on(self.consumer.messages()).map_err(|e| server.error("consume", &e))?;
        let mut pending = Pending::default();
        // `delivered`: messages taken this run; `floor`: those taken before the current
        // consumer was made (none of them is pending for it).
        let (mut seq, mut delivered, mut floor, mut last_consumer_seq) = (0u64, 0u64, 0u64, 0u64);
        let (mut last_sent, mut last_flush, mut last_ask) =
            (Instant::now(), Instant::now(), Instant::now());
        let (mut last_check, mut suspect) = (Instant::now(), None::<u64>);
        let (mut warned, mut wait, mut last_error) = (None::<Instant>, None, Instant::now());
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
            let mut lost = false;
            let idle = match next {
                Ok(Some(Ok(mut m))) => {
                    drop(wait.take()); // the server answers again
                    let info = m.info().map_err(|e| server.error("consume", &e))?;
                    let (s, consumer_seq, left, time) = (
                        info.stream_sequence,
                        info.consumer_sequence,
                        info.pending,
                        (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
                    );
                    // A fresh consumer's first delivery is its number 1.
                    lost = consumer_seq != last_consumer_seq + 1;
                    last_consumer_seq = consumer_seq;
                    if !lost && s > self.after {
                        if pending.bytes.capacity() == 0 {
                            pending.bytes = feed
                                .recycled
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK + (64 << 10)));
                            pending.bytes.clear();
                        }
                        pending.first.get_or_insert(s);
                        pending.last_seq = s;
                        pending.records += 1;
                        pending.times.push(time);
                        append_line(&mut pending.bytes, &m.message.payload);
                        delivered += 1;
                        self.after = s;
                        // Kept to acknowledge: the reply subject, not the payload.
                        m.message.payload = Default::default();
                        pending.last = Some((m, delivered));
                        if pending.bytes.len() >= CHUNK {
                            if !self.send(feed, &mut pending, &mut seq) {
                                return Ok(());
                            }
                            last_sent = Instant::now();
                        }
                        // `--until-end`: nothing left for the consumer (some were removed by
                        // the stream's limits before they were read).
                        if left == 0
                            && let Some(u) = &mut self.until
                        {
                            *u = delivered;
                        }
                    }
                    false
                }
                Ok(Some(Err(e))) => {
                    // The client reconnects by itself; the job waits meanwhile.
                    let reason = server.mask(&e.to_string());
                    crate::connector::waiting::note(&mut wait, &server.describe(), &reason);
                    last_error = Instant::now();
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(server = %server.describe(), "nats source: {reason}; waiting for the server");
                        warned = Some(Instant::now());
                    }
                    true
                }
                Ok(None) => {
                    lost = true;
                    true
                }
                Err(_) => true,
            };
            if idle && last_error.elapsed() >= CHECK_EVERY {
                drop(wait.take()); // no error for a while: the server answers again
            }
            // Every message the server allows is unacknowledged: only a checkpoint frees more.
            let outstanding = delivered - floor.max(self.acked.load(Ordering::Acquire));
            let blocked = idle && outstanding >= self.max_pending;
            if idle && !lost && last_check.elapsed() >= CHECK_EVERY {
                last_check = Instant::now();
                let info = block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), self.consumer.info()).await
                });
                if let Ok(Ok(info)) = info {
                    // Deliveries the reader never got (the end of a burst lost with a
                    // connection), or acknowledgements the server never counted while it
                    // holds back deliveries for them — seen twice in a row with nothing
                    // arriving between (not a message still on its way).
                    let behind = info.delivered.consumer_sequence > last_consumer_seq
                        || (info.num_ack_pending as u64 >= self.max_pending
                            && outstanding < self.max_pending);
                    lost = behind && suspect == Some(last_consumer_seq);
                    suspect = behind.then_some(last_consumer_seq);
                }
            }
            if lost {
                // A new consumer right after the last sequence taken: nothing skipped, and
                // what it delivers again that was taken is dropped above.
                tracing::warn!(server = %server.describe(), stream = %self.consuming.stream, after = self.after,
                    "nats source: the consumer lost track of its deliveries; consuming again after the last sequence taken");
                if !self.send(feed, &mut pending, &mut seq) {
                    return Ok(());
                }
                self.unacked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.generation.fetch_add(1, Ordering::AcqRel);
                let Some(consumer) = self.consuming.create_waiting(self.after, &self.stop)? else {
                    return Ok(()); // stopped meanwhile
                };
                self.consumer = consumer;
                messages =
                    block_on(self.consumer.messages()).map_err(|e| server.error("consume", &e))?;
                (floor, last_consumer_seq, suspect) = (delivered, 0, None);
                continue;
            }
            if (idle || last_flush.elapsed() >= LINGER) && pending.first.is_some() {
                last_flush = Instant::now();
                if !self.send(feed, &mut pending, &mut seq) {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
            let ask = blocked && last_ask.elapsed() >= Duration::from_millis(50);
            if ask || (idle && last_sent.elapsed() >= TICK) {
                if ask {
                    last_ask = Instant::now();
                }
                if !feed.tick(&mut seq, ask) {
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
        if let Some((m, delivered)) = q.last {
            let generation = self.generation.load(Ordering::Acquire);
            self.unacked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(q.last_seq, (m, delivered, generation));
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
                end: Some(q.last_seq),
                last: false,
                wants_checkpoint: false,
            },
            times: q.times,
            meta: None,
        };
        *seq += 1;
        feed.jobs.send(job).is_ok()
    }
}
