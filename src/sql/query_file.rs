//! Query files for `paystream run`: sources, sinks, settings and `INSERT INTO … SELECT`s.
//!
//! ```sql
//! CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json',
//!                              event_time = 'event_time', watermark_delay = '5 seconds');
//! CREATE SINK risk_alerts WITH (connector = 'log', topic = 'risk_alerts', format = 'json');
//! CREATE SINK dead_letters WITH (connector = 'log', topic = 'payments.dlq');  -- optional
//! SET idle_timeout = '30 seconds';
//! INSERT INTO risk_alerts SELECT … FROM HOP(payments, event_time, …) GROUP BY …;
//! ```
//! The statements around the SELECTs are parsed here; each SELECT is planned by
//! [`super::plan_query_on`] with its text kept at its place in the file, so a planning error
//! points at the file's line and column. Unknown `WITH` options are errors naming the option.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::connector;
use crate::engine::defaults;
use crate::error::{Error, Result};
use crate::schema::EventSchema;
use crate::sink::SinkConnector;
use crate::source::SourceConnector;
use crate::time::parse_duration_millis;

/// Sinks with a meaning of their own: they receive dead letters and late events, not rows.
pub const DEAD_LETTERS: &str = "dead_letters";
/// See [`DEAD_LETTERS`].
pub const LATE_EVENTS: &str = "late_events";

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

/// A `CREATE SINK`.
#[derive(Debug, Clone)]
pub struct SinkDecl {
    /// The name `INSERT INTO` uses.
    pub name: String,
    /// Where it writes: the connector, its options checked.
    pub connector: Arc<dyn SinkConnector>,
    /// Line of the statement.
    pub line: usize,
}

/// An `INSERT INTO sink SELECT …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertDecl {
    /// The sink.
    pub sink: String,
    /// The SELECT, preceded by blanks so that positions in it are positions in the file.
    pub select: String,
    /// Line of the statement.
    pub line: usize,
}

/// A parsed query file.
#[derive(Debug, Clone, Default)]
pub struct QueryFile {
    /// Sources, in file order.
    pub sources: Vec<SourceDecl>,
    /// Sinks, in file order.
    pub sinks: Vec<SinkDecl>,
    /// `SET name = 'value'` settings (each value checked when the file is parsed).
    pub settings: BTreeMap<String, String>,
    /// Line of each setting's `SET`.
    pub setting_lines: BTreeMap<String, usize>,
    /// Queries, in file order.
    pub inserts: Vec<InsertDecl>,
}

/// Settings `SET` accepts.
pub const SETTINGS: &[&str] = &[
    "idle_timeout",
    "watermark_delay",
    "dedup_ttl",
    "max_skew",
    "workers",
    "checkpoint_interval",
    "max_window_size",
    "max_session_gap",
    "max_hop_ratio",
    "state_ttl",
];

/// A source's event-time settings, resolved and checked together
/// ([`QueryFile::event_time_settings`]), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeSettings {
    /// Bounded out-of-orderness.
    pub watermark_delay: i64,
    /// Far-future bound.
    pub max_skew: i64,
    /// Dedup TTL in event time.
    pub dedup_ttl: i64,
    /// Idle partitions stop holding the watermark after this long.
    pub idle_timeout: i64,
}

impl QueryFile {
    /// The bounds on windows, raised or lowered by `SET max_window_size`, `max_session_gap`
    /// and `max_hop_ratio`.
    pub fn window_limits(&self) -> super::WindowLimits {
        let mut limits = super::WindowLimits::default();
        let ms = |k: &str| {
            self.settings
                .get(k)
                .and_then(|v| parse_duration_millis(v).ok())
        };
        if let Some(v) = ms("max_window_size") {
            limits.max_size = v;
        }
        if let Some(v) = ms("max_session_gap") {
            limits.max_gap = v;
        }
        if let Some(v) = self
            .settings
            .get("max_hop_ratio")
            .and_then(|v| v.parse().ok())
        {
            limits.max_hop_ratio = v;
        }
        limits
    }

    /// `source`'s settings: its own WITH option, else the file's `SET`, else the default. The
    /// far-future bound must exceed the watermark delay, whichever statements set them.
    pub fn event_time_settings(&self, source: &SourceDecl) -> Result<EventTimeSettings> {
        let pick = |own: Option<i64>, key: &str, default: i64| -> Result<(i64, String)> {
            if let Some(v) = own {
                let what = match key {
                    "watermark_delay" if source.watermark_clause => "the WATERMARK FOR clause",
                    key => key,
                };
                return Ok((
                    v,
                    format!(
                        "{what} of CREATE SOURCE {} (line {})",
                        source.name, source.line
                    ),
                ));
            }
            match self.settings.get(key) {
                Some(v) => {
                    let line = self.setting_lines.get(key).copied().unwrap_or(0);
                    let ms = parse_duration_millis(v)
                        .map_err(|e| err(line, format!("SET {key} = '{v}': {e}")))?;
                    Ok((ms, format!("SET {key} (line {line})")))
                }
                None => Ok((default, format!("{key} (default)"))),
            }
        };
        let (watermark_delay, delay_from) = pick(
            source.watermark_delay,
            "watermark_delay",
            defaults::WATERMARK_DELAY_MS,
        )?;
        let (max_skew, skew_from) = pick(source.max_skew, "max_skew", defaults::MAX_SKEW_MS)?;
        crate::operators::check_max_skew(watermark_delay, max_skew, &delay_from, &skew_from)?;
        Ok(EventTimeSettings {
            watermark_delay,
            max_skew,
            dedup_ttl: pick(source.dedup_ttl, "dedup_ttl", defaults::DEDUP_TTL_MS)?.0,
            idle_timeout: pick(
                source.idle_timeout,
                "idle_timeout",
                defaults::IDLE_TIMEOUT_MS,
            )?
            .0,
        })
    }
}

/// Checks a `SET` value (whether or not a source's own option overrides it later).
fn check_setting(key: &str, v: &str) -> std::result::Result<(), String> {
    match key {
        "max_hop_ratio" => match v.parse::<i64>() {
            Ok(r) if r > 0 => Ok(()),
            _ => Err(format!(
                "SET max_hop_ratio = '{v}': the bound must be a whole number of at least 1, e.g. SET max_hop_ratio = '100000'"
            )),
        },
        "workers" => match v.parse::<usize>() {
            Ok(w) if w > 0 => Ok(()),
            _ => Err(format!(
                "SET workers = '{v}': workers must be a whole number of at least 1, e.g. SET workers = '2'"
            )),
        },
        _ => match parse_duration_millis(v) {
            Ok(0)
                if matches!(
                    key,
                    "checkpoint_interval" | "max_window_size" | "max_session_gap" | "state_ttl"
                ) =>
            {
                Err(format!(
                    "SET {key} = '{v}': it must be positive, e.g. '10s'"
                ))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("SET {key} = '{v}': {e}")),
        },
    }
}

/// `line L, column C` of byte `at` of `text`.
fn position(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

fn err(line: usize, message: impl Into<String>) -> Error {
    Error::Plan {
        position: format!("line {line}"),
        message: message.into(),
    }
}

/// Splits `text` into statements at top-level `;`, skipping comments and quoted text. Returns
/// (byte offset of the statement, statement text).
fn statements(text: &str) -> Vec<(usize, &str)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                out.push((start, &text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push((start, &text[start..]));
    }
    out
}

/// Blanks out comments (keeping newlines) so keyword matching sees only code.
fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' || b[i] == b'"' {
            let q = b[i];
            let j = s[i + 1..]
                .find(q as char)
                .map_or(b.len(), |k| i + 1 + k + 1);
            out.push_str(&s[i..j.min(b.len())]);
            i = j;
        } else if s[i..].starts_with("--") {
            let j = s[i..].find('\n').map_or(b.len(), |k| i + k);
            out.extend(std::iter::repeat_n(' ', j - i));
            i = j;
        } else if s[i..].starts_with("/*") {
            let j = s[i + 2..].find("*/").map_or(b.len(), |k| i + 2 + k + 2);
            // Byte for byte, so offsets in the stripped text are offsets in the file.
            out.extend(s[i..j].bytes().map(|c| if c == b'\n' { '\n' } else { ' ' }));
            i = j;
        } else {
            let c = s[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Splits off the next word (identifier or keyword) of `s`.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn ident(line: usize, what: &str, w: &str) -> Result<String> {
    let ok = !w.is_empty()
        && w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(w.to_string())
    } else {
        Err(err(line, format!("expected {what}, found `{w}`")))
    }
}

/// A source's column list, if `s` starts with one: `( col TYPE, …, WATERMARK FOR … )`.
///
/// `base` is the statement's text from its first line (`line`): an error's line is counted
/// from there to the item at fault.
fn column_list<'s>(
    line: usize,
    base: &str,
    s: &'s str,
) -> Result<(Option<super::source_columns::Columns>, &'s str)> {
    let t = s.trim_start();
    let Some(inner) = t.strip_prefix('(') else {
        return Ok((None, s));
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
    let columns = super::source_columns::parse_columns(&inner[..end]).map_err(|(at, m)| {
        // `inner` is a slice of `base`: the item's line is `line` plus the newlines before it.
        let from = (inner.as_ptr() as usize).saturating_sub(base.as_ptr() as usize) + at;
        let item_line = line + base.get(..from).map_or(0, |b| b.matches('\n').count());
        err(item_line, m)
    })?;
    Ok((Some(columns), &inner[end + 1..]))
}

/// Parses `( key = 'value', ... )`; returns the options and what follows.
fn with_options(line: usize, s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let (kw, rest) = word(s);
    if !kw.eq_ignore_ascii_case("WITH") {
        return Err(err(line, "expected WITH (option = 'value', ...)"));
    }
    let mut rest = rest.trim_start();
    rest = rest
        .strip_prefix('(')
        .ok_or_else(|| err(line, "expected `(` after WITH"))?;
    let mut opts = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(')') {
            return Ok((opts, r));
        }
        let (k, r) = word(rest);
        let key = k.to_ascii_lowercase();
        if key.is_empty() {
            return Err(err(
                line,
                format!(
                    "expected an option name in WITH (…), found `{}`",
                    r.trim_start().chars().take(20).collect::<String>()
                ),
            ));
        }
        let r = r
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| err(line, format!("expected `=` after option `{key}`")))?
            .trim_start();
        let (value, r) = if let Some(q) = r.strip_prefix('\'') {
            let end = q
                .find('\'')
                .ok_or_else(|| err(line, format!("unterminated string for option `{key}`")))?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let (v, r) = word(r);
            if v.is_empty() {
                return Err(err(
                    line,
                    format!("option `{key}` needs a value, e.g. {key} = '…'"),
                ));
            }
            (v.to_string(), r)
        };
        if opts.insert(key.clone(), value).is_some() {
            return Err(err(line, format!("option `{key}` is given twice")));
        }
        let r = r.trim_start();
        rest = match r.strip_prefix(',') {
            Some(r) => r,
            None if r.starts_with(')') => r,
            None => {
                return Err(err(
                    line,
                    format!("expected `,` or `)` after option `{key}`"),
                ));
            }
        };
    }
}

struct Options {
    line: usize,
    what: String,
    map: BTreeMap<String, String>,
}

impl Options {
    fn take(&mut self, k: &str) -> Option<String> {
        self.map.remove(k)
    }
    fn duration(&mut self, k: &str) -> Result<Option<i64>> {
        self.take(k)
            .map(|v| {
                parse_duration_millis(&v)
                    .map_err(|e| err(self.line, format!("option `{k}` of {}: {e}", self.what)))
            })
            .transpose()
    }
    fn required(&mut self, k: &str, example: &str) -> Result<String> {
        self.take(k).ok_or_else(|| {
            err(
                self.line,
                format!("{} needs option `{k}` (e.g. {k} = '{example}')", self.what),
            )
        })
    }
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

/// A connector's options error, said of `what` (`source `p``) at `line`.
fn option_err(
    line: usize,
    what: &str,
    connector: &str,
    example: &str,
    shared: &[&str],
    e: connector::OptionError,
) -> Error {
    let message = match e {
        connector::OptionError::Unknown { option, expected } => format!(
            "unknown option `{option}` in {what}; the options of connector '{connector}' are: {}",
            shared
                .iter()
                .chain(expected)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        connector::OptionError::Missing(o) => {
            format!("{what} needs option `{o}` (e.g. WITH ({example}))")
        }
        connector::OptionError::Invalid(m) => format!("{what}: {m}"),
    };
    err(line, message)
}

fn source(
    line: usize,
    name: String,
    columns: Option<super::source_columns::Columns>,
    map: BTreeMap<String, String>,
) -> Result<SourceDecl> {
    let mut o = Options {
        line,
        what: format!("source `{name}`"),
        map,
    };
    let connector = o.required("connector", "log")?;
    // The connector is looked up before the shared options are read.
    let entry = connector::source(&connector).ok_or_else(|| {
        err(
            line,
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
                    line,
                    format!(
                        "source `{name}`: event_time = '{t}' is not a timestamp column of the payment event; use 'event_time', or declare the source's columns: CREATE SOURCE {name} (…, {t} TIMESTAMP NOT NULL, WATERMARK FOR {t} AS {t} - INTERVAL '5' SECOND) WITH (…)"
                    ),
                ));
            }
            if let Some(k) = dedup_key.filter(|k| k != "event_id") {
                return Err(err(
                    line,
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
            &o.what,
            entry.name,
            entry.example,
            SHARED_SOURCE_OPTIONS,
            e,
        )
    })?;
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

/// The schema of a source with a column list: its time column (from `WATERMARK FOR`, else
/// the `event_time` option), its id (`dedup_key`), both made NOT NULL; the watermark's delay
/// goes to `watermark_delay`.
fn declared_events(
    line: usize,
    name: &str,
    columns: super::source_columns::Columns,
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
            super::source_columns::sql_name(tf.data_type())
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
                super::source_columns::sql_name(kf.data_type())
            )));
        }
        *kf = kf.clone().with_nullable(false);
    }
    let arrow = Arc::new(Schema::new(fields));
    EventSchema::declared(name, arrow, dedup_key.as_deref(), &time)
        .map(Arc::new)
        .map_err(|e| fail(e.to_string()))
}

fn sink(line: usize, name: String, map: BTreeMap<String, String>) -> Result<SinkDecl> {
    let mut o = Options {
        line,
        what: format!("sink `{name}`"),
        map,
    };
    let connector = o.required("connector", "log")?;
    if let Some(f) = o.take("format").filter(|f| f != "json") {
        return Err(err(
            line,
            format!(
                "sink `{name}`: format '{f}' is not supported; sinks write JSON (format = 'json')"
            ),
        ));
    }
    let entry = connector::sink(&connector).ok_or_else(|| {
        err(
            line,
            format!(
                "sink `{name}`: unknown connector '{connector}'; use {}",
                connector::names(connector::SINKS.iter().map(|c| c.name))
            ),
        )
    })?;
    let declared = (entry.declare)(&o.map).map_err(|e| {
        option_err(
            line,
            &o.what,
            entry.name,
            entry.example,
            &["connector", "format"],
            e,
        )
    })?;
    Ok(SinkDecl {
        name,
        connector: declared,
        line,
    })
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
    let (mut opts, rest) = if rest.trim().is_empty() {
        (BTreeMap::new(), rest)
    } else {
        with_options(line, rest)?
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
    source(line, name, columns, opts)
}

/// Parses the text of a `replay --query` file: a bare SELECT (over the payment stream), or
/// `CREATE SOURCE name (columns…) [WITH (…)];` followed by one SELECT over it.
pub fn parse_replay_query(text: &str) -> Result<ReplayQuery> {
    let code = strip_comments(text);
    let stmts: Vec<(usize, &str)> = statements(&code)
        .into_iter()
        .filter(|(_, s)| !s.trim().is_empty())
        .collect();
    let Some((offset, first)) = stmts.first().copied() else {
        return Ok(ReplayQuery {
            source: None,
            select: text.to_string(),
        });
    };
    let (w1, rest) = word(first.trim_start());
    let (w2, rest) = word(rest);
    if !(w1.eq_ignore_ascii_case("CREATE") && w2.eq_ignore_ascii_case("SOURCE")) {
        return Ok(ReplayQuery {
            source: None,
            select: text.to_string(),
        });
    }
    let lead = first.len() - first.trim_start().len();
    let line = code[..offset + lead].matches('\n').count() + 1;
    let source = declaration(line, first.trim_start(), rest)?;
    let select = match &stmts[1..] {
        [(at, stmt)] => {
            let at = at + (stmt.len() - stmt.trim_start().len());
            let prefix: String = text[..at]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' })
                .collect();
            format!("{prefix}{}", text[at..at + stmt.trim().len()].trim_end())
        }
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
    })
}

/// Parses a query file.
pub fn parse_query_file(text: &str) -> Result<QueryFile> {
    let code = strip_comments(text);
    let mut file = QueryFile::default();
    for (offset, stmt) in statements(&code) {
        let lead = stmt.len() - stmt.trim_start().len();
        let line = code[..offset + lead].matches('\n').count() + 1;
        let s = stmt.trim();
        if s.is_empty() {
            continue;
        }
        let (w1, rest) = word(s);
        match w1.to_ascii_uppercase().as_str() {
            "CREATE" => {
                let (kind, rest) = word(rest);
                let (name, rest) = word(rest);
                let name = ident(line, "a name", name)?;
                let (columns, rest) = column_list(line, s, rest)?;
                if columns.is_some() && !kind.eq_ignore_ascii_case("SOURCE") {
                    return Err(err(
                        line,
                        format!(
                            "CREATE {kind} takes no column list; only a source declares its columns"
                        ),
                    ));
                }
                let (opts, rest) = with_options(line, rest)?;
                if !rest.trim().is_empty() {
                    return Err(err(
                        line,
                        format!("unexpected `{}` after WITH (…)", rest.trim()),
                    ));
                }
                match kind.to_ascii_uppercase().as_str() {
                    "SOURCE" => {
                        if file.sources.iter().any(|x| x.name == name) {
                            return Err(err(line, format!("source `{name}` is declared twice")));
                        }
                        file.sources.push(source(line, name, columns, opts)?);
                    }
                    "SINK" => {
                        if file.sinks.iter().any(|x| x.name == name) {
                            return Err(err(line, format!("sink `{name}` is declared twice")));
                        }
                        file.sinks.push(sink(line, name, opts)?);
                    }
                    other => {
                        return Err(err(
                            line,
                            format!(
                                "CREATE {other} is not supported; use CREATE SOURCE or CREATE SINK"
                            ),
                        ));
                    }
                }
            }
            "SET" => {
                let (k, rest) = word(rest);
                let key = k.to_ascii_lowercase();
                if !SETTINGS.contains(&key.as_str()) {
                    return Err(err(
                        line,
                        format!(
                            "unknown setting `{key}`; the settings are: {}",
                            SETTINGS.join(", ")
                        ),
                    ));
                }
                let v = rest
                    .trim()
                    .trim_start_matches('=')
                    .trim_start_matches(|c: char| c.is_whitespace());
                let v = v
                    .strip_prefix("TO ")
                    .or_else(|| v.strip_prefix("to "))
                    .unwrap_or(v)
                    .trim();
                let v = v.trim_matches('\'');
                // `v` is a slice of `code`: its offset is its position in the file.
                let at = v.as_ptr() as usize - code.as_ptr() as usize;
                check_setting(&key, v).map_err(|message| Error::Plan {
                    position: position(&code, at),
                    message,
                })?;
                if let Some(first) = file.setting_lines.insert(key.clone(), line) {
                    return Err(Error::Plan {
                        position: position(&code, at),
                        message: format!(
                            "`{key}` is SET twice (lines {first} and {line}); keep one"
                        ),
                    });
                }
                file.settings.insert(key, v.to_string());
            }
            "INSERT" => {
                let (into, rest) = word(rest);
                if !into.eq_ignore_ascii_case("INTO") {
                    return Err(err(line, "expected INSERT INTO sink SELECT …"));
                }
                let (sink, rest) = word(rest);
                let sink = ident(line, "a sink name", sink)?;
                let (sel, _) = word(rest);
                if !sel.eq_ignore_ascii_case("SELECT") && !sel.eq_ignore_ascii_case("WITH") {
                    return Err(err(
                        line,
                        format!(
                            "INSERT INTO {sink} must be followed by a SELECT (or WITH … SELECT)"
                        ),
                    ));
                }
                // Keep the SELECT at its place in the file: blank out everything before it.
                let at =
                    offset + (stmt.len() - rest.len()) + (rest.len() - rest.trim_start().len());
                let end = offset + stmt.trim_end().len();
                let prefix: String = text[..at]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect();
                file.inserts.push(InsertDecl {
                    sink,
                    select: format!("{prefix}{}", &text[at..end]),
                    line,
                });
            }
            other => {
                return Err(err(
                    line,
                    format!(
                        "unexpected `{other}`: a query file holds CREATE SOURCE, CREATE SINK, SET and INSERT INTO … SELECT statements"
                    ),
                ));
            }
        }
    }
    if file.inserts.is_empty() {
        return Err(err(
            1,
            "the query file has no INSERT INTO … SELECT; nothing would run",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "-- risk\nCREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json',\n  event_time = 'event_time', watermark_delay = '5 seconds');\nCREATE SINK alerts WITH (connector = 'log', topic = 'risk.alerts');\n/* a; comment */ SET idle_timeout = '10s';\nINSERT INTO alerts\n  SELECT card_id FROM payments WHERE note = 'a;b';\n";

    #[test]
    fn parses_sources_sinks_settings_and_inserts() {
        let f = parse_query_file(FILE).unwrap();
        assert_eq!(f.sources[0].connector.name(), "log");
        assert_eq!(f.sources[0].connector.log_topic(), Some("payments"));
        assert_eq!(f.sources[0].watermark_delay, Some(5_000));
        assert_eq!(f.sources[0].line, 2);
        assert_eq!(f.sinks[0].connector.name(), "log");
        assert_eq!(f.sinks[0].connector.log_topic(), Some("risk.alerts"));
        assert_eq!(f.sinks[0].connector.describe(), "topic risk.alerts");
        assert_eq!(f.settings["idle_timeout"], "10s");
        let i = &f.inserts[0];
        assert_eq!(i.sink, "alerts");
        // The SELECT keeps its line and column.
        let lines: Vec<&str> = i.select.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[6],
            "  SELECT card_id FROM payments WHERE note = 'a;b'"
        );
    }

    #[test]
    fn every_set_value_is_checked_with_its_position() {
        // Checked even when CREATE SOURCE sets the option too (its value would win).
        let e = parse_query_file(
            "CREATE SOURCE p WITH (connector = 'log', topic = 't', watermark_delay = '5s');\nSET watermark_delay = 'soon';\nINSERT INTO x SELECT 1;",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2, column 24") && e.contains("'soon'"),
            "{e}"
        );
        for (set, needle) in [
            ("SET workers = 0;", "line 1, column 15"),
            ("\n  SET workers = 'many';", "line 2, column 18"),
            ("SET checkpoint_interval = '0s';", "must be positive"),
            ("SET state_ttl = '0s';", "must be positive"),
            ("SET state_ttl = 'forever';", "'forever'"),
            ("SET max_hop_ratio = '-1';", "at least 1"),
            (
                "SET max_skew = '1m';\nSET max_skew = '2m';",
                "SET twice (lines 1 and 2)",
            ),
        ] {
            let e = parse_query_file(&format!("{set}\nINSERT INTO x SELECT 1;"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{set}: {e}");
        }
    }

    #[test]
    fn max_skew_must_exceed_the_watermark_delay_wherever_they_are_set() {
        let src = |opts: &str| {
            format!(
                "CREATE SOURCE p WITH (connector = 'log', topic = 't'{opts});\nINSERT INTO x SELECT 1;"
            )
        };
        let settings = |text: &str| {
            let f = parse_query_file(text).unwrap();
            f.event_time_settings(&f.sources[0])
        };
        let ok = settings(&src("")).unwrap();
        assert_eq!((ok.watermark_delay, ok.max_skew), (5_000, 300_000));
        for (text, names) in [
            (
                src(", watermark_delay = '10s', max_skew = '10s'"),
                [
                    "max_skew of CREATE SOURCE p (line 1) (10s)",
                    "watermark_delay of CREATE SOURCE p (line 1) (10s)",
                ],
            ),
            (
                format!("SET max_skew = '3s';\n{}", src("")),
                [
                    "SET max_skew (line 1) (3s)",
                    "watermark_delay (default) (5s)",
                ],
            ),
            (
                format!("SET watermark_delay = '10m';\n{}", src("")),
                [
                    "max_skew (default) (5m)",
                    "SET watermark_delay (line 1) (10m)",
                ],
            ),
        ] {
            let e = settings(&text).unwrap_err().to_string();
            assert!(e.contains(names[0]) && e.contains(names[1]), "{text}: {e}");
        }
    }

    #[test]
    fn a_source_declares_its_columns_time_and_dedup_key() {
        let f = parse_query_file(
            "CREATE SOURCE orders (\n  order_id VARCHAR,\n  ts TIMESTAMP,\n  amount_minor BIGINT,\n  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND\n) WITH (connector = 'log', topic = 'orders', dedup_key = 'order_id');\nINSERT INTO x SELECT 1;",
        )
        .unwrap();
        let s = &f.sources[0];
        let e = &s.events;
        assert!(e.is_declared());
        assert_eq!(e.stream(), "orders");
        assert_eq!(s.watermark_delay, Some(2_000));
        assert_eq!(e.id_column(), Some(0));
        assert_eq!(e.event_time_column(), 1);
        // The id and the time are NOT NULL whatever the list said.
        assert!(!e.arrow().field(0).is_nullable() && !e.arrow().field(1).is_nullable());
        assert!(e.arrow().field(2).is_nullable());
        // Without a column list: the payment event, as before.
        assert!(
            !parse_query_file(FILE).unwrap().sources[0]
                .events
                .is_declared()
        );
        for (text, needle) in [
            (
                "CREATE SOURCE o (ts TIMESTAMP) WITH (connector = 'log', topic = 't')",
                "needs its event-time column",
            ),
            (
                "CREATE SOURCE o (ts TIMESTAMP) WITH (connector = 'log', topic = 't', event_time = 'at')",
                "names no declared column",
            ),
            (
                "CREATE SOURCE o (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 't', dedup_key = 'id')",
                "deduplicated by a VARCHAR column",
            ),
            (
                "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 't', watermark_delay = '1s')",
                "keep one",
            ),
            (
                "CREATE SOURCE o WITH (connector = 'log', topic = 't', dedup_key = 'payment_id')",
                "declare the source's columns",
            ),
            (
                "CREATE SOURCE o WITH (connector = 'log', topic = 't', event_time = 'ts')",
                "declare the source's columns",
            ),
            (
                "CREATE SINK s (a INT) WITH (connector = 'log', topic = 't')",
                "takes no column list",
            ),
            (
                "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts WITH (connector = 'log', topic = 't')",
                "no closing",
            ),
        ] {
            let e = parse_query_file(&format!("{text};\nINSERT INTO x SELECT 1;"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("line 1"), "{text}: {e}");
        }
    }

    #[test]
    fn a_replay_query_may_declare_its_source_first() {
        let q = parse_replay_query("SELECT 1").unwrap();
        assert!(q.source.is_none() && q.select == "SELECT 1");
        let q = parse_replay_query(
            "-- orders\nCREATE SOURCE orders (id VARCHAR, ts TIMESTAMP,\n  WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE);\n  SELECT id FROM orders;\n",
        )
        .unwrap();
        let s = q.source.unwrap();
        assert_eq!(
            (s.name.as_str(), s.watermark_delay),
            ("orders", Some(60_000))
        );
        assert!(s.events.id_column().is_none());
        // The SELECT keeps its line and column.
        assert_eq!(q.select.lines().nth(3), Some("  SELECT id FROM orders"));
        let e = parse_replay_query("CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts);")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no SELECT"), "{e}");
        let e = parse_replay_query(
            "CREATE SOURCE o (ts TIMESTAMP, WATERMARK FOR ts AS ts);\nSELECT 1;\nSELECT 2;",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("paystream run"), "{e}");
    }

    #[test]
    fn unknown_options_and_statements_are_named() {
        let e = parse_query_file("CREATE SOURCE p WITH (connector = 'log', topic = 't', colour = 'red');\nINSERT INTO x SELECT 1;").unwrap_err().to_string();
        assert!(e.contains("unknown option `colour`"), "{e}");
        let e = parse_query_file("CREATE SINK s WITH (connector = 'kafka');")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown connector 'kafka'"), "{e}");
        let e = parse_query_file("\n\nDROP TABLE x;")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("DROP"), "{e}");
        let e = parse_query_file("SET colour = 'red'; INSERT INTO x SELECT 1;")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting `colour`"), "{e}");
        let e = parse_query_file("CREATE SOURCE p WITH (connector = 'log');")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs option `topic`"), "{e}");
    }
}
