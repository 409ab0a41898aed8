//! Hostile queries and values (issue 12): money sums beyond 64 bits are exact, integer overflow
//! is an error naming the query and the values, deep expressions end in an error instead of a
//! stack overflow, and contradictory event-time settings are refused.

use std::io::Write;
use std::process::Command;

use datafusion::parquet::arrow::ArrowWriter;
use paystream::decode::decode_json_lines;
use paystream::engine::Router;
use paystream::operators::{Dedup, EventBatch, OperatorOutput, Watermark, build_operator};
use paystream::plan_query;

use crate::util::{lines_of, replay, repo, sorted};

fn paystream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_paystream"))
}

/// 10,000 captures of 10^15 (the largest valid amount) and one refund, in one merchant-minute:
/// their sum, 10^19, is beyond `i64::MAX`.
fn big_captures() -> String {
    let mut s = String::new();
    for i in 0..10_000u32 {
        s.push_str(&format!(
            "{{\"event_id\":\"e{i}\",\"event_type\":\"capture\",\"event_time\":\"2026-11-01T00:00:{:02}.{:03}Z\",\"payment_id\":\"p{i}\",\"merchant_id\":\"m1\",\"card_id\":\"c1\",\"amount_minor\":1000000000000000,\"currency\":\"EUR\"}}\n",
            i / 200,
            (i % 200) * 5
        ));
    }
    s.push_str("{\"event_id\":\"r1\",\"event_type\":\"refund\",\"event_time\":\"2026-11-01T00:00:59Z\",\"payment_id\":\"p1\",\"merchant_id\":\"m1\",\"card_id\":\"c1\",\"amount_minor\":1000000000000000,\"currency\":\"EUR\"}\n");
    s
}

const EXACT: [&str; 3] = [
    "\"captured_count\":10000",
    "\"captured_minor\":10000000000000000000",
    "\"net_minor\":9999000000000000000",
];

fn settlement() -> String {
    std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap()
}

fn assert_exact(lines: &[String], what: &str) {
    assert_eq!(lines.len(), 1, "{what}: {lines:?}");
    for needle in EXACT {
        assert!(
            lines[0].contains(needle),
            "{what}: {needle} in {}",
            lines[0]
        );
    }
}

#[test]
fn settlement_sums_beyond_64_bits_are_exact_in_every_input_format_and_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("big.jsonl");
    std::fs::write(&json, big_captures()).unwrap();
    let run = replay(&settlement(), &json, |o| o.batch_size = 999);
    assert_eq!(run.summary.accepted, 10_001);
    assert_exact(&run.lines, "json");

    // The same events as CSV and Parquet.
    let decoded = decode_json_lines(&std::fs::read(&json).unwrap(), 1, 4096);
    let parquet = dir.path().join("big.parquet");
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        paystream::schema::event_schema(),
        None,
    )
    .unwrap();
    for b in &decoded.batches {
        w.write(&b.batch).unwrap();
    }
    w.close().unwrap();
    let csv = dir.path().join("big.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(
        f,
        "event_id,event_type,event_time,payment_id,merchant_id,card_id,amount_minor,currency"
    )
    .unwrap();
    for line in big_captures().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let cell = |k: &str| match &v[k] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let cells = [
            "event_id",
            "event_type",
            "event_time",
            "payment_id",
            "merchant_id",
            "card_id",
            "amount_minor",
            "currency",
        ]
        .map(cell);
        writeln!(f, "{}", cells.join(",")).unwrap();
    }
    drop(f);
    for (what, path) in [("parquet", &parquet), ("csv", &csv)] {
        let run = replay(&settlement(), path, |o| o.workers = 2);
        assert_exact(&run.lines, what);
    }

    // Written by the binary: a plain JSON integer, no quotes, fraction or exponent.
    let out = dir.path().join("out.jsonl");
    let o = paystream()
        .arg("replay")
        .arg(&json)
        .arg("--query")
        .arg(repo("queries/settlement_per_minute.sql"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_exact(
        &text.lines().map(str::to_string).collect::<Vec<_>>(),
        "binary",
    );
}

#[test]
fn sums_beyond_64_bits_survive_snapshot_and_restore_in_every_window_operator() {
    let bytes = big_captures();
    let decoded = decode_json_lines(bytes.as_bytes(), 1, 1000);
    let mut router = Router::new(Dedup::new(3_600_000), Watermark::new(5_000, 300_000));
    let mut batches: Vec<(EventBatch, i64)> = Vec::new();
    for b in &decoded.batches {
        let mut rejects = Vec::new();
        if let Some(ev) = router
            .accept(0, b, |_| String::new(), &mut rejects)
            .unwrap()
        {
            batches.push((ev, router.watermark.current()));
        }
    }
    let queries = [
        settlement(),
        "SELECT merchant_id, window_end, sum(amount_minor) AS total FROM HOP(payments, event_time, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE) GROUP BY merchant_id, window_start, window_end".into(),
        "SELECT merchant_id, sum(amount_minor) AS total FROM SESSION(payments, event_time, INTERVAL '10' MINUTE) GROUP BY merchant_id, window_start, window_end".into(),
    ];
    for sql in &queries {
        let plan = plan_query(sql).unwrap();
        let mut op = build_operator(&plan).unwrap();
        let mut out = OperatorOutput::default();
        for (i, (ev, wm)) in batches.iter().enumerate() {
            if i == batches.len() / 2 {
                let snap = op.snapshot().unwrap();
                op = build_operator(&plan).unwrap();
                op.restore(&snap).unwrap();
            }
            op.process(ev, &mut out).unwrap();
            op.advance_watermark(*wm, &mut out).unwrap();
        }
        op.finish(&mut out).unwrap();
        let batches: Vec<_> = out.results.into_iter().map(|r| r.batch).collect();
        let lines = sorted(lines_of(&batches));
        if sql.contains("captured_minor") {
            assert_exact(&lines, "settlement");
        } else {
            assert!(!lines.is_empty(), "{sql}");
            for l in &lines {
                assert!(l.contains("\"total\":10001000000000000000"), "{sql}: {l}");
            }
        }
    }
}

#[test]
fn integer_overflow_in_an_expression_is_an_error_naming_the_query_and_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("big.jsonl");
    std::fs::write(&json, big_captures()).unwrap();
    let cases = [
        (
            "times.sql",
            "SELECT event_id, amount_minor * 100000 AS x FROM payments",
            "1000000000000000 * 100000",
        ),
        (
            "window.sql",
            "SELECT window_start, sum(amount_minor * 10000) AS x FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_start",
            "1000000000000000 * 10000",
        ),
        (
            "sum_cast.sql",
            "SELECT window_start, CAST(sum(amount_minor) AS BIGINT) AS x FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_start",
            "10001000000000000000",
        ),
    ];
    for (name, sql, values) in cases {
        let stderr = failed_replay(dir.path(), &json, name, sql);
        assert!(
            stderr.contains(name) && stderr.contains(values),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("-84467"),
            "never a wrapped number: {stderr}"
        );
    }
}

/// A value that does not convert stops the query with the query's name, the value and what to
/// write instead: TRY_CAST for text that is no number, a decimal for a number too large (never
/// TRY_CAST there: that would null an overflowing total silently).
#[test]
fn a_value_that_does_not_convert_names_the_query_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("big.jsonl");
    std::fs::write(&json, big_captures()).unwrap();
    for (name, sql, want, never) in [
        (
            "text.sql",
            "SELECT event_id, CAST(currency AS BIGINT) AS x FROM payments",
            "a value does not convert: Cannot cast string 'EUR'",
            "DECIMAL",
        ),
        (
            "sum.sql",
            "SELECT window_start, CAST(sum(amount_minor) AS BIGINT) AS x FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_start",
            "Keep it a DECIMAL(38, 0)",
            "TRY_CAST",
        ),
    ] {
        let stderr = failed_replay(dir.path(), &json, name, sql);
        assert!(
            stderr.contains(name) && stderr.contains(want) && !stderr.contains(never),
            "{name}: {stderr}"
        );
    }
}

/// The standard error of replaying `input` with `sql` written to `dir/name`, which must fail.
fn failed_replay(dir: &std::path::Path, input: &std::path::Path, name: &str, sql: &str) -> String {
    let q = dir.join(name);
    std::fs::write(&q, sql).unwrap();
    let o = paystream()
        .arg("replay")
        .arg(input)
        .arg("--query")
        .arg(&q)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{name}: {stderr}");
    stderr
}

/// `a + a + … + a` with `terms` terms, over a column.
fn chain(terms: usize) -> String {
    let mut s = String::from("SELECT event_id, ");
    for i in 0..terms {
        if i > 0 {
            s.push_str(" + ");
        }
        s.push_str("amount_minor");
    }
    s.push_str(" AS x FROM payments");
    s
}

#[test]
fn deep_expressions_end_in_an_error_or_a_result_never_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e.jsonl");
    std::fs::write(
        &json,
        "{\"event_id\":\"e1\",\"event_type\":\"capture\",\"event_time\":\"2026-11-01T00:00:01Z\",\"payment_id\":\"p\",\"merchant_id\":\"m1\",\"card_id\":\"c1\",\"amount_minor\":3,\"currency\":\"EUR\"}\n",
    )
    .unwrap();
    let nested = |open: &str, n: usize| {
        format!(
            "SELECT event_id FROM payments WHERE {}amount_minor > 1{}",
            open.repeat(n),
            ")".repeat(if open.contains('(') { n } else { 0 })
        )
    };
    let cases = [
        (
            chain(5_000),
            "line 1, column 18",
            "nests more than 128 levels",
        ),
        (
            chain(50_000),
            "line 1, column 18",
            "nests more than 128 levels",
        ),
        (chain(500_000), "line 1, column", "the query is too long"),
        (
            nested("(", 5_000),
            "line 1, column",
            "more than 50 levels deep",
        ),
        // sqlparser backs out of the 50th NOT and stops there.
        (
            nested("NOT ", 50_000),
            "line 1, column 229",
            "cannot parse the query",
        ),
        (
            nested("abs(", 5_000),
            "line 1, column",
            "more than 50 levels deep",
        ),
    ];
    for (i, (sql, position, message)) in cases.iter().enumerate() {
        let q = dir.path().join(format!("deep{i}.sql"));
        std::fs::write(&q, sql).unwrap();
        let o = paystream()
            .arg("replay")
            .arg(&json)
            .arg("--query")
            .arg(&q)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "case {i}: {stderr}");
        assert!(
            stderr.contains(position) && stderr.contains(message),
            "case {i}: {stderr}"
        );
    }
    // Just under the bound, the query plans and runs (its evaluation recurses on a worker).
    let q = dir.path().join("ok.sql");
    std::fs::write(&q, chain(120)).unwrap();
    let o = paystream()
        .arg("replay")
        .arg(&json)
        .arg("--query")
        .arg(&q)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("\"x\":360"), "{stdout}");
}

#[test]
fn a_max_skew_at_or_below_the_watermark_delay_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e.jsonl");
    std::fs::write(&json, big_captures()).unwrap();
    for (delay, skew) in [("5s", "5s"), ("10m", "5m")] {
        let o = paystream()
            .arg("replay")
            .arg(&json)
            .arg("--query")
            .arg(repo("queries/settlement_per_minute.sql"))
            .args(["--watermark-delay", delay, "--max-skew", skew])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "--max-skew ({skew}) must be larger than --watermark-delay ({delay})"
            )),
            "{stderr}"
        );
    }
    // A query file: SET and CREATE SOURCE alike, and an invalid SET even when the source's own
    // option wins.
    let files = [
        (
            format!(
                "SET max_skew = '2s';\nCREATE SOURCE payments WITH (connector = 'file', path = '{}');\nCREATE SINK out WITH (connector = 'file', path = 'out.jsonl');\nINSERT INTO out SELECT event_id FROM payments;\n",
                json.display()
            ),
            "SET max_skew (line 1) (2s) must be larger than watermark_delay (default) (5s)",
        ),
        (
            format!(
                "SET watermark_delay = 'soon';\nCREATE SOURCE payments WITH (connector = 'file', path = '{}', watermark_delay = '1s');\nCREATE SINK out WITH (connector = 'file', path = 'out.jsonl');\nINSERT INTO out SELECT event_id FROM payments;\n",
                json.display()
            ),
            "line 1, column 24: SET watermark_delay = 'soon'",
        ),
        (
            format!(
                "SET workers = 0;\nCREATE SOURCE payments WITH (connector = 'file', path = '{}');\nCREATE SINK out WITH (connector = 'file', path = 'out.jsonl');\nINSERT INTO out SELECT event_id FROM payments;\n",
                json.display()
            ),
            "line 1, column 15: SET workers = '0'",
        ),
    ];
    for (i, (text, needle)) in files.iter().enumerate() {
        let q = dir.path().join(format!("job{i}.sql"));
        std::fs::write(&q, text).unwrap();
        let o = paystream()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("run")
            .arg(&q)
            .arg("--until-end")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(
            !dir.path().join("out.jsonl").exists(),
            "refused before any output"
        );
    }
}
