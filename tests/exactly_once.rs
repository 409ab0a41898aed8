//! Exactly-once under `kill -9`: a continuous query killed at random moments, restarted each
//! time, leaves in its sink topics exactly what one uninterrupted run leaves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::util::{consume_all, ok, paystream, repo};

const SINKS: [&str; 5] = [
    "risk_alerts",
    "settlement_per_minute",
    "payments.dlq",
    "card_alerts",
    "rules",
];

/// A UNION ALL of a session branch (per-slot session state), a tumble and a plain filter.
const RULES: &str = "SELECT 'session' AS rule, card_id AS k, count(*) AS n \
    FROM SESSION(payments, event_time, INTERVAL '20' SECOND) GROUP BY card_id, window_start, window_end \
    UNION ALL SELECT 'merchant_minute', merchant_id, count(*) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) \
    GROUP BY merchant_id, window_start HAVING count(*) > 3 \
    UNION ALL SELECT 'big', event_id, amount_minor FROM payments WHERE amount_minor > 200000";

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
    let (reference, crashed) = (dir.path().join("reference"), dir.path().join("crashed"));
    // The shipped pipeline plus a file sink (part files committed by rename).
    let pipeline = std::fs::read_to_string(repo("queries/risk_pipeline.sql")).unwrap();
    let settlement: String = std::fs::read_to_string(repo("queries/settlement_per_minute.sql"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    // Per-event window functions too: their buffered rows, histories and frames are state.
    let alerts: String = std::fs::read_to_string(repo("queries/card_alerts.sql"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let query_in = |data: &Path| {
        std::fs::create_dir_all(data).unwrap();
        let q = data.join("job.sql");
        std::fs::write(
            &q,
            format!(
                "{pipeline}\nCREATE SINK settlement_file WITH (connector = 'file', path = '{}');\nINSERT INTO settlement_file {settlement};\n\
                 CREATE SINK card_alerts WITH (connector = 'log', topic = 'card_alerts', format = 'json');\nINSERT INTO card_alerts {alerts}\n\
                 CREATE SINK rules WITH (connector = 'log', topic = 'rules');\nINSERT INTO rules {RULES};\n",
                data.join("files").join("settlement").display()
            ),
        )
        .unwrap();
        q
    };
    for data in [&reference, &crashed] {
        ok(paystream(data).args(["topic", "create", "payments", "--partitions", "4"]));
        ok(paystream(data).args(["produce", "payments"]).arg(&events));
    }
    // One uninterrupted run.
    ok(paystream(&reference)
        .arg("run")
        .arg(query_in(&reference))
        .arg("--until-end"));
    let query = query_in(&crashed);

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
            let want = consume_all(&reference, "settlement_per_minute");
            for line in consume_all(&crashed, "settlement_per_minute") {
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
        let (want, got) = (consume_all(&reference, sink), consume_all(&crashed, sink));
        assert!(!want.is_empty(), "{sink} is empty");
        if got != want {
            let missing: Vec<_> = want
                .iter()
                .filter(|l| got.binary_search(l).is_err())
                .take(3)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|l| want.binary_search(l).is_err())
                .take(3)
                .collect();
            panic!(
                "{sink} after {kills} kills (seed {seed}): {} rows vs {} uninterrupted; missing {missing:?}; extra {extra:?}",
                got.len(),
                want.len()
            );
        }
    }
    let (want, got) = (part_files(&reference), part_files(&crashed));
    assert_eq!(want, consume_all(&reference, "settlement_per_minute"));
    assert_eq!(
        got.len(),
        want.len(),
        "file sink: row count after {kills} kills"
    );
    assert!(got == want, "file sink: rows differ after {kills} kills");
    // Nothing uncommitted is left behind.
    for e in std::fs::read_dir(crashed.join("files")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".jsonl"), "left over: {name}");
    }
}

/// The committed part files of the settlement file sink, as sorted rows.
fn part_files(data: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(data.join("files")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            rows.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    rows.sort();
    rows
}

/// Barrier alignment with several inputs: two queries on two workers each feed the sink loop.
/// A checkpoint taken mid-stream, restored into a fresh run that continues from its offsets,
/// gives — together with what was emitted before the barrier — exactly the uninterrupted output.
#[test]
fn a_mid_stream_checkpoint_restores_to_the_uninterrupted_output() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use paystream::LogSource;
    use paystream::engine::{Checkpoint, Checkpoints, OnStop, PipelineState, QueryRun, RunSpec};
    use paystream::log::{FsyncPolicy, Log, Producer, TopicConfig};
    use paystream::sink::{MemorySink, Sink};

    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    log.create_topic(
        "payments",
        &TopicConfig {
            partitions: 3,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let mut events = Vec::new();
    paystream::generate::generate(
        &paystream::generate::GenConfig {
            events: 60_000,
            seed: 5,
            cards: 500,
            merchants: 20,
            rate: 100.0,
            ..Default::default()
        },
        &mut events,
    )
    .unwrap();
    let mut p = Producer::new(
        log.writer("payments", FsyncPolicy::Never).unwrap(),
        Some("card_id"),
    );
    // Small batches, so the run reads many chunks and checkpoints fall between them.
    for chunk in events
        .split_inclusive(|b| *b == b'\n')
        .collect::<Vec<_>>()
        .chunks(500)
    {
        p.send_json_lines(&chunk.concat(), 1, &mut |_| {}).unwrap();
        p.flush().unwrap();
    }
    p.finish().unwrap();
    let sqls = [
        std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap(),
        std::fs::read_to_string(repo("queries/card_velocity.sql")).unwrap(),
    ];
    let plans: Vec<_> = sqls
        .iter()
        .map(|s| paystream::plan_query(s).unwrap())
        .collect();
    let source = Arc::new(LogSource::new(log.clone(), "payments").until_end(true));
    let lines = |s: &MemorySink| -> Vec<String> {
        let c = s.0.lock().unwrap();
        let mut v = crate::util::lines_of(&c.batches);
        v.sort();
        v
    };
    // Each checkpoint remembers how many rows each sink had then: exactly the pre-barrier output.
    type Taken = Vec<(PipelineState, Vec<usize>)>;
    let run =
        |restore: Option<PipelineState>, every: Option<Duration>, taken: Arc<Mutex<Taken>>| {
            let sinks: Vec<MemorySink> = (0..2).map(|_| MemorySink::default()).collect();
            let queries = plans
                .iter()
                .zip(&sinks)
                .map(|(plan, s)| QueryRun {
                    name: "q".into(),
                    plan: plan.clone(),
                    results: Box::new(s.clone()) as Box<dyn Sink>,
                })
                .collect();
            let counted = sinks.clone();
            let hook = move |cp: Checkpoint| {
                let state = cp.state;
                let counts = counted
                    .iter()
                    .map(|s| crate::util::lines_of(&s.0.lock().unwrap().batches).len())
                    .collect();
                taken.lock().unwrap().push((state, counts));
                Ok(())
            };
            let mut spec = RunSpec::new(source.clone(), queries);
            spec.options.workers = 2;
            spec.options.batch_size = 1000;
            spec.restore = restore;
            spec.checkpoints = Some(Checkpoints {
                interval: every,
                first_epoch: 1,
                request: Arc::new(AtomicBool::new(false)),
                on_checkpoint: Box::new(hook),
            });
            spec.on_stop = OnStop::Snapshot;
            paystream::engine::run(spec, Arc::default(), Arc::new(AtomicBool::new(false))).unwrap();
            sinks
        };
    let taken: Arc<Mutex<Taken>> = Arc::default();
    let full = run(None, Some(Duration::from_millis(1)), Arc::clone(&taken));
    let taken = std::mem::take(&mut *taken.lock().unwrap());
    assert!(taken.len() >= 3, "only {} checkpoints", taken.len());
    // Every checkpoint has a position for every partition, also the first ones, taken before
    // each partition delivered a chunk (a missing one would be re-read from offset 0).
    for (state, _) in &taken {
        assert_eq!(state.positions.len(), 3, "{:?}", state.positions);
    }
    for (state, counts) in [&taken[taken.len() / 3], &taken[2 * taken.len() / 3]] {
        let read: u64 = state.positions.values().sum();
        assert!(read > 0 && read < 60_000, "not mid-stream: {read}");
        let resumed = run(Some(state.clone()), None, Arc::default());
        for q in 0..2 {
            let all = {
                let c = full[q].0.lock().unwrap();
                crate::util::lines_of(&c.batches)
            };
            let mut combined: Vec<String> = all[..counts[q]].to_vec();
            combined.extend(lines(&resumed[q]));
            combined.sort();
            assert_eq!(combined, lines(&full[q]), "query {q}");
        }
    }
}

/// `paystream savepoint` on a running job (SIGUSR1) and on a stopped one; `run --from-savepoint`
/// resumes from it; a changed query refuses the state with a clear error.
#[test]
fn savepoints_are_taken_restored_and_refused_when_the_query_changed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args([
            "gen", "--events", "30000", "--seed", "4", "--rate", "50", "-o",
        ])
        .arg(&events));
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "2"]));
    ok(paystream(&data).args(["produce", "payments"]).arg(&events));
    let query = dir.path().join("job.sql");
    std::fs::copy(repo("queries/risk_pipeline.sql"), &query).unwrap();

    let mut child = paystream(&data)
        .arg("run")
        .arg(&query)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it runs (its pid file exists), then ask for a savepoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.join("_queries/job/pid").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let name = ok(paystream(&data).args(["savepoint", "job"]))
        .trim()
        .to_string();
    assert!(name.starts_with("job-"), "{name}");
    // SAFETY: plain kill(2) on our child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    // A stopped job's latest checkpoint becomes a savepoint too.
    let stopped = ok(paystream(&data).args(["savepoint", "job"]))
        .trim()
        .to_string();
    assert!(stopped.starts_with("job-"), "{stopped}");

    // Resuming from the first savepoint re-emits what came after it; the committed sinks then
    // hold the replay's results (the sink topics roll back to the savepoint's offsets).
    ok(paystream(&data)
        .arg("run")
        .arg(&query)
        .args(["--from-savepoint", &name, "--until-end"]));
    let want = {
        let out = ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
            .arg("replay")
            .arg(&events)
            .arg("--query")
            .arg(repo("queries/settlement_per_minute.sql")));
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(consume_all(&data, "settlement_per_minute"), want);

    // A changed query does not get the old state.
    let text = std::fs::read_to_string(&query).unwrap();
    std::fs::write(
        &query,
        text.replace("HAVING count(*) >= 5", "HAVING count(*) >= 6"),
    )
    .unwrap();
    let o = paystream(&data)
        .arg("run")
        .arg(&query)
        .args(["--from-savepoint", &name, "--until-end"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("query file changed"), "{err}");
    let o = paystream(&data)
        .arg("run")
        .arg(&query)
        .args(["--from-savepoint", "nope"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("no savepoint `nope`"));
}

/// Checkpoints in an S3-compatible store (a real moto S3 server on loopback, as `.ci/run`
/// installs it): written, listed, read back for a savepoint, and restored by a second run.
#[test]
fn checkpoints_go_to_an_s3_compatible_store() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // `python3 -m moto.server` works wherever pip put the package, on PATH or not.
    let _server = Kill(
        Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto (pip install 'moto[server]'; .ci/run installs it)"),
    );
    fn request(port: u16, method: &str, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }
    let http = |method: &str, path: &str| request(port, method, path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http("PUT", "/ckpt").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args([
            "gen", "--events", "20000", "--seed", "8", "--rate", "50", "-o",
        ])
        .arg(&events));
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "2"]));
    ok(paystream(&data).args(["produce", "payments"]).arg(&events));
    let s3 = |c: &mut Command| {
        c.env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
            .env("AWS_ACCESS_KEY_ID", "paystream")
            .env("AWS_SECRET_ACCESS_KEY", "paystream")
            .env("AWS_REGION", "us-east-1");
    };
    let query = repo("queries/risk_pipeline.sql");
    let location = "s3://ckpt/jobs/risk";
    let mut first = paystream(&data);
    first
        .arg("run")
        .arg(&query)
        .args(["--checkpoint-dir", location, "--until-end"]);
    s3(&mut first);
    let out = first.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = http("GET", "/ckpt?list-type=2&prefix=jobs/risk/");
    assert!(
        listing.contains("jobs/risk/chk-0000000001/_COMPLETE"),
        "{listing}"
    );
    assert!(
        listing.contains("jobs/risk/chk-0000000001/state"),
        "{listing}"
    );
    // Read back: the stopped job's latest checkpoint becomes a savepoint.
    let mut sp = paystream(&data);
    sp.args(["savepoint", "risk_pipeline", "--checkpoint-dir", location]);
    s3(&mut sp);
    let name = ok(&mut sp).trim().to_string();
    assert_eq!(name, "risk_pipeline-1");
    // And a second run restores it from the store.
    let mut again = paystream(&data);
    again
        .arg("run")
        .arg(&query)
        .args(["--checkpoint-dir", location, "--until-end"]);
    s3(&mut again);
    let out = again.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("resumed=true"),
        "{err}"
    );
    assert!(
        http("GET", "/ckpt?list-type=2&prefix=jobs/risk/").contains("chk-0000000002/_COMPLETE")
    );
}

/// A checkpoint taken after a restore, before any partition delivered new records, still records
/// every partition's position (a missing one would be re-read from offset 0 on the next
/// recovery: the kill test caught dead letters counted twice).
#[test]
fn a_checkpoint_right_after_a_restore_keeps_every_position() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use paystream::LogSource;
    use paystream::engine::{Checkpoint, Checkpoints, OnStop, PipelineState, QueryRun, RunSpec};
    use paystream::log::{BatchBuilder, FsyncPolicy, Log, TopicConfig};
    use paystream::sink::NullSink;

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
    for (i, l) in sample.lines().enumerate() {
        let mut b = BatchBuilder::default();
        b.push(None, l.as_bytes(), 0);
        w.append((i % 2) as u32, &mut b).unwrap();
    }
    drop(w);
    let plan = paystream::plan_query(
        &std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap(),
    )
    .unwrap();
    let run = |restore: Option<PipelineState>, until_end: bool, request: bool| {
        let source = LogSource::new(log.clone(), "payments").until_end(until_end);
        let taken: Arc<Mutex<Vec<PipelineState>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (Arc::clone(&taken), Arc::clone(&stop));
        let hook = move |cp: Checkpoint| {
            let state = cp.state;
            t.lock().unwrap().push(state);
            s.store(true, Ordering::Relaxed);
            Ok(())
        };
        let mut spec = RunSpec::new(
            Arc::new(source),
            vec![QueryRun {
                name: "q".into(),
                plan: plan.clone(),
                results: Box::new(NullSink),
            }],
        );
        spec.options.workers = 1;
        spec.restore = restore;
        spec.checkpoints = Some(Checkpoints {
            interval: None,
            first_epoch: 1,
            request: Arc::new(AtomicBool::new(request)),
            on_checkpoint: Box::new(hook),
        });
        spec.on_stop = OnStop::Snapshot;
        let out = paystream::engine::run(spec, Arc::default(), stop).unwrap();
        let taken = taken.lock().unwrap().clone();
        (out.state.expect("a snapshot at the stop"), taken)
    };
    let (end, _) = run(None, true, false);
    assert_eq!(end.positions, [(0, 1500), (1, 1500)].into_iter().collect());
    // Nothing new to read: the requested checkpoint comes from an idle tick.
    let (_, taken) = run(Some(end.clone()), false, true);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].positions, end.positions);
}

/// Issue 15, part 2: a union of two streams killed at random moments leaves in its sinks what
/// one uninterrupted run leaves: both sources' offsets, the dedup of each, the session state of
/// one branch and the tumble state of the other are one checkpoint; so does an interval join of
/// the two (both sides' kept events, which left ones matched), and a window over its pairs (the
/// join's state and the window's in one). Issue 16, part 3: so does a
/// changelog (GROUP BY without a window, a job of its own over one source) — its rows between
/// checkpoints depend on where the watermark steps fall, so what must match is the table it
/// leaves when applied. Issue 16, part 1: so does a windowed aggregate over a temporal join with
/// a reference table (read again on each restart), and a window join (both aggregates' state).
#[test]
fn a_union_of_two_streams_survives_kill_9s() {
    let dir = tempfile::tempdir().unwrap();
    let gen_file = |name: &str, args: &[&str]| {
        let path = dir.path().join(name);
        ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
            .arg("gen")
            .args(args)
            .arg("-o")
            .arg(&path));
        path
    };
    // Two streams over the same hours of event time: cards at ten times the wallets' rate.
    let cards = gen_file(
        "cards.jsonl",
        &["--events", "200000", "--seed", "7", "--malformed", "0.001"],
    );
    let wallets = gen_file(
        "wallets.jsonl",
        &[
            "--events",
            "20000",
            "--seed",
            "8",
            "--rate",
            "100",
            "--malformed",
            "0.001",
        ],
    );
    // A versioned reference table: tiers change halfway through the cards' hours.
    let merchants = dir.path().join("merchants.csv");
    let mut csv = String::from("merchant_id,risk_tier,valid_from\n");
    for m in 0..200 {
        csv.push_str(&format!("m_{m:04},low,2026-01-01T00:00:00Z\n"));
        if m % 3 == 0 {
            csv.push_str(&format!("m_{m:04},high,2026-11-01T00:01:30Z\n"));
        }
    }
    std::fs::write(&merchants, csv).unwrap();
    let table = format!(
        "CREATE TABLE merchants (merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR, valid_from TIMESTAMP) WITH (connector = 'file', path = '{}');
CREATE SINK tiers WITH (connector = 'log', topic = 'tiers');
INSERT INTO tiers SELECT m.risk_tier, window_start, count(*) AS n, sum(c.amount_minor) AS total
FROM TUMBLE(cards, event_time, INTERVAL '1' MINUTE) c
JOIN merchants FOR SYSTEM_TIME AS OF c.event_time m ON m.merchant_id = c.merchant_id
GROUP BY m.risk_tier, window_start, window_end;
CREATE SINK side_by_side WITH (connector = 'log', topic = 'side_by_side');
INSERT INTO side_by_side SELECT a.merchant_id, a.window_start, a.n AS auths, c.n AS captures
FROM (SELECT merchant_id, window_start, window_end, count(*) AS n FROM TUMBLE(cards, event_time, INTERVAL '1' MINUTE)
      WHERE event_type = 'authorization' GROUP BY merchant_id, window_start, window_end) a
LEFT JOIN (SELECT merchant_id, window_start, window_end, count(*) AS n FROM TUMBLE(cards, event_time, INTERVAL '1' MINUTE)
      WHERE event_type = 'capture' GROUP BY merchant_id, window_start, window_end) c
  ON c.merchant_id = a.merchant_id AND c.window_start = a.window_start;
CREATE SINK captured WITH (connector = 'log', topic = 'captured');
INSERT INTO captured WITH j AS (SELECT a.merchant_id, c.event_time AS captured_at, c.amount_minor AS captured_minor
  FROM cards a JOIN cards c ON c.payment_id = a.payment_id AND c.event_type = 'capture'
   AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE
  WHERE a.event_type = 'authorization')
SELECT merchant_id, window_start, count(*) AS n, sum(captured_minor) AS total
FROM TUMBLE(j, captured_at, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end;
",
        merchants.display()
    );
    const QUERY: &str = "CREATE SOURCE cards WITH (connector = 'log', topic = 'cards');
CREATE SOURCE wallets WITH (connector = 'log', topic = 'wallets');
CREATE SINK rules WITH (connector = 'log', topic = 'rules');
CREATE SINK big WITH (connector = 'log', topic = 'big');
INSERT INTO rules
SELECT 'session' AS rule, card_id AS k, count(*) AS n FROM SESSION(cards, event_time, INTERVAL '20' SECOND)
GROUP BY card_id, window_start, window_end
UNION ALL SELECT 'merchant_minute', merchant_id, count(*) FROM TUMBLE(wallets, event_time, INTERVAL '1' MINUTE)
GROUP BY merchant_id, window_start;
INSERT INTO big SELECT event_id, amount_minor FROM cards WHERE amount_minor > 200000
UNION ALL SELECT event_id, amount_minor FROM wallets WHERE amount_minor > 200000;
CREATE SINK pairs WITH (connector = 'log', topic = 'pairs');
INSERT INTO pairs SELECT w.event_id, c.event_id AS card_event FROM wallets w LEFT JOIN cards c
  ON c.merchant_id = w.merchant_id AND c.event_time BETWEEN w.event_time - INTERVAL '50' MILLISECOND AND w.event_time + INTERVAL '50' MILLISECOND;
CREATE SINK paired_minutes WITH (connector = 'log', topic = 'paired_minutes');
INSERT INTO paired_minutes WITH j AS (SELECT w.merchant_id, w.event_time AS paid_at, c.event_id AS card_event
  FROM wallets w LEFT JOIN cards c ON c.merchant_id = w.merchant_id
   AND c.event_time BETWEEN w.event_time - INTERVAL '50' MILLISECOND AND w.event_time + INTERVAL '50' MILLISECOND)
SELECT merchant_id, window_start, count(*) AS n, count(card_event) AS matched
FROM TUMBLE(j, paid_at, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end;
CREATE SINK totals WITH (connector = 'log', topic = 'totals');
INSERT INTO totals SELECT merchant_id, currency, count(*) AS n, sum(amount_minor) AS total,
  count(DISTINCT card_id) AS cards FROM cards GROUP BY merchant_id, currency HAVING count(*) > 100;
";
    let (reference, crashed) = (dir.path().join("reference"), dir.path().join("crashed"));
    for data in [&reference, &crashed] {
        std::fs::create_dir_all(data).unwrap();
        std::fs::write(data.join("two.sql"), format!("{QUERY}{table}")).unwrap();
        ok(paystream(data).args(["topic", "create", "cards", "--partitions", "3"]));
        ok(paystream(data).args(["produce", "cards"]).arg(&cards));
        ok(paystream(data).args(["produce", "wallets"]).arg(&wallets));
    }
    ok(paystream(&reference)
        .arg("run")
        .arg(reference.join("two.sql"))
        .arg("--until-end"));
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..8 {
        let mut child = paystream(&crashed)
            .arg("run")
            .arg(crashed.join("two.sql"))
            .args(["--checkpoint-interval", "100ms"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        // A loaded machine may not reach the first checkpoint that soon: the kills must
        // interrupt a job that has state to restore, so wait for one (at most 20 s).
        let checkpoints = crashed.join("_queries/two.cards-wallets/checkpoints");
        let waited = Instant::now();
        let complete = || {
            std::fs::read_dir(&checkpoints)
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("_COMPLETE").exists())))
        };
        while !complete() && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the query exited on its own"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let out = paystream(&crashed)
        .arg("run")
        .arg(crashed.join("two.sql"))
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resumed=true"), "{err}");
    for sink in [
        "rules",
        "big",
        "pairs",
        "paired_minutes",
        "tiers",
        "side_by_side",
        "captured",
        "cards-wallets.dlq",
    ] {
        let (want, got) = (consume_all(&reference, sink), consume_all(&crashed, sink));
        assert!(!want.is_empty(), "{sink} is empty");
        assert!(
            got == want,
            "{sink} (seed {seed}): {} rows vs {} uninterrupted",
            got.len(),
            want.len()
        );
    }
    // The changelog, applied: the same table, with updates along the way.
    let applied = |data: &Path| {
        let mut table = std::collections::BTreeMap::new();
        // In the topic's order (one partition), not sorted.
        let out = crate::util::ok(paystream(data).args(["consume", "totals", "--until-end"]));
        for l in out.lines() {
            let mut row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            let op = row.remove("op").unwrap();
            let key = format!("{} {}", row["merchant_id"], row["currency"]);
            match op.as_str() {
                Some("delete") => table.remove(&key),
                _ => table.insert(key, serde_json::Value::Object(row).to_string()),
            };
        }
        table
    };
    let want = applied(&reference);
    assert!(want.len() > 10, "{want:?}");
    assert_eq!(
        applied(&crashed),
        want,
        "the changelog applied (seed {seed})"
    );
    assert!(
        consume_all(&crashed, "totals")
            .iter()
            .any(|l| l.contains("\"op\":\"update\""))
    );
    // The join paired wallets with cards, and left some alone.
    let pairs = consume_all(&reference, "pairs");
    assert!(pairs.iter().any(|l| l.contains("\"card_event\":null")));
    assert!(pairs.iter().any(|l| l.contains("\"card_event\":\"")));
    // Both tiers of the join, before and after the change.
    let tiers = consume_all(&reference, "tiers");
    assert!(
        tiers.iter().any(|l| l.contains("\"high\"")) && tiers.iter().any(|l| l.contains("\"low\""))
    );
    // Both branches of the windowed union produced rows.
    let rules = consume_all(&reference, "rules");
    for rule in ["\"session\"", "\"merchant_minute\""] {
        assert!(rules.iter().any(|l| l.contains(rule)), "no {rule} rows");
    }
}
