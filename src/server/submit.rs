//! What `POST /api/queries` accepts, turned into a query file: the text of a query file as it
//! is, or a bare SELECT over topics, which becomes a file declaring those topics as sources and
//! a result table named after the query as its sink.
//!
//! ```text
//!  {"name": "settlement", "sql": "SELECT … FROM TUMBLE(payments, …)"}
//!   ─▶ CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', …);
//!      CREATE SINK dead_letters …, late_events … (topics `settlement.dlq`, `settlement.late`);
//!      CREATE SINK settlement WITH (connector = 'table');
//!      INSERT INTO settlement
//!      SELECT … FROM TUMBLE(payments, …)            ← the user's text, from column 1
//! ```
//! The declarations take whole lines before the user's text, so an error's line is moved back
//! by their count and its column is the user's.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::log::Log;

/// A submitted query's text as a query file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryText {
    /// The query file's text.
    pub(crate) text: String,
    /// Lines added before the user's text.
    pub(crate) lines_added: usize,
}

/// Why a submitted query was refused: what is wrong and, when known, where in the user's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) error: String,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
}

/// Whether `sql` is a bare query (its first word SELECT, WITH or VALUES) rather than a query
/// file.
pub(crate) fn is_bare_select(sql: &str) -> bool {
    let code = crate::sql::query_file::strip_comments(sql);
    let first = code
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["SELECT", "WITH", "VALUES"]
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w))
}

/// Whether `name` can name a query, its job and its result table: a SQL identifier as SQL
/// reads it unquoted (lower case).
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 100
}

/// `sql` cut after the engine settings it starts with (`SET state_ttl = '1h';`, each ending
/// with its line when nothing else is on it): (the settings with their comments blanked —
/// so that what follows them on their last line is not commented out —, the rest).
fn leading_settings(sql: &str) -> (String, &str) {
    let code = crate::sql::query_file::strip_comments(sql);
    let mut end = 0;
    loop {
        let rest = &code[end..];
        let t = rest.trim_start();
        let mut words = t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let (Some(set), Some(key)) = (words.next(), words.find(|w| !w.is_empty())) else {
            break;
        };
        if !set.eq_ignore_ascii_case("SET")
            || !crate::sql::query_file::SETTINGS.contains(&key.to_ascii_lowercase().as_str())
        {
            break;
        }
        let Some(semi) = rest.find(';') else { break };
        end += semi + 1;
        let line_end = code[end..]
            .find(|c: char| !c.is_whitespace() || c == '\n')
            .filter(|&i| code[end + i..].starts_with('\n'));
        if let Some(i) = line_end {
            end += i + 1;
        }
    }
    (code[..end].to_string(), &sql[end..])
}

/// The query file for query `name` with text `sql` over the topics of `log`.
pub(crate) fn query_text(name: &str, sql: &str, log: &Log) -> Result<QueryText, Refusal> {
    let as_written = QueryText {
        text: sql.to_string(),
        lines_added: 0,
    };
    // A bare query may start with its parameters (`SET spike_z = '6';` … `${spike_z}`), as
    // the shipped library's do; a query file puts its own in place when it is parsed.
    let substituted =
        crate::sql::query_file::substitute_parameters(sql).map_err(|e| refusal(&e, &as_written))?;
    // Engine settings before the query (`SET dense_windows = 'true';`) stay in the file, ahead
    // of it: the job applies them.
    let (settings, sql) = leading_settings(&substituted);
    if !is_bare_select(sql) {
        return Ok(as_written);
    }
    let topics: Vec<String> = log
        .topics()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| valid_name(t))
        .collect();
    let read = crate::sql::stream_reads::sources_read(sql, &topics);
    if read.is_empty() {
        return Err(Refusal {
            error: format!(
                "the query reads no topic of this server (topics: {}); name one in FROM, e.g. FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE), after creating it with POST /api/topics",
                if topics.is_empty() {
                    "none yet".to_string()
                } else {
                    topics.join(", ")
                }
            ),
            line: None,
            column: None,
        });
    }
    let mut text = String::new();
    for t in &read {
        text.push_str(&format!(
            "CREATE SOURCE {t} WITH (connector = 'log', topic = '{t}', format = 'json', event_time = 'event_time');\n"
        ));
    }
    // Each query its own dead-letter and late topics: several queries read one topic, and a
    // topic has one writer.
    text.push_str(&format!(
        "CREATE SINK dead_letters WITH (connector = 'log', topic = '{name}.dlq');\nCREATE SINK late_events WITH (connector = 'log', topic = '{name}.late');\nCREATE SINK {name} WITH (connector = 'table');\n"
    ));
    let mut lines_added = text.matches('\n').count();
    // INSERT INTO on a line of its own, or at the end of the settings' last line: the user's
    // lines keep their numbers (less the lines added) and columns.
    match settings.strip_suffix('\n') {
        None if settings.is_empty() => {
            text.push_str(&format!("INSERT INTO {name}\n"));
            lines_added += 1;
        }
        None => text.push_str(&format!("{settings} INSERT INTO {name} ")),
        Some(lines) => text.push_str(&format!("{lines} INSERT INTO {name}\n")),
    }
    text.push_str(sql.trim_end().trim_end_matches(';'));
    text.push_str(";\n");
    Ok(QueryText { text, lines_added })
}

/// A refusal for `e`, an error preparing the query file of `q`, with the position moved back
/// into the user's text.
pub(crate) fn refusal(e: &Error, q: &QueryText) -> Refusal {
    let (line, column) = match e {
        Error::Plan { position, .. } => parse_position(position),
        _ => (None, None),
    };
    let line = line.map(|l| l.saturating_sub(q.lines_added).max(1));
    let error = match e {
        Error::Plan { message, .. } => match (line, column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: {message}"),
            (Some(l), None) => format!("line {l}: {message}"),
            _ => message.clone(),
        },
        e => e.to_string(),
    };
    Refusal {
        error,
        line,
        column,
    }
}

/// Refuses `path`, a file the query reads or writes, unless it is an absolute path inside
/// `files` (canonical) once symbolic links and `..` are resolved: a query submitted over HTTP
/// never reads or writes the server's other files. The refusal points at where the query
/// names the file.
pub(crate) fn confined(path: &Path, files: &Path, q: &QueryText) -> Result<(), Refusal> {
    let inside = path.is_absolute() && resolved(path).is_some_and(|p| p.starts_with(files));
    if inside {
        return Ok(());
    }
    let written = path.display().to_string();
    let (line, column) = match q.text.find(&format!("'{written}'")) {
        Some(at) => {
            let before = &q.text[..at];
            let line = before.matches('\n').count() + 1;
            let column = at - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            (
                Some(line.saturating_sub(q.lines_added).max(1)),
                Some(column),
            )
        }
        None => (None, None),
    };
    Err(Refusal {
        error: format!(
            "{}file '{written}' is outside {}, the directory submitted queries may read and write files in; name a file there by its absolute path (e.g. '{}'), or start serve with --files DIR",
            match (line, column) {
                (Some(l), Some(c)) => format!("line {l}, column {c}: "),
                _ => String::new(),
            },
            files.display(),
            files
                .join(path.file_name().unwrap_or_else(|| "out.jsonl".as_ref()))
                .display()
        ),
        line,
        column,
    })
}

/// `path` with symbolic links and `..` resolved: its deepest existing ancestor canonicalized,
/// then the rest (`None` when the rest climbs with `..`).
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    while !existing.exists() {
        // A link to nothing is not a file yet to be made: writing it would create its target,
        // wherever that is.
        if existing.symlink_metadata().is_ok() {
            return None;
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
    let mut p = existing.canonicalize().ok()?;
    for part in rest.into_iter().rev() {
        if part == ".." {
            return None;
        }
        p.push(part);
    }
    Some(p)
}

/// `line 3, column 10` (possibly after an origin: `query, line 3`) as numbers.
fn parse_position(position: &str) -> (Option<usize>, Option<usize>) {
    let number_after = |word: &str| {
        let at = position.rfind(word)? + word.len();
        position[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<usize>()
            .ok()
    };
    (number_after("line "), number_after("column "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::TopicConfig;

    /// A bare SELECT becomes a file over the topics it reads with a table sink named after
    /// the query; positions in it are moved back to the user's text.
    #[test]
    fn a_bare_select_reads_its_topics_into_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        for t in ["payments", "refunds", "x.y"] {
            log.create_topic(t, &TopicConfig::default()).unwrap();
        }
        let sql = "-- per minute\nSELECT count(*) AS n, window_end\nFROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)\nGROUP BY window_start, window_end;";
        let q = query_text("per_minute", sql, &log).unwrap();
        assert!(q.text.contains("topic = 'payments'"), "{}", q.text);
        assert!(!q.text.contains("refunds"), "{}", q.text);
        assert!(
            q.text
                .contains("CREATE SINK per_minute WITH (connector = 'table');\nINSERT INTO per_minute\n-- per minute\nSELECT")
        );
        let job = crate::job::Job::prepare("per_minute", "query", &q.text);
        assert!(job.is_ok(), "{job:?}");
        let bad = query_text("bad", "SELECT\n  nope(amount_minor) FROM payments", &log).unwrap();
        let e = crate::job::Job::prepare("bad", "query", &bad.text).unwrap_err();
        let r = refusal(&e, &bad);
        assert_eq!(r.line, Some(2), "{r:?} from {e}");
        let none = query_text("n", "SELECT 1 FROM nowhere", &log).unwrap_err();
        assert!(none.error.contains("payments, refunds"), "{none:?}");
        // A bare query may start with its parameters.
        let with_params = query_text(
            "p",
            "SET minutes = '5';\nSELECT count(*) AS n, window_end\nFROM TUMBLE(payments, event_time, INTERVAL '${minutes}' MINUTE)\nGROUP BY window_start, window_end",
            &log,
        )
        .unwrap();
        assert!(
            with_params.text.contains("INTERVAL '5' MINUTE") && !with_params.text.contains("SET"),
            "{}",
            with_params.text
        );
        assert!(crate::job::Job::prepare("p", "query", &with_params.text).is_ok());
        // Engine settings stay, ahead of the query; its lines keep their numbers.
        let written = "-- dense\nSET dense_windows = 'true';\nSET state_ttl = '1h'; -- an hour\nSELECT card_id,\n  nope(amount_minor) AS n, window_end\nFROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE)\nGROUP BY card_id, window_start, window_end";
        let with_settings = query_text("d", written, &log).unwrap();
        // The settings' comments blanked, so the trailing one does not swallow the INSERT.
        assert!(
            with_settings
                .text
                .contains("SET state_ttl = '1h';            INSERT INTO d\nSELECT card_id"),
            "{}",
            with_settings.text
        );
        let e = crate::job::Job::prepare("d", "query", &with_settings.text).unwrap_err();
        assert_eq!(refusal(&e, &with_settings).line, Some(5), "{e}");
        let fixed = query_text(
            "d",
            &written.replace("nope(amount_minor)", "count(*)"),
            &log,
        )
        .unwrap();
        assert!(
            crate::job::Job::prepare("d", "query", &fixed.text).is_ok(),
            "{}",
            fixed.text
        );
        // A query file is taken as it is.
        let file = "CREATE SOURCE p WITH (connector = 'log', topic = 'payments');";
        assert_eq!(query_text("f", file, &log).unwrap().lines_added, 0);
    }

    #[test]
    fn positions_parse() {
        assert_eq!(
            parse_position("query, line 3, column 10"),
            (Some(3), Some(10))
        );
        assert_eq!(parse_position("line 7"), (Some(7), None));
        assert!(valid_name("settlement_1") && !valid_name("1x") && !valid_name("a-b"));
        assert!(!valid_name("perCard"), "SQL reads it as percard");
    }

    /// A submitted query reads and writes files only inside the server's files directory, by
    /// absolute paths, whatever `..` or a symbolic link would make of them.
    #[test]
    fn files_stay_in_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join("out")).unwrap();
        let files = files.canonicalize().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), files.join("escape")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/cron.job", files.join("dangling")).unwrap();
        let text = QueryText {
            text: "CREATE SOURCE p WITH (connector = 'log', topic = 'payments');\nCREATE SINK s WITH (connector = 'file',\n  path = '/etc/paystream.jsonl');".into(),
            lines_added: 0,
        };
        let ok = |p: &Path| confined(p, &files, &text).is_ok();
        assert!(ok(&files.join("a.jsonl")));
        assert!(ok(&files.join("out/new/dir/a.jsonl")), "not created yet");
        assert!(!ok(Path::new("/etc/paystream.jsonl")));
        assert!(!ok(Path::new("a.jsonl")), "relative");
        assert!(!ok(&files.join("../a.jsonl")));
        assert!(!ok(&files.join("new/../../a.jsonl")));
        assert!(
            !ok(&files.join("escape/a.jsonl")),
            "through a symbolic link"
        );
        assert!(!ok(&files.join("dangling")), "a link to nothing");
        assert!(!ok(&files.join("dangling/x")), "under a link to nothing");
        let r = confined(Path::new("/etc/paystream.jsonl"), &files, &text).unwrap_err();
        assert_eq!((r.line, r.column), (Some(3), Some(10)), "{r:?}");
        assert!(r.error.contains("--files"), "{}", r.error);
    }
}
