//! The SQL surface, tested in `.slt` files (sqllogictest) against the real engine.
//!
//! Besides queries, the files use a few statements of this harness:
//!
//! * `EVENTS` followed by JSON lines — appends events to the input (in arrival order);
//! * `CLEAR EVENTS`;
//! * `SET watermark_delay = '2s'` (also `batch_size`, `workers`, `dedup_ttl`, `max_skew`);
//! * `SHOW SUMMARY` — `read accepted duplicates dead_lettered late results` of the last query;
//! * `SHOW LATE` — `event_id line` of each late event of the last query;
//! * `SHOW DEAD_LETTERS` — `reason line` of each dead-lettered record of the last query;
//! * `CREATE SOURCE name (columns…, WATERMARK FOR …)` — later queries read the events as that
//!   declared source (its watermark delay and dedup key apply; a `SET` still wins), until
//!   `DROP SOURCE`;
//! * `SHOW DEAD_LETTERS DETAIL` — `reason line detail` of each dead-lettered record;
//! * `FILE name` followed by lines — writes a file (a reference table's CSV or JSON Lines)
//!   that a later `CREATE TABLE … WITH (connector = 'file', path = 'name')` reads;
//! * `CREATE TABLE name (columns…) WITH (…)` — later queries may join the table, until
//!   `DROP TABLES`.
//!
//! A query replays all events given so far and returns its rows in emission order (use
//! `rowsort` where only the order within a window is free). Values print as text, nulls as NULL.

use std::path::Path;

use paystream::time::parse_duration_millis;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::util::Run;

#[derive(Default)]
struct SltDb {
    events: String,
    /// Where `FILE` writes.
    files: Option<tempfile::TempDir>,
    tables: Vec<paystream::table::TableDecl>,
    source: Option<paystream::sql::query_file::SourceDecl>,
    settings: Vec<(String, String)>,
    last: Option<Run>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

fn rows(rows: Vec<Vec<String>>) -> DBOutput<DefaultColumnType> {
    let n = rows.first().map_or(0, Vec::len);
    DBOutput::Rows {
        types: vec![DefaultColumnType::Any; n],
        rows,
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SltDb {
    fn last(&self) -> Result<&Run, SltError> {
        self.last
            .as_ref()
            .ok_or_else(|| SltError("no query has run yet".into()))
    }
}

impl sqllogictest::DB for SltDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let trimmed = sql.trim();
        let upper = trimmed.to_ascii_uppercase();
        if let Some(rest) = trimmed.strip_prefix("EVENTS") {
            for line in rest.lines().map(str::trim).filter(|l| !l.is_empty()) {
                self.events.push_str(line);
                self.events.push('\n');
            }
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper.starts_with("CREATE SOURCE") {
            let decl = paystream::sql::query_file::parse_source_declaration(trimmed)
                .map_err(|e| SltError(e.to_string()))?;
            self.source = Some(decl);
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = trimmed.strip_prefix("FILE ") {
            let (name, body) = rest.split_once('\n').unwrap_or((rest, ""));
            if self.files.is_none() {
                self.files = Some(tempfile::tempdir().map_err(|e| SltError(e.to_string()))?);
            }
            let dir = self.files.as_ref().expect("made above").path();
            let text: String = body.lines().map(|l| format!("{}\n", l.trim())).collect();
            std::fs::write(dir.join(name.trim()), text).map_err(|e| SltError(e.to_string()))?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper.starts_with("CREATE TABLE") {
            let parsed =
                paystream::sql::query_file::parse_replay_query(&format!("{trimmed};\nSELECT 1"))
                    .map_err(|e| SltError(e.to_string()))?;
            for mut t in parsed.tables {
                // A relative path names a file this harness wrote.
                if let paystream::table::TableSource::File { path, .. } = &mut t.source
                    && let Some(dir) = &self.files
                    && path.is_relative()
                {
                    *path = dir.path().join(&path);
                }
                self.tables.retain(|x| x.name != t.name);
                self.tables.push(t);
            }
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper == "DROP TABLES" {
            self.tables.clear();
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper == "DROP SOURCE" {
            self.source = None;
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper == "CLEAR EVENTS" {
            self.events.clear();
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper.starts_with("SET ") {
            let (k, v) = trimmed[4..]
                .split_once('=')
                .ok_or_else(|| SltError(format!("expected SET name = value: {trimmed}")))?;
            let v = v
                .trim()
                .trim_end_matches(';')
                .trim_matches('\'')
                .to_string();
            self.settings.retain(|(name, _)| name != k.trim());
            self.settings.push((k.trim().to_string(), v));
            return Ok(DBOutput::StatementComplete(0));
        }
        match upper.as_str() {
            "SHOW SUMMARY" => {
                let s = self.last()?.summary;
                return Ok(rows(vec![
                    [
                        s.read,
                        s.accepted,
                        s.duplicates,
                        s.dead_lettered,
                        s.late,
                        s.results,
                    ]
                    .iter()
                    .map(u64::to_string)
                    .collect(),
                ]));
            }
            "SHOW LATE" => {
                let r = self.last()?;
                return Ok(rows(
                    r.late
                        .iter()
                        .map(|l| vec![text(&l["event_id"]), text(&l["line"])])
                        .collect(),
                ));
            }
            "SHOW DEAD_LETTERS DETAIL" => {
                let r = self.last()?;
                return Ok(rows(
                    r.dead_letters
                        .iter()
                        .map(|l| vec![text(&l["reason"]), text(&l["line"]), text(&l["detail"])])
                        .collect(),
                ));
            }
            "SHOW DEAD_LETTERS" => {
                let r = self.last()?;
                return Ok(rows(
                    r.dead_letters
                        .iter()
                        .map(|l| vec![text(&l["reason"]), text(&l["line"])])
                        .collect(),
                ));
            }
            _ => {}
        }
        // A stream query: replay everything given so far.
        let (name, events) = match &self.source {
            None => ("payments".to_string(), paystream::EventSchema::payments()),
            Some(s) => (s.name.clone(), std::sync::Arc::clone(&s.events)),
        };
        let tables: Vec<_> = self
            .tables
            .iter()
            .map(|t| paystream::table::ReferenceTable::new(t.clone()))
            .collect();
        let plan = paystream::sql::plan_query_over(
            trimmed,
            &[(name, events)],
            &tables,
            &paystream::sql::WindowLimits::default(),
        )
        .map_err(|e| SltError(e.to_string()))?;
        paystream::table::load_all(&tables).map_err(|e| SltError(e.to_string()))?;
        let dir = tempfile::tempdir().map_err(|e| SltError(e.to_string()))?;
        let input = dir.path().join("events.jsonl");
        std::fs::write(&input, &self.events).map_err(|e| SltError(e.to_string()))?;
        let settings = self.settings.clone();
        let declared = self
            .source
            .as_ref()
            .map(|s| (s.watermark_delay, s.dedup_ttl, s.max_skew));
        let mut bad = None;
        let run = crate::util::try_replay_with(&plan, &input, |o| {
            if let Some((delay, ttl, skew)) = declared {
                o.watermark_delay = delay.unwrap_or(o.watermark_delay);
                o.dedup_ttl = ttl.unwrap_or(o.dedup_ttl);
                o.max_skew = skew.unwrap_or(o.max_skew);
            }
            for (k, v) in &settings {
                let ms = || parse_duration_millis(v);
                let r: Result<(), String> = match k.as_str() {
                    "watermark_delay" => ms().map(|m| o.watermark_delay = m),
                    "dedup_ttl" => ms().map(|m| o.dedup_ttl = m),
                    "max_skew" => ms().map(|m| o.max_skew = m),
                    "batch_size" => v
                        .parse()
                        .map(|n| o.batch_size = n)
                        .map_err(|e| format!("{e}")),
                    "workers" => v.parse().map(|n| o.workers = n).map_err(|e| format!("{e}")),
                    other => Err(format!("unknown setting {other}")),
                };
                if let Err(e) = r {
                    bad = Some(e);
                }
            }
        });
        if let Some(e) = bad {
            return Err(SltError(e));
        }
        // An error while the query runs (an integer overflow) is the statement's error.
        let run = run.map_err(|e| SltError(e.to_string()))?;
        let mut out: Vec<Vec<String>> = Vec::new();
        for b in &run.batches {
            for r in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| {
                            let mut buf = Vec::new();
                            paystream::sink::write_value(&mut buf, c.as_ref(), r);
                            match serde_json::from_slice(&buf).expect("JSON value") {
                                // Numbers as written: serde_json would round one beyond 64 bits.
                                serde_json::Value::Number(_) => {
                                    String::from_utf8(buf).expect("JSON is UTF-8")
                                }
                                v => text(&v),
                            }
                        })
                        .collect(),
                );
            }
        }
        self.last = Some(run);
        Ok(rows(out))
    }
}

fn run_slt(path: &Path) {
    let mut runner = sqllogictest::Runner::new(|| async { Ok(SltDb::default()) });
    runner.with_column_validator(|_, _| true);
    if let Err(e) = runner.run_file(path) {
        panic!("{}: {e}", path.display());
    }
}

#[test]
fn slt_files() {
    let dir = crate::util::repo("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "slt files missing in {}", dir.display());
    for f in files {
        run_slt(&f);
    }
}
