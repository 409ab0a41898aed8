//! [`RabbitSink`]: publishes each row as a persistent JSON message and waits for the server's
//! confirms before a checkpoint (and when too many are outstanding: backpressure).

use datafusion::arrow::array::RecordBatch;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

use crate::connector::amqp::{Server, block_on};
use crate::error::Result;
use crate::operators::RowTimes;
use crate::sink::{Prepared, Sink};

/// Messages published and not yet confirmed, at most, before the sink waits.
const IN_FLIGHT: usize = 10_000;

pub(super) struct RabbitSink {
    name: String,
    server: Server,
    channel: Channel,
    exchange: String,
    routing_key: String,
    confirms: Vec<PublisherConfirm>,
    value: Vec<u8>,
    _connection: Connection,
}

impl RabbitSink {
    pub(super) fn new(
        name: String,
        server: Server,
        connection: Connection,
        channel: Channel,
        exchange: String,
        routing_key: String,
    ) -> Self {
        RabbitSink {
            name,
            server,
            channel,
            exchange,
            routing_key,
            confirms: Vec::new(),
            value: Vec::with_capacity(512),
            _connection: connection,
        }
    }

    /// The message id of a body: the same row published again after a recovery has the same.
    fn message_id(&self, body: &[u8]) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.name.as_bytes());
        h.update(&[0]);
        h.update(self.routing_key.as_bytes());
        h.update(&[0]);
        h.update(body);
        format!("{:032x}", h.digest128())
    }

    /// Publishes the JSON bodies (each with its event time, epoch ms).
    fn publish(&mut self, bodies: Vec<(Vec<u8>, Option<i64>)>) -> Result<()> {
        let mut pending = Vec::with_capacity(bodies.len());
        for (body, time) in &bodies {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(self.message_id(body).as_str().into());
            if let Some(t) = time {
                props = props.with_timestamp(t.div_euclid(1000).max(0) as u64);
            }
            pending.push(props);
        }
        let (channel, exchange, key) = (&self.channel, &self.exchange, &self.routing_key);
        let confirms = block_on(async {
            let mut out = Vec::with_capacity(bodies.len());
            for ((body, _), props) in bodies.iter().zip(pending) {
                out.push(
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            body,
                            props,
                        )
                        .await?,
                );
            }
            Ok::<_, lapin::Error>(out)
        })
        .map_err(|e| {
            self.server
                .error(&format!("publish for sink `{}`", self.name), &e)
        })?;
        self.confirms.extend(confirms);
        if self.confirms.len() >= IN_FLIGHT {
            self.wait_confirms()?;
        }
        Ok(())
    }

    /// Waits for the server to confirm every message published so far; a refused one fails.
    fn wait_confirms(&mut self) -> Result<()> {
        let confirms = std::mem::take(&mut self.confirms);
        let results = block_on(futures::future::join_all(confirms));
        for r in results {
            match r {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(_))) => {
                    return Err(self.server.error(
                        &format!("publish for sink `{}`", self.name),
                        &format!(
                            "a message was returned unroutable (exchange `{}`, routing key `{}`)",
                            self.exchange, self.routing_key
                        ),
                    ));
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(self.server.error(
                        &format!("publish for sink `{}`", self.name),
                        &"the server refused a message (nack)",
                    ));
                }
                Err(e) => {
                    return Err(self
                        .server
                        .error(&format!("publish for sink `{}`", self.name), &e));
                }
            }
        }
        Ok(())
    }

    fn rows(batch: &RecordBatch, times: Option<&RowTimes>) -> Vec<(Vec<u8>, Option<i64>)> {
        (0..batch.num_rows())
            .map(|row| {
                let mut body = Vec::with_capacity(256);
                crate::sink::write_row(&mut body, batch, row);
                (body, times.map(|t| t.get(row)))
            })
            .collect()
    }
}

impl Sink for RabbitSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.publish(Self::rows(batch, None))
    }

    fn write_results(&mut self, batch: &RecordBatch, times: &RowTimes) -> Result<()> {
        self.publish(Self::rows(batch, Some(times)))
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        self.value.clear();
        self.value.extend_from_slice(json);
        let body = std::mem::take(&mut self.value);
        self.publish(vec![(body, None)])
    }

    fn write_record_at(&mut self, json: &[u8], time: i64) -> Result<()> {
        self.publish(vec![(json.to_vec(), Some(time))])
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
