//! The embedded log and continuous queries, run as processes the way a user runs them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{consume_all, ok, paystream, produce_stdin, repo};

fn produce(data: &Path, topic: &str, lines: &[&str]) {
    let (good, err) = produce_stdin(data, topic, lines, &[]);
    assert!(good, "{err}");
}

fn replay_sorted(events: &Path, query: &str) -> Vec<String> {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("replay")
        .arg(events)
        .arg("--query")
        .arg(repo(query)));
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
}

/// Produce into a topic while `run` tails it, stop it with SIGTERM midway, produce the rest,
/// restart it: the sink topics hold exactly what replaying the whole file gives.
#[test]
fn run_survives_sigterm_and_restart_and_equals_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "30000", "--seed", "17", "--rate", "50"])
        .args([
            "--cards",
            "400",
            "--merchants",
            "20",
            "--malformed",
            "0.002",
            "-o",
        ])
        .arg(&events));
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "4"]));

    let query = repo("queries/risk_pipeline.sql");
    let mut run = paystream(&data)
        .arg("run")
        .arg(&query)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    produce(&data, "payments", first);
    // The running query tails the topic: results appear without restarting it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let has_results = || {
        let o = paystream(&data)
            .args(["consume", "settlement_per_minute", "--until-end"])
            .output()
            .unwrap();
        // Until `run` has started, its sink topic does not exist yet.
        o.status.success() && !o.stdout.is_empty()
    };
    while !has_results() {
        assert!(Instant::now() < deadline, "no results while tailing");
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&run);
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "run after SIGTERM: {status:?}\n{err}");
    assert!(err.contains("read="), "{err}");
    // The stop committed the source offsets of the job's group.
    let describe = ok(paystream(&data).args(["topic", "describe", "payments"]));
    assert!(
        describe.contains("group risk_pipeline: lag 0"),
        "{describe}"
    );

    produce(&data, "payments", second);
    let describe = ok(paystream(&data).args(["topic", "describe", "payments"]));
    assert!(
        !describe.contains("group risk_pipeline: lag 0 "),
        "{describe}"
    );
    let out = paystream(&data)
        .arg("run")
        .arg(&query)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed=true"), "{err}");

    assert_eq!(
        consume_all(&data, "settlement_per_minute"),
        replay_sorted(&events, "queries/settlement_per_minute.sql")
    );
    assert_eq!(
        consume_all(&data, "risk_alerts"),
        replay_sorted(&events, "queries/card_velocity.sql")
    );
    // Every invalid line reached the dead-letter topic with its partition and offset.
    let dlq = consume_all(&data, "payments.dlq");
    let replay_dlq = dir.path().join("dlq.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("replay")
        .arg(&events)
        .arg("--query")
        .arg(repo("queries/settlement_per_minute.sql"))
        .arg("--dead-letter")
        .arg(&replay_dlq)
        .arg("--output")
        .arg(dir.path().join("out.jsonl")));
    let replay_dlq = std::fs::read_to_string(&replay_dlq).unwrap();
    assert!(!dlq.is_empty());
    // Records holding a card number never enter the topic (`produce` screens them), so the
    // topic's dead letters are the replay's less its `card_number` ones.
    let (cards, others): (Vec<&str>, Vec<&str>) = replay_dlq
        .lines()
        .partition(|l| l.contains(r#""reason":"card_number""#));
    assert!(!cards.is_empty());
    assert_eq!(dlq.len(), others.len());
    assert!(!dlq.iter().any(|d| d.contains("card_number")));
    for d in &dlq {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["topic"], "payments");
        assert!(
            v["partition"].as_u64().unwrap() < 4 && v["offset"].is_u64(),
            "{d}"
        );
    }
}

#[test]
fn consumer_groups_commit_and_describe_shows_lag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "t", "--partitions", "3"]));
    let recs: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"card_id":"c{}","n":{i}}}"#, i % 7))
        .collect();
    let refs: Vec<&str> = recs.iter().map(String::as_str).collect();
    produce(&data, "t", &refs);
    let got = consume_all(&data, "t");
    let mut want = recs.clone();
    want.sort();
    assert_eq!(got, want);
    // A group reads 40, commits; the next read continues after them.
    let first = ok(paystream(&data).args(["consume", "t", "--group", "g", "--max-records", "40"]));
    assert_eq!(first.lines().count(), 40);
    let d = ok(paystream(&data).args(["topic", "describe", "t"]));
    assert!(d.contains("group g: lag 60"), "{d}");
    let rest = ok(paystream(&data).args(["consume", "t", "--group", "g", "--until-end"]));
    assert_eq!(rest.lines().count(), 60);
    let d = ok(paystream(&data).args(["topic", "describe", "t"]));
    assert!(d.contains("group g: lag 0"), "{d}");
    // Errors name what is wrong.
    let o = paystream(&data).args(["consume", "nope"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("topic `nope` does not exist"));
    let q = dir.path().join("bad.sql");
    std::fs::write(
        &q,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 't', colour = 'red');\nINSERT INTO x SELECT * FROM payments;",
    )
    .unwrap();
    let o = paystream(&data).arg("run").arg(&q).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown option `colour`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `kill -9` of a producer writing with `--fsync always`: the topic opens again, and what it holds
/// is a prefix of what was sent, record for record — nothing corrupt, nothing reordered.
#[test]
fn a_killed_producer_leaves_a_clean_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "t", "--partitions", "2"]));
    let mut child = paystream(&data)
        .args(["produce", "t", "--fsync", "always", "--key", "k"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent: Vec<String> = (0..200_000)
        .map(|i| {
            format!(
                r#"{{"k":"key{}","i":{i},"pad":"{}"}}"#,
                i % 13,
                "x".repeat(i % 50)
            )
        })
        .collect();
    // Write until the producer has made some of it durable, then kill it mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        for l in &sent[i..(i + 2000).min(sent.len())] {
            writeln!(stdin, "{l}").unwrap();
        }
        i = (i + 2000).min(sent.len());
        // Bytes on disk are not enough: the first batch may still be half written (a kill
        // mid-write leaves a torn tail that recovery rightly drops). Wait until a reader sees a
        // whole record.
        if walk(&data.join("t")) > 0 && consumed(&data, "t") > 0
            || i == sent.len()
            || Instant::now() > deadline
        {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    // Reopen for writing (recovery), then read everything back.
    produce(&data, "t", &[]);
    let out = ok(paystream(&data).args(["consume", "t", "--until-end", "--with-offsets"]));
    let mut next_i: std::collections::HashMap<String, usize> = Default::default();
    let mut n = 0;
    for line in out.lines() {
        let value = line.splitn(3, ' ').nth(2).unwrap();
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let i = v["i"].as_u64().unwrap() as usize;
        assert_eq!(value, sent[i], "a record came back changed");
        let k = v["k"].as_str().unwrap().to_string();
        // Per key, records come back in the order sent, with no gap.
        let want = next_i.get(&k).copied().unwrap_or(i % 13);
        assert_eq!(i, want, "key {k}: a record is missing or out of order");
        next_i.insert(k, i + 13);
        n += 1;
    }
    assert!(n > 0);
}

/// How many records a reader of `topic` sees right now.
fn consumed(data: &Path, topic: &str) -> usize {
    let o = paystream(data)
        .args(["consume", topic, "--until-end"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

fn walk(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else if p.extension().is_some_and(|x| x == "log") {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}

/// An empty partition holds the watermark back only until `idle_timeout`; then windows close.
#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use paystream::LogSource;
    use paystream::engine::{OnStop, QueryRun, RunSpec};
    use paystream::log::{BatchBuilder, FsyncPolicy, Log, TopicConfig};
    use paystream::sink::MemorySink;

    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    log.create_topic(
        "payments",
        &TopicConfig {
            partitions: 2,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let sample = std::fs::read_to_string(repo("data/sample_events.jsonl")).unwrap();
    let mut w = log.writer("payments", FsyncPolicy::Never).unwrap();
    let mut b = BatchBuilder::default();
    for l in sample.lines() {
        b.push(None, l.as_bytes(), 0);
    }
    w.append(0, &mut b).unwrap(); // everything in partition 0; partition 1 stays empty
    w.flush().unwrap();
    let plan = paystream::plan_query(
        &std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap(),
    )
    .unwrap();
    let results = MemorySink::default();
    let stop = Arc::new(AtomicBool::new(false));
    let source = LogSource::new(log.clone(), "payments");
    let (r, s) = (results.clone(), Arc::clone(&stop));
    let run = std::thread::spawn(move || {
        let q = QueryRun {
            name: "settlement".into(),
            plan: plan.clone(),
            results: Box::new(r),
        };
        let mut spec = RunSpec::new(Arc::new(source), vec![q]);
        spec.options.idle_timeout = Some(Duration::from_millis(300));
        spec.options.workers = 1;
        spec.on_stop = OnStop::Snapshot;
        paystream::engine::run(spec, Arc::default(), s).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while results.0.lock().unwrap().batches.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let out = run.join().unwrap();
    assert!(
        !results.0.lock().unwrap().batches.is_empty(),
        "no window closed while partition 1 was idle"
    );
    assert_eq!(out.summary.read, 3000);
    let state = out.state.expect("a snapshot at the stop");
    assert_eq!(state.positions.get(&0), Some(&3000));
    assert_eq!(state.positions.get(&1), Some(&0));
}

/// A CSV file loaded with `replay --into`, and the same CSV read by a `file` source, give what
/// replaying the JSON Lines gives.
#[test]
fn file_sources_and_loaded_files_give_the_replay_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (csv, _parquet) = crate::golden::sample_in_other_formats(dir.path());
    let want = replay_sorted(
        &repo("data/sample_events.jsonl"),
        "queries/settlement_per_minute.sql",
    );
    let select: String = std::fs::read_to_string(repo("queries/settlement_per_minute.sql"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");

    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "3"]));
    ok(paystream(&data)
        .arg("replay")
        .arg(&csv)
        .args(["--into", "payments"]));
    let from_log = dir.path().join("from_log.sql");
    std::fs::write(
        &from_log,
        format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO settlement {select};"
        ),
    )
    .unwrap();
    ok(paystream(&data)
        .arg("run")
        .arg(&from_log)
        .arg("--until-end"));
    assert_eq!(consume_all(&data, "settlement"), want);

    let out = dir.path().join("out.jsonl");
    let from_file = dir.path().join("from_file.sql");
    std::fs::write(
        &from_file,
        format!(
            "CREATE SOURCE events WITH (connector = 'file', path = '{}', format = 'csv');\n\
             CREATE SINK settlement WITH (connector = 'file', path = '{}');\n\
             INSERT INTO settlement {};",
            csv.display(),
            out.display(),
            select.replace("FROM TUMBLE(payments", "FROM TUMBLE(events")
        ),
    )
    .unwrap();
    ok(paystream(&data).arg("run").arg(&from_file));
    let mut got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, want);
}

/// Records without the key field are spread round-robin, and `produce` says so.
#[test]
fn produce_notes_records_without_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "t", "--partitions", "2"]));
    let lines = [r#"{"card_id":"c1","v":1}"#, r#"{"v":2}"#, r#"{"v":3}"#];
    let (good, stderr) = produce_stdin(&data, "t", &lines, &[]);
    assert!(good, "{stderr}");
    assert!(
        stderr.contains("2 of 3 records have no `card_id` field"),
        "{stderr}"
    );
    let (good, stderr) = produce_stdin(&data, "t", &lines, &["--key", "v"]);
    assert!(good && !stderr.contains("note:"), "{stderr}");
    assert_eq!(consume_all(&data, "t").len(), 6);
}

/// `topic create --compact`: `describe` says so, each `produce` run's first append rolls the
/// segment and compacts what is sealed, `topic compact` runs a pass on demand, and a consumer
/// reads each key's latest record only; flags that contradict compaction are refused.
#[test]
fn a_compacted_topic_keeps_the_latest_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args([
        "topic",
        "create",
        "totals",
        "--compact",
        "--segment-bytes",
        "4096",
        "--delete-retention",
        "1h",
    ]));
    let d = ok(paystream(&data).args(["topic", "describe", "totals"]));
    assert!(
        d.contains("cleanup: compact") && d.contains("delete_retention: 1h"),
        "{d}"
    );
    let mut last = Vec::new();
    for run in 0..3 {
        let recs: Vec<String> = (0..150)
            .map(|i| format!(r#"{{"card_id":"c{}","run":{run},"n":{i}}}"#, i % 5))
            .collect();
        let refs: Vec<&str> = recs.iter().map(String::as_str).collect();
        produce(&data, "totals", &refs);
        last = recs;
    }
    let out = ok(paystream(&data).args(["topic", "compact", "totals"]));
    assert!(out.starts_with("compacted topic totals:"), "{out}");
    // The third run's records supersede everything before them, which is all sealed.
    let got = ok(paystream(&data).args(["consume", "totals", "--until-end"]));
    assert_eq!(got.lines().collect::<Vec<_>>(), last);
    let d = ok(paystream(&data).args(["topic", "describe", "totals"]));
    assert!(d.contains("records: at most 450"), "{d}");
    // Tombstones by key, without reading standard input; a card number as a key is refused.
    ok(paystream(&data).args([
        "produce",
        "totals",
        "--key",
        "card_id",
        "--delete",
        "c0",
        "--delete",
        "c1",
        "--delete",
        "4111111111111111",
    ]));
    let got = ok(paystream(&data).args(["consume", "totals", "--until-end", "--with-offsets"]));
    let tail: Vec<&str> = got.lines().rev().take(3).collect();
    assert!(
        tail[0].ends_with(" null") && tail[1].ends_with(" null") && !tail[2].ends_with(" null"),
        "{got}"
    );
    assert!(!got.contains("4111111111111111"));

    for args in [
        &["topic", "create", "a", "--compact", "--retention", "1d"][..],
        &["topic", "create", "b", "--delete-retention", "1h"],
    ] {
        let o = paystream(&data).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
    }
    ok(paystream(&data).args(["topic", "create", "plain"]));
    let o = paystream(&data)
        .args(["topic", "compact", "plain"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--compact"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
