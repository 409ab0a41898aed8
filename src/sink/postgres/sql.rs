//! The SQL the PostgreSQL sink sends: the table typed from the query's columns, the two
//! bookkeeping tables, and the statement that applies rows to the table.
//!
//! Rows travel as JSON objects (the same text every sink writes) and become typed columns in
//! the server with `jsonb_populate_record`: one statement applies a checkpoint's rows whatever
//! the query's columns, and a value is converted by PostgreSQL's own parser for its type.

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

use crate::sql::{CHANGELOG_OP, OP_DELETE};

/// The table of each sink's last applied checkpoint (in the target table's schema).
pub(super) const EPOCHS: &str = "paystream_sink_epochs";
/// Rows a checkpoint pre-committed, waiting for it to be durable (in the target's schema).
pub(super) const STAGING: &str = "paystream_sink_staging";

/// `name` as a quoted identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a string literal whose meaning does not depend on `standard_conforming_strings`.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// PostgreSQL's identifier limit: a longer name is cut, and would no longer match the JSON.
pub(super) const MAX_NAME: usize = 63;

/// A `table` option (`settlement` or `reporting.settlement`) as a quoted, maybe qualified name,
/// and its schema part (quoted, with the dot) for the bookkeeping tables beside it.
pub(super) fn table_name(table: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = table.split('.').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    if parts.len() > 2 || !parts.iter().all(|p| ok(p)) {
        return Err(format!(
            "table = '{table}' is not a table name: letters, digits and `_` (not first), optionally `schema.table`"
        ));
    }
    let quoted: Vec<String> = parts.iter().map(|p| ident(p)).collect();
    let schema = match quoted.len() {
        2 => format!("{}.", quoted[0]),
        _ => String::new(),
    };
    Ok((quoted.join("."), schema))
}

/// The PostgreSQL type a result column of `field`'s type is stored as.
pub(super) fn column_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20, 0)".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "double precision".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("numeric({p}, {s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p}, {s})"),
        DataType::Boolean => "boolean".into(),
        // Written as RFC 3339 in UTC (`…Z`): a zone-less column keeps the UTC wall time.
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, None)
        | DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Dictionary(_, v) => column_type(v),
        _ => "text".into(),
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `columns`, keyed by `key` when it is not empty.
pub(super) fn create_table(table: &str, columns: &[Field], key: &[String]) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|f| {
            let null = if f.is_nullable() && !key.iter().any(|k| k == f.name()) {
                ""
            } else {
                " NOT NULL"
            };
            format!("{} {}{null}", ident(f.name()), column_type(f.data_type()))
        })
        .collect();
    if !key.is_empty() {
        let key: Vec<String> = key.iter().map(|k| ident(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {table} ({})", defs.join(", "))
}

/// The bookkeeping tables in `schema` (with its dot, or empty).
pub(super) fn create_bookkeeping(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}{EPOCHS} (sink text PRIMARY KEY, job text NOT NULL, epoch bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {schema}{STAGING} (sink text NOT NULL, epoch bigint NOT NULL,
           writer bigint NOT NULL, seq bigint NOT NULL, row jsonb NOT NULL,
           PRIMARY KEY (sink, epoch, writer, seq))"
    )
}

/// What the target table is: its columns and its primary key, read from the server's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableShape {
    /// Column names, in table order.
    pub columns: Vec<String>,
    /// Primary key column names (empty: rows are appended).
    pub key: Vec<String>,
}

/// Selects the columns of table `$1` (a name as `to_regclass` reads it), in order.
pub(super) const COLUMNS_OF: &str = "SELECT a.attname::text FROM pg_attribute a
    WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Selects the primary key columns of table `$1`.
pub(super) const KEY_OF: &str = "SELECT a.attname::text FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)";

/// Rows to apply, as a subquery of `row jsonb, epoch bigint, writer bigint, seq bigint`.
pub(super) enum Rows {
    /// Staged rows of sink `$1` with epochs in (`$2`, `$3`].
    Staged,
    /// The JSON texts in the array `$1`, in order.
    Given,
}

impl Rows {
    fn subquery(&self, schema: &str) -> String {
        match self {
            Rows::Staged => format!(
                "SELECT row, epoch, writer, seq FROM {schema}{STAGING} WHERE sink = $1 AND epoch > $2 AND epoch <= $3"
            ),
            Rows::Given => {
                "SELECT r::jsonb AS row, 0::bigint AS epoch, 0::bigint AS writer, n AS seq \
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(r, n)"
                    .into()
            }
        }
    }
}

/// The statements that apply `rows` to `table` of `shape`: with a key, the latest row of each
/// key wins and replaces it (`INSERT … ON CONFLICT DO UPDATE`) — or, for a changelog (a table
/// that stores no `op` column while rows carry one), deletes it when its `op` is `delete`;
/// without a key, every row is appended in order.
pub(super) fn apply(table: &str, schema: &str, shape: &TableShape, rows: &Rows) -> Vec<String> {
    let source = rows.subquery(schema);
    let cols: Vec<String> = shape.columns.iter().map(|c| ident(c)).collect();
    let typed: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
    if shape.key.is_empty() {
        return vec![format!(
            "INSERT INTO {table} ({}) SELECT {} FROM ({source}) s, jsonb_populate_record(NULL::{table}, s.row) t ORDER BY s.epoch, s.writer, s.seq",
            cols.join(", "),
            typed.join(", ")
        )];
    }
    let key_json: Vec<String> = shape
        .key
        .iter()
        .map(|k| format!("s.row -> {}", literal(k)))
        .collect();
    let latest = format!(
        "SELECT DISTINCT ON ({k}) s.row FROM ({source}) s ORDER BY {k}, s.epoch DESC, s.writer DESC, s.seq DESC",
        k = key_json.join(", ")
    );
    let key_match: Vec<String> = shape
        .key
        .iter()
        .map(|k| format!("d.{c} = t.{c}", c = ident(k)))
        .collect();
    let updates: Vec<String> = shape
        .columns
        .iter()
        .filter(|c| !shape.key.contains(c))
        .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
        .collect();
    let on_conflict = match updates.is_empty() {
        true => "DO NOTHING".to_string(),
        false => format!("DO UPDATE SET {}", updates.join(", ")),
    };
    let keys: Vec<String> = shape.key.iter().map(|k| ident(k)).collect();
    let upsert = |filter: &str| {
        format!(
            "INSERT INTO {table} ({}) SELECT {} FROM ({latest}) l, jsonb_populate_record(NULL::{table}, l.row) t \
             {filter} ON CONFLICT ({}) {on_conflict}",
            cols.join(", "),
            typed.join(", "),
            keys.join(", ")
        )
    };
    if shape.columns.iter().any(|c| c == CHANGELOG_OP) {
        // `op` is a value here, not a changelog's instruction.
        return vec![upsert("")];
    }
    vec![
        format!(
            "DELETE FROM {table} d USING ({latest}) l, jsonb_populate_record(NULL::{table}, l.row) t \
             WHERE l.row ->> '{CHANGELOG_OP}' = '{OP_DELETE}' AND {}",
            key_match.join(" AND ")
        ),
        upsert(&format!(
            "WHERE l.row ->> '{CHANGELOG_OP}' IS DISTINCT FROM '{OP_DELETE}'"
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_quoted() {
        assert_eq!(
            table_name("settlement").unwrap(),
            ("\"settlement\"".into(), String::new())
        );
        assert_eq!(
            table_name("reporting.settlement").unwrap(),
            (
                "\"reporting\".\"settlement\"".into(),
                "\"reporting\".".into()
            )
        );
        for bad in ["", "a.b.c", "x; DROP TABLE y", "1x", "a-b"] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn key_paths_are_literal_and_op_deletes_only_in_a_changelog() {
        assert_eq!(literal("a'b\\c"), "E'a\\'b\\\\c'");
        let shape = |columns: &[&str]| TableShape {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            key: vec!["k".into()],
        };
        let changelog = apply("\"t\"", "", &shape(&["k", "n"]), &Rows::Given);
        assert_eq!(changelog.len(), 2);
        assert!(changelog[0].starts_with("DELETE") && changelog[0].contains("'delete'"));
        // A query whose rows have an `op` column stores it: no row deletes.
        let valued = apply("\"t\"", "", &shape(&["k", "op"]), &Rows::Given);
        assert_eq!(valued.len(), 1);
        assert!(valued[0].starts_with("INSERT") && !valued[0].contains("'delete'"));
    }

    #[test]
    fn money_stays_exact_and_times_keep_their_zone() {
        assert_eq!(column_type(&DataType::Int64), "bigint");
        assert_eq!(column_type(&DataType::Decimal128(38, 2)), "numeric(38, 2)");
        assert_eq!(column_type(&DataType::UInt64), "numeric(20, 0)");
        assert_eq!(
            column_type(&DataType::Timestamp(
                TimeUnit::Millisecond,
                Some("UTC".into())
            )),
            "timestamptz"
        );
        assert_eq!(
            column_type(&DataType::Dictionary(
                Box::new(DataType::Int8),
                Box::new(DataType::Utf8)
            )),
            "text"
        );
    }
}
