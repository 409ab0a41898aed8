//! The `paystream` binary, run as a user would.

use std::process::Command;

use crate::util::repo;

fn paystream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_paystream"))
}

#[test]
fn gen_then_replay_writes_results_dead_letters_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let st = paystream()
        .args([
            "gen",
            "--events",
            "5000",
            "--seed",
            "7",
            "--malformed",
            "0.01",
            "-o",
        ])
        .arg(&events)
        .status()
        .unwrap();
    assert!(st.success());
    let (out, dlq, late) = (
        dir.path().join("out.jsonl"),
        dir.path().join("dlq.jsonl"),
        dir.path().join("late.jsonl"),
    );
    let o = paystream()
        .arg("replay")
        .arg(&events)
        .arg("--query")
        .arg(repo("queries/settlement_per_minute.sql"))
        .arg("--output")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dlq)
        .arg("--late")
        .arg(&late)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let summary: Vec<&str> = stderr.lines().filter(|l| l.starts_with("read=")).collect();
    assert_eq!(summary.len(), 1, "one summary line: {stderr}");
    let field = |k: &str| -> u64 {
        summary[0]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {}", summary[0]))
            .trim_end_matches('s')
            .parse::<f64>()
            .unwrap() as u64
    };
    assert_eq!(field("read"), 5000);
    assert_eq!(
        field("read"),
        field("accepted") + field("duplicates") + field("dead_lettered")
    );
    assert!(field("dead_lettered") > 0);
    assert!(summary[0].contains("wall=") && summary[0].contains("events_per_sec="));
    let rows = std::fs::read_to_string(&out).unwrap();
    assert_eq!(rows.lines().count() as u64, field("results"));
    let first: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    assert!(first["window_start"].as_str().unwrap().ends_with(".000Z"));
    assert!(first["captured_minor"].is_i64());
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(dead.lines().count() as u64, field("dead_lettered"));
    for l in dead.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(
            v["reason"].is_string()
                && v["detail"].is_string()
                && v["line"].is_u64()
                && v["file"].is_string()
        );
        assert!(
            !l.contains("4111111111111111"),
            "card numbers are redacted: {l}"
        );
    }
}

#[test]
fn results_go_to_stdout_by_default() {
    let o = paystream()
        .arg("replay")
        .arg(repo("data/sample_events.jsonl"))
        .arg("--query")
        .arg(repo("queries/card_velocity.sql"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.lines().count() > 0);
    assert!(out.lines().all(|l| l.starts_with("{\"card_id\":")));
}

#[test]
fn a_bad_query_fails_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("bad.sql");
    std::fs::write(&q, "SELECT *\nFROM payments\nORDER BY event_time").unwrap();
    let o = paystream()
        .arg("replay")
        .arg(repo("data/sample_events.jsonl"))
        .arg("--query")
        .arg(&q)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 3, column 1") && err.contains("ORDER BY"),
        "{err}"
    );
}

#[test]
fn missing_input_and_bad_options_are_clear_errors() {
    let o = paystream()
        .args(["replay", "/nonexistent/events.jsonl", "--query"])
        .arg(repo("queries/card_velocity.sql"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let o = paystream()
        .arg("replay")
        .arg(repo("data/sample_events.jsonl"))
        .arg("--query")
        .arg(repo("queries/card_velocity.sql"))
        .args(["--watermark-delay", "5 fortnights"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--watermark-delay"));
}

#[test]
fn bench_measures_what_only_selects() {
    // The throughput harness over the sample file: `--only` picks measurements, and a filter
    // that matches nothing is an error rather than an empty table.
    let bench = |only: &str| {
        paystream()
            .args([
                "bench",
                "--suite",
                "queries",
                "--workers",
                "1",
                "--repeat",
                "2",
            ])
            .arg("--input")
            .arg(repo("data/sample_events.jsonl"))
            .args(["--only", only])
            .output()
            .unwrap()
    };
    let o = bench("operator only: settlement");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].starts_with("operator only: settlement_per_minute"));
    let o = bench("nosuch");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no measurement matches --only"));
}

#[test]
fn help_explains_the_commands() {
    let o = paystream().arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    for c in ["replay", "gen", "demo"] {
        assert!(h.contains(c), "{h}");
    }
    let o = paystream().args(["replay", "--help"]).output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--watermark-delay",
        "--workers",
        "--speed",
        "--dead-letter",
        "--late",
        "--output",
    ] {
        assert!(h.contains(flag), "{flag} in {h}");
    }
}

/// The demo serves: while it runs, the HTTP API lists the shipped queries running and reading
/// the generated traffic; `--for` stops it cleanly.
#[test]
fn demo_runs_the_shipped_queries() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut child = paystream()
        .args([
            "demo",
            "--for",
            "12s",
            "--rate",
            "1000",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "off",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the demo printed its dashboard")
            .unwrap();
        if let Some(rest) = line.split("dashboard http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let queries: serde_json::Value = serde_json::from_str(&get("/api/queries")).unwrap();
        let names: Vec<&str> = queries
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        for q in [
            "settlement_per_minute",
            "card_velocity",
            "card_sessions",
            "merchant_volume_spike",
        ] {
            assert!(names.contains(&q), "{names:?}");
        }
        let reading = queries.as_array().unwrap().iter().all(|q| {
            q["state"] == "running" && q["metrics"]["events_in"].as_u64().unwrap_or(0) > 0
        });
        if reading {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queries}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter().any(|l| l.starts_with("stopped: produced")),
        "{rest:?}"
    );
}

#[test]
fn paced_replay_gives_the_same_results() {
    // --speed only paces the reader; results must not change (no timing is asserted).
    let run = |speed: &str| {
        let o = paystream()
            .arg("replay")
            .arg(repo("data/sample_events.jsonl"))
            .arg("--query")
            .arg(repo("queries/settlement_per_minute.sql"))
            .args(["--speed", speed, "--workers", "1"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut lines: Vec<String> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(run("100000"), run("max"));
    let o = paystream()
        .arg("replay")
        .arg(repo("data/sample_events.jsonl"))
        .arg("--query")
        .arg(repo("queries/settlement_per_minute.sql"))
        .args(["--speed", "fast"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--speed"));
}

/// A replay under a declaration that names another file says which file it reads.
#[test]
fn a_replay_says_when_the_declaration_names_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orders.csv");
    std::fs::write(&csv, "id,ts\no1,2026-11-01T00:00:00Z\n").unwrap();
    let query = dir.path().join("q.sql");
    let declare = |path: &str| {
        format!(
            "CREATE SOURCE orders (id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL) WITH (connector = 'file', path = '{path}', format = 'csv', event_time = 'ts');\nSELECT id FROM orders;\n"
        )
    };
    for (path, noted) in [("elsewhere.csv", true), ("orders.csv", false)] {
        std::fs::write(&query, declare(path)).unwrap();
        let o = paystream()
            .args(["replay"])
            .arg(&csv)
            .arg("-q")
            .arg(&query)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), r#"{"id":"o1"}"#);
        assert_eq!(
            stderr.contains("note: replaying"),
            noted,
            "{path}: {stderr}"
        );
        if noted {
            assert!(stderr.contains("elsewhere.csv"), "{stderr}");
        }
    }
}

/// The decoder builds only the columns a query reads; a late event still goes out whole,
/// every field as the file has it (decoded again from its line).
#[test]
fn late_events_go_out_whole_though_the_query_reads_few_columns() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let st = paystream()
        .args([
            "gen",
            "--events",
            "3000",
            "--seed",
            "5",
            "--disorder",
            "2s",
            "-o",
        ])
        .arg(&events)
        .status()
        .unwrap();
    assert!(st.success());
    let select = "SELECT merchant_id, count(*) AS n \
         FROM TUMBLE(payments, event_time, INTERVAL '100' MILLISECOND) \
         GROUP BY merchant_id, window_start, window_end";
    // The same events as the built-in payment event and as a source declaring their columns,
    // whose decoder leaves its unread string columns out too.
    let declared = format!(
        "CREATE SOURCE payments (event_id VARCHAR NOT NULL, event_type VARCHAR NOT NULL, \
           event_time TIMESTAMP NOT NULL, payment_id VARCHAR NOT NULL, merchant_id VARCHAR NOT NULL, \
           card_id VARCHAR NOT NULL, amount_minor BIGINT NOT NULL, currency VARCHAR NOT NULL, \
           card_country VARCHAR, ip_country VARCHAR, mcc VARCHAR, device_id VARCHAR, \
           customer_id VARCHAR, status VARCHAR, decline_code VARCHAR, fee_minor BIGINT, \
           WATERMARK FOR event_time AS event_time - INTERVAL '0' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'json', dedup_key = 'event_id');\n{select};",
        events.display()
    );
    for (name, text) in [("builtin", select.to_string()), ("declared", declared)] {
        let query = dir.path().join(format!("{name}.sql"));
        std::fs::write(&query, text).unwrap();
        let late = dir.path().join(format!("{name}.late.jsonl"));
        let o = paystream()
            .arg("replay")
            .arg(&events)
            .arg("--query")
            .arg(&query)
            .args([
                "--watermark-delay",
                "0s",
                "--workers",
                "2",
                "-o",
                "/dev/null",
                "--late",
            ])
            .arg(&late)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        each_late_event_is_its_input_line(&events, &late, name == "declared");
    }
}

/// Every record of the late output `late` holds, as `event`, its input line of `events` field
/// for field; a declared source's event may have nulls for the fields its line lacks.
fn each_late_event_is_its_input_line(
    events: &std::path::Path,
    late: &std::path::Path,
    declared: bool,
) {
    let lines: std::collections::HashMap<String, serde_json::Value> =
        std::fs::read_to_string(events)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["event_id"].as_str().unwrap().to_string(), v)
            })
            .collect();
    let late = std::fs::read_to_string(late).unwrap();
    assert!(
        late.lines().count() > 100,
        "late events: {}",
        late.lines().count()
    );
    for l in late.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let event = &v["event"];
        let input = &lines[event["event_id"].as_str().unwrap()];
        for (k, want) in input.as_object().unwrap() {
            assert_eq!(&event[k], want, "{k} of {l}");
        }
        let event = event.as_object().unwrap();
        if declared {
            let input = input.as_object().unwrap();
            for (k, v) in event {
                assert!(input.contains_key(k) || v.is_null(), "{k} of {l}");
            }
        } else {
            assert_eq!(event.len(), input.as_object().unwrap().len(), "{l}");
        }
    }
}
