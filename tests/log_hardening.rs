//! The log under damage and hostile records, driven through the binary as a user would: appends
//! after a torn or damaged tail are readable, oversized records are refused, damaged batches are
//! errors or reported skips, card numbers never enter a topic, and a refused second `run` of a
//! job leaves the first one's pid file alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ok, paystream, produce_stdin};

/// Generated events, one per line.
fn events(n: usize, seed: u64) -> Vec<String> {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_paystream")).args([
        "gen",
        "--events",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
    ]));
    out.lines().map(str::to_string).collect()
}

/// Runs `produce TOPIC` with `lines` on standard input; returns (success, stderr).
fn produce(data: &Path, topic: &str, lines: &[String], extra: &[&str]) -> (bool, String) {
    produce_stdin(data, topic, lines, extra)
}

fn consume(data: &Path, topic: &str, extra: &[&str]) -> std::process::Output {
    paystream(data)
        .args(["consume", topic, "--from", "earliest", "--until-end"])
        .args(extra)
        .output()
        .unwrap()
}

fn active_segment(data: &Path, topic: &str) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data.join(topic).join("0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Issue 12.1: after `truncate -s -37` of the segment, or a flipped byte in its last batch,
/// the next `produce` appends right after the last valid batch and every record it
/// acknowledged reads back; `topic describe` shows the new end.
#[test]
fn appends_after_a_torn_or_damaged_tail_are_readable() {
    for damage in ["truncate", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let all = events(2_100, 3);
        let (first, second) = all.split_at(2_000);
        assert!(produce(&data, "payments", first, &["--key", "none"]).0);
        let seg = active_segment(&data, "payments");
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        match damage {
            "truncate" => bytes.truncate(n - 37),
            _ => bytes[n - 100] ^= 0x40,
        }
        std::fs::write(&seg, &bytes).unwrap();
        let (good, err) = produce(&data, "payments", second, &["--key", "none"]);
        assert!(good, "{err}");
        // The writer said what it dropped.
        assert!(
            err.contains("truncating it at the last valid batch"),
            "{err}"
        );
        let out = consume(&data, "payments", &[]);
        assert!(out.status.success(), "{damage}: {out:?}");
        let got = String::from_utf8(out.stdout).unwrap();
        let got: Vec<&str> = got.lines().collect();
        // The damaged last batch is gone; everything before it and all 100 new records are there.
        assert_eq!(&got[got.len() - 100..], second, "{damage}");
        assert_eq!(got[..got.len() - 100], first[..got.len() - 100], "{damage}");
        let describe = ok(paystream(&data).args(["topic", "describe", "payments"]));
        assert!(
            describe.contains(&format!("records: {}", got.len())),
            "{describe}"
        );
        // Another writer open keeps them.
        assert!(produce(&data, "payments", &[], &[]).0);
        let again = consume(&data, "payments", &[]);
        assert_eq!(again.stdout.split(|b| *b == b'\n').count() - 1, got.len());
    }
}

/// Issue 12.2: a record over the topic's limit stops `produce` with a non-zero exit and an
/// error naming the line and the limit; the records before it are stored and readable.
#[test]
fn an_oversized_record_is_refused_and_the_records_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "t", "--max-record-bytes", "4KiB"]));
    let describe = ok(paystream(&data).args(["topic", "describe", "t"]));
    assert!(describe.contains("max_record_bytes: 4096"), "{describe}");
    let mut lines = events(3, 1);
    lines.insert(
        2,
        format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(5_000)),
    );
    let (good, err) = produce(&data, "t", &lines, &[]);
    assert!(!good, "an oversized record must fail produce");
    assert!(
        err.contains("line 3") && err.contains("4096") && err.contains("5027"),
        "{err}"
    );
    let out = consume(&data, "t", &[]);
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), &lines[..2]);
}

/// Issue 12.3: a complete batch failing its checksum is an error naming the file (never an
/// exit 0 with records missing); `--skip-corrupt` reads past it and names what it skipped.
#[test]
fn a_damaged_batch_is_an_error_or_a_reported_skip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let all = events(3_000, 4);
    // Three produce runs: three batches at least, the damage in the middle one.
    for part in all.chunks(1_000) {
        assert!(produce(&data, "p", part, &["--key", "none"]).0);
    }
    let seg = active_segment(&data, "p");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Damage the batch holding offset 1000 (batch headers: len u32, crc u32, base u64, count u32).
    let (mut pos, mut lost) = (0usize, None);
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
        let count = u64::from(u32::from_le_bytes(
            bytes[pos + 16..pos + 20].try_into().unwrap(),
        ));
        if base == 1_000 {
            bytes[pos + 200] ^= 0x01;
            lost = Some(base + count);
        }
        pos += 4 + len;
    }
    let lost_to = lost.expect("a batch starts at offset 1000") as usize;
    std::fs::write(&seg, &bytes).unwrap();
    let out = consume(&data, "p", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "damage must not exit 0");
    assert!(
        err.contains(&seg.file_name().unwrap().to_string_lossy().into_owned())
            && err.contains("--skip-corrupt"),
        "{err}"
    );
    let out = consume(&data, "p", &["--skip-corrupt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("skipped offsets 1000..{lost_to}")),
        "{err}"
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), 3_000 - (lost_to - 1_000));
    assert_eq!(got[..1_000], all[..1_000]);
    assert_eq!(got[1_000..], all[lost_to..]);
}

/// Issue 12.3, the reported case: a complete but damaged *last* batch of the active segment,
/// read with `--until-end` before any writer reopened the partition, is an error — not an
/// exit 0 with its records missing.
#[test]
fn a_damaged_last_batch_is_not_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let all = events(2_000, 6);
    for part in all.chunks(1_000) {
        assert!(produce(&data, "p", part, &["--key", "none"]).0);
    }
    let seg = active_segment(&data, "p");
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 50] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let out = consume(&data, "p", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 with records missing");
    assert!(err.contains("--skip-corrupt"), "{err}");
    let out = consume(&data, "p", &["--skip-corrupt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipped a damaged tail"), "{err}");
    // A query run to the end of the topic says so too.
    let query = dir.path().join("q.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'p');\n\
         CREATE SINK out WITH (connector = 'log', topic = 'out');\n\
         INSERT INTO out SELECT event_id FROM payments;\n",
    )
    .unwrap();
    let run = paystream(&data)
        .arg("run")
        .arg(&query)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "run --until-end: exit 0 past damage\n{err}"
    );
    assert!(err.contains("--skip-corrupt"), "{err}");
}

/// Issue 12.7: no topic ever holds a card number, in any spelling; `produce` counts the
/// records it refused and exits 0 (non-zero with `--strict`).
#[test]
fn produce_screens_card_numbers_out_of_topics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lines = events(4, 2);
    let pans = [
        r#""card_id":"4539148803436467""#,
        r#""card_id":"4539 1488 0343 6467""#,
        r#""card_id":"\u0034539148803436467""#,
    ];
    for pan in pans {
        let l = lines[0].replacen(r#""card_id":"card_"#, &format!("{pan},\"x\":\""), 1);
        assert_ne!(l, lines[0]);
        lines.push(l);
    }
    let (good, err) = produce(&data, "t", &lines, &[]);
    assert!(good, "{err}");
    assert!(
        err.contains("records=4") && err.contains("screened=3"),
        "{err}"
    );
    assert!(err.contains("line 5, 6, 7"), "{err}");
    assert!(!err.contains("4539"), "{err}");
    let stored = consume(&data, "t", &[]);
    let stored = String::from_utf8(stored.stdout).unwrap();
    assert_eq!(stored.lines().collect::<Vec<_>>(), &lines[..4]);
    let (good, err) = produce(&data, "t", &lines, &["--strict"]);
    assert!(!good && err.contains("--strict"), "{err}");
}

/// Issue 12.17: a second `run` of a running job is refused and leaves the first one's pid
/// file, so `savepoint` still reaches it.
#[test]
fn a_refused_second_run_leaves_the_running_jobs_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(produce(&data, "payments", &events(100, 5), &[]).0);
    let query = dir.path().join("job.sql");
    std::fs::write(
        &query,
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments');\n\
         CREATE SINK out WITH (connector = 'log', topic = 'out');\n\
         INSERT INTO out SELECT event_id FROM payments;\n",
    )
    .unwrap();
    let pid_file = data.join("_queries").join("job").join("pid");
    let mut first = paystream(&data)
        .arg("run")
        .arg(&query)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the job never wrote its pid file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = paystream(&data).arg("run").arg(&query).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains("already running") && err.contains(&first.id().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first.id().to_string()
    );
    let sp = ok(paystream(&data).args(["savepoint", "job"]));
    assert!(sp.contains("job-"), "{sp}");
    // Issue 13.12: savepoints are listed by name.
    let listed = ok(paystream(&data).args(["savepoint", "--list", "job"]));
    assert_eq!(listed.trim(), sp.trim());
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(first.id() as i32, libc::SIGTERM) }, 0);
    assert!(first.wait().unwrap().success());
    assert!(!pid_file.exists(), "the job removes its own pid file");
}
