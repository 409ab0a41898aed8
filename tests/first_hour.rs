//! What a new user hits in the first hour, driven through the binary: the demo never deletes a
//! directory it did not create, and a closed pipe ends any command quietly.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{ok, paystream};

/// Issue 13.1: `demo --dir DIR` refuses a non-empty directory it did not create (and deletes
/// nothing in it); it empties only its own, marked directory; it honours `--data-dir`.
#[test]
fn demo_never_deletes_what_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("mine");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "keep me").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["demo", "--for", "1s", "--dir"])
        .arg(&precious)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("refusing") && err.contains("--dir"), "{err}");
    assert_eq!(
        std::fs::read_to_string(precious.join("notes.txt")).unwrap(),
        "keep me"
    );
    // The global --data-dir decides where the demo's own directory goes; a re-run reuses it.
    let data = dir.path().join("data");
    for _ in 0..2 {
        let out = ok(paystream(&data).args([
            "demo",
            "--for",
            "2s",
            "--http",
            "127.0.0.1:0",
            "--pg",
            "off",
        ]));
        assert!(out.contains("stopped: produced"), "{out}");
        assert!(data.join("demo").join(".paystream-demo").is_file());
        assert!(data.join("demo").join("payments").is_dir());
    }
}

/// Issue 13.2: a closed standard output (`| head -1`) ends a command quietly: no panic, no
/// error message, the exit status a shell shows for SIGPIPE or 0.
#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "20000", "-o"])
        .arg(&events));
    ok(paystream(&data).arg("produce").arg("payments").arg(&events));
    let cases: Vec<Vec<String>> = vec![
        vec!["gen".into(), "--events".into(), "200000".into()],
        vec!["topic".into(), "describe".into(), "payments".into()],
        vec![
            "replay".into(),
            events.display().to_string(),
            "--query".into(),
            crate::util::repo("queries/card_velocity.sql")
                .display()
                .to_string(),
        ],
        vec!["consume".into(), "payments".into(), "--until-end".into()],
    ];
    for args in cases {
        let mut child = paystream(&data)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe, as `head -1` does.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        let _ = stdout.read(&mut first);
        drop(stdout);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        let quiet = status.success()
            || status.code() == Some(141)
            || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?}: {status:?}\n{err}");
        assert!(
            !err.contains("panicked") && !err.contains("error:"),
            "{args:?}: {err}"
        );
    }
}

/// Issue 13.7 and 13.5: `produce TOPIC -` reads standard input; a CSV or Parquet file given to
/// `produce` is refused (it would store CSV lines as records that all fail later), pointing to
/// `replay FILE --into TOPIC`.
#[test]
fn produce_reads_dash_as_stdin_and_refuses_csv() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = ok(Command::new(env!("CARGO_BIN_EXE_paystream")).args(["gen", "--events", "50"]));
    let mut child = paystream(&data)
        .args(["produce", "payments", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("records=50"), "{err}");
    let csv = dir.path().join("events.csv");
    std::fs::write(&csv, "event_id,event_type\ne1,capture\n").unwrap();
    let o = paystream(&data)
        .args(["produce", "payments"])
        .arg(&csv)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--into payments"),
        "{err}"
    );
}

/// Issue 13.6: Ctrl-C during `replay` or `produce` marks the summary `interrupted=true` (a new
/// field, at the end) and exits 130, so a script can tell it from a complete run.
#[test]
fn an_interrupted_replay_or_produce_says_so_and_exits_130() {
    use std::io::Write;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "5000", "--rate", "10", "-o"])
        .arg(&events));
    let sigint = |child: &std::process::Child| {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    };
    // Replayed at event-time speed, 5,000 events take minutes.
    let child = paystream(&data)
        .arg("replay")
        .arg(&events)
        .arg("--query")
        .arg(crate::util::repo("queries/settlement_per_minute.sql"))
        .args([
            "--speed",
            "1",
            "--batch-size",
            "16",
            "--output",
            "/dev/null",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let summary = err.lines().find(|l| l.starts_with("read=")).unwrap();
    assert!(summary.ends_with(" interrupted=true"), "{summary}");

    let mut child = paystream(&data)
        .args(["produce", "payments"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = std::fs::read(&events).unwrap();
    let feeder = std::thread::spawn(move || {
        // Keep input coming until the producer goes away.
        while stdin.write_all(&text).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("produced records=") && l.ends_with(" interrupted=true")),
        "{err}"
    );
}

/// Issue 13.7: `replay -` reads standard input (JSON Lines unless `--format` says otherwise).
#[test]
fn replay_reads_dash_as_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = ok(Command::new(env!("CARGO_BIN_EXE_paystream")).args(["gen", "--events", "300"]));
    let mut child = paystream(&data)
        .args(["replay", "-", "--query"])
        .arg(crate::util::repo("queries/settlement_per_minute.sql"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("read=300 "), "{err}");
}

/// Issue 13.14: `bench` checks its arguments before generating its input.
#[test]
fn bench_refuses_an_unknown_suite_before_generating_anything() {
    let o = Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["bench", "--suite", "nope", "--events", "1000000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown --suite") && !err.contains("generating"),
        "{err}"
    );
}

/// Issue 13.13: the Kafka habits — `group list`, `group reset --to`, `topic delete`.
#[test]
fn groups_list_and_reset_and_topics_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = ok(Command::new(env!("CARGO_BIN_EXE_paystream")).args(["gen", "--events", "100"]));
    let lines: Vec<&str> = lines.lines().collect();
    let (good, err) = crate::util::produce_stdin(&data, "payments", &lines, &["--key", "none"]);
    assert!(good, "{err}");
    ok(paystream(&data).args(["consume", "payments", "--group", "g", "--until-end"]));
    let list = ok(paystream(&data).args(["group", "list", "payments"]));
    assert!(list.starts_with("g\tlag=0\t"), "{list}");
    for (to, lag) in [("earliest", 100), ("latest", 0), ("40", 60)] {
        let out = ok(paystream(&data).args(["group", "reset", "payments", "g", "--to", to]));
        assert!(out.contains(&format!("(lag {lag})")), "{to}: {out}");
    }
    let again = ok(paystream(&data).args(["consume", "payments", "--group", "g", "--until-end"]));
    assert_eq!(again.lines().count(), 60);
    let o = paystream(&data)
        .args(["group", "reset", "payments", "g", "--to", "soon"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    ok(paystream(&data).args(["topic", "delete", "payments"]));
    assert_eq!(ok(paystream(&data).args(["topic", "list"])), "");
    let o = paystream(&data)
        .args(["topic", "delete", "payments"])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

/// Issue 13.11: a file sink whose path is a pipe (`/dev/stdout` of a piped process) streams
/// rows into it instead of creating part files beside it.
#[test]
fn a_file_sink_on_a_pipe_streams_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = ok(Command::new(env!("CARGO_BIN_EXE_paystream")).args(["gen", "--events", "200"]));
    let lines: Vec<&str> = lines.lines().collect();
    let (good, err) = crate::util::produce_stdin(&data, "payments", &lines, &[]);
    assert!(good, "{err}");
    let query = dir.path().join("q.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
         CREATE SINK out WITH (connector = 'file', path = '/dev/stdout');\n\
         INSERT INTO out SELECT event_id FROM payments;\n",
    )
    .unwrap();
    let o = paystream(&data)
        .arg("run")
        .arg(&query)
        .arg("--until-end")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains("event_id")).count(),
        200,
        "{out}"
    );
    assert!(!Path::new("/dev/stdout.part-0000000001.jsonl").exists());
}

/// The counts of a replay's summary line (`read=… accepted=… …`), without its timings.
fn summary_counts(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("read="))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    line.split(' ')
        .filter(|kv| {
            [
                "read=",
                "accepted=",
                "duplicates=",
                "dead_lettered=",
                "late=",
                "results=",
            ]
            .iter()
            .any(|k| kv.starts_with(k))
        })
        .map(str::to_string)
        .collect()
}

/// Replays `file` with `query` on one worker; returns its results and its summary counts.
fn replay_file(data: &Path, file: &Path, query: &Path) -> (String, Vec<String>) {
    let o = paystream(data)
        .arg("replay")
        .arg(file)
        .arg("--query")
        .arg(query)
        .args(["--workers", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}: {err}", file.display());
    (String::from_utf8(o.stdout).unwrap(), summary_counts(&err))
}

/// Issue 13.3: `gen --format csv|parquet` (or the `-o` extension) writes the same events as
/// JSON Lines: replaying each gives the JSON's results and counts, duplicates and malformed
/// records included — for the shipped settlement query and for every field of every event.
#[test]
fn gen_csv_and_parquet_replay_exactly_like_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let every_field = dir.path().join("every_field.sql");
    std::fs::write(&every_field, "SELECT * FROM payments;\n").unwrap();
    let queries = [
        crate::util::repo("queries/settlement_per_minute.sql"),
        every_field,
    ];
    for malformed in ["0", "0.01"] {
        let gen_to = |name: &str, format: Option<&str>| {
            let path = dir.path().join(name);
            let mut c = Command::new(env!("CARGO_BIN_EXE_paystream"));
            c.args(["gen", "--events", "5000", "--seed", "7", "--rate", "20"])
                .args(["--duplicates", "0.02", "--malformed", malformed, "-o"])
                .arg(&path);
            if let Some(f) = format {
                c.args(["--format", f]);
            }
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(o.status.success(), "{name}: {err}");
            (path, err)
        };
        let (json, json_stats) = gen_to("events.jsonl", None);
        // By extension, and by --format for a file whose extension does not tell.
        let (csv, csv_stats) = gen_to("events.csv", None);
        let (parquet, parquet_stats) = gen_to("events.parquet", None);
        let (csv_named, _) = gen_to("events.data", Some("csv"));
        assert_eq!(json_stats, csv_stats);
        assert_eq!(json_stats, parquet_stats);
        assert!(
            json_stats.contains("lines=5000 ") && json_stats.contains(" duplicates="),
            "{json_stats}"
        );
        let csv_text = std::fs::read_to_string(&csv).unwrap();
        assert!(
            csv_text.starts_with("event_id,event_type,event_time,"),
            "{csv_text:.200}"
        );
        assert_eq!(csv_text.lines().count(), 5001, "a header and 5000 records");
        assert_eq!(std::fs::read(&csv_named).unwrap(), csv_text.as_bytes());
        assert!(std::fs::read(&parquet).unwrap().starts_with(b"PAR1"));
        for query in &queries {
            let (want, want_counts) = replay_file(&data, &json, query);
            assert!(want.lines().count() > 50, "{query:?}: {want:.300}");
            if malformed != "0" {
                assert!(
                    !want_counts.contains(&"dead_lettered=0".to_string()),
                    "{want_counts:?}"
                );
            }
            assert!(
                !want_counts.contains(&"duplicates=0".to_string()),
                "{want_counts:?}"
            );
            for file in [&csv, &parquet] {
                let (got, got_counts) = replay_file(&data, file, query);
                assert_eq!(got_counts, want_counts, "{} {query:?}", file.display());
                assert!(got == want, "{} {query:?}: results differ", file.display());
            }
        }
    }
}

/// Issue 13.3: `gen --format` names the valid formats when given another, refuses a format
/// its output's extension contradicts, and writes Parquet to a pipe as it would to a file (a
/// terminal is refused, which a test cannot easily provide).
#[test]
fn gen_format_is_checked_and_parquet_streams_to_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let gen_cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_paystream"));
        c.args(["gen", "--events", "300"]);
        c
    };
    let o = gen_cmd().args(["--format", "xml"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown --format \"xml\"")
            && err.contains("json")
            && err.contains("csv")
            && err.contains("parquet"),
        "{err}"
    );
    let clash = dir.path().join("events.csv");
    let o = gen_cmd()
        .args(["--format", "parquet", "-o"])
        .arg(&clash)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("contradicts") && err.contains("csv"), "{err}");
    assert!(!clash.exists(), "nothing is written when refused");

    let file = dir.path().join("events.parquet");
    ok(gen_cmd().arg("-o").arg(&file));
    let o = gen_cmd()
        .args(["--format", "parquet"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == std::fs::read(&file).unwrap(),
        "pipe and file differ"
    );
}

/// Issue 13.3: `replay x.csv --into TOPIC` and `replay x.parquet --into TOPIC` load a generated
/// file's valid events, each once: the same records as a replay of the JSON Lines selects.
#[test]
fn gen_csv_and_parquet_load_into_topics_like_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let every_field = dir.path().join("every_field.sql");
    std::fs::write(&every_field, "SELECT * FROM payments;\n").unwrap();
    let mut files = Vec::new();
    for name in ["events.jsonl", "events.csv", "events.parquet"] {
        let path = dir.path().join(name);
        ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
            .args([
                "gen",
                "--events",
                "2000",
                "--seed",
                "5",
                "--malformed",
                "0.01",
            ])
            .args(["--duplicates", "0.02", "-o"])
            .arg(&path));
        files.push(path);
    }
    let (json_rows, json_counts) = replay_file(&data, &files[0], &every_field);
    let want = crate::util::sorted(json_rows.lines().map(str::to_string).collect());
    for (file, topic) in [(&files[1], "from_csv"), (&files[2], "from_parquet")] {
        let o = paystream(&data)
            .arg("replay")
            .arg(file)
            .args(["--into", topic])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{topic}: {err}");
        assert_eq!(summary_counts(&err), json_counts, "{topic}");
        let got = crate::util::consume_all(&data, topic);
        assert!(got == want, "{topic}: the loaded events differ");
    }
}

/// A replay query file takes a `run` file's engine settings: `SET watermark_delay = '0s'` makes
/// the disordered events late, and the command-line flag overrides it.
#[test]
fn a_replay_query_file_honours_its_engine_settings() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    ok(paystream(dir.path())
        .args(["gen", "--events", "5000", "--seed", "3", "-o"])
        .arg(&events));
    let query = dir.path().join("q.sql");
    std::fs::write(
        &query,
        "SET watermark_delay = '0s';\nSET workers = '1';\nSELECT merchant_id, window_start, count(*) AS n\nFROM TUMBLE(payments, event_time, INTERVAL '1' SECOND)\nGROUP BY merchant_id, window_start, window_end;\n",
    )
    .unwrap();
    let late = |extra: &[&str]| -> u64 {
        let o = paystream(dir.path())
            .arg("replay")
            .arg(&events)
            .arg("--query")
            .arg(&query)
            .args(extra)
            .args(["-o", "/dev/null"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        summary_counts(&err)
            .iter()
            .find_map(|kv| kv.strip_prefix("late="))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        late(&[]) > 100,
        "no watermark delay: disordered events are late"
    );
    assert_eq!(late(&["--watermark-delay", "10s"]), 0, "the flag wins");
}

/// The README's reference-table example runs as written from the repository's root, over the
/// tables the repository ships (`data/merchants.csv` with versions, `data/blocked_cards.jsonl`):
/// every event of a known merchant gets its tier, and the blocked cards their reason.
#[test]
fn the_readmes_reference_table_example_runs_as_written() {
    let readme = std::fs::read_to_string(crate::util::repo("README.md")).unwrap();
    let start = readme
        .find("CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier")
        .expect("the example is in the README");
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let query = dir.path().join("q.sql");
    std::fs::write(&query, &readme[start..end]).unwrap();
    let out = ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .current_dir(crate::util::repo(""))
        .args(["replay", "data/sample_events.jsonl", "--query"])
        .arg(&query));
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() > 2_000, "{}", rows.len());
    assert!(rows.iter().all(|r| r["risk_tier"].is_string()));
    assert!(rows.iter().any(|r| r["reason"].is_string()));
    assert!(rows.iter().any(|r| r["reason"].is_null()));
}
