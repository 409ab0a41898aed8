//! The embedded log and continuous queries, run as processes the way a user runs them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::repo;

fn paystream(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paystream"));
    c.arg("--data-dir").arg(data);
    c
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn produce(data: &Path, topic: &str, lines: &[&str]) {
    let mut child = paystream(data)
        .args(["produce", topic])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn consume_all(data: &Path, topic: &str) -> Vec<String> {
    let out = ok(paystream(data).args(["consume", topic, "--until-end"]));
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
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
    while consume_all(&data, "settlement_per_minute").is_empty() {
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
    assert_eq!(dlq.len(), replay_dlq.lines().count());
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
