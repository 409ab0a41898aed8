//! `connector = 'redis'`: result rows appended to a Redis stream (`XADD … MAXLEN ~`), or kept as
//! the latest row per key (`SET prefix<key> <json>`) for dashboards (`sink.rs`).
//!
//! ```sql
//! CREATE SINK feed WITH (connector = 'redis', url = 'redis://127.0.0.1:6379', stream = 'risk_alerts');
//! CREATE SINK latest WITH (connector = 'redis', key_prefix = 'merchant:', key = 'merchant_id');
//! ```
//! At-least-once: every write is acknowledged by the server before the sink returns, so a
//! checkpoint covers all before it; a recovery writes again what followed it (a stream gets the
//! entries again, a key its same latest value).

mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Sink, SinkConnector, SinkContext};
use crate::connector::secret::mask_url;
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "redis",
    example: "connector = 'redis', url = 'redis://127.0.0.1:6379', stream = 'risk_alerts'",
    declare,
};

/// Where a Redis sink connects without `url`.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Entries a stream keeps (about: `MAXLEN ~`) unless `maxlen` says otherwise.
const DEFAULT_MAXLEN: u64 = 100_000;

/// `WITH (…)` options of a Redis sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkOptions {
    /// `redis://[user:password@]host:port[/db]` (default `redis://127.0.0.1:6379`).
    pub url: Option<String>,
    /// A stream each row is appended to (one field per column).
    pub stream: Option<String>,
    /// About how many entries the stream keeps (default 100000).
    pub maxlen: Option<String>,
    /// With `key`: each row is the value (JSON) of key `<key_prefix><value of key>`.
    pub key_prefix: Option<String>,
    /// The column whose value names a row's key.
    pub key: Option<String>,
}

/// Where rows go.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// `XADD stream MAXLEN ~ maxlen * col value …`.
    Stream { stream: String, maxlen: u64 },
    /// `SET prefix<key> json`; a changelog's `delete` deletes the key.
    Latest { prefix: String, key: String },
}

#[derive(Debug, Clone)]
struct Declared {
    url: String,
    target: Target,
}

fn declare(
    _name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: RedisSinkOptions = from_options(options)?;
    let url = o.url.unwrap_or_else(|| DEFAULT_URL.into());
    redis::Client::open(url.as_str()).map_err(|e| {
        OptionError::Invalid(format!(
            "url = '{}' is not a Redis URL ({}); write redis://host:6379",
            mask_url(&url),
            e.category()
        ))
    })?;
    let target = match (o.stream, o.key) {
        (Some(stream), None) => {
            if o.key_prefix.is_some() {
                return Err(OptionError::Invalid(
                    "key_prefix goes with key (the latest row per key), not with stream".into(),
                ));
            }
            let maxlen = match &o.maxlen {
                None => DEFAULT_MAXLEN,
                Some(m) => m.parse::<u64>().ok().filter(|m| *m > 0).ok_or_else(|| {
                    OptionError::Invalid(format!("maxlen must be a positive number, not '{m}'"))
                })?,
            };
            Target::Stream { stream, maxlen }
        }
        (None, Some(key)) => {
            if o.maxlen.is_some() {
                return Err(OptionError::Invalid(
                    "maxlen goes with stream, not with key".into(),
                ));
            }
            Target::Latest {
                prefix: o.key_prefix.unwrap_or_default(),
                key,
            }
        }
        (Some(_), Some(_)) => {
            return Err(OptionError::Invalid(
                "give either stream (append every row) or key (the latest row per key), not both"
                    .into(),
            ));
        }
        (None, None) => {
            return Err(OptionError::Invalid(
                "needs option `stream` (append every row) or `key` with `key_prefix` (the latest row per key)".into(),
            ));
        }
    };
    Ok(Arc::new(Declared { url, target }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stream { stream, .. } => {
                format!("redis {} stream {stream}", mask_url(&self.url))
            }
            Target::Latest { prefix, key } => {
                format!("redis {} keys {prefix}<{key}>", mask_url(&self.url))
            }
        }
    }

    fn where_to_look(&self) -> String {
        format!("They are in {}.", self.describe())
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    fn open(&self, _ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        Ok(Box::new(sink::RedisSink::open(
            &self.url,
            self.target.clone(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::query_file::parse_query_file;

    #[test]
    fn a_sink_is_a_stream_or_latest_rows_by_key() {
        parse_query_file(
            "CREATE SINK s WITH (connector = 'redis', stream = 'alerts', maxlen = '1000');\nINSERT INTO s SELECT 1;",
        )
        .unwrap();
        parse_query_file(
            "CREATE SINK s WITH (connector = 'redis', key_prefix = 'm:', key = 'merchant_id');\nINSERT INTO s SELECT 1;",
        )
        .unwrap();
        for (options, needle) in [
            ("", "needs option `stream`"),
            ("stream = 'a', key = 'k'", "not both"),
            (
                "stream = 'a', maxlen = 'lots'",
                "maxlen must be a positive number",
            ),
            ("url = 'http://x', stream = 'a'", "not a Redis URL"),
        ] {
            let e = parse_query_file(&format!(
                "CREATE SINK s WITH (connector = 'redis'{}{options});",
                if options.is_empty() { "" } else { ", " }
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{options}: {e}");
        }
    }
}
