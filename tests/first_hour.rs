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
        .args(["demo", "--events", "2000", "--seconds", "1", "--dir"])
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
        let out = ok(paystream(&data).args(["demo", "--events", "2000", "--seconds", "1"]));
        assert!(out.contains("read="), "{out}");
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
