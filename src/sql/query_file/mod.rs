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
use crate::sink::SinkConnector;
use crate::time::parse_duration_millis;

mod params;
mod per_source;
mod source;
mod table;
#[cfg(test)]
mod tests;

pub use self::per_source::{SourceShare, split_by_source};
pub use self::source::{ReplayQuery, SourceDecl, parse_replay_query, parse_source_declaration};
use self::source::{column_list, source};

/// Sinks with a meaning of their own: they receive dead letters and late events, not rows.
pub const DEAD_LETTERS: &str = "dead_letters";
/// See [`DEAD_LETTERS`].
pub const LATE_EVENTS: &str = "late_events";

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
    /// Reference tables (`CREATE TABLE`), in file order.
    pub tables: Vec<crate::table::TableDecl>,
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
    "dense_windows",
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

impl EventTimeSettings {
    /// The settings of a job over several sources: one watermark over all their partitions,
    /// so each bound is the widest any of them asks for (no event one source's bounds accept
    /// is late or too far ahead; ids are kept as long as any source keeps its own).
    pub fn widest(all: Vec<EventTimeSettings>) -> EventTimeSettings {
        let mut it = all.into_iter();
        let first = it.next().unwrap_or(EventTimeSettings {
            watermark_delay: defaults::WATERMARK_DELAY_MS,
            max_skew: defaults::MAX_SKEW_MS,
            dedup_ttl: defaults::DEDUP_TTL_MS,
            idle_timeout: defaults::IDLE_TIMEOUT_MS,
        });
        it.fold(first, |a, b| EventTimeSettings {
            watermark_delay: a.watermark_delay.max(b.watermark_delay),
            max_skew: a.max_skew.max(b.max_skew),
            dedup_ttl: a.dedup_ttl.max(b.dedup_ttl),
            idle_timeout: a.idle_timeout.max(b.idle_timeout),
        })
    }
}

impl QueryFile {
    /// The bounds on windows, raised or lowered by `SET max_window_size`, `max_session_gap`
    /// and `max_hop_ratio`.
    pub fn window_limits(&self) -> super::WindowLimits {
        window_limits(&self.settings)
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

/// `plan` with what `settings` (checked `SET`s) say of its state: `state_ttl` and
/// `dense_windows`. Refused, saying why, when the plan cannot take them.
pub fn with_plan_settings(
    settings: &std::collections::BTreeMap<String, String>,
    plan: super::StreamPlan,
) -> std::result::Result<super::StreamPlan, String> {
    let plan = match settings
        .get("state_ttl")
        .and_then(|v| parse_duration_millis(v).ok())
    {
        Some(ttl) => plan.with_state_ttl(ttl),
        None => plan,
    };
    match settings.get("dense_windows").and_then(|v| dense_windows(v)) {
        Some(true) => plan.with_dense_windows(),
        _ => Ok(plan),
    }
}

/// The value of `SET dense_windows` (`None`: neither true nor false).
pub fn dense_windows(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" => Some(true),
        "false" | "off" => Some(false),
        _ => None,
    }
}

/// Checks a `SET` value (whether or not a source's own option overrides it later).
fn check_setting(key: &str, v: &str) -> std::result::Result<(), String> {
    match key {
        "dense_windows" => match dense_windows(v) {
            Some(_) => Ok(()),
            None => Err(format!(
                "SET dense_windows = '{v}': it is 'true' (every key seen gets a row for each window, quiet ones too) or 'false'"
            )),
        },
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

/// The bounds on windows `settings` (checked `SET`s of a run or replay query file) raise or
/// lower: `max_window_size`, `max_session_gap` and `max_hop_ratio`.
pub(super) fn window_limits(settings: &BTreeMap<String, String>) -> super::WindowLimits {
    let mut limits = super::WindowLimits::default();
    let ms = |k: &str| settings.get(k).and_then(|v| parse_duration_millis(v).ok());
    if let Some(v) = ms("max_window_size") {
        limits.max_size = v;
    }
    if let Some(v) = ms("max_session_gap") {
        limits.max_gap = v;
    }
    if let Some(v) = settings.get("max_hop_ratio").and_then(|v| v.parse().ok()) {
        limits.max_hop_ratio = v;
    }
    limits
}

/// The value of `SET key = 'value'` (`rest`: what follows the key, a slice of `code`),
/// checked: the key must be one of [`SETTINGS`] (a parameter's `SET` never comes here).
pub(super) fn engine_setting<'a>(
    code: &str,
    line: usize,
    key: &str,
    rest: &'a str,
) -> Result<&'a str> {
    if !SETTINGS.contains(&key) {
        return Err(err(
            line,
            format!(
                "unknown setting `{key}`; the settings are: {} (or a parameter the file refers to as ${{{key}}})",
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
    check_setting(key, v).map_err(|message| Error::Plan {
        position: position(code, at),
        message,
    })?;
    Ok(v)
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
pub(crate) fn strip_comments(s: &str) -> String {
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

/// The line of each option of a `WITH (…)`, so an error about one names its own line.
type OptionLines = BTreeMap<String, usize>;

/// Parses `( key = 'value', ... )` in `s`, a part of the statement `base` that starts at
/// `line`; returns the options, the line of each, and what follows.
fn with_options<'a>(
    line: usize,
    base: &str,
    s: &'a str,
) -> Result<(BTreeMap<String, String>, OptionLines, &'a str)> {
    // The line of a position in `s` (a slice of `base`).
    let line_at = |at: &str| {
        let off = (at.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        line + base.get(..off).map_or(0, |b| b.matches('\n').count())
    };
    let mut lines = OptionLines::new();
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
            return Ok((opts, lines, r));
        }
        let line = line_at(rest);
        let (k, r) = word(rest);
        let key = k.to_ascii_lowercase();
        lines.insert(key.clone(), line);
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
    lines: OptionLines,
}

impl Options {
    /// The line of option `k` (the statement's when it is not given).
    fn line_of(&self, k: &str) -> usize {
        self.lines.get(k).copied().unwrap_or(self.line)
    }
    fn take(&mut self, k: &str) -> Option<String> {
        self.map.remove(k)
    }
    fn duration(&mut self, k: &str) -> Result<Option<i64>> {
        self.take(k)
            .map(|v| {
                parse_duration_millis(&v).map_err(|e| {
                    err(
                        self.line_of(k),
                        format!("option `{k}` of {}: {e}", self.what),
                    )
                })
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

/// A connector's options error, said of `what` (`source `p``) at `line` (or at the line of
/// the option it is about, from `lines`).
fn option_err(
    line: usize,
    lines: &OptionLines,
    what: &str,
    connector: &str,
    example: &str,
    shared: &[&str],
    e: connector::OptionError,
) -> Error {
    let line = match &e {
        connector::OptionError::Unknown { option, .. } => lines.get(option.as_str()).copied(),
        _ => None,
    }
    .unwrap_or(line);
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

fn sink(
    line: usize,
    name: String,
    map: BTreeMap<String, String>,
    lines: OptionLines,
) -> Result<SinkDecl> {
    let mut o = Options {
        line,
        what: format!("sink `{name}`"),
        map,
        lines,
    };
    let connector = o.required("connector", "log")?;
    if let Some(f) = o.take("format").filter(|f| f != "json") {
        return Err(err(
            o.line_of("format"),
            format!(
                "sink `{name}`: format '{f}' is not supported; sinks write JSON (format = 'json')"
            ),
        ));
    }
    let entry = connector::sink(&connector).ok_or_else(|| {
        err(
            o.line_of("connector"),
            format!(
                "sink `{name}`: unknown connector '{connector}'; use {}",
                connector::names(connector::SINKS.iter().map(|c| c.name))
            ),
        )
    })?;
    let declared = (entry.declare)(&name, &o.map).map_err(|e| {
        option_err(
            line,
            &o.lines,
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

/// `text` with its parameters in place (`${name}` replaced by what `SET name = '…'` says) and
/// their `SET`s blanked: a bare query that starts with its parameters, as a query.
pub(crate) fn substitute_parameters(text: &str) -> Result<String> {
    Ok(params::substitute(text, &strip_comments(text))?.0)
}

/// Parses a query file.
pub fn parse_query_file(text: &str) -> Result<QueryFile> {
    let code = strip_comments(text);
    let (text, code, params) = params::substitute(text, &code)?;
    let text = text.as_str();
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
                if kind.eq_ignore_ascii_case("TABLE") {
                    let (schema, key, rest) = table::table_columns(line, s, &name, rest)?;
                    let (opts, lines, rest) = with_options(line, s, rest)?;
                    if !rest.trim().is_empty() {
                        return Err(err(
                            line,
                            format!("unexpected `{}` after WITH (…)", rest.trim()),
                        ));
                    }
                    if file
                        .tables
                        .iter()
                        .any(|t| t.name.eq_ignore_ascii_case(&name))
                        || file
                            .sources
                            .iter()
                            .any(|t| t.name.eq_ignore_ascii_case(&name))
                    {
                        return Err(err(
                            line,
                            format!(
                                "`{name}` is declared twice (a table and a source share names); name it once"
                            ),
                        ));
                    }
                    file.tables
                        .push(table::table(line, name, schema, key, opts, lines)?);
                    continue;
                }
                let (columns, rest) = column_list(line, s, rest)?;
                if columns.is_some() && !kind.eq_ignore_ascii_case("SOURCE") {
                    return Err(err(
                        line,
                        format!(
                            "CREATE {kind} takes no column list; only a source declares its columns"
                        ),
                    ));
                }
                let (opts, lines, rest) = with_options(line, s, rest)?;
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
                        if file
                            .tables
                            .iter()
                            .any(|t| t.name.eq_ignore_ascii_case(&name))
                        {
                            return Err(err(
                                line,
                                format!(
                                    "`{name}` is declared as a table and as a source; name them apart"
                                ),
                            ));
                        }
                        file.sources.push(source(line, name, columns, opts, lines)?);
                    }
                    "SINK" => {
                        if file.sinks.iter().any(|x| x.name == name) {
                            return Err(err(line, format!("sink `{name}` is declared twice")));
                        }
                        file.sinks.push(sink(line, name, opts, lines)?);
                    }
                    other => {
                        return Err(err(
                            line,
                            format!(
                                "CREATE {other} is not supported; use CREATE SOURCE, CREATE TABLE or CREATE SINK"
                            ),
                        ));
                    }
                }
            }
            "SET" => {
                let (k, rest) = word(rest);
                let key = k.to_ascii_lowercase();
                if params.contains_key(&key) {
                    // A parameter, already in place wherever `${key}` was.
                    continue;
                }
                let v = engine_setting(&code, line, &key, rest)?;
                if let Some(first) = file.setting_lines.insert(key.clone(), line) {
                    return Err(err(
                        line,
                        format!("`{key}` is SET twice (lines {first} and {line}); keep one"),
                    ));
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
                // (`rest` is a slice of `code`: its place is its offset. Counting from the
                // statement's length was off by the statement's trailing blanks: a last
                // INSERT without `;` but with a newline lost its SELECT's first letter.)
                let at = rest.trim_start().as_ptr() as usize - code.as_ptr() as usize;
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
                        "unexpected `{other}`: a query file holds CREATE SOURCE, CREATE TABLE, CREATE SINK, SET and INSERT INTO … SELECT statements"
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
