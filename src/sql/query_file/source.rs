//! `CREATE SOURCE`: a source's connector and options, and its events — the payment event, or
//! the columns its column list declares ([`super::super::source_columns`]) with the time column,
//! watermark and id they name. Also the query of `replay --query`, which may start with one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Options, err, ident, option_err, statements, strip_comments, with_options, word};
use crate::connector;
use crate::error::Result;
use crate::schema::EventSchema;
use crate::source::SourceConnector;

/// A `CREATE SOURCE`.
#[derive(Debug, Clone)]
pub struct SourceDecl {
    /// The stream name queries read.
    pub name: String,
    /// Where it reads: the connector, its options checked.
    pub connector: Arc<dyn SourceConnector>,
    /// The events it gives: the payment event, or the columns its column list declared.
    pub events: Arc<EventSchema>,
    /// Bounded out-of-orderness, ms (default 5 s; a `WATERMARK FOR` clause sets it too).
    pub watermark_delay: Option<i64>,
    /// Idle partitions stop holding the watermark after this long, ms (default 30 s).
    pub idle_timeout: Option<i64>,
    /// Dedup TTL in event time, ms (default 1 h).
    pub dedup_ttl: Option<i64>,
    /// Far-future bound, ms (default 5 min).
    pub max_skew: Option<i64>,
    /// Whether `watermark_delay` came from a `WATERMARK FOR` clause (errors name the clause).
    pub watermark_clause: bool,
    /// Line of the statement.
    pub line: usize,
}

/// A source's column list, if `s` starts with one: `( col TYPE, …, WATERMARK FOR … )`.
///
/// `base` is the statement's text from its first line (`line`): an error's line is counted
/// from there to the item at fault.
pub(super) fn column_list<'s>(
    line: usize,
    base: &str,
    s: &'s str,
) -> Result<(Option<crate::sql::source_columns::Columns>, &'s str)> {
    let Some((inner, rest)) = parenthesized(line, s)? else {
        return Ok((None, s));
    };
    let columns = crate::sql::source_columns::parse_columns(inner).map_err(|(at, m)| {
        // `inner` is a slice of `base`: the item's line is `line` plus the newlines before it.
        let from = (inner.as_ptr() as usize).saturating_sub(base.as_ptr() as usize) + at;
        let item_line = line + base.get(..from).map_or(0, |b| b.matches('\n').count());
        err(item_line, m)
    })?;
    Ok((Some(columns), rest))
}

/// The text inside the parentheses `s` starts with (after blanks), and what follows them;
/// `None` when `s` does not start with `(`.
pub(super) fn parenthesized(line: usize, s: &str) -> Result<Option<(&str, &str)>> {
    let t = s.trim_start();
    let Some(inner) = t.strip_prefix('(') else {
        return Ok(None);
    };
    let (mut depth, mut quote, mut end) = (1, None, None);
    for (i, c) in inner.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let end = end.ok_or_else(|| err(line, "the column list has no closing `)`"))?;
    Ok(Some((&inner[..end], &inner[end + 1..])))
}

/// Options every source has, whatever its connector: read here, the rest go to the connector.
const SHARED_SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "event_time",
    "dedup_key",
    "watermark_delay",
    "idle_timeout",
    "dedup_ttl",
    "max_skew",
];

pub(super) fn source(
    line: usize,
    name: String,
    columns: Option<crate::sql::source_columns::Columns>,
    map: BTreeMap<String, String>,
    lines: super::OptionLines,
) -> Result<SourceDecl> {
    let mut o = Options {
        line,
        what: format!("source `{name}`"),
        map,
        lines,
    };
    let connector = o.required("connector", "log")?;
    // The connector is looked up before the shared options are read.
    let entry = connector::source(&connector).ok_or_else(|| {
        err(
            o.line_of("connector"),
            format!(
                "source `{name}`: unknown connector '{connector}'; use {}",
                connector::names(connector::SOURCES.iter().map(|c| c.name))
            ),
        )
    })?;
    let time_option = o.take("event_time");
    let dedup_key = o.take("dedup_key");
    let mut watermark_delay = o.duration("watermark_delay")?;
    let watermark_clause = columns.as_ref().is_some_and(|c| c.watermark.is_some());
    let events = match columns {
        None => {
            if let Some(t) = time_option.filter(|t| t != "event_time") {
                return Err(err(
                    o.line_of("event_time"),
                    format!(
                        "source `{name}`: event_time = '{t}' is not a timestamp column of the payment event; use 'event_time', or declare the source's columns: CREATE SOURCE {name} (…, {t} TIMESTAMP NOT NULL, WATERMARK FOR {t} AS {t} - INTERVAL '5' SECOND) WITH (…)"
                    ),
                ));
            }
            if let Some(k) = dedup_key.filter(|k| k != "event_id") {
                return Err(err(
                    o.line_of("dedup_key"),
                    format!(
                        "source `{name}`: payment events are deduplicated by event_id, not `{k}`; to deduplicate by another column, declare the source's columns"
                    ),
                ));
            }
            EventSchema::payments()
        }
        Some(columns) => declared_events(
            line,
            &name,
            columns,
            time_option,
            dedup_key,
            &mut watermark_delay,
        )?,
    };
    let idle_timeout = o.duration("idle_timeout")?;
    let dedup_ttl = o.duration("dedup_ttl")?;
    let max_skew = o.duration("max_skew")?;
    let declared = (entry.declare)(&o.map).map_err(|e| {
        option_err(
            line,
            &o.lines,
            &o.what,
            entry.name,
            entry.example,
            SHARED_SOURCE_OPTIONS,
            e,
        )
    })?;
    check_metadata(line, &name, &events, declared.as_ref())?;
    Ok(SourceDecl {
        watermark_delay,
        idle_timeout,
        dedup_ttl,
        max_skew,
        name,
        connector: declared,
        events,
        watermark_clause,
        line,
    })
}

/// Refuses a `METADATA FROM '…'` column that the source's records do not carry.
fn check_metadata(
    line: usize,
    name: &str,
    events: &EventSchema,
    connector: &dyn SourceConnector,
) -> Result<()> {
    let offered = connector.record_metadata();
    for (_, column, key) in crate::decode::metadata_keys(events.arrow().fields()) {
        if !offered.contains(&key.kind_name()) {
            let has = match offered {
                [] => "no record metadata".to_string(),
                some => format!("only {}", some.join(", ")),
            };
            return Err(err(
                line,
                format!(
                    "source `{name}`: column `{column}` reads METADATA FROM '{key}', but a '{}' source's records have {has}; remove the column or read the stream from a Kafka topic",
                    connector.name()
                ),
            ));
        }
    }
    Ok(())
}

/// The schema of a source with a column list: its time column (from `WATERMARK FOR`, else
/// the `event_time` option), its id (`dedup_key`), both made NOT NULL; the watermark's delay
/// goes to `watermark_delay`.
fn declared_events(
    line: usize,
    name: &str,
    columns: crate::sql::source_columns::Columns,
    time_option: Option<String>,
    dedup_key: Option<String>,
    watermark_delay: &mut Option<i64>,
) -> Result<Arc<EventSchema>> {
    use datafusion::arrow::datatypes::{DataType, Schema};
    let fail = |m: String| err(line, format!("source `{name}`: {m}"));
    let time = match (columns.watermark, time_option) {
        (Some((t, delay)), option) => {
            if let Some(o) = option.filter(|o| *o != t) {
                return Err(fail(format!(
                    "WATERMARK FOR {t} and event_time = '{o}' name different columns; keep one"
                )));
            }
            if watermark_delay.is_some() {
                return Err(fail(
                    "WATERMARK FOR and watermark_delay both set the delay; keep one".into(),
                ));
            }
            *watermark_delay = Some(delay);
            t
        }
        (None, Some(t)) => t,
        (None, None) => {
            return Err(fail(
                "a source with a column list needs its event-time column: add e.g. WATERMARK FOR ts AS ts - INTERVAL '5' SECOND to the list".into(),
            ));
        }
    };
    let mut fields = columns.fields;
    let Some(tf) = fields.iter_mut().find(|f| f.name() == &time) else {
        return Err(fail(format!(
            "event_time = '{time}' names no declared column"
        )));
    };
    if tf.data_type() != &crate::schema::timestamp_type() {
        return Err(fail(format!(
            "the event-time column `{time}` is {}; it must be a TIMESTAMP",
            crate::sql::source_columns::sql_name(tf.data_type())
        )));
    }
    *tf = tf.clone().with_nullable(false);
    if let Some(k) = &dedup_key {
        let Some(kf) = fields.iter_mut().find(|f| f.name() == k) else {
            return Err(fail(format!("dedup_key = '{k}' names no declared column")));
        };
        if kf.data_type() != &DataType::Utf8 {
            return Err(fail(format!(
                "dedup_key `{k}` is {}; events are deduplicated by a VARCHAR column",
                crate::sql::source_columns::sql_name(kf.data_type())
            )));
        }
        *kf = kf.clone().with_nullable(false);
    }
    let arrow = Arc::new(Schema::new(fields));
    EventSchema::declared(name, arrow, dedup_key.as_deref(), &time)
        .map(Arc::new)
        .map_err(|e| fail(e.to_string()))
}

/// A query for `replay --query`: an optional `CREATE SOURCE` with the events' columns and
/// time, then one SELECT.
#[derive(Debug, Clone)]
pub struct ReplayQuery {
    /// The declared source, when the file starts with one. Its `WITH (…)` is optional (a
    /// replay reads the file on its command line); when present it is checked as `run` checks
    /// it, so one file serves both.
    pub source: Option<SourceDecl>,
    /// The SELECT, preceded by blanks so that positions in it are positions in the file.
    pub select: String,
    /// Reference tables the SELECT may join (`CREATE TABLE` statements before it).
    pub tables: Vec<crate::table::TableDecl>,
    /// Engine settings the file `SET`s (checked; `checkpoint_interval` and `idle_timeout`,
    /// which mean nothing to a replay, are refused). Command-line flags override them.
    pub settings: BTreeMap<String, String>,
}

impl ReplayQuery {
    /// The bounds on windows the file's `SET`s raise or lower, as in a `run` file.
    pub fn window_limits(&self) -> crate::sql::WindowLimits {
        super::window_limits(&self.settings)
    }

    /// `plan` with the file's `SET state_ttl` and `SET dense_windows`, as `run` applies them.
    pub fn with_settings(
        &self,
        plan: crate::sql::StreamPlan,
    ) -> std::result::Result<crate::sql::StreamPlan, String> {
        super::with_plan_settings(&self.settings, plan)
    }
}

/// Parses one `CREATE SOURCE name [(columns…)] [WITH (…)]` statement, as `replay --query` and
/// the tests take it: without `WITH`, the source is a file given elsewhere.
pub fn parse_source_declaration(statement: &str) -> Result<SourceDecl> {
    let code = strip_comments(statement);
    let lead = code.len() - code.trim_start().len();
    let line = code[..lead].matches('\n').count() + 1;
    let (w1, rest) = word(code.trim().trim_end_matches(';'));
    let (w2, rest) = word(rest);
    if !(w1.eq_ignore_ascii_case("CREATE") && w2.eq_ignore_ascii_case("SOURCE")) {
        return Err(err(line, "expected CREATE SOURCE name (columns…) WITH (…)"));
    }
    declaration(line, code.trim_start(), rest)
}

/// The rest of a `CREATE SOURCE` after its keywords: name, optional column list, optional WITH.
fn declaration(line: usize, base: &str, rest: &str) -> Result<SourceDecl> {
    let (name, rest) = word(rest);
    let name = ident(line, "a source name", name)?;
    let (columns, rest) = column_list(line, base, rest)?;
    let (mut opts, lines, rest) = if rest.trim().is_empty() {
        (BTreeMap::new(), super::OptionLines::new(), rest)
    } else {
        with_options(line, base, rest)?
    };
    // The file is the one given elsewhere (the command line): WITH may hold only the source's
    // own options (`dedup_key`, `watermark_delay`, …).
    if !opts.contains_key("connector") {
        opts.insert("connector".to_string(), "file".to_string());
        opts.insert("path".to_string(), "-".to_string());
    }
    if !rest.trim().is_empty() {
        return Err(err(
            line,
            format!("unexpected `{}` after WITH (…)", rest.trim()),
        ));
    }
    source(line, name, columns, opts, lines)
}

/// Parses the text of a `replay --query` file: a bare SELECT (over the payment stream), or
/// `CREATE SOURCE name (columns…) [WITH (…)];` followed by one SELECT over it; `CREATE TABLE`
/// statements may come before the SELECT.
pub fn parse_replay_query(text: &str) -> Result<ReplayQuery> {
    let (text, code, _) = super::params::substitute(text, &strip_comments(text))?;
    let text = text.as_str();
    let mut stmts: Vec<(usize, &str)> = statements(&code)
        .into_iter()
        .filter(|(_, s)| !s.trim().is_empty())
        .collect();
    // The tables and the engine settings, wherever they are before the SELECT.
    let mut tables: Vec<crate::table::TableDecl> = Vec::new();
    let mut settings = BTreeMap::new();
    let mut kept = Vec::with_capacity(stmts.len());
    for (offset, s) in stmts {
        let (w1, rest) = word(s.trim_start());
        let (w2, rest) = word(rest);
        let lead = s.len() - s.trim_start().len();
        let line = code[..offset + lead].matches('\n').count() + 1;
        if w1.eq_ignore_ascii_case("SET") {
            let key = w2.to_ascii_lowercase();
            let v = super::engine_setting(&code, line, &key, rest)?;
            if matches!(key.as_str(), "checkpoint_interval" | "idle_timeout") {
                return Err(err(
                    line,
                    format!(
                        "SET {key} means nothing to a replay (one file read once, without checkpoints); it belongs in a `paystream run` query file"
                    ),
                ));
            }
            if settings.insert(key.clone(), v.to_string()).is_some() {
                return Err(err(line, format!("`{key}` is SET twice; keep one")));
            }
            continue;
        }
        if !(w1.eq_ignore_ascii_case("CREATE") && w2.eq_ignore_ascii_case("TABLE")) {
            kept.push((offset, s));
            continue;
        }
        let base = s.trim_start();
        let (name, rest) = word(rest);
        let name = ident(line, "a table name", name)?;
        let (schema, key, rest) = super::table::table_columns(line, base, &name, rest)?;
        let (opts, lines, rest) = with_options(line, base, rest)?;
        if !rest.trim().is_empty() {
            return Err(err(
                line,
                format!("unexpected `{}` after WITH (…)", rest.trim()),
            ));
        }
        if tables.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) {
            return Err(err(line, format!("table `{name}` is declared twice")));
        }
        tables.push(super::table::table(line, name, schema, key, opts, lines)?);
    }
    stmts = kept;
    // The SELECT's text: blanks for everything before it (the tables' statements too).
    let select_only = |at: usize, stmt: &str| {
        let at = at + (stmt.len() - stmt.trim_start().len());
        let prefix: String = text[..at]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        format!("{prefix}{}", text[at..at + stmt.trim().len()].trim_end())
    };
    let Some((offset, first)) = stmts.first().copied() else {
        return Ok(ReplayQuery {
            source: None,
            select: text.to_string(),
            tables,
            settings,
        });
    };
    let (w1, rest) = word(first.trim_start());
    let (w2, rest) = word(rest);
    if !(w1.eq_ignore_ascii_case("CREATE") && w2.eq_ignore_ascii_case("SOURCE")) {
        let select = match (tables.is_empty() && settings.is_empty(), stmts.as_slice()) {
            (true, _) => text.to_string(),
            (false, [(at, stmt)]) => select_only(*at, stmt),
            (false, _) => {
                return Err(err(
                    1,
                    "a replay query file holds SET and CREATE TABLE statements and one SELECT",
                ));
            }
        };
        return Ok(ReplayQuery {
            source: None,
            select,
            tables,
            settings,
        });
    }
    let lead = first.len() - first.trim_start().len();
    let line = code[..offset + lead].matches('\n').count() + 1;
    let source = declaration(line, first.trim_start(), rest)?;
    let select = match &stmts[1..] {
        [(at, stmt)] => select_only(*at, stmt),
        [] => {
            return Err(err(
                line,
                format!(
                    "the query file declares source `{}` but has no SELECT over it",
                    source.name
                ),
            ));
        }
        [_, (at, stmt), ..] => {
            let at = at + (stmt.len() - stmt.trim_start().len());
            let line = code[..at].matches('\n').count() + 1;
            return Err(err(
                line,
                "a replay query file holds one CREATE SOURCE and one SELECT; run several queries with `paystream run`",
            ));
        }
    };
    Ok(ReplayQuery {
        source: Some(source),
        select,
        tables,
        settings,
    })
}
