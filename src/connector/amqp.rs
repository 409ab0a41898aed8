//! What the RabbitMQ source and sink share: the AMQP connection (lapin on the connectors'
//! runtime, [`super::runtime`], which keeps heartbeats going while the engine's threads block), waiting
//! for a server that is down, and errors that name the server with its password masked.

use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};

use super::runtime::block_on;
use super::secret::{mask_in, mask_url};
use crate::error::{Error, Result};

/// Where a RabbitMQ connector connects without `url`.
pub(crate) const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a connector waits for its server before the job fails.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// Checks that the names given as options fit AMQP's short strings (255 bytes), which the
/// client would otherwise refuse with a panic.
pub(crate) fn short_names(names: &[(&str, Option<&str>)]) -> Result<(), super::OptionError> {
    for (option, value) in names {
        if let Some(v) = value.filter(|v| v.len() > 255) {
            return Err(super::OptionError::Invalid(format!(
                "{option} is {} bytes long; AMQP names are at most 255",
                v.len()
            )));
        }
    }
    Ok(())
}

/// A server, by URL.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
}

impl Server {
    /// The URL for messages: password masked.
    pub(crate) fn describe(&self) -> String {
        format!("rabbitmq {}", mask_url(&self.url))
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

    /// A connection, retried with backoff while the server is unreachable (a warning a
    /// minute) for up to [`GIVE_UP_AFTER`]; refused credentials or a missing virtual host
    /// fail at once.
    pub(crate) fn connect(&self, name: &str) -> Result<Connection> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let (mut warned, mut wait) = (None::<Instant>, None);
        loop {
            let props = ConnectionProperties::default().with_connection_name(name.into());
            let e = match block_on(Connection::connect(&self.url, props)) {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            let refused = matches!(
                e.kind(),
                lapin::ErrorKind::InvalidConnectionState(_) | lapin::ErrorKind::IOError(_)
            ) || e.to_string().contains("onnect");
            if !refused || started.elapsed() > GIVE_UP_AFTER {
                return Err(self.error("connect", &e));
            }
            let reason = mask_in(&e.to_string(), &self.url);
            super::waiting::note(&mut wait, &self.describe(), &reason);
            if crate::connector::waiting::give_up(&wait) {
                return Err(self.error(
                    "connect",
                    &format!("the job was stopped while the server was unreachable ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(server = %self.describe(), "the server is unreachable, retrying: {reason}");
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
