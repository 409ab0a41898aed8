//! `connector = 'postgres'`: result rows upserted into (or appended to) a PostgreSQL table,
//! exactly once per checkpoint (`sink.rs`).
//!
//! ```sql
//! CREATE SINK settlement WITH (connector = 'postgres',
//!   url = 'postgres://app@127.0.0.1:5432/payments', table = 'settlement_per_minute',
//!   primary_key = 'merchant_id,currency,window_start');
//! ```
//! The table is created when absent, typed from the query's columns (money stays `bigint` or
//! `numeric`, times `timestamptz`); with a `primary_key` (or a changelog's group key) each
//! key's latest row replaces the previous one and a changelog's `delete` removes it; without
//! one rows are appended. Its bookkeeping — `paystream_sink_epochs` and
//! `paystream_sink_staging` — sits beside the table, keyed by `sink:table`.

mod client;
mod sink;
mod sql;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use self::client::Connection;
use self::client::describe;
use self::sink::{PostgresSink, Target, applied_epoch};
use super::{Sink, SinkConnector, SinkContext};
use crate::connector::secret::{mask_in, mask_url};
use crate::connector::{OptionError, SinkEntry, from_options};
use crate::error::Result;

/// The registry's line for this connector.
pub(crate) const CONNECTOR: SinkEntry = SinkEntry {
    name: "postgres",
    example: "connector = 'postgres', url = 'postgres://postgres@127.0.0.1:5432/postgres', table = 'settlement', primary_key = 'merchant_id,currency,window_start'",
    declare,
};

/// The server a sink without `url` writes to: a local PostgreSQL's default database.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `WITH (…)` options of a PostgreSQL sink.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkOptions {
    /// `postgres://user[:password]@host:port/database` (default [`DEFAULT_URL`]); without a
    /// password in it, `PGPASSWORD` is used when set.
    pub url: Option<String>,
    /// The table (`name` or `schema.name`), created when absent.
    pub table: String,
    /// Comma-separated key columns: rows replace the key's previous row. Without it (and
    /// without a changelog's group key) rows are appended.
    pub primary_key: Option<String>,
}

/// A declared PostgreSQL sink.
#[derive(Debug)]
struct Declared {
    url: String,
    target: Arc<Target>,
    /// Sinks opened so far (each query writing it is one writer).
    writers: AtomicI64,
}

fn declare(
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn SinkConnector>, OptionError> {
    let o: PostgresSinkOptions = from_options(options)?;
    let url = o.url.unwrap_or_else(|| DEFAULT_URL.to_string());
    url.parse::<postgres::Config>().map_err(|e| {
        OptionError::Invalid(format!(
            "url = '{}' is not a PostgreSQL connection string ({}); write postgres://user@host:5432/database",
            mask_url(&url),
            mask_in(&e.to_string(), &url)
        ))
    })?;
    let (table, schema) = sql::table_name(&o.table).map_err(OptionError::Invalid)?;
    let key: Vec<String> = o
        .primary_key
        .as_deref()
        .map(|k| k.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap_or_default();
    if key.iter().any(|k| k.is_empty()) {
        return Err(OptionError::Invalid(format!(
            "primary_key = '{}' has an empty column name; write primary_key = 'merchant_id,currency'",
            o.primary_key.unwrap_or_default()
        )));
    }
    Ok(Arc::new(Declared {
        target: Arc::new(Target {
            id: format!("{name}:{}", o.table),
            table,
            schema,
            key,
        }),
        url,
        writers: AtomicI64::new(0),
    }))
}

impl SinkConnector for Declared {
    fn name(&self) -> &'static str {
        CONNECTOR.name
    }

    fn describe(&self) -> String {
        format!("{} table {}", describe(&self.url), self.target.table)
    }

    fn where_to_look(&self) -> String {
        format!(
            "They are rows of table {} in {} (a `record` column of JSON).",
            self.target.table,
            describe(&self.url)
        )
    }

    fn committed_results(
        &self,
        _sink_offsets: &BTreeMap<String, Vec<u64>>,
    ) -> Result<Option<String>> {
        let conn = Mutex::new(Connection::new(&self.url));
        let epoch = applied_epoch(&conn, &self.target)?;
        Ok((epoch > 0).then(|| {
            format!(
                "table {} in {} (results of checkpoints up to {epoch})",
                self.target.table,
                describe(&self.url)
            )
        }))
    }

    fn open(&self, ctx: &mut SinkContext<'_>) -> Result<Box<dyn Sink>> {
        let writer = self.writers.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(PostgresSink::new(
            Arc::clone(&self.target),
            Arc::new(Mutex::new(Connection::new(&self.url))),
            ctx.exactly_once,
            writer,
            ctx.job.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::query_file::parse_query_file;

    #[test]
    fn options_are_checked_with_the_password_masked() {
        let e = parse_query_file(
            "CREATE SINK s WITH (connector = 'postgres', url = 'mysql://a:hunter22@x', table = 't');",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not a PostgreSQL connection string") && !e.contains("hunter22"),
            "{e}"
        );
        let e = parse_query_file(
            "CREATE SINK s WITH (connector = 'postgres', table = 'x; DROP TABLE y');",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a table name"), "{e}");
        let e = parse_query_file("CREATE SINK s WITH (connector = 'postgres', tabel = 't');")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown option `tabel`") && e.contains("primary_key"),
            "{e}"
        );
        parse_query_file(
            "CREATE SINK s WITH (connector = 'postgres', table = 'reporting.settlement', primary_key = 'merchant_id, currency');\nINSERT INTO s SELECT 1;",
        )
        .unwrap();
    }
}
