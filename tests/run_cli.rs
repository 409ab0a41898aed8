//! `run` and `replay` as a user meets them (issue 13, items 5, 8, 9, 10): the end-of-run
//! warning, the status line and `paystream status`, sink records stamped with event time, and
//! `--reset-state` with results already committed. Every test drives the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{consume_all, ok, paystream, produce_stdin};

fn gen_lines(args: &[&str]) -> Vec<String> {
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("gen")
        .args(args))
    .lines()
    .map(str::to_string)
    .collect()
}

fn produce(data: &Path, lines: &[String]) {
    let (good, err) = produce_stdin(data, "payments", lines, &[]);
    assert!(good, "{err}");
}

const COUNTS: &str = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
     CREATE SINK counts WITH (connector = 'log', topic = 'counts');\n\
     INSERT INTO counts SELECT window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_end;\n";

fn run_until_end(data: &Path, query: &Path, extra: &[&str]) -> std::process::Output {
    paystream(data)
        .arg("run")
        .arg(query)
        .args(["--until-end", "--workers", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// Item 9: results are stamped with their window's end and dead letters with their source
/// record's time, so `consume --from TIME` selects by the time a record describes.
#[test]
fn sink_records_carry_event_time_not_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 1,000 events over ~200 s of event time from 2026-11-01T00:00:00Z: four minute windows.
    let mut lines = gen_lines(&["--events", "1000", "--rate", "2", "--spike-at", "none"]);
    // Valid JSON with a valid event time, but an amount of the wrong type: a dead letter whose
    // source record is stamped with that event time by `produce`.
    lines.push(
        r#"{"event_id":"bad-1","event_type":"authorization","event_time":"2026-11-01T00:01:00Z","card_id":"c1","merchant_id":"m1","amount_minor":"ten","currency":"EUR"}"#
            .into(),
    );
    produce(&data, &lines);
    let query = dir.path().join("counts.sql");
    std::fs::write(&query, COUNTS).unwrap();
    let o = run_until_end(&data, &query, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let all = consume_all(&data, "counts");
    assert!(all.len() >= 3, "{all:?}");
    let from = ok(paystream(&data).args([
        "consume",
        "counts",
        "--until-end",
        "--from",
        "2026-11-01T00:02:00Z",
    ]));
    let selected: Vec<&str> = from.lines().collect();
    let expected: Vec<&String> = all
        .iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["window_end"].as_str().unwrap() >= "2026-11-01T00:02:00"
        })
        .collect();
    assert!(!expected.is_empty() && expected.len() < all.len());
    assert_eq!(
        selected.len(),
        expected.len(),
        "{selected:?} vs {expected:?}"
    );

    // The dead letter is found at its source record's time, and not a day later.
    let dlq_at = |t: &str| {
        ok(paystream(&data).args(["consume", "payments.dlq", "--until-end", "--from", t]))
    };
    assert!(dlq_at("2026-11-01T00:00:30Z").contains("bad-1"));
    assert_eq!(dlq_at("2026-11-02T00:00:00Z"), "");
}

/// Item 5: a replay that dead-letters nearly everything says so, with the top reasons and what
/// to do; `--strict` makes it fail.
#[test]
fn a_replay_that_dead_letters_most_records_warns_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut lines = gen_lines(&["--events", "200"]);
    for (i, l) in lines.iter_mut().enumerate() {
        if i % 2 == 0 {
            *l = l.replace("\"currency\":\"", "\"currency\":\"X");
        }
    }
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let query = crate::util::repo("queries/settlement_per_minute.sql");
    let replay = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_paystream"))
            .arg("replay")
            .arg(&file)
            .arg("--query")
            .arg(&query)
            .args(["--output", "/dev/null"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = replay(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("were dead-lettered; top reasons: ") && err.contains("--dead-letter FILE"),
        "{err}"
    );
    let o = replay(&["--strict"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--strict"), "{err}");
    // A clean file says nothing.
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(
        &clean,
        gen_lines(&["--events", "200", "--duplicates", "0"]).join("\n") + "\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("replay")
        .arg(&clean)
        .arg("--query")
        .arg(&query)
        .args(["--output", "/dev/null", "--strict"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("warning"), "{err}");
}

/// Item 5: loading an older file into a topic that holds later events makes it late; the run
/// says so and names --reset-state.
#[test]
fn a_run_over_an_older_second_file_warns_about_late_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(
        &data,
        &gen_lines(&["--events", "500", "--start", "2026-11-01T01:00:00Z"]),
    );
    produce(&data, &gen_lines(&["--events", "500", "--seed", "2"]));
    let query = dir.path().join("counts.sql");
    std::fs::write(&query, COUNTS).unwrap();
    let o = run_until_end(&data, &query, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("accepted events")
            && err.contains("were late")
            && err.contains("--reset-state"),
        "{err}"
    );
    let o = run_until_end(
        &data,
        &query,
        &["--reset-state", "--keep-sinks", "--strict"],
    );
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Item 8: a running job prints a status line every few seconds (not with --quiet), and
/// `paystream status` shows it from another process, running and then stopped.
#[test]
fn a_running_job_reports_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(&data, &gen_lines(&["--events", "300"]));
    for (job, quiet) in [("counts", false), ("quiet", true)] {
        // Each its own job (a second run of one job would resume, reading nothing).
        let query = dir.path().join(format!("{job}.sql"));
        std::fs::write(&query, COUNTS).unwrap();
        let mut child = paystream(&data)
            .arg("run")
            .arg(&query)
            .args(["--status-every", "200ms", "--workers", "1"])
            .args(if quiet { &["--quiet"][..] } else { &[][..] })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Wait until the job has read everything and said so in its status file.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            // (An error until the job has created its state directory.)
            let o = paystream(&data).args(["status", job]).output().unwrap();
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            // Read counts and lag are sampled apart: the lag may trail the count by a status.
            if s.contains("running pid=") && s.contains(" read=300 ") && s.contains("lag=0 ") {
                break s;
            }
            assert!(Instant::now() < deadline, "no status: {s}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.contains("watermark=2026-1"), "{status}");
        // SAFETY: plain kill(2) of the child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        assert!(child.wait().unwrap().success());
        let lines = reader.join().unwrap();
        let printed = lines
            .iter()
            .filter(|l| l.starts_with(&format!("status job={job} ")))
            .count();
        if quiet {
            assert_eq!(printed, 0, "{lines:?}");
        } else {
            assert!(printed >= 1, "{lines:?}");
        }
        let after = ok(paystream(&data).args(["status", job]));
        assert!(after.starts_with(&format!("{job}\tstopped\t")), "{after}");
    }
    let o = paystream(&data)
        .args(["status", "nosuchjob"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("jobs: counts, quiet"),
        "{err}"
    );
}

/// Item 10: a reset of a job with committed results asks what to do with them; both answers
/// do what they say, and checkpoint numbers continue past the old ones.
#[test]
fn a_reset_with_committed_results_asks_for_truncate_or_keep() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(&data, &gen_lines(&["--events", "500", "--rate", "5"]));
    let query = dir.path().join("counts.sql");
    std::fs::write(&query, COUNTS).unwrap();
    let first = run_until_end(&data, &query, &[]);
    assert!(first.status.success());
    let once = consume_all(&data, "counts");
    assert!(!once.is_empty());

    let o = run_until_end(&data, &query, &["--reset-state"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("topic counts")
            && err.contains("--truncate-sinks")
            && err.contains("--keep-sinks"),
        "{err}"
    );
    assert_eq!(
        consume_all(&data, "counts"),
        once,
        "a refused reset changes nothing"
    );

    let chk = data.join("_queries/counts/checkpoints");
    let epochs = || -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&chk)
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_prefix("chk-")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort();
        v
    };
    let before = *epochs().last().unwrap();
    // A consumer group that read the old results...
    let read = ok(paystream(&data).args(["consume", "counts", "--group", "g", "--until-end"]));
    assert_eq!(read.lines().count(), once.len());
    ok(paystream(&data).arg("run").arg(&query).args([
        "--until-end",
        "--reset-state",
        "--truncate-sinks",
    ]));
    // ...reads the recomputed ones (the emptied offsets are reused).
    let read = ok(paystream(&data).args(["consume", "counts", "--group", "g", "--until-end"]));
    assert_eq!(read.lines().count(), once.len(), "{read}");
    assert_eq!(
        consume_all(&data, "counts"),
        once,
        "emptied, then recomputed"
    );
    assert!(*epochs().last().unwrap() > before, "{:?}", epochs());

    ok(paystream(&data).arg("run").arg(&query).args([
        "--until-end",
        "--reset-state",
        "--keep-sinks",
    ]));
    let mut twice: Vec<String> = once.iter().chain(&once).cloned().collect();
    twice.sort();
    assert_eq!(consume_all(&data, "counts"), twice, "kept, then appended");

    // A resumed job whose sink moved says so.
    std::fs::write(
        &query,
        COUNTS.replace("topic = 'counts'", "topic = 'counts2'"),
    )
    .unwrap();
    let o = run_until_end(&data, &query, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("sink `counts` changed") && err.contains("topic counts2"),
        "{err}"
    );
}

/// Item 10: a truncating reset killed before its first checkpoint is carried on by the next
/// start, never undone by restoring the state from before it (whose results it had emptied).
#[test]
fn a_reset_killed_before_its_first_checkpoint_is_carried_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(&data, &gen_lines(&["--events", "500", "--rate", "5"]));
    let query = dir.path().join("counts.sql");
    std::fs::write(&query, COUNTS).unwrap();
    assert!(run_until_end(&data, &query, &[]).status.success());
    let once = consume_all(&data, "counts");
    assert!(!once.is_empty());

    let mut child = paystream(&data)
        .arg("run")
        .arg(&query)
        .args([
            "--reset-state",
            "--truncate-sinks",
            "--checkpoint-interval",
            "1h",
        ])
        .args(["--quiet", "--workers", "1", "--status-every", "100ms"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has emptied the sink and read every event, before any checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = String::from_utf8_lossy(
            &paystream(&data)
                .args(["status", "counts"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        if s.contains("running") && s.contains(" read=500 ") {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        consume_all(&data, "counts").is_empty(),
        "emptied, nothing committed yet"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let o = run_until_end(&data, &query, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("continuing the --reset-state"), "{err}");
    assert_eq!(consume_all(&data, "counts"), once);
    // Done: the next start resumes normally and adds nothing.
    let o = run_until_end(&data, &query, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resumed=true") && !err.contains("continuing"),
        "{err}"
    );
    assert_eq!(consume_all(&data, "counts"), once);
}

/// Issue 14, item 4: a job prepared without side effects, spawned behind a handle that reports
/// its counters, takes a savepoint when asked, stops with a final checkpoint, and tells a
/// stopped job from a failed one.
#[test]
fn a_job_handle_reports_savepoints_stops_and_tells_failure_from_stop() {
    use paystream::job::{Job, JobOptions, JobState};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "2"]));
    let sample = std::fs::read_to_string(crate::util::repo("data/sample_events.jsonl")).unwrap();
    let lines: Vec<String> = sample.lines().map(str::to_string).collect();
    produce(&data, &lines);

    // Preparing checks the text and touches nothing: an error has its line and column, and no
    // data directory entry is made for the job.
    let e = Job::prepare("bad", "bad.sql", "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\nCREATE SINK counts WITH (connector = 'log', topic = 'counts');\nINSERT INTO counts SELECT nope FROM payments;\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.sql, line 3") && e.contains("nope"), "{e}");
    assert!(!data.join("_queries").join("bad").exists());

    let job = Job::prepare("counts", "counts.sql", COUNTS).unwrap();
    assert_eq!(job.source_topic(), Some("payments"));
    let mut opts = JobOptions::new(&data);
    opts.workers = Some(1);
    opts.checkpoint_interval = Some(Duration::from_secs(3600));
    let handle = job.spawn(opts, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while handle.metrics().read < lines.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(handle.metrics().read, lines.len() as u64);
    assert_eq!(handle.state(), JobState::Running);
    handle.savepoint();
    while handle.metrics().checkpoints == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = handle.metrics();
    assert_eq!(m.checkpoints, 1, "the savepoint is a checkpoint");
    assert_eq!(m.last_checkpoint_id, 1);
    assert!(
        m.last_checkpoint_bytes > 0 && m.last_checkpoint_ms > 0,
        "{m:?}"
    );
    assert_eq!(m.positions.len(), 2, "{m:?}");
    assert_eq!(m.positions.values().sum::<u64>(), lines.len() as u64);
    assert_eq!(m.lag.len(), 2, "{m:?}");
    assert!(m.lag.values().all(|l| *l == 0), "everything read: {m:?}");
    let progress = handle.progress();
    handle.stop();
    let out = handle.join().expect("a stopped job has its outcome");
    assert_eq!(out.summary.read, lines.len() as u64);
    let m = paystream::job::JobMetrics::of(&progress);
    assert_eq!(m.duplicates, out.summary.duplicates);
    assert_eq!(m.dead_lettered, out.summary.dead_lettered);
    assert_eq!(
        m.queries,
        vec![(
            "counts".to_string(),
            out.summary.accepted,
            out.summary.results
        )]
    );
    assert_eq!(
        out.checkpoints.len(),
        2,
        "the savepoint and the final checkpoint"
    );
    let listed = ok(paystream(&data).args(["savepoint", "--list", "counts"]));
    assert!(listed.contains("counts-1"), "{listed}");

    // A job whose source topic does not exist fails at its start: join gives the error.
    let missing = COUNTS.replace("topic = 'payments'", "topic = 'nowhere'");
    let failed = Job::prepare("missing", "missing.sql", &missing)
        .unwrap()
        .spawn(JobOptions::new(&data), None)
        .join()
        .unwrap_err()
        .to_string();
    assert!(failed.contains("nowhere"), "{failed}");
}

/// A first start of a checkpointed job rolls its file sinks back to before any checkpoint. When
/// the sink already holds committed parts that no checkpoint of the job accounts for (its state
/// was removed), starting would delete them: it is refused, and the parts stay, until the user
/// says `--reset-state --truncate-sinks`.
#[test]
fn a_first_start_refuses_to_delete_committed_part_files_it_has_no_checkpoint_of() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(&data, &gen_lines(&["--events", "500", "--rate", "5"]));
    let out = dir.path().join("counts.jsonl");
    let query = dir.path().join("counts.sql");
    std::fs::write(
        &query,
        format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
             CREATE SINK counts WITH (connector = 'file', path = '{}');\n\
             INSERT INTO counts SELECT window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_end;\n",
            out.display()
        ),
    )
    .unwrap();
    let first = run_until_end(&data, &query, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let parts = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("counts.jsonl.part-"))
            .collect();
        v.sort();
        v
    };
    let made = parts();
    assert!(!made.is_empty());

    // The job's state is removed; its results are not.
    std::fs::remove_dir_all(data.join("_queries").join("counts")).unwrap();
    let o = run_until_end(&data, &query, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("sink `counts`")
            && err.contains("part files")
            && err.contains("--truncate-sinks"),
        "{err}"
    );
    assert_eq!(parts(), made, "a refused start deletes nothing");

    let o = run_until_end(&data, &query, &["--reset-state", "--truncate-sinks"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!parts().is_empty(), "recomputed");
}

/// A run to the topic's end emits its open windows; a later run over new events for those
/// windows must not emit them a second time with a partial count: the events are late.
#[test]
fn windows_a_run_to_the_end_emitted_are_never_emitted_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = gen_lines(&[
        "--events",
        "4000",
        "--rate",
        "20",
        "--merchants",
        "5",
        "--seed",
        "13",
    ]);
    let (first, second) = lines.split_at(lines.len() / 2);
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "2"]));
    let query = dir.path().join("counts.sql");
    std::fs::write(
        &query,
        COUNTS.replace("INTERVAL '1' MINUTE", "INTERVAL '10' SECOND"),
    )
    .unwrap();
    let summary = |o: &std::process::Output, key: &str| -> u64 {
        let err = String::from_utf8_lossy(&o.stderr);
        err.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {err}"))
            .parse()
            .unwrap()
    };
    produce(&data, first);
    let one = run_until_end(&data, &query, &[]);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    produce(&data, second);
    let two = run_until_end(&data, &query, &[]);
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    let rows: Vec<serde_json::Value> = consume_all(&data, "counts")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ends: Vec<&str> = rows
        .iter()
        .map(|r| r["window_end"].as_str().unwrap())
        .collect();
    ends.sort();
    let before = ends.len();
    ends.dedup();
    assert_eq!(ends.len(), before, "a window was emitted twice");
    // Every accepted event is counted once: in a row, or as late.
    let counted: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();
    assert_eq!(
        counted + summary(&two, "late"),
        summary(&one, "accepted") + summary(&two, "accepted")
    );
}

/// Issue 15, part 2: a query file of several sources runs as one job per source, each with its
/// own queries, sinks, checkpoints and dead letters; each job's results are what the same
/// queries give in a file of their source alone.
#[test]
fn a_file_of_several_sources_runs_one_job_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    produce(
        &data,
        &gen_lines(&["--events", "1500", "--rate", "10", "--spike-at", "none"]),
    );
    let mut orders: Vec<String> = (0..600)
        .map(|i| {
            format!(
                r#"{{"order_id":"o{i}","ts":"2026-11-01T00:{:02}:{:02}.{:03}Z","amount_minor":{}}}"#,
                i / 60 % 60,
                i % 60,
                (i * 37) % 1000,
                (i * 7919) % 100_000
            )
        })
        .collect();
    orders.push(r#"{"order_id":"bad","ts":"2026-11-01T00:03:00Z","amount_minor":"ten"}"#.into());
    let (good, err) = produce_stdin(&data, "orders", &orders, &[]);
    assert!(good, "{err}");
    let payments = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n";
    let order_source = "CREATE SOURCE orders (order_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, amount_minor BIGINT,\n  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'log', topic = 'orders', dedup_key = 'order_id');\n";
    let counts = |sink: &str| {
        format!(
            "CREATE SINK {sink} WITH (connector = 'log', topic = '{sink}');\n\
             INSERT INTO {sink} SELECT window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY window_end;\n"
        )
    };
    let totals = |sink: &str| {
        format!(
            "CREATE SINK {sink} WITH (connector = 'log', topic = '{sink}');\n\
             INSERT INTO {sink} SELECT window_end, count(*) AS n, sum(amount_minor) AS total FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) GROUP BY window_end;\n"
        )
    };
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let both = write(
        "both.sql",
        format!(
            "{payments}{order_source}{}{}",
            counts("counts"),
            totals("totals")
        ),
    );
    let o = run_until_end(&data, &both, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("job=both.payments") && stderr.contains("job=both.orders"),
        "{stderr}"
    );
    for job in ["both.payments", "both.orders"] {
        assert!(
            data.join("_queries").join(job).join("checkpoints").is_dir(),
            "{job}"
        );
    }
    // The bad order is the orders job's dead letter, in the orders source's own topic.
    assert_eq!(consume_all(&data, "orders.dlq").len(), 1);
    assert!(consume_all(&data, "payments.dlq").is_empty());
    // The same queries, each in a file of its source alone.
    for (name, text) in [
        ("p.sql", format!("{payments}{}", counts("counts_alone"))),
        ("o.sql", format!("{order_source}{}", totals("totals_alone"))),
    ] {
        let o = run_until_end(&data, &write(name, text), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let totals_both = consume_all(&data, "totals");
    assert_eq!(
        consume_all(&data, "counts"),
        consume_all(&data, "counts_alone")
    );
    assert_eq!(totals_both, consume_all(&data, "totals_alone"));
    // And they are right: every valid order counted once, its amount summed.
    let (n, total) = totals_both.iter().fold((0, 0), |(n, t), l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        (
            n + v["n"].as_i64().unwrap(),
            t + v["total"].as_i64().unwrap(),
        )
    });
    assert_eq!(n, 600);
    assert_eq!(total, (0..600).map(|i| (i * 7919) % 100_000).sum::<i64>());

    // A job that fails (its topic does not exist) stops the others, whatever their order.
    let failing = write(
        "failing.sql",
        format!(
            "{payments}{}{}",
            order_source.replace("topic = 'orders'", "topic = 'nope'"),
            counts("c3")
        ) + &totals("t3"),
    );
    let mut child = paystream(&data)
        .arg("run")
        .arg(&failing)
        .args(["--workers", "1", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("a failed job left the other running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("job failing.orders") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(!data.join("_queries/failing.payments/pid").exists());

    // A join of the two sources without a time bound is refused, at its line, before anything
    // runs.
    let join = write(
        "join.sql",
        format!(
            "{payments}{order_source}{}CREATE SINK y WITH (connector = 'log', topic = 'y');\nINSERT INTO y SELECT p.event_id FROM payments p JOIN orders o ON o.order_id = p.event_id;\n",
            counts("x")
        ),
    );
    let o = run_until_end(&data, &join, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("line 7") && stderr.contains("needs its time bounded"),
        "{stderr}"
    );
}

/// Issue 16, part 2: an interval join of two sources of different columns (a declared source
/// of orders, timed by `ts`, and the payment stream), run as one job over both.
#[test]
fn an_interval_join_of_two_sources_pairs_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let payments = gen_lines(&["--events", "2000", "--rate", "20", "--spike-at", "none"]);
    produce(&data, &payments);
    // An order for every third capture, one second after it; and orders matching nothing.
    let captures: Vec<serde_json::Value> = payments
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event_type"] == "capture")
        .collect();
    let mut orders = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for (i, c) in captures.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let t = paystream::time::parse_rfc3339_millis(c["event_time"].as_str().unwrap()).unwrap();
        orders.push(format!(
            r#"{{"order_id":"o{i}","payment":{},"ts":"{}"}}"#,
            c["payment_id"],
            paystream::time::rfc3339(t + 1_000)
        ));
        expected.insert(format!("o{i} {}", c["event_id"].as_str().unwrap()));
    }
    orders.push(r#"{"order_id":"lonely","payment":"nope","ts":"2026-11-01T00:00:30Z"}"#.into());
    let (good, err) = produce_stdin(&data, "orders", &orders, &[]);
    assert!(good, "{err}");
    let query = dir.path().join("paired.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE SOURCE orders (order_id VARCHAR NOT NULL, payment VARCHAR, ts TIMESTAMP NOT NULL,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (connector = 'log', topic = 'orders', dedup_key = 'order_id');
CREATE SINK paired WITH (connector = 'log', topic = 'paired');
INSERT INTO paired SELECT o.order_id, p.event_id FROM orders o LEFT JOIN payments p
  ON p.payment_id = o.payment AND p.event_type = 'capture'
 AND p.event_time BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts;
",
    )
    .unwrap();
    let o = run_workers(&data, &query, "2");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("job=paired "), "{stderr}");
    let got: std::collections::BTreeSet<String> = consume_all(&data, "paired")
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["order_id"].as_str().unwrap(),
                v["event_id"].as_str().unwrap_or("NULL")
            )
        })
        .collect();
    expected.insert("lonely NULL".into());
    assert!(expected.len() > 10);
    assert_eq!(got, expected);
}

/// `run --until-end` with `workers` workers.
fn run_workers(data: &Path, query: &Path, workers: &str) -> std::process::Output {
    paystream(data)
        .arg("run")
        .arg(query)
        .args(["--until-end", "--workers", workers])
        .output()
        .unwrap()
}

/// `amount_minor` of every event of `lines` (JSON), the first of each `event_id`, that `keep`
/// selects.
fn amounts(lines: &[String], keep: impl Fn(&serde_json::Value) -> bool) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| seen.insert(v["event_id"].as_str().unwrap().to_string()))
        .filter(|v| keep(v))
        .map(|v| v["amount_minor"].as_i64().unwrap())
        .collect()
}

/// Per `kind`, the number of rows and the sums of their `n` and `total`.
fn by_kind(rows: &[String]) -> std::collections::BTreeMap<String, (usize, i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        let e = out
            .entry(v["kind"].as_str().unwrap().to_string())
            .or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += v["n"].as_i64().unwrap();
        e.2 += v["total"].as_i64().unwrap();
    }
    out
}

/// Issue 15, part 2: `UNION ALL` of different streams — two sources of different columns, from
/// log topics (checkpointed: a second run continues where the first stopped) and from files
/// of different lengths (the short one ending does not hold the other's windows back). Each
/// branch sees only its own stream's events, deduplicated by its own id; the job is named
/// after the file and its rejects go to the topic named after both sources.
#[test]
fn a_union_of_different_streams_runs_as_one_job_over_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let payments = gen_lines(&["--events", "1500", "--rate", "10", "--spike-at", "none"]);
    produce(&data, &payments);
    let order = |i: i64| {
        format!(
            r#"{{"order_id":"o{i}","ts":"2026-11-01T00:{:02}:{:02}.{:03}Z","amount_minor":{}}}"#,
            i / 60 % 60,
            i % 60,
            (i * 37) % 1000,
            (i * 7919) % 100_000
        )
    };
    let mut orders: Vec<String> = (0..600).map(order).collect();
    // A redelivery (the same order id: dropped) and a reject.
    orders.push(order(5));
    orders.push(r#"{"order_id":"bad","ts":"2026-11-01T00:03:00Z","amount_minor":"ten"}"#.into());
    let (good, err) = produce_stdin(&data, "orders", &orders, &[]);
    assert!(good, "{err}");
    let query = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE SOURCE orders (order_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, amount_minor BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'log', topic = 'orders', dedup_key = 'order_id');
CREATE SINK combined WITH (connector = 'log', topic = 'combined');
CREATE SINK raw WITH (connector = 'log', topic = 'raw');
INSERT INTO combined
SELECT window_end, count(*) AS n, sum(amount_minor) AS total, 'card' AS kind
FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) WHERE event_type = 'capture' GROUP BY window_end
UNION ALL
SELECT window_end, count(*), sum(amount_minor), 'order' FROM TUMBLE(orders, ts, INTERVAL '1' MINUTE) GROUP BY window_end;
INSERT INTO raw SELECT event_id AS id, amount_minor FROM payments WHERE amount_minor > 100000
UNION ALL SELECT order_id, amount_minor FROM orders WHERE amount_minor > 50000;
";
    let path = dir.path().join("mixed.sql");
    std::fs::write(&path, query).unwrap();
    let o = run_workers(&data, &path, "2");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("job=mixed "), "{stderr}");
    let captures = amounts(&payments, |v| v["event_type"] == "capture");
    let order_amount = |i: i64| (i * 7919) % 100_000;
    let expect = |orders: i64| {
        let mut m = std::collections::BTreeMap::new();
        let minutes = |n: i64| ((n + 59) / 60) as usize;
        m.insert(
            "card".to_string(),
            (2, captures.len() as i64, captures.iter().sum::<i64>()),
        );
        m.insert(
            "order".to_string(),
            (
                minutes(orders),
                orders,
                (0..orders).map(order_amount).sum::<i64>(),
            ),
        );
        m
    };
    let got = by_kind(&consume_all(&data, "combined"));
    // Payments span 150 s of event time from 00:00: windows ending 00:01, 00:02 and 00:03,
    // the last without captures.
    let cards = got["card"];
    assert!((2..=3).contains(&cards.0), "{got:?}");
    assert_eq!(
        (cards.1, cards.2),
        (expect(600)["card"].1, expect(600)["card"].2)
    );
    assert_eq!(got["order"], expect(600)["order"]);
    let raw = consume_all(&data, "raw");
    let big_orders = (0..600).filter(|i| order_amount(*i) > 50_000).count();
    assert_eq!(
        raw.len(),
        amounts(&payments, |v| v["amount_minor"].as_i64().unwrap() > 100_000).len() + big_orders
    );
    assert_eq!(consume_all(&data, "orders-payments.dlq").len(), 1);
    assert!(stderr.contains("duplicates=9"), "{stderr}");

    // More orders: the second run continues from the checkpoint, each order counted once.
    let more: Vec<String> = (600..900).map(order).collect();
    let (good, err) = produce_stdin(&data, "orders", &more, &[]);
    assert!(good, "{err}");
    let o = run_workers(&data, &path, "2");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("resumed=true") && stderr.contains("read=300 "),
        "{stderr}"
    );
    let got = by_kind(&consume_all(&data, "combined"));
    assert_eq!(got["order"], expect(900)["order"]);
    assert_eq!((got["card"].1, got["card"].2), (cards.1, cards.2));

    // The same from files: orders span 15 minutes, payments 150 s; once the payments file
    // ends, it no longer holds the orders' windows back. Two sources of the built-in payment
    // schema (cards and wallets) are streams of their own too: equal ids are not duplicates.
    let write = |name: &str, lines: &[String]| {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    };
    write("payments.jsonl", &payments);
    let all_orders: Vec<String> = (0..900).map(order).collect();
    write("orders.jsonl", &all_orders);
    let at = |name: &str| dir.path().join(name).display().to_string();
    let files = query
        .replace(
            "connector = 'log', topic = 'payments'",
            &format!("connector = 'file', path = '{}'", at("payments.jsonl")),
        )
        .replace(
            "connector = 'log', topic = 'orders'",
            &format!("connector = 'file', path = '{}'", at("orders.jsonl")),
        )
        .replace("topic = 'combined'", "topic = 'combined_files'")
        .replace("topic = 'raw'", "topic = 'raw_files'")
        + &format!(
            "CREATE SOURCE wallets WITH (connector = 'file', path = '{}');
CREATE SINK both WITH (connector = 'log', topic = 'both');
INSERT INTO both SELECT event_id FROM payments UNION ALL SELECT event_id FROM wallets;
",
            at("payments.jsonl")
        );
    let path = dir.path().join("files.sql");
    std::fs::write(&path, files).unwrap();
    let data = dir.path().join("data2");
    let o = run_workers(&data, &path, "1");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("job=files.orders-payments ")
            && stderr.contains("job=files.payments-wallets "),
        "{stderr}"
    );
    let got = by_kind(&consume_all(&data, "combined_files"));
    assert_eq!(got["order"], expect(900)["order"]);
    assert_eq!((got["card"].1, got["card"].2), (cards.1, cards.2));
    let big_orders_more = (600..900).filter(|i| order_amount(*i) > 50_000).count();
    assert_eq!(
        consume_all(&data, "raw_files").len(),
        raw.len() + big_orders_more
    );
    let both = consume_all(&data, "both");
    assert_eq!(both.len(), 2 * amounts(&payments, |_| true).len());
}

/// Issue 16, part 3: a changelog into a log topic of several partitions is keyed by its group
/// key, so each key's rows stay in order in one partition.
#[test]
fn a_changelog_into_a_topic_is_keyed_by_its_group_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = gen_lines(&["--events", "3000", "--rate", "20", "--spike-at", "none"]);
    produce(&data, &lines[..1500]);
    ok(paystream(&data).args(["topic", "create", "totals", "--partitions", "4"]));
    let query = dir.path().join("totals.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
         CREATE SINK totals WITH (connector = 'log', topic = 'totals');\n\
         SET checkpoint_interval = '10ms';\n\
         INSERT INTO totals SELECT merchant_id, currency, count(*) AS n FROM payments GROUP BY merchant_id, currency;\n",
    )
    .unwrap();
    // Two runs, the second over more events: keys change, so they have several rows.
    for half in [&lines[..1500], &lines[1500..]] {
        if half.as_ptr() != lines.as_ptr() {
            produce(&data, half);
        }
        let o = run_workers(&data, &query, "2");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = ok(paystream(&data).args(["consume", "totals", "--until-end", "--with-offsets"]));
    let mut partitions: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for l in out.lines() {
        let mut parts = l.splitn(3, ' ');
        let (p, _, value) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        partitions
            .entry(format!("{} {}", v["merchant_id"], v["currency"]))
            .or_default()
            .insert(p.to_string());
    }
    assert!(partitions.len() > 4, "{partitions:?}");
    // Keys changed more than once: rows unkeyed would have spread over partitions.
    assert!(out.lines().count() > partitions.len() + 10, "{out}");
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
    let used: std::collections::BTreeSet<&String> = partitions.values().flatten().collect();
    assert!(used.len() > 1, "{used:?}");
}

/// A file output in a directory that does not exist yet is written there (the directory is
/// made); an output that cannot be written says why once.
#[test]
fn outputs_make_their_directory_and_say_an_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(&events, gen_lines(&["--events", "50"]).join("\n") + "\n").unwrap();
    let query = dir.path().join("q.sql");
    std::fs::write(&query, "SELECT event_id FROM payments").unwrap();
    let out = dir.path().join("results/today/out.jsonl");
    let o = paystream(&dir.path().join("data"))
        .args(["replay"])
        .arg(&events)
        .arg("-q")
        .arg(&query)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&out).unwrap().lines().count() > 10);
    // Under a file, no directory can be made.
    let blocked = events.join("out.jsonl");
    let o = paystream(&dir.path().join("data"))
        .args(["replay"])
        .arg(&events)
        .arg("-q")
        .arg(&query)
        .arg("-o")
        .arg(&blocked)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("cannot write --output"), "{line}");
    // The cause, once.
    let cause = line.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "{line}");
}

/// Issue 16, part 1: a query file's reference table is joined as `run` reads the log, and a
/// change to its file applies to the events read after it; `replay --query` takes the same
/// `CREATE TABLE` before its SELECT, its path relative to the working directory.
#[test]
fn a_table_file_changed_while_a_query_runs_applies_to_later_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let table = dir.path().join("merchants.csv");
    let tiers = |tier: &str| {
        let mut csv = String::from("merchant_id,risk_tier\n");
        for m in 0..200 {
            csv.push_str(&format!("m_{m:04},{tier}\n"));
        }
        csv
    };
    std::fs::write(&table, tiers("before")).unwrap();
    let first = gen_lines(&["--events", "200", "--seed", "1"]);
    produce(&data, &first);
    let query = dir.path().join("enrich.sql");
    std::fs::write(
        &query,
        format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR)
  WITH (connector = 'file', path = '{}', format = 'csv');
CREATE SINK enriched WITH (connector = 'log', topic = 'enriched');
INSERT INTO enriched SELECT p.event_id, m.risk_tier FROM payments p
  LEFT JOIN merchants m ON m.merchant_id = p.merchant_id;
",
            table.display()
        ),
    )
    .unwrap();
    let mut child = paystream(&data)
        .arg("run")
        .arg(&query)
        .args(["--workers", "1", "--checkpoint-interval", "100ms"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = paystream(&data)
                .args(["consume", "enriched", "--until-end"])
                .output()
                .unwrap();
            let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "{} of {n} rows", lines.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(200);
    std::fs::write(&table, tiers("after")).unwrap();
    // The running query looks at the file once a second.
    std::thread::sleep(Duration::from_millis(2500));
    let second = gen_lines(&["--events", "200", "--seed", "2"]);
    produce(&data, &second);
    let rows = wait_for(400);
    // SAFETY: plain kill(2) of the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    let tier_of = |id: &str| {
        rows.iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["event_id"] == id)
            .map(|v| v["risk_tier"].as_str().unwrap_or("null").to_string())
            .unwrap_or_else(|| panic!("no row for {id}"))
    };
    let id = |l: &String| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(first.iter().all(|l| tier_of(&id(l)) == "before"));
    assert!(second.iter().all(|l| tier_of(&id(l)) == "after"));

    // The same join replayed from a file, its table path relative to the working directory.
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, first.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR)
  WITH (connector = 'file', path = 'merchants.csv');
SELECT p.event_id, m.risk_tier FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id
WHERE p.card_id IN (SELECT card_id FROM (VALUES ('card_000001')) AS b(card_id)) OR true;
",
    )
    .unwrap();
    let replay_q = || {
        Command::new(env!("CARGO_BIN_EXE_paystream"))
            .current_dir(dir.path())
            .args(["replay", "events.jsonl", "--query", "q.sql"])
            .output()
            .unwrap()
    };
    let out = replay_q();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("under OR is not supported"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR)
  WITH (connector = 'file', path = 'merchants.csv');
SELECT p.event_id, m.risk_tier FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id;
",
    )
    .unwrap();
    let out = replay_q();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 200);
    assert!(
        stdout
            .lines()
            .all(|l| l.contains("\"risk_tier\":\"after\""))
    );
    // A declared column the header lacks (here misspelt) reads as null, with a warning naming
    // the columns the file has.
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_teir VARCHAR)
  WITH (connector = 'file', path = 'merchants.csv');
SELECT p.event_id, m.risk_teir FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id;
",
    )
    .unwrap();
    let out = replay_q();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("merchants.csv has no column `risk_teir` (it has `merchant_id`, `risk_tier`)"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 200);
    assert!(stdout.lines().all(|l| l.contains("\"risk_teir\":null")));
    // A missing table file stops the replay before it reads an event, naming the file.
    std::fs::remove_file(&table).unwrap();
    let out = replay_q();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("merchants.csv") && err.contains("table `merchants`"),
        "{err}"
    );
}

/// Issue 16, part 1: a table over a topic of the embedded log is a changelog keyed by its
/// primary key — later records replace earlier ones, `"op": "delete"` removes the key — and a
/// temporal join picks the version by the records' times.
#[test]
fn a_table_over_a_topic_is_a_changelog_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = gen_lines(&["--events", "300", "--seed", "1"]);
    produce(&data, &events);
    let times: Vec<i64> = events
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            paystream::time::parse_rfc3339_millis(v["event_time"].as_str().unwrap()).unwrap()
        })
        .collect();
    let middle = (times.iter().min().unwrap() + times.iter().max().unwrap()) / 2;
    let mut tiers: Vec<String> = (0..200)
        .map(|m| {
            format!(
                r#"{{"merchant_id":"m_{m:04}","tier":"a","event_time":"2026-01-01T00:00:00Z"}}"#
            )
        })
        .collect();
    tiers.push(format!(
        r#"{{"merchant_id":"m_0001","tier":"b","event_time":"{}"}}"#,
        paystream::time::rfc3339(middle)
    ));
    tiers.push(
        r#"{"merchant_id":"m_0002","op":"delete","event_time":"2026-01-02T00:00:00Z"}"#.into(),
    );
    let (good, err) = produce_stdin(&data, "tiers", &tiers, &["--key", "merchant_id"]);
    assert!(good, "{err}");
    let query = dir.path().join("tiers.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE TABLE tiers (merchant_id VARCHAR PRIMARY KEY, tier VARCHAR) WITH (connector = 'log', topic = 'tiers');
CREATE SINK now WITH (connector = 'log', topic = 'now');
CREATE SINK asof WITH (connector = 'log', topic = 'asof');
INSERT INTO now SELECT p.event_id, p.merchant_id, t.tier FROM payments p
  LEFT JOIN tiers t ON t.merchant_id = p.merchant_id;
INSERT INTO asof SELECT p.event_id, p.merchant_id, p.event_time, t.tier FROM payments p
  LEFT JOIN tiers FOR SYSTEM_TIME AS OF p.event_time t ON t.merchant_id = p.merchant_id;
",
    )
    .unwrap();
    let out = run_until_end(&data, &query, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = |topic: &str| -> Vec<serde_json::Value> {
        consume_all(&data, topic)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (now, asof) = (rows("now"), rows("asof"));
    assert_eq!((now.len(), asof.len()), (300, 300));
    let expect_now = |m: &str| match m {
        "m_0001" => serde_json::json!("b"),
        "m_0002" => serde_json::Value::Null,
        _ => serde_json::json!("a"),
    };
    for r in &now {
        assert_eq!(
            r["tier"],
            expect_now(r["merchant_id"].as_str().unwrap()),
            "{r}"
        );
    }
    let (mut before, mut after) = (0, 0);
    for r in &asof {
        let t = paystream::time::parse_rfc3339_millis(r["event_time"].as_str().unwrap()).unwrap();
        let want = match r["merchant_id"].as_str().unwrap() {
            "m_0001" if t >= middle => {
                after += 1;
                serde_json::json!("b")
            }
            "m_0001" => {
                before += 1;
                serde_json::json!("a")
            }
            "m_0002" => serde_json::Value::Null,
            _ => serde_json::json!("a"),
        };
        assert_eq!(r["tier"], want, "{r}");
    }
    assert!(
        before > 0 && after > 0,
        "m_0001 on both sides of its change: {before} / {after}"
    );
}

/// Table state is in checkpoints: a restarted job joins with the rows its checkpoint saved,
/// though the table's file is gone and compaction removed the topic version its events need;
/// what the topic gained since is read on top of them.
#[test]
fn a_restart_joins_the_table_rows_its_checkpoint_saved() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = gen_lines(&["--events", "300", "--seed", "3"]);
    let (first, second) = events.split_at(150);
    produce(&data, first);
    let merchant = |l: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["merchant_id"].as_str().unwrap().to_string()
    };
    // The last event of the second run is not late: its merchant is the one to watch.
    let watched = merchant(second.last().unwrap());
    let tiers = dir.path().join("tiers.csv");
    let mut csv = String::from("merchant_id,tier\n");
    for m in 0..1000 {
        csv.push_str(&format!("m_{m:04},a\n"));
    }
    std::fs::write(&tiers, csv).unwrap();
    let ok_run = |args: &[&str]| {
        let out = paystream(&data).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok_run(&[
        "topic",
        "create",
        "flags",
        "--compact",
        "--segment-bytes",
        "4096",
    ]);
    let flag = |m: &str, f: &str, at: &str| {
        format!(r#"{{"merchant_id":"{m}","flag":"{f}","event_time":"{at}"}}"#)
    };
    let (good, err) = produce_stdin(
        &data,
        "flags",
        &[flag(&watched, "x", "2026-01-01T00:00:00Z")],
        &["--key", "merchant_id"],
    );
    assert!(good, "{err}");
    let query = dir.path().join("flags.sql");
    std::fs::write(
        &query,
        format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');
CREATE TABLE tiers (merchant_id VARCHAR PRIMARY KEY, tier VARCHAR)
  WITH (connector = 'file', path = '{}', format = 'csv');
CREATE TABLE flags (merchant_id VARCHAR PRIMARY KEY, flag VARCHAR) WITH (connector = 'log', topic = 'flags');
CREATE SINK joined WITH (connector = 'log', topic = 'joined');
INSERT INTO joined SELECT p.event_id, p.merchant_id, t.tier, f.flag FROM payments p
  JOIN tiers t ON t.merchant_id = p.merchant_id
  LEFT JOIN flags FOR SYSTEM_TIME AS OF p.event_time f ON f.merchant_id = p.merchant_id;
",
            tiers.display()
        ),
    )
    .unwrap();
    let out = run_until_end(&data, &query, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Between the runs: the file goes, and the watched merchant's flag gets a version from
    // 2027 on, which supersedes `x` in the compacted topic (filler keys fill the segments).
    std::fs::remove_file(&tiers).unwrap();
    let mut later = vec![flag(&watched, "z", "2027-01-01T00:00:00Z")];
    later.extend((0..200).map(|i| flag(&format!("k_{i:04}"), "f", "2027-01-01T00:00:00Z")));
    let (good, err) = produce_stdin(&data, "flags", &later, &["--key", "merchant_id"]);
    assert!(good, "{err}");
    // One more write rolls the full segment, so `x` and `z` are in a sealed one.
    let (good, err) = produce_stdin(
        &data,
        "flags",
        &[flag("k_9999", "f", "2027-01-01T00:00:00Z")],
        &["--key", "merchant_id"],
    );
    assert!(good, "{err}");
    ok_run(&["topic", "compact", "flags"]);
    let stored = consume_all(&data, "flags");
    assert!(
        !stored.iter().any(|l| l.contains(r#""flag":"x""#)),
        "compaction removed x"
    );

    produce(&data, second);
    let out = run_until_end(&data, &query, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: std::collections::HashSet<String> = second
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    let rows: Vec<serde_json::Value> = consume_all(&data, "joined")
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| ids.contains(r["event_id"].as_str().unwrap()))
        .collect();
    assert!(
        rows.len() > 100,
        "the second run's events joined: {}",
        rows.len()
    );
    let mut watched_rows = 0;
    for r in &rows {
        assert_eq!(r["tier"], "a", "the saved file rows: {r}");
        let want = match r["merchant_id"].as_str() == Some(watched.as_str()) {
            true => {
                watched_rows += 1;
                serde_json::json!("x")
            }
            false => serde_json::Value::Null,
        };
        assert_eq!(r["flag"], want, "the saved version: {r}");
    }
    assert!(watched_rows > 0);
}

/// Every job file shipped in `queries/` (the broker variants among them) parses, plans and
/// validates as `run` prepares it — without a server: preparing touches nothing. (The bare
/// queries of the library are replayed by the library's own tests.)
#[test]
fn every_shipped_query_file_prepares() {
    let mut files: Vec<_> = std::fs::read_dir(crate::util::repo("queries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files.retain(|f| std::fs::read_to_string(f).unwrap().contains("INSERT INTO"));
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        if let Err(e) = paystream::job::Job::from_file_per_source(f) {
            panic!("{}: {e}", f.display());
        }
    }
}

/// Issue 19: a server that is down at start is waited for and reported on the job's status
/// (`paystream status`, the status line) with its password masked; a stop ends the wait.
#[test]
fn a_job_waiting_for_its_server_says_so_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let q = dir.path().join("waits.sql");
    // Nothing listens on port 1.
    std::fs::write(
        &q,
        "CREATE SOURCE payments WITH (connector = 'rabbitmq', url = 'amqp://guest:sekret@127.0.0.1:1/%2f', queue = 'payments');\n\
         CREATE SINK counts WITH (connector = 'log', topic = 'counts');\n\
         INSERT INTO counts SELECT event_id FROM payments;\n",
    )
    .unwrap();
    let child = paystream(&data)
        .arg("run")
        .arg(&q)
        .args(["--status-every", "200ms"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = paystream(&data).arg("status").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("waiting_for") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains("waiting_for=\"rabbitmq amqp://guest:***@127.0.0.1:1/%2f"),
        "{status}"
    );
    assert!(!status.contains("sekret"), "{status}");
    // SIGTERM: the job gives up waiting and ends, saying why.
    let pid = child.id().to_string();
    ok(std::process::Command::new("kill").args(["-TERM", &pid]));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stopped while the server was unreachable"),
        "{err}"
    );
    assert!(!err.contains("sekret"), "{err}");
}

/// A job over files reads them whole on every run: run again over a file sink that already
/// holds its results, it refuses (naming the file and what to do) rather than write every
/// result a second time; `--reset-state --truncate-sinks` replaces them, `--keep-sinks`
/// appends.
#[test]
fn a_job_over_files_run_again_does_not_write_its_results_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        gen_lines(&["--events", "2000", "--seed", "4", "--malformed", "0.02"]).join("\n"),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let query = dir.path().join("job.sql");
    std::fs::write(
        &query,
        format!(
            "CREATE SOURCE payments WITH (connector = 'file', path = '{}', format = 'json');
CREATE SINK out WITH (connector = 'file', path = '{}', format = 'json');
CREATE SINK totals WITH (connector = 'log', topic = 'totals');
INSERT INTO out SELECT merchant_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end;
INSERT INTO totals SELECT merchant_id, window_start, sum(amount_minor) AS minor FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end;
",
            events.display(),
            out.display()
        ),
    )
    .unwrap();
    let lines = || std::fs::read_to_string(&out).unwrap().lines().count();
    // A log topic sink is appended to as a file is.
    let log = paystream::log::Log::new(&data);
    let records = || -> u64 {
        log.partition_stats("totals")
            .unwrap()
            .iter()
            .map(|s| s.end_offset - s.start_offset)
            .sum()
    };
    let run = |extra: &[&str]| {
        paystream(&data)
            .arg("run")
            .arg(&query)
            .args(["--until-end", "-q"])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let (first, in_topic) = (lines(), records());
    assert!(first > 0 && in_topic > 0);
    // A reader of the results has read them all.
    let read_all = paystream::log::GroupOffsets {
        offsets: [(0, in_topic)].into_iter().collect(),
    };
    log.commit_offsets("totals", "dashboard", &read_all)
        .unwrap();
    let again = run(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{err}");
    assert!(
        err.contains("already holds")
            && err.contains("earlier run")
            && err.contains("--reset-state --truncate-sinks"),
        "{err}"
    );
    assert_eq!(lines(), first, "nothing written by the refused run");
    assert_eq!(records(), in_topic, "nothing written by the refused run");
    // Only the topic holds results: refused as well, naming it.
    std::fs::remove_file(&out).unwrap();
    let again = run(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("topic totals already holds"),
        "{err}"
    );
    assert!(run(&["--reset-state", "--truncate-sinks"]).status.success());
    assert_eq!((lines(), records()), (first, in_topic));
    // The reader starts over with the recomputed results.
    let rewound = log.group_offsets("totals", "dashboard").unwrap();
    assert_eq!(rewound.offsets.get(&0), Some(&0), "{rewound:?}");
    assert!(run(&["--reset-state", "--keep-sinks"]).status.success());
    assert_eq!((lines(), records()), (2 * first, 2 * in_topic));
    // Another job over the same file, its source named alike, shares the default dead-letter
    // topic, which holds this one's dead letters: its first run goes ahead.
    let shared: u64 = log
        .partition_stats("payments.dlq")
        .unwrap()
        .iter()
        .map(|s| s.end_offset)
        .sum();
    assert!(shared > 0);
    let other = dir.path().join("other.sql");
    std::fs::write(
        &other,
        std::fs::read_to_string(&query)
            .unwrap()
            .replace("out.jsonl", "other.jsonl")
            .replace("'totals'", "'other_totals'"),
    )
    .unwrap();
    let first_run = paystream(&data)
        .arg("run")
        .arg(&other)
        .args(["--until-end", "-q"])
        .output()
        .unwrap();
    assert!(
        first_run.status.success(),
        "{}",
        String::from_utf8_lossy(&first_run.stderr)
    );
}
