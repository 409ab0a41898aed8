//! [`RabbitSink`]: publishes each row as a persistent JSON message and waits for the server's
//! confirms before a checkpoint (and when too many are outstanding: backpressure). A message
//! whose confirm never came because the connection was lost (the server restarted) is
//! published again on a new connection, with the same `message_id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

use super::{Declared, KeyPart};
use crate::connector::amqp::GIVE_UP_AFTER;
use crate::connector::runtime::block_on;
use crate::error::Result;
use crate::operators::RowTimes;
use crate::sink::{Prepared, Sink};

/// Messages published and not yet confirmed, at most, before the sink waits.
const IN_FLIGHT: usize = 10_000;

/// A message published and not confirmed yet: kept to publish it again.
struct Unconfirmed {
    body: Vec<u8>,
    props: BasicProperties,
    routing_key: String,
    /// The server's confirm, or `None` when publishing itself failed.
    confirm: Option<PublisherConfirm>,
}

pub(super) struct RabbitSink {
    declared: Arc<Declared>,
    channel: Channel,
    unconfirmed: Vec<Unconfirmed>,
    _connection: Connection,
}

impl RabbitSink {
    pub(super) fn open(declared: Arc<Declared>) -> Result<Self> {
        let (connection, channel) = declared.channel()?;
        Ok(RabbitSink {
            declared,
            channel,
            unconfirmed: Vec::new(),
            _connection: connection,
        })
    }

    /// The message id of a body: the same row published again after a recovery has the same.
    fn message_id(&self, body: &[u8], routing_key: &str) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.declared.name.as_bytes());
        h.update(&[0]);
        h.update(routing_key.as_bytes());
        h.update(&[0]);
        h.update(body);
        format!("{:032x}", h.digest128())
    }

    /// Publishes `messages` on the current channel; each is kept until confirmed.
    fn send(&mut self, messages: Vec<Message>) {
        let d = &self.declared;
        let channel = &self.channel;
        let sent = block_on(async {
            let mut out = Vec::with_capacity(messages.len());
            for (body, props, routing_key) in messages {
                let confirm = channel
                    .basic_publish(
                        d.exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await
                    .ok();
                out.push(Unconfirmed {
                    body,
                    props,
                    routing_key,
                    confirm,
                });
            }
            out
        });
        self.unconfirmed.extend(sent);
    }

    /// Publishes the JSON bodies (each with its event time, epoch ms, and routing key).
    fn publish(&mut self, bodies: Vec<Row>) -> Result<()> {
        let messages = bodies
            .into_iter()
            .map(|(body, time, routing_key)| {
                let mut props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(self.message_id(&body, &routing_key).as_str().into());
                if let Some(t) = time {
                    props = props.with_timestamp(t.div_euclid(1000).max(0) as u64);
                }
                (body, props, routing_key)
            })
            .collect();
        self.send(messages);
        if self.unconfirmed.len() >= IN_FLIGHT {
            self.wait_confirms()?;
        }
        Ok(())
    }

    /// Waits for the server to confirm every message published so far. A message refused
    /// (nack) or returned unroutable fails; one whose confirm was lost with the connection is
    /// published again on a new one (waiting for the server for up to five minutes).
    fn wait_confirms(&mut self) -> Result<()> {
        let started = Instant::now();
        let what = format!("publish for sink `{}`", self.declared.name);
        loop {
            let pending = std::mem::take(&mut self.unconfirmed);
            let (confirms, kept): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .map(|u| (u.confirm, (u.body, u.props, u.routing_key)))
                .unzip();
            let results = block_on(futures::future::join_all(confirms.into_iter().map(
                |c| async move {
                    match c {
                        Some(c) => Some(c.await),
                        None => None,
                    }
                },
            )));
            let mut again = Vec::new();
            for (r, message) in results.into_iter().zip(kept) {
                match r {
                    Some(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => {}
                    Some(Ok(Confirmation::Ack(Some(_)))) => {
                        return Err(self.declared.server.error(
                            &what,
                            &format!(
                                "a message was returned unroutable (exchange `{}`, routing key `{}`): no queue is bound for it",
                                self.declared.exchange, message.2
                            ),
                        ));
                    }
                    Some(Ok(Confirmation::Nack(_))) => {
                        return Err(self
                            .declared
                            .server
                            .error(&what, &"the server refused a message (nack)"));
                    }
                    Some(Err(_)) | None => again.push(message),
                }
            }
            if again.is_empty() {
                return Ok(());
            }
            if started.elapsed() > GIVE_UP_AFTER {
                return Err(self.declared.server.error(
                    &what,
                    &format!(
                        "{} messages were not confirmed after {}s of retrying",
                        again.len(),
                        GIVE_UP_AFTER.as_secs()
                    ),
                ));
            }
            tracing::warn!(server = %self.declared.server.describe(), unconfirmed = again.len(), "the connection was lost before the server confirmed messages; publishing them again");
            std::thread::sleep(Duration::from_millis(200));
            let (connection, channel) = self.declared.channel()?;
            (self._connection, self.channel) = (connection, channel);
            self.send(again);
        }
    }

    /// Each row's JSON body, event time and routing key.
    fn rows(&self, batch: &RecordBatch, times: Option<&RowTimes>) -> Result<Vec<Row>> {
        let d = &self.declared;
        // The columns the routing key names, by index.
        let parts: Option<Vec<std::result::Result<&str, usize>>> = match &d.key_columns {
            None => None,
            Some(parts) => Some(
                parts
                    .iter()
                    .map(|p| match p {
                        KeyPart::Text(t) => Ok(Ok(t.as_str())),
                        KeyPart::Column(c) => batch.schema().index_of(c).map(Err).map_err(|_| {
                            let columns: Vec<String> = batch
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().clone())
                                .collect();
                            d.server.error(
                                &format!("publish for sink `{}`", d.name),
                                &format!(
                                    "routing_key = '{}' names column `{c}`, which the query does not return; its columns are {}",
                                    d.routing_key,
                                    columns.join(", ")
                                ),
                            )
                        }),
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let rows: Vec<Row> = (0..batch.num_rows())
            .map(|row| {
                let mut body = Vec::with_capacity(256);
                crate::sink::write_row(&mut body, batch, row);
                let key = match &parts {
                    None => d.routing_key.clone(),
                    Some(parts) => {
                        let mut key = Vec::new();
                        for p in parts {
                            match p {
                                Ok(text) => key.extend_from_slice(text.as_bytes()),
                                Err(i) => key.extend(crate::sink::text_value(
                                    batch.column(*i).as_ref(),
                                    row,
                                )),
                            }
                        }
                        String::from_utf8_lossy(&key).into_owned()
                    }
                };
                (body, times.map(|t| t.get(row)), key)
            })
            .collect();
        if let Some((_, _, key)) = rows.iter().find(|r| r.2.len() > MAX_KEY) {
            return Err(too_long(d, key));
        }
        Ok(rows)
    }

    /// The routing key of a record (a dead letter or late event: a JSON object): its fields
    /// fill the key's columns (empty where absent).
    fn record_key(&self, json: &[u8]) -> Result<String> {
        let key = self.record_key_text(json);
        if key.len() > MAX_KEY {
            return Err(too_long(&self.declared, &key));
        }
        Ok(key)
    }

    fn record_key_text(&self, json: &[u8]) -> String {
        let Some(parts) = &self.declared.key_columns else {
            return self.declared.routing_key.clone();
        };
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(json).unwrap_or_default();
        parts
            .iter()
            .map(|p| match p {
                KeyPart::Text(t) => t.clone(),
                KeyPart::Column(c) => match object.get(c) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                },
            })
            .collect()
    }
}

/// AMQP's limit on a routing key, in bytes.
const MAX_KEY: usize = 255;

/// The error of a routing key over [`MAX_KEY`] bytes.
fn too_long(d: &Declared, key: &str) -> crate::error::Error {
    let start: String = key.chars().take(40).collect();
    d.server.error(
        &format!("publish for sink `{}`", d.name),
        &format!(
            "routing_key = '{}' made a key of {} bytes ({start}…); AMQP allows {MAX_KEY}: use shorter columns",
            d.routing_key,
            key.len()
        ),
    )
}

/// A message to publish: body, properties, routing key.
type Message = (Vec<u8>, BasicProperties, String);

/// A row to publish: its JSON body, event time (epoch ms) and routing key.
type Row = (Vec<u8>, Option<i64>, String);

impl Sink for RabbitSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.rows(batch, None)?;
        self.publish(rows)
    }

    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        let rows = self.rows(batch, Some(times))?;
        self.publish(rows)
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let key = self.record_key(json)?;
        self.publish(vec![(json.to_vec(), None, key)])
    }

    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        let key = self.record_key(json)?;
        self.publish(vec![(json.to_vec(), Some(time), key)])
    }

    fn flush(&mut self) -> Result<()> {
        self.wait_confirms()
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<Prepared> {
        // Everything before the barrier is confirmed before the checkpoint is written.
        self.wait_confirms()?;
        Ok(Prepared::default())
    }
}
