//! Golden tests: each shipped query over the committed sample, in every input format.
//!
//! `data/sample_events.jsonl` was written by `paystream gen --events 3000 --seed 42 --rate 20
//! --cards 150 --merchants 12 --malformed 0.005 --spike-at 60s`. The expected rows live in
//! `tests/golden/<query>.jsonl` (sorted); the oracle test checks the same queries against
//! DataFusion batch SQL on generated data. Set `PAYSTREAM_BLESS=1` to rewrite the golden files
//! after an intended change, and review the diff.

use std::io::Write;

use datafusion::parquet::arrow::ArrowWriter;
use paystream::decode::decode_json_lines;

use crate::util::{replay, repo, sorted};

const QUERIES: [&str; 3] = ["settlement_per_minute", "card_velocity", "card_sessions"];

pub(crate) fn check_golden(name: &str, lines: &[String]) {
    let path = repo(&format!("tests/golden/{name}.jsonl"));
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    if std::env::var_os("PAYSTREAM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PAYSTREAM_BLESS=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == text,
        "{name}: results differ from {} ({} expected rows, {} actual)",
        path.display(),
        expected.lines().count(),
        lines.len()
    );
}

#[test]
fn shipped_queries_match_their_golden_results() {
    let input = repo("data/sample_events.jsonl");
    for name in QUERIES {
        let sql = std::fs::read_to_string(repo(&format!("queries/{name}.sql"))).unwrap();
        let run = replay(&sql, &input, |_| {});
        let s = run.summary;
        assert_eq!(s.read, 3000);
        assert_eq!(s.read, s.accepted + s.duplicates + s.dead_lettered);
        assert!(
            s.dead_lettered > 0 && s.duplicates > 0,
            "the sample exercises both: {s:?}"
        );
        assert!(!run.lines.is_empty(), "{name} produced no rows");
        check_golden(name, &sorted(run.lines));
    }
}

/// Writes the valid events of the sample as CSV (with header) and Parquet.
pub fn sample_in_other_formats(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let bytes = std::fs::read(repo("data/sample_events.jsonl")).unwrap();
    // Only the events valid in JSON: `"amount_minor":"10"` is invalid JSON input but would be a
    // valid CSV cell, so converting raw lines would change the input.
    let decoded = decode_json_lines(&bytes, 1, 500);
    let csv_path = dir.join("sample.csv");
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    let fields = paystream::schema::FIELD_NAMES;
    writeln!(csv, "{}", fields.join(",")).unwrap();
    for b in &decoded.batches {
        for r in 0..b.batch.num_rows() {
            let m: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&paystream::sink::event_json(&b.batch, r)).unwrap();
            let cells: Vec<String> = fields
                .iter()
                .map(|f| match m.get(*f) {
                    Some(serde_json::Value::String(s)) if s.contains([',', '"']) => {
                        format!("\"{}\"", s.replace('"', "\"\""))
                    }
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                })
                .collect();
            writeln!(csv, "{}", cells.join(",")).unwrap();
        }
    }
    let parquet_path = dir.join("sample.parquet");
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&parquet_path).unwrap(),
        paystream::schema::event_schema(),
        None,
    )
    .unwrap();
    for b in &decoded.batches {
        w.write(&b.batch).unwrap();
    }
    w.close().unwrap();
    (csv_path, parquet_path)
}

#[test]
fn csv_and_parquet_give_the_same_results_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, parquet) = sample_in_other_formats(dir.path());
    for name in QUERIES {
        let sql = std::fs::read_to_string(repo(&format!("queries/{name}.sql"))).unwrap();
        let json = sorted(replay(&sql, &repo("data/sample_events.jsonl"), |_| {}).lines);
        for (what, path) in [("csv", &csv), ("parquet", &parquet)] {
            let run = replay(&sql, path, |o| o.workers = 2);
            assert_eq!(sorted(run.lines), json, "{name} over {what}");
        }
    }
}

#[test]
fn csv_rejects_carry_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency\n\
         e1,capture,2026-11-01T00:00:00Z,p,m,c,100,EUR\n\
         e2,capture,2026-11-01T00:00:00Z,p,\"m\nwith newline\",c,12.5,EUR\n\
         e3,capture,2026-11-01T00:00:01Z,p,m,c,7,EUR\n",
    )
    .unwrap();
    let run = replay("SELECT event_id, amount_minor FROM payments", &path, |_| {});
    assert_eq!(run.lines.len(), 2);
    assert_eq!(run.dead_letters.len(), 1);
    assert_eq!(run.dead_letters[0]["reason"], "wrong_type");
    assert_eq!(run.dead_letters[0]["line"], 3);
}
