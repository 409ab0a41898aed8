//! `connector = 'rabbitmq'`: result rows published as persistent JSON messages with publisher
//! confirms.
//!
//! ```sql
//! CREATE SINK alerts WITH (connector = 'rabbitmq', url = 'amqp://guest:guest@127.0.0.1:5672/%2f',
//!   queue = 'risk_alerts');                                   -- declared durable when absent
//! CREATE SINK fanout WITH (connector = 'rabbitmq', exchange = 'risk', routing_key = 'alerts');
//! CREATE SINK by_currency WITH (connector = 'rabbitmq', exchange = 'amq.topic',
//!   routing_key = 'settlement.{currency}');                 -- each row's key from its columns
//! ```
//! At-least-once: a checkpoint waits until the server confirmed every message before it, and
//! a recovery publishes again what followed the restored checkpoint — with the same
//! `message_id` (a hash of the sink, routing key and body), so a consumer can drop repeats.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::{Sink, SinkConnector, SinkContext};
use crate::connector::amqp::{DEFAULT_URL, Server};
use crate::connector::runtime::block_on;
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

mod sink;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "rabbitmq",
    example: "connector = 'rabbitmq', url = 'amqp://guest:guest@127.0.0.1:5672/%2f', queue = 'risk_alerts'",
    declare,
};

/// `WITH (…)` options of a RabbitMQ sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSinkOptions {
    /// `amqp://user:password@host:port/vhost` (default the local server's guest account).
    pub url: Option<String>,
    /// A queue, declared durable when absent (and bound to `exchange` when one is given).
    pub queue: Option<String>,
    /// The exchange (default the default exchange, which routes by queue name).
    pub exchange: Option<String>,
    /// The routing key (default the queue); `{column}` in it is replaced by each row's value
    /// of that column (`settlement.{currency}`), for topic and direct exchanges.
    pub routing_key: Option<String>,
}

/// A piece of a routing key: text, or a column whose value goes there.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum KeyPart {
    Text(String),
    Column(String),
}

/// The pieces of `template` (`a.{col}.b`), or what is wrong with it.
pub(super) fn key_parts(template: &str) -> Result<Vec<KeyPart>, OptionError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(KeyPart::Text(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(OptionError::Invalid(format!(
                "routing_key = '{template}' opens a column with `{{` it never closes; write `{{column}}`"
            )));
        };
        let column = rest[open + 1..open + close].trim();
        if column.is_empty() || column.contains('{') {
            return Err(OptionError::Invalid(format!(
                "routing_key = '{template}' has an empty or nested `{{…}}`; write `{{column}}`"
            )));
        }
        parts.push(KeyPart::Column(column.to_string()));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(OptionError::Invalid(format!(
            "routing_key = '{template}' closes a `}}` it never opened; write `{{column}}`"
        )));
    }
    if !rest.is_empty() {
        parts.push(KeyPart::Text(rest.to_string()));
    }
    Ok(parts)
}

#[derive(Debug, Clone)]
pub(super) struct Declared {
    pub(super) name: String,
    pub(super) server: Server,
    pub(super) queue: Option<String>,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    /// The routing key's pieces when it names columns (`None`: the same key for every row).
    pub(super) key_columns: Option<Vec<KeyPart>>,
}

impl Declared {
    /// A connection and a channel with publisher confirms; the queue declared (and bound).
    /// Waits for a server that is down.
    pub(super) fn channel(&self) -> Result<(Connection, Channel)> {
        let connection = self
            .server
            .connect(&format!("paystream-sink-{}", self.name))?;
        let channel = block_on(async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            if let Some(q) = &self.queue {
                channel
                    .queue_declare(
                        q.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                if !self.exchange.is_empty() {
                    channel
                        .queue_bind(
                            q.as_str().into(),
                            self.exchange.as_str().into(),
                            self.routing_key.as_str().into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
            Ok::<_, lapin::Error>(channel)
        })
        .map_err(|e| self.server.error(&format!("open sink `{}`", self.name), &e))?;
        Ok((connection, channel))
    }
}

fn declare(
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: RabbitSinkOptions = from_options(options)?;
    crate::connector::amqp::short_names(&[
        ("queue", o.queue.as_deref()),
        ("exchange", o.exchange.as_deref()),
    ])?;
    let exchange = o.exchange.unwrap_or_default();
    let routing_key = match (o.routing_key, &o.queue) {
        (Some(k), _) => k,
        (None, Some(q)) => q.clone(),
        (None, None) => {
            return Err(OptionError::Invalid(
                "needs option `queue` (or `exchange` and `routing_key`): where the messages go"
                    .into(),
            ));
        }
    };
    let parts = key_parts(&routing_key)?;
    let key_columns = parts
        .iter()
        .any(|p| matches!(p, KeyPart::Column(_)))
        .then_some(parts);
    if key_columns.is_some() && o.queue.is_some() {
        return Err(OptionError::Invalid(format!(
            "routing_key = '{routing_key}' takes each row's key from its columns, so it cannot be bound to one `queue`; drop `queue` and bind your queues to exchange `{}` with the keys (or patterns) they want",
            if exchange.is_empty() {
                "<name>"
            } else {
                exchange.as_str()
            }
        )));
    }
    if exchange.is_empty() && o.queue.as_ref().is_some_and(|q| *q != routing_key) {
        return Err(OptionError::Invalid(format!(
            "routing_key = '{routing_key}' with the default exchange would not reach queue `{}`; give an `exchange` or drop `routing_key`",
            o.queue.unwrap_or_default()
        )));
    }
    Ok(Arc::new(Declared {
        name: name.to_string(),
        server: Server {
            url: o.url.unwrap_or_else(|| DEFAULT_URL.into()),
        },
        queue: o.queue,
        exchange,
        routing_key,
        key_columns,
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        match &self.queue {
            Some(q) => format!("{} queue {q}", self.server.describe()),
            None => format!(
                "{} exchange {} key {}",
                self.server.describe(),
                self.exchange,
                self.routing_key
            ),
        }
    }

    fn where_to_look(&self) -> String {
        format!("They are messages at {}.", self.describe())
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        // At-least-once: a reset publishes recomputed results again.
        Ok(None)
    }

    fn open(&self, _ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        Ok(Box::new(sink::RabbitSink::open(Arc::new(self.clone()))?))
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyPart, key_parts};

    #[test]
    fn routing_keys_name_columns_in_braces() {
        assert_eq!(
            key_parts("settlement.{currency}.{ merchant_id }").unwrap(),
            vec![
                KeyPart::Text("settlement.".into()),
                KeyPart::Column("currency".into()),
                KeyPart::Text(".".into()),
                KeyPart::Column("merchant_id".into()),
            ]
        );
        assert_eq!(
            key_parts("alerts").unwrap(),
            vec![KeyPart::Text("alerts".into())]
        );
        for bad in ["a.{currency", "a.{}", "a}.b", "{a{b}}"] {
            assert!(key_parts(bad).is_err(), "{bad}");
        }
        let long = "q".repeat(256);
        let e = crate::connector::amqp::short_names(&[("queue", Some(long.as_str()))]).unwrap_err();
        assert!(e.to_string().contains("256 bytes"), "{e}");
    }
}
