//! Exactly-once under `kill -9`: a continuous query killed at random moments, restarted each
//! time, leaves in its sink topics exactly what one uninterrupted run leaves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

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

fn committed(data: &Path, topic: &str) -> Vec<String> {
    let mut v: Vec<String> = ok(paystream(data).args(["consume", topic, "--until-end"]))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

const SINKS: [&str; 3] = ["risk_alerts", "settlement_per_minute", "payments.dlq"];

#[test]
fn twenty_kill_9s_change_nothing_in_the_committed_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args([
            "gen",
            "--events",
            "1000000",
            "--seed",
            "23",
            "--malformed",
            "0.0005",
            "-o",
        ])
        .arg(&events));
    let query = repo("queries/risk_pipeline.sql");
    let (reference, crashed) = (dir.path().join("reference"), dir.path().join("crashed"));
    for data in [&reference, &crashed] {
        ok(paystream(data).args(["topic", "create", "payments", "--partitions", "4"]));
        ok(paystream(data).args(["produce", "payments"]).arg(&events));
    }
    // One uninterrupted run.
    ok(paystream(&reference)
        .arg("run")
        .arg(&query)
        .arg("--until-end"));

    // The same, killed at random moments: while processing, while checkpointing (every 200 ms),
    // while writing sinks.
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut kills = 0;
    while kills < 20 {
        assert!(Instant::now() < deadline, "took too long");
        let mut child = paystream(&crashed)
            .arg("run")
            .arg(&query)
            .args(["--checkpoint-interval", "200ms"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..1200)));
        if child.try_wait().unwrap().is_some() {
            panic!("the query exited on its own: {:?}", child.wait());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // What a read_committed consumer sees is always a prefix of the final answer: never a
        // record that a later recovery takes back.
        if kills % 5 == 0 {
            let want = committed(&reference, "settlement_per_minute");
            for line in committed(&crashed, "settlement_per_minute") {
                assert!(
                    want.binary_search(&line).is_ok(),
                    "uncommitted or wrong: {line}"
                );
            }
        }
    }
    let out = paystream(&crashed)
        .arg("run")
        .arg(&query)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed=true"), "{err}");
    eprintln!("{kills} kills; final run: {err}");
    for sink in SINKS {
        let (want, got) = (committed(&reference, sink), committed(&crashed, sink));
        assert!(!want.is_empty(), "{sink} is empty");
        assert_eq!(
            got.len(),
            want.len(),
            "{sink}: result count after {kills} kills"
        );
        assert!(got == want, "{sink}: results differ after {kills} kills");
    }
}
