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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};

use super::decoders::start_reading;
use super::{Positions, ReadOptions, Reading, Source, SourceConnector, SourceContext};
use crate::connector::amqp::block_on;
use crate::connector::nats::{DEFAULT_URL, Server};
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
    if let Some(f) = o.format.as_deref().filter(|f| *f != "json") {
        return Err(OptionError::Invalid(format!(
            "format '{f}' is not supported for a NATS stream; use format = 'json' (one JSON object a message)"
        )));
    }
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
    /// The last message of each chunk sent, by stream sequence, until a checkpoint covering it
    /// acknowledges it (and, the policy being "ack all", everything before it).
    unacked: Arc<Mutex<BTreeMap<u64, jetstream::Message>>>,
    /// The last stream sequence acknowledged.
    acked: Arc<AtomicU64>,
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
        let js = self.server.jetstream()?;
        let after = start.get(&0).copied().unwrap_or(0);
        let what = format!("read stream {}", self.stream);
        let (consumer, pending) = block_on(async {
            let stream = js.get_stream(&self.stream).await.map_err(|e| {
                format!(
                    "{e}; create the stream first (nats stream add {})",
                    self.stream
                )
            })?;
            // The consumer starts right after the checkpoint (or at the stream's start).
            let _ = stream.delete_consumer(&self.durable).await;
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
        .map_err(|e| self.server.error(&what, &e))?;
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.acked.store(after, Ordering::Release);
        let positions: Positions = [(0, after)].into();
        tracing::info!(stream = %self.stream, after, pending, until_end = self.until_end, "nats source opened");

        let reader = reader::NatsReader {
            consumer,
            server: self.server.clone(),
            unacked: Arc::clone(&self.unacked),
            until: self.until_end.then_some(pending),
            stop: Arc::clone(&opts.stop),
            acked: Arc::clone(&self.acked),
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
            covered.into_values().next_back()
        };
        // The acknowledgement tells the server (and `nats consumer info`) how far the job is;
        // where it resumes is the checkpoint's sequence. One lost with the connection is
        // harmless: the next run starts after the checkpoint regardless.
        if let Some(m) = last {
            match block_on(m.ack()) {
                Ok(()) => {
                    self.acked.fetch_max(p, Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::warn!(server = %self.server.describe(), stream = %self.stream,
                        "acknowledging up to sequence {p} failed; the next checkpoint acknowledges it: {}",
                        crate::connector::secret::mask_in(&e.to_string(), &self.server.url));
                }
            }
        }
        Ok(())
    }
}
