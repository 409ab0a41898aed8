//! `connector = 'nats'`: a JetStream stream as a source (`async-nats`).
//!
//! ```text
//!  stream ─ durable pull consumer (ack all, from the checkpoint's sequence + 1) ─▶ chunks ─▶ engine
//!         ◀─ ack of the last message a durable checkpoint covers (acks everything before it) ─┘
//! ```
//! A stream has sequence numbers, so positions are exact as for Kafka: a run (re)creates the
//! job's durable consumer to start right after the sequence its checkpoint recorded (the whole
//! stream without one), and acknowledges — for the server's view of progress and for
//! `nats consumer info` — only once a checkpoint covering the messages is durable.

mod reader;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};

use super::decoders::start_reading;
use super::{Positions, ReadOptions, Reading, Source, SourceConnector, SourceContext};
use crate::connector::nats::{DEFAULT_URL, Server};
use crate::connector::options::json_only;
use crate::connector::runtime::block_on;
use crate::connector::{OptionError, SourceEntry, from_options};
use crate::decode::Origin;
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SourceEntry = SourceEntry {
    name: "nats",
    example: "connector = 'nats', url = 'nats://127.0.0.1:4222', stream = 'PAYMENTS', subject = 'payments.>'",
    declare,
};

/// Messages delivered and not acknowledged at most, unless `max_ack_pending` says otherwise.
const DEFAULT_MAX_ACK_PENDING: u32 = 20_000;

/// `WITH (…)` options of a NATS source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsSourceOptions {
    /// `nats://host:4222` (default).
    pub url: Option<String>,
    /// The JetStream stream (it must exist).
    pub stream: String,
    /// Only messages of this subject (wildcards allowed; default every subject of the stream).
    pub subject: Option<String>,
    /// The durable consumer's name (default `paystream-<job>`).
    pub durable: Option<String>,
    /// Unacknowledged messages at most (default 20000): messages are acknowledged only after a
    /// checkpoint covers them, so this bounds a checkpoint interval's intake.
    pub max_ack_pending: Option<String>,
    /// The messages' format: `json`.
    pub format: Option<String>,
}

#[derive(Debug, Clone)]
struct Declared {
    server: Server,
    stream: String,
    subject: Option<String>,
    durable: Option<String>,
    max_ack_pending: u32,
}

fn declare(options: &BTreeMap<String, String>) -> Result<Arc<dyn SourceConnector>, OptionError> {
    let o: NatsSourceOptions = from_options(options)?;
    json_only(
        o.format.as_deref(),
        "a NATS stream",
        " (one JSON object a message)",
    )?;
    let max_ack_pending = match &o.max_ack_pending {
        None => DEFAULT_MAX_ACK_PENDING,
        Some(p) => p.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
            OptionError::Invalid(format!(
                "max_ack_pending must be a positive number of messages, not '{p}'"
            ))
        })?,
    };
    Ok(Arc::new(Declared {
        server: Server {
            url: o.url.unwrap_or_else(|| DEFAULT_URL.into()),
        },
        stream: o.stream,
        subject: o.subject,
        durable: o.durable,
        max_ack_pending,
    }))
}

impl SourceConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn resumable(&self) -> bool {
        true
    }

    fn source(&self, ctx: &SourceContext<'_>) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(NatsSource {
            server: self.server.clone(),
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            durable: self
                .durable
                .clone()
                .unwrap_or_else(|| format!("paystream-{}", ctx.job)),
            max_ack_pending: self.max_ack_pending,
            until_end: ctx.until_end,
            events: Arc::clone(&ctx.events),
            unacked: Arc::default(),
            acked: Arc::default(),
            generation: Arc::default(),
        }))
    }
}

/// A stream read by a job.
pub(crate) struct NatsSource {
    server: Server,
    stream: String,
    subject: Option<String>,
    durable: String,
    max_ack_pending: u32,
    until_end: bool,
    events: Arc<crate::schema::EventSchema>,
    /// The last message of each chunk sent (its payload dropped), by stream sequence, with the
    /// count of messages delivered up to it, until a checkpoint covering it acknowledges it
    /// (and, the policy being "ack all", everything before it).
    unacked: Unacked,
    /// Messages delivered up to the last one the server confirmed acknowledged.
    acked: Arc<AtomicU64>,
    /// The consumer's generation: the reader makes a new consumer when deliveries went
    /// missing; an acknowledgement for an older one is pointless.
    generation: Arc<AtomicU64>,
}

/// See [`NatsSource::unacked`]: by stream sequence, the message, the count of messages
/// delivered up to it, and its consumer's generation.
pub(super) type Unacked = Arc<Mutex<BTreeMap<u64, (jetstream::Message, u64, u64)>>>;

/// How a run makes the job's durable consumer: (re)created to start right after a sequence.
#[derive(Clone)]
pub(super) struct Consuming {
    pub(super) js: jetstream::Context,
    pub(super) server: Server,
    pub(super) stream: String,
    durable: String,
    subject: Option<String>,
    max_ack_pending: u32,
}

impl Consuming {
    /// [`Consuming::create`] while the server is away (a restart): retried with backoff for
    /// up to the connectors' limit; `None` once `stop` is set.
    pub(super) fn create_waiting(
        &self,
        after: u64,
        stop: &AtomicBool,
    ) -> Result<Option<PullConsumer>> {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(200);
        let mut wait = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match self.create(after) {
                Ok((consumer, _)) => return Ok(Some(consumer)),
                Err(e) if started.elapsed() > crate::connector::nats::GIVE_UP_AFTER => {
                    return Err(e);
                }
                Err(e) => {
                    crate::connector::waiting::note(
                        &mut wait,
                        &self.server.describe(),
                        &e.to_string(),
                    );
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The durable consumer afresh, delivering from sequence `after + 1` (the whole stream
    /// after 0), and the messages pending for it. An old consumer of the name is deleted
    /// first — never reused: its delivered-but-unacknowledged messages would come back only
    /// after their acknowledgement wait.
    pub(super) fn create(&self, after: u64) -> Result<(PullConsumer, u64)> {
        let what = format!("read stream {}", self.stream);
        block_on(async {
            let stream = self.js.get_stream(&self.stream).await.map_err(|e| {
                format!(
                    "{e}; create the stream first (nats stream add {})",
                    self.stream
                )
            })?;
            let mut tries = 0;
            loop {
                match stream.delete_consumer(&self.durable).await {
                    Ok(_) => break,
                    Err(e) if e.to_string().contains("not found") => break,
                    Err(e) if tries >= 20 => {
                        return Err(format!("delete the old consumer {}: {e}", self.durable));
                    }
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
            let config = pull::Config {
                durable_name: Some(self.durable.clone()),
                ack_policy: AckPolicy::All,
                deliver_policy: match after {
                    0 => DeliverPolicy::All,
                    s => DeliverPolicy::ByStartSequence {
                        start_sequence: s + 1,
                    },
                },
                filter_subject: self.subject.clone().unwrap_or_default(),
                max_ack_pending: i64::from(self.max_ack_pending),
                ack_wait: Duration::from_secs(600),
                ..pull::Config::default()
            };
            let mut consumer = stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string())?;
            let pending = consumer
                .info()
                .await
                .map_err(|e| e.to_string())?
                .num_pending;
            Ok::<_, String>((consumer, pending))
        })
        .map_err(|e| self.server.error(&what, &e))
    }
}

impl Source for NatsSource {
    fn events(&self) -> Arc<crate::schema::EventSchema> {
        Arc::clone(&self.events)
    }

    fn origins(&self) -> Result<Vec<Origin>> {
        Ok(vec![Origin::partition(self.stream.as_str(), 0)])
    }

    fn bounded(&self) -> bool {
        self.until_end
    }

    fn open(&self, start: &Positions, opts: &ReadOptions) -> Result<Reading> {
        let consuming = Consuming {
            js: self.server.jetstream()?,
            server: self.server.clone(),
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            subject: self.subject.clone(),
            max_ack_pending: self.max_ack_pending,
        };
        let after = start.get(&0).copied().unwrap_or(0);
        let (consumer, pending) = consuming.create(after)?;
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.acked.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let positions: Positions = [(0, after)].into();
        tracing::info!(stream = %self.stream, after, pending, until_end = self.until_end, "nats source opened");

        let reader = reader::NatsReader {
            consumer,
            consuming,
            after,
            unacked: Arc::clone(&self.unacked),
            until: self.until_end.then_some(pending),
            stop: Arc::clone(&opts.stop),
            acked: Arc::clone(&self.acked),
            generation: Arc::clone(&self.generation),
            max_pending: u64::from(self.max_ack_pending),
        };
        start_reading(&self.events, opts, positions, "nats-reader", move |feed| {
            reader.run(feed)
        })
    }

    fn commit(&self, positions: &Positions) -> Result<()> {
        let Some(&p) = positions.get(&0) else {
            return Ok(());
        };
        let last = {
            let mut unacked = self.unacked.lock().unwrap_or_else(|e| e.into_inner());
            let newer = unacked.split_off(&(p + 1));
            let covered = std::mem::replace(&mut *unacked, newer);
            covered.into_iter().next_back()
        };
        // The acknowledgement tells the server (and `nats consumer info`) how far the job is,
        // and frees `max_ack_pending` for more; where a run resumes is the checkpoint's
        // sequence regardless. It waits for the server's confirmation; one that fails is
        // tried again by the next checkpoint.
        let current = self.generation.load(Ordering::Acquire);
        if let Some((sequence, (m, delivered, generation))) = last
            && generation == current
        {
            let acked = block_on(async {
                tokio::time::timeout(Duration::from_secs(5), m.double_ack()).await
            });
            match acked {
                Ok(Ok(())) => {
                    self.acked.fetch_max(delivered, Ordering::AcqRel);
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no confirmation within 5 s".into(),
                    };
                    tracing::warn!(server = %self.server.describe(), stream = %self.stream,
                        "acknowledging up to sequence {sequence} failed; the next checkpoint tries again: {}",
                        self.server.mask(&why));
                    self.unacked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(sequence)
                        .or_insert((m, delivered, generation));
                }
            }
        }
        Ok(())
    }
}
