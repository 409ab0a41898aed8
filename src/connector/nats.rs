//! What the NATS source and sink share: a JetStream context on the connectors' runtime,
//! connected with backoff while the server is down, and errors that name the server.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::amqp::block_on;
use super::secret::{mask_in, mask_url};
use crate::error::{Error, Result};

/// Where a NATS connector connects without `url`.
pub(crate) const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long a connector waits for its server before the job fails.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// A NATS server, by URL.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `nats://[user:password@]host:port`.
    pub url: String,
}

impl Server {
    /// The URL for messages: password masked.
    pub(crate) fn describe(&self) -> String {
        format!("nats {}", mask_url(&self.url))
    }

    /// An error of `what` against this server (password masked).
    pub(crate) fn error(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Output {
            target: self.describe(),
            source: std::io::Error::other(format!(
                "{what}: {}",
                mask_in(&e.to_string(), &self.url)
            )),
        }
    }

    /// A JetStream context, retried with backoff while the server is unreachable (a warning a
    /// minute) for up to [`GIVE_UP_AFTER`]. The client reconnects by itself afterwards.
    pub(crate) fn jetstream(&self) -> Result<jetstream::Context> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let mut warned = None::<Instant>;
        loop {
            let connect = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .max_reconnects(None);
            // The context spawns onto the runtime: made inside it.
            let e = match block_on(async {
                tokio::time::timeout(Duration::from_secs(10), connect.connect(self.url.as_str()))
                    .await
                    .map(|c| c.map(jetstream::new))
            }) {
                Ok(Ok(js)) => return Ok(js),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            if started.elapsed() > GIVE_UP_AFTER {
                return Err(self.error("connect", &e));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.describe(), "the server is unreachable, retrying: {}", mask_in(&e, &self.url));
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
