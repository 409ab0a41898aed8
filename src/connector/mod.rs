//! The connector registry: what `connector = '…'` in `CREATE SOURCE` and `CREATE SINK` names.
//!
//! ```text
//!  CREATE SOURCE p WITH (connector = 'log', topic = 'payments', watermark_delay = '5s')
//!                        └─ SOURCES["log"] ─▶ LogSourceOptions (serde, deny_unknown_fields)
//!                                          ─▶ Arc<dyn SourceConnector> ─▶ (at run) Arc<dyn Source>
//! ```
//! A connector is its own directory (`source/<name>/` with its options struct and its
//! [`crate::source::SourceConnector`], or `sink/<name>/` with a [`crate::sink::SinkConnector`])
//! plus one line in [`SOURCES`] or [`SINKS`]. The options every source shares (event time,
//! watermark delay, idle timeout, dedup TTL, skew) are read by the query file before the rest go
//! to the connector; a sink's `format` likewise.

pub(crate) mod amqp;
pub(crate) mod kafka;
pub(crate) mod nats;
pub(crate) mod options;
pub(crate) mod runtime;
pub(crate) mod secret;
pub(crate) mod waiting;

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use self::options::{OptionError, from_options};

use crate::sink::SinkConnector;
use crate::source::SourceConnector;

/// The `WITH (…)` options of a statement: names lower-cased, values as written.
pub(crate) type WithOptions = BTreeMap<String, String>;

/// A source connector: its name, an example declaration for error messages, and how its
/// options become a declared source.
pub(crate) struct SourceEntry {
    /// As `connector = '…'` spells it.
    pub(crate) name: &'static str,
    /// A complete `WITH (…)` list, shown when an option is missing.
    pub(crate) example: &'static str,
    /// Checks the options (all but the shared ones) and declares the source.
    pub(crate) declare: fn(&WithOptions) -> Result<Arc<dyn SourceConnector>, OptionError>,
}

/// How a sink connector checks its options and declares the sink of that name.
pub(crate) type DeclareSink = fn(&str, &WithOptions) -> Result<Arc<dyn SinkConnector>, OptionError>;

/// A sink connector (see [`SourceEntry`]).
pub(crate) struct SinkEntry {
    /// As `connector = '…'` spells it.
    pub(crate) name: &'static str,
    /// A complete `WITH (…)` list, shown when an option is missing.
    pub(crate) example: &'static str,
    /// Checks the options (all but `connector` and `format`) and declares the sink of that
    /// name.
    pub(crate) declare: DeclareSink,
}

/// Every source connector.
pub(crate) const SOURCES: &[SourceEntry] = &[
    crate::source::file::CONNECTOR,
    crate::source::log::CONNECTOR,
    crate::source::kafka::CONNECTOR,
    crate::source::rabbitmq::CONNECTOR,
    crate::source::nats::CONNECTOR,
];

/// Every sink connector.
pub(crate) const SINKS: &[SinkEntry] = &[
    crate::sink::file::CONNECTOR,
    crate::sink::log::CONNECTOR,
    crate::sink::kafka::CONNECTOR,
    crate::sink::nats::CONNECTOR,
    crate::sink::postgres::CONNECTOR,
    crate::sink::rabbitmq::CONNECTOR,
    crate::sink::redis::CONNECTOR,
    crate::sink::table::CONNECTOR,
];

/// The source connector named `name`.
pub(crate) fn source(name: &str) -> Option<&'static SourceEntry> {
    SOURCES.iter().find(|c| c.name == name)
}

/// The sink connector named `name`.
pub(crate) fn sink(name: &str) -> Option<&'static SinkEntry> {
    SINKS.iter().find(|c| c.name == name)
}

/// The names, for an error that lists them: `'file' or 'log'`.
pub(crate) fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::query_file::parse_query_file;

    /// Each connector's example (shown when an option is missing) is a valid declaration.
    #[test]
    fn every_registered_example_declares() {
        for c in SOURCES {
            let text = format!(
                "CREATE SOURCE p WITH ({});\nINSERT INTO x SELECT 1;",
                c.example
            );
            let f = parse_query_file(&text).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(f.sources[0].connector.name(), c.name);
        }
        for c in SINKS {
            let text = format!(
                "CREATE SINK s WITH ({});\nINSERT INTO s SELECT 1;",
                c.example
            );
            parse_query_file(&text).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }

    /// A misspelled option is named with its statement's line and the connector's options; a
    /// missing one with an example; an unknown connector with the registered names.
    #[test]
    fn option_mistakes_name_the_option_and_the_line() {
        let e = parse_query_file(
            "\nCREATE SOURCE p WITH (connector = 'file', pth = 'x.jsonl');\nINSERT INTO x SELECT 1;",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2") && e.contains("unknown option `pth`") && e.contains("path"),
            "{e}"
        );
        let e = parse_query_file(
            "CREATE SINK s WITH (connector = 'log', topic = 't', partitons = '2');\nINSERT INTO s SELECT 1;",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 1")
                && e.contains("unknown option `partitons`")
                && e.contains("partitions"),
            "{e}"
        );
        let e = parse_query_file("CREATE SINK s WITH (connector = 'file');")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs option `path`") && e.contains("path = 'out.jsonl'"),
            "{e}"
        );
        let e = parse_query_file(
            "CREATE SINK s WITH (connector = 'log', topic = 't', partitions = 'four');",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("partitions must be a positive number, not 'four'"),
            "{e}"
        );
        let e = parse_query_file("CREATE SOURCE p WITH (connector = 'kinesis', topic = 't');")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown connector 'kinesis'") && e.contains("'file' or 'log' or 'kafka'"),
            "{e}"
        );
        // The connector is looked up before the shared options are read.
        let e = parse_query_file(
            "CREATE SOURCE p WITH (connector = 'kinesis', topic = 't', watermark_delay = 'soon');",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown connector 'kinesis'"), "{e}");
    }
}
