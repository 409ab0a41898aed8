//! What the Kafka source and sink share: the client configuration (`bootstrap_servers`, and
//! `properties.<name>` passed to librdkafka as is), waiting for a broker that is down, and
//! errors that name the broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use super::secret::mask_in;
use crate::error::{Error, Result};

/// Where a Kafka connector connects without `bootstrap_servers`.
pub(crate) const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The prefix of options passed to librdkafka unchanged (`properties.linger.ms = '20'`).
pub(crate) const PROPERTIES: &str = "properties.";

/// How long a connector waits for its broker before the job fails.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// `options` split into the connector's own and the `properties.*` ones (prefix removed).
pub(crate) fn split_properties(
    options: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (props, own): (BTreeMap<_, _>, BTreeMap<_, _>) = options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| k.starts_with(PROPERTIES));
    let props = props
        .into_iter()
        .map(|(k, v)| (k[PROPERTIES.len()..].to_string(), v))
        .collect();
    (own, props)
}

/// A broker's address and the client properties given for it.
#[derive(Debug, Clone)]
pub(crate) struct Brokers {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// `properties.*` options, prefix removed.
    pub properties: BTreeMap<String, String>,
}

impl Brokers {
    /// A client configuration: the bootstrap servers, then the given properties (which win).
    pub(crate) fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        // librdkafka logs through its own callback; warnings reach ours via `tracing`.
        c.set("log_level", "4");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The brokers for messages: any password in the properties is not shown.
    pub(crate) fn describe(&self) -> String {
        format!("kafka {}", self.bootstrap)
    }

    /// `text` with the secrets among the properties (passwords, secrets) masked.
    pub(crate) fn mask(&self, text: &str) -> String {
        let mut text = mask_in(text, &self.bootstrap);
        for (k, v) in &self.properties {
            if (k.contains("password") || k.contains("secret")) && !v.is_empty() {
                text = text.replace(v.as_str(), "***");
            }
        }
        text
    }

    /// An error of `what` against these brokers (secrets in the text masked).
    pub(crate) fn error(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Output {
            target: self.describe(),
            source: std::io::Error::other(format!("{what}: {}", self.mask(&e.to_string()))),
        }
    }

    /// Runs `op` until it succeeds, retrying a failure that may be the broker being away
    /// (a timeout, a transport error) with backoff for up to [`GIVE_UP_AFTER`], warning once
    /// a minute; any other error fails at once.
    pub(crate) fn retry<T>(
        &self,
        what: &str,
        mut op: impl FnMut() -> std::result::Result<T, KafkaError>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let (mut warned, mut wait) = (None::<Instant>, None);
        loop {
            let e = match op() {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !transient(&e) || started.elapsed() > GIVE_UP_AFTER {
                return Err(self.error(what, &e));
            }
            let reason = self.mask(&e.to_string());
            super::waiting::note(&mut wait, &self.describe(), &reason);
            if crate::connector::waiting::give_up(&wait) {
                return Err(self.error(
                    what,
                    &format!("the job was stopped while the broker was unreachable ({reason})"),
                ));
            }
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(brokers = %self.bootstrap, "{what}: the broker is unreachable, retrying: {reason}");
                warned = Some(Instant::now());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// The context of the connectors' consumers: librdkafka's global errors are logged as
/// warnings (secrets masked by the caller's messages; these name brokers, not credentials) —
/// except the end of a partition, which the source asks to be told of (`--until-end`) and which
/// is no error.
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        // A partition's end arrives as `PartitionEOF` or as a global error of that code.
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Quiet {}

/// Whether `e` may pass when the broker is back (rather than being wrong in itself).
pub(crate) fn transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::OperationTimedOut
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::QueueFull,
        ) => true,
        Some(_) => false,
        None => true,
    }
}
