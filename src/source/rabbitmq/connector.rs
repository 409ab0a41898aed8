//! `connector = 'rabbitmq'`: a queue, its messages acknowledged once a checkpoint covers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Queue, RabbitSource};
use crate::connector::amqp::{DEFAULT_URL, Server};
use crate::connector::options::json_only;
use crate::connector::{OptionError, SourceEntry, from_options};
use crate::error::Result;
use crate::source::{Source, SourceConnector, SourceContext};

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SourceEntry = SourceEntry {
    name: "rabbitmq",
    example: "connector = 'rabbitmq', url = 'amqp://guest:guest@127.0.0.1:5672/%2f', queue = 'payments'",
    declare,
};

/// Messages delivered and not yet acknowledged, at most (AMQP's limit is 65 535).
const DEFAULT_PREFETCH: u16 = 20_000;

/// `WITH (…)` options of a RabbitMQ source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RabbitSourceOptions {
    /// `amqp://user:password@host:port/vhost` (default the local server's guest account).
    pub url: Option<String>,
    /// The queue (it must exist).
    pub queue: String,
    /// Unacknowledged messages at most (1 to 65535, default 20000): messages are acknowledged
    /// only after a checkpoint covers them, so this bounds a checkpoint interval's intake.
    pub prefetch: Option<String>,
    /// The messages' format: `json`.
    pub format: Option<String>,
}

#[derive(Debug, Clone)]
struct Declared {
    server: Server,
    queue: String,
    prefetch: u16,
}

fn declare(options: &BTreeMap<String, String>) -> Result<Arc<dyn SourceConnector>, OptionError> {
    let o: RabbitSourceOptions = from_options(options)?;
    crate::connector::amqp::short_names(&[("queue", Some(o.queue.as_str()))])?;
    json_only(
        o.format.as_deref(),
        "a RabbitMQ queue",
        " (one JSON object a message)",
    )?;
    let prefetch = match &o.prefetch {
        None => DEFAULT_PREFETCH,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            OptionError::Invalid(format!(
                "prefetch must be a number from 1 to 65535, not '{p}'"
            ))
        })?,
    };
    Ok(Arc::new(Declared {
        server: Server {
            url: o.url.unwrap_or_else(|| DEFAULT_URL.into()),
        },
        queue: o.queue,
        prefetch,
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
        Ok(Arc::new(RabbitSource {
            queue: Queue {
                server: self.server.clone(),
                name: self.queue.clone(),
                prefetch: self.prefetch,
                consumer: format!("paystream-{}", ctx.job),
            },
            until_end: ctx.until_end,
            events: Arc::clone(&ctx.events),
            live: Default::default(),
        }))
    }
}
