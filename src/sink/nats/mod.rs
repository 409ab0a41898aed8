//! `connector = 'nats'`: result rows published to JetStream with a deterministic
//! `Nats-Msg-Id`, so a row published again after a recovery is dropped by the stream's
//! duplicate window: exactly-once within that window (two minutes by default).
//!
//! ```sql
//! CREATE SINK alerts WITH (connector = 'nats', url = 'nats://127.0.0.1:4222',
//!   subject = 'risk.alerts', stream = 'RISK');   -- the stream is created when absent
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;

use super::{Prepared, Sink, SinkConnector, SinkContext};
use crate::connector::nats::{DEFAULT_URL, GIVE_UP_AFTER, Server};
use crate::connector::runtime::block_on;
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;
use crate::operators::RowTimes;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "nats",
    example: "connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'risk.alerts', stream = 'RISK'",
    declare,
};

/// Messages published and not yet acknowledged by JetStream, at most, before the sink waits
/// (below the client's own limit of 5000, at which a publish would wait for a permit that only
/// awaiting the earlier acknowledgements frees).
const IN_FLIGHT: usize = 4096;

/// The duplicate window of a stream the sink creates: longer than a recovery takes (the
/// default two minutes is shorter than a server restart's retries can last).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// `WITH (…)` options of a NATS sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkOptions {
    /// `nats://host:4222` (default).
    pub url: Option<String>,
    /// The subject each row is published to.
    pub subject: String,
    /// A stream capturing `subject`, created when absent (without it, a stream must capture
    /// the subject already).
    pub stream: Option<String>,
}

#[derive(Debug, Clone)]
struct Declared {
    name: String,
    server: Server,
    subject: String,
    stream: Option<String>,
}

fn declare(
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: NatsSinkOptions = from_options(options)?;
    Ok(Arc::new(Declared {
        name: name.to_string(),
        server: Server {
            url: o.url.unwrap_or_else(|| DEFAULT_URL.into()),
        },
        subject: o.subject,
        stream: o.stream,
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        format!("{} subject {}", self.server.describe(), self.subject)
    }

    fn where_to_look(&self) -> String {
        format!("They are messages of {}.", self.describe())
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    fn open(&self, _ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        let js = self.server.jetstream()?;
        // Equal rows are numbered for as long as the stream remembers ids.
        let mut remember = DUPLICATE_WINDOW;
        if let Some(stream) = &self.stream {
            let s = block_on(js.get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![self.subject.clone()],
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            }))
            .map_err(|e| self.server.error(&format!("create stream {stream}"), &e))?;
            remember = remember.max(s.cached_info().config.duplicate_window);
        }
        Ok(Box::new(NatsSink {
            declared: self.clone(),
            js,
            acks: Vec::new(),
            ids: MessageIds::new(&self.name, &self.subject, remember),
        }))
    }
}

/// See the module's documentation.
struct NatsSink {
    declared: Declared,
    js: jetstream::Context,
    /// Messages published since JetStream last acknowledged everything, with their
    /// acknowledgements (none where the publish itself failed): each is published again, under
    /// the same id, until acknowledged.
    acks: Vec<(Message, Option<PublishAckFuture>)>,
    ids: MessageIds,
}

/// A result row's message: its body and deterministic id.
struct Message {
    body: Vec<u8>,
    id: String,
}

impl NatsSink {
    fn publish(&mut self, bodies: Vec<Vec<u8>>) -> Result<()> {
        let mut messages = Vec::with_capacity(bodies.len().min(IN_FLIGHT));
        for body in bodies {
            messages.push(Message {
                id: self.ids.next(&body),
                body,
            });
            if self.acks.len() + messages.len() >= IN_FLIGHT {
                let sent = send(
                    &self.js,
                    &self.declared.subject,
                    std::mem::take(&mut messages),
                );
                self.acks.extend(sent);
                self.wait_acks()?;
            }
        }
        let sent = send(&self.js, &self.declared.subject, messages);
        self.acks.extend(sent);
        Ok(())
    }

    /// Waits until JetStream acknowledged every message published so far, publishing again
    /// (same ids: the stream drops a copy it already has) what failed — the server restarting,
    /// the connection dropping — with backoff, for up to [`GIVE_UP_AFTER`].
    fn wait_acks(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let (mut warned, mut wait) = (None::<Instant>, None);
        loop {
            let in_flight = std::mem::take(&mut self.acks);
            let mut failed = Vec::new();
            let mut last_error = String::new();
            let results = block_on(futures::future::join_all(in_flight.into_iter().map(
                |(m, ack)| async move {
                    let r = match ack {
                        Some(ack) => ack.into_future().await.map_err(|e| e.to_string()),
                        None => Err("not sent".to_string()),
                    };
                    (m, r)
                },
            )));
            for (m, r) in results {
                if let Err(e) = r {
                    last_error = e;
                    failed.push(m);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if started.elapsed() > GIVE_UP_AFTER {
                return Err(self.declared.server.error(
                    &format!("publish to {}", self.declared.subject),
                    &last_error,
                ));
            }
            let reason = self.declared.server.mask(&last_error);
            crate::connector::waiting::note(&mut wait, &self.declared.server.describe(), &reason);
            if crate::connector::waiting::give_up(&wait) {
                return Err(self.declared.server.error(
                    &format!("publish to {}", self.declared.subject),
                    &format!("the job was stopped while messages were not acknowledged ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.declared.server.describe(), subject = %self.declared.subject,
                    "{} messages not acknowledged, publishing them again: {reason}", failed.len());
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            self.acks = send(&self.js, &self.declared.subject, failed);
        }
    }
}

/// The `Nats-Msg-Id`s of a sink's messages.
pub(crate) struct MessageIds {
    /// The hasher fed with the sink's name and subject.
    stem: xxhash_rust::xxh3::Xxh3,
    /// Each body published lately (by hash): how often, and when last. A body published again
    /// within the duplicate window is a different row with the same columns, numbered so its
    /// id differs; entries older than the stream's duplicate window are dropped (memory:
    /// about 50 bytes a distinct row published within it).
    seen: HashMap<u128, (u64, Instant)>,
    pruned: Instant,
    /// The duplicate window.
    remember: Duration,
}

impl MessageIds {
    pub(crate) fn new(sink: &str, subject: &str, remember: Duration) -> Self {
        let mut stem = xxhash_rust::xxh3::Xxh3::new();
        stem.update(sink.as_bytes());
        stem.update(&[0]);
        stem.update(subject.as_bytes());
        stem.update(&[0]);
        Self {
            stem,
            seen: HashMap::new(),
            pruned: Instant::now(),
            remember,
        }
    }

    /// The id of a row's message: a hash of the sink, subject and body, and — for the second
    /// and later rows of the same columns within the duplicate window — the row's number among them.
    /// Rows of equal columns are interchangeable, so a recovery that publishes the rows after
    /// its checkpoint again gives them the ids they had, whatever their order — except that
    /// the counts restart with the process: a row equal to one published shortly before the
    /// checkpoint may then be taken for it. Results with an identifying column (a window, a
    /// key, `event_id`) never are.
    pub(crate) fn next(&mut self, body: &[u8]) -> String {
        let now = Instant::now();
        if now.duration_since(self.pruned) > self.remember / 4 {
            let remember = self.remember;
            self.seen
                .retain(|_, (_, at)| now.duration_since(*at) <= remember);
            self.pruned = now;
        }
        let mut h = self.stem.clone();
        h.update(body);
        let hash = h.digest128();
        let n = match self.seen.entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let (count, at) = e.get_mut();
                *at = now;
                *count += 1;
                *count
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((0, now));
                0
            }
        };
        match n {
            0 => format!("{hash:032x}"),
            n => format!("{hash:032x}-{n}"),
        }
    }
}

/// Publishes `messages` to `subject`, each with its acknowledgement to wait for (none where
/// the publish failed at once: then the rest are not tried, to be published again after a
/// pause rather than each waiting out the client's timeout).
fn send(
    js: &jetstream::Context,
    subject: &str,
    messages: Vec<Message>,
) -> Vec<(Message, Option<PublishAckFuture>)> {
    block_on(async {
        let mut out = Vec::with_capacity(messages.len());
        let mut failed = false;
        for m in messages {
            let message = jetstream::message::PublishMessage::build()
                .payload(m.body.clone().into())
                .message_id(m.id.as_str());
            let ack = if failed {
                None
            } else {
                js.send_publish(subject.to_string(), message).await.ok()
            };
            failed = ack.is_none();
            out.push((m, ack));
        }
        out
    })
}

impl Sink for NatsSink {
    fn write_batch(&mut self, batch: &datafusion::arrow::array::RecordBatch) -> Result<()> {
        let bodies = (0..batch.num_rows())
            .map(|row| {
                let mut body = Vec::with_capacity(256);
                crate::sink::write_row(&mut body, batch, row);
                body
            })
            .collect();
        self.publish(bodies)
    }

    fn write_results(
        &mut self,
        batch: &datafusion::arrow::array::RecordBatch,
        _times: &RowTimes,
    ) -> Result<()> {
        self.write_batch(batch)
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        self.publish(vec![json.to_vec()])
    }

    fn flush(&mut self) -> Result<()> {
        self.wait_acks()
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<Prepared> {
        self.wait_acks()?;
        Ok(Prepared::default())
    }
}

#[cfg(test)]
mod tests {
    use super::{DUPLICATE_WINDOW, MessageIds};

    #[test]
    fn equal_rows_get_numbered_ids_and_a_new_process_the_same_ones() {
        let mut ids = MessageIds::new("alerts", "risk.alerts", DUPLICATE_WINDOW);
        let a = [
            ids.next(b"{\"x\":1}"),
            ids.next(b"{\"x\":2}"),
            ids.next(b"{\"x\":1}"),
        ];
        assert_ne!(a[0], a[1]);
        assert_eq!(
            a[2],
            format!("{}-1", a[0]),
            "the second equal row is numbered"
        );
        // Another process (a recovery) numbers the same rows, in another order, alike.
        let mut again = MessageIds::new("alerts", "risk.alerts", DUPLICATE_WINDOW);
        let mut b = [
            again.next(b"{\"x\":1}"),
            again.next(b"{\"x\":1}"),
            again.next(b"{\"x\":2}"),
        ];
        b.sort();
        let first = a[0].clone();
        let mut a = a;
        a.sort();
        assert_eq!(a, b);
        // Another sink or subject: other ids.
        assert_ne!(
            MessageIds::new("other", "risk.alerts", DUPLICATE_WINDOW).next(b"{\"x\":1}"),
            first
        );
        assert_ne!(
            MessageIds::new("alerts", "risk.other", DUPLICATE_WINDOW).next(b"{\"x\":1}"),
            first
        );
    }
}
