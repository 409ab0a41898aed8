//! `CREATE TABLE`: a reference table's columns, key and file.
//!
//! ```sql
//! CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR,
//!                         review_minor BIGINT, tz VARCHAR, valid_from TIMESTAMP)
//!   WITH (connector = 'file', path = 'data/merchants.csv', format = 'csv');
//! ```
//! The columns are named as the file's header cells, JSON members or Parquet columns are;
//! `format` defaults to the path's extension.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;

use super::source::parenthesized;
use super::{OptionLines, Options, err};
use crate::decode::Format;
use crate::error::Result;
use crate::table::{TableDecl, TableSource, VALID_FROM};

/// Options a table takes.
const TABLE_OPTIONS: &[&str] = &["connector", "path", "format"];

/// The column list (from `rest`, a slice of the statement `base` at `line`) of `CREATE TABLE
/// name`, and what follows it.
pub(super) fn table_columns<'s>(
    line: usize,
    base: &str,
    name: &str,
    rest: &'s str,
) -> Result<(Schema, Vec<usize>, &'s str)> {
    let Some((inner, rest)) = parenthesized(line, rest)? else {
        return Err(err(
            line,
            format!(
                "CREATE TABLE {name} needs its columns: CREATE TABLE {name} (id VARCHAR PRIMARY KEY, …) WITH (connector = 'file', path = '…')"
            ),
        ));
    };
    let (fields, keys) =
        crate::sql::source_columns::parse_table_columns(inner).map_err(|(at, m)| {
            let from = (inner.as_ptr() as usize).saturating_sub(base.as_ptr() as usize) + at;
            let item_line = line + base.get(..from).map_or(0, |b| b.matches('\n').count());
            err(item_line, format!("table `{name}`: {m}"))
        })?;
    let schema = Schema::new(fields);
    let keys = keys
        .iter()
        .map(|k| schema.index_of(k).expect("checked by parse_table_columns"))
        .collect();
    Ok((schema, keys, rest))
}

/// A table over a topic of the embedded log: a changelog keyed by its primary key.
fn log_table(
    mut o: Options,
    line: usize,
    name: String,
    schema: Schema,
    primary_key: Vec<usize>,
) -> Result<TableDecl> {
    let topic = o.take("topic").unwrap_or_else(|| name.clone());
    if let Some(f) = o.take("format").filter(|f| f != "json") {
        return Err(err(
            o.line_of("format"),
            format!("table `{name}`: a topic's records are JSON; format = '{f}' is not supported"),
        ));
    }
    if let Some(k) = o.map.keys().next() {
        return Err(err(
            o.line_of(k),
            format!(
                "table `{name}`: unknown option `{k}`; a log table takes connector, topic, format"
            ),
        ));
    }
    if primary_key.is_empty() {
        return Err(err(
            line,
            format!(
                "table `{name}` reads topic `{topic}` as a changelog: declare its PRIMARY KEY, which later records replace and deletes remove"
            ),
        ));
    }
    // A delete carries its key alone: the other columns may be null in the table's rows.
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.as_ref().clone();
            if primary_key.contains(&i) {
                f
            } else {
                f.with_nullable(true)
            }
        })
        .collect();
    Ok(TableDecl {
        name,
        schema: Arc::new(Schema::new(fields)),
        primary_key,
        source: TableSource::Log { topic },
        line,
    })
}

/// A `CREATE TABLE` with its options checked.
pub(super) fn table(
    line: usize,
    name: String,
    schema: Schema,
    primary_key: Vec<usize>,
    map: BTreeMap<String, String>,
    lines: OptionLines,
) -> Result<TableDecl> {
    let mut o = Options {
        line,
        what: format!("table `{name}`"),
        map,
        lines,
    };
    let connector = o.required("connector", "file")?;
    if connector == "log" {
        return log_table(o, line, name, schema, primary_key);
    }
    if connector != "file" {
        return Err(err(
            o.line_of("connector"),
            format!(
                "table `{name}`: connector '{connector}' cannot hold a table; use connector = 'file' (a CSV, JSON Lines or Parquet file) or 'log' (a topic of the embedded log)"
            ),
        ));
    }
    let path = PathBuf::from(o.required("path", "data/merchants.csv")?);
    let format = match o.take("format") {
        Some(f) => Format::from_name(&f).ok_or_else(|| {
            err(
                o.line_of("format"),
                format!("table `{name}`: unknown format '{f}'; use csv, json or parquet"),
            )
        })?,
        None => Format::from_path(&path).ok_or_else(|| {
            err(
                o.line_of("path"),
                format!(
                    "table `{name}`: cannot tell the format of '{}' from its extension; add format = 'csv', 'json' or 'parquet'",
                    path.display()
                ),
            )
        })?,
    };
    if let Some(k) = o.map.keys().next() {
        return Err(err(
            o.line_of(k),
            format!(
                "table `{name}`: unknown option `{k}`; a file table takes {}",
                TABLE_OPTIONS.join(", ")
            ),
        ));
    }
    if let Ok(i) = schema.index_of(VALID_FROM)
        && !matches!(
            schema.field(i).data_type(),
            datafusion::arrow::datatypes::DataType::Timestamp(..)
        )
    {
        return Err(err(
            line,
            format!(
                "table `{name}`: `{VALID_FROM}` is when a version starts; declare it TIMESTAMP"
            ),
        ));
    }
    Ok(TableDecl {
        name,
        schema: Arc::new(schema),
        primary_key,
        source: TableSource::File { path, format },
        line,
    })
}
