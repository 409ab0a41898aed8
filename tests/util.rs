//! Helpers shared by the integration tests.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use paystream::engine::{RunOptions, RunSpec, Summary};
use paystream::sink::{MemorySink, write_batch};
use paystream::{FileSource, SourcePosition, StreamPlan, plan_query};

/// How a test replays a file: the engine's options (one worker unless set), and where in the
/// file to start.
pub struct ReplayConfig {
    pub options: RunOptions,
    pub start: SourcePosition,
}

impl std::ops::Deref for ReplayConfig {
    type Target = RunOptions;
    fn deref(&self) -> &RunOptions {
        &self.options
    }
}

impl std::ops::DerefMut for ReplayConfig {
    fn deref_mut(&mut self) -> &mut RunOptions {
        &mut self.options
    }
}

/// Replays `input` through `plan` into memory sinks, configured by `configure`.
pub fn try_replay_with(
    plan: &StreamPlan,
    input: &Path,
    configure: impl FnOnce(&mut ReplayConfig),
) -> paystream::Result<Run> {
    let mut config = ReplayConfig {
        options: RunOptions {
            workers: 1,
            ..RunOptions::default()
        },
        start: SourcePosition::default(),
    };
    configure(&mut config);
    let source = FileSource::new(input)
        .starting_at(config.start)
        .events(Arc::clone(&plan.events));
    try_run_source(plan, Arc::new(source), |o| *o = config.options)
}

/// Runs `plan` over `source` into memory sinks, with the options `configure` sets (one worker
/// unless set).
pub fn run_source(
    plan: &StreamPlan,
    source: Arc<dyn paystream::source::Source>,
    configure: impl FnOnce(&mut RunOptions),
) -> Run {
    try_run_source(plan, source, configure).expect("run")
}

fn try_run_source(
    plan: &StreamPlan,
    source: Arc<dyn paystream::source::Source>,
    configure: impl FnOnce(&mut RunOptions),
) -> paystream::Result<Run> {
    let mut options = RunOptions {
        workers: 1,
        ..RunOptions::default()
    };
    configure(&mut options);
    let (results, dl, late) = (
        MemorySink::default(),
        MemorySink::default(),
        MemorySink::default(),
    );
    let mut spec = RunSpec::single(source, plan, Box::new(results.clone()));
    spec.dead_letter = Box::new(dl.clone());
    spec.late = Box::new(late.clone());
    spec.options = options;
    let summary = paystream::engine::run(spec, Arc::default(), Arc::default())?.summary;
    let parse = |s: &MemorySink| -> Vec<serde_json::Value> {
        s.0.lock()
            .unwrap()
            .records
            .iter()
            .map(|r| serde_json::from_str(r).expect("records are JSON"))
            .collect()
    };
    let batches = results.0.lock().unwrap().batches.clone();
    Ok(Run {
        summary,
        lines: lines_of(&batches),
        dead_letters: parse(&dl),
        late: parse(&late),
        batches,
    })
}

/// What one replay produced.
pub struct Run {
    pub summary: Summary,
    /// Result rows as JSON lines, in emission order.
    pub lines: Vec<String>,
    pub dead_letters: Vec<serde_json::Value>,
    pub late: Vec<serde_json::Value>,
    pub batches: Vec<RecordBatch>,
}

pub fn lines_of(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        write_batch(&mut out, b);
    }
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn replay_with(
    plan: &StreamPlan,
    input: &Path,
    configure: impl FnOnce(&mut ReplayConfig),
) -> Run {
    try_replay_with(plan, input, configure).expect("replay")
}

/// Replays `plan` over `input` as the oracle tests do: a random batch size (one event, a few,
/// more than the file) and 1–3 workers; asserts that no event was late (the tests' files keep
/// their disorder within the bound). The run, and the choice made, for failure messages.
pub fn replay_randomly(
    plan: &paystream::sql::StreamPlan,
    input: &Path,
    rng: &mut impl rand::Rng,
) -> (Run, String) {
    let batch_size = [1, 7, 64, 8192, rng.random_range(1..3000)][rng.random_range(0..5)];
    let workers = rng.random_range(1..=3);
    let run = replay_with(plan, input, |o| {
        o.batch_size = batch_size;
        o.workers = workers;
    });
    let how = format!("batch {batch_size}, workers {workers}");
    assert_eq!(run.summary.late, 0, "{how}");
    (run, how)
}

pub fn replay(sql: &str, input: &Path, configure: impl FnOnce(&mut ReplayConfig)) -> Run {
    let plan = plan_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    replay_with(&plan, input, configure)
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A path inside the repository. Read at run time (cargo sets the variable for test
/// processes too): CI clones share one target directory, so a compile-time path could
/// point at another clone whose build cargo reused.
pub fn repo(path: &str) -> std::path::PathBuf {
    let root =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&root).join(path)
}

/// The `paystream` binary with `--data-dir data`.
pub fn paystream(data: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"));
    c.arg("--data-dir").arg(data);
    c
}

/// Runs `c`, asserting success; returns its standard output.
pub fn ok(c: &mut std::process::Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Every committed record of `topic`, sorted.
pub fn consume_all(data: &Path, topic: &str) -> Vec<String> {
    let out = ok(paystream(data).args(["consume", topic, "--until-end"]));
    sorted(out.lines().map(str::to_string).collect())
}

/// Runs `produce TOPIC` with `lines` on standard input and `extra` flags; returns whether it
/// succeeded and its standard error.
pub fn produce_stdin(
    data: &Path,
    topic: &str,
    lines: &[impl AsRef<str>],
    extra: &[&str],
) -> (bool, String) {
    use std::io::Write;
    let mut child = paystream(data)
        .args(["produce", topic])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{}", l.as_ref()).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The shipped settlement query without its comments and final semicolon, to embed in an
/// `INSERT INTO … SELECT`.
pub fn settlement_select() -> String {
    std::fs::read_to_string(repo("queries/settlement_per_minute.sql"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .trim_end_matches(';')
        .to_string()
}

/// Runs the job `query` of `data` to the end (`--until-end`) after a kill schedule `seed`
/// ([`kill_rounds`]), asserting it succeeds and that its log topic `topic` holds exactly `want`;
/// returns its standard error.
pub fn finish_equals(data: &Path, query: &Path, topic: &str, want: &[String], seed: u64) -> String {
    let out = paystream(data)
        .arg("run")
        .arg(query)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let got = consume_all(data, topic);
    assert_eq!(got.len(), want.len(), "rows through kill -9s (seed {seed})");
    assert!(got == want, "rows differ through kill -9s (seed {seed})");
    err
}

/// The reference of a connector test: `events` produced (with `produce_args`) to topic
/// `payments` of a fresh embedded log in `data` with `partitions` partitions, and each
/// `(sink topic, SELECT)` of `inserts` run over it to the end; returns each sink topic's rows,
/// sorted, in the order of `inserts`.
pub fn reference_rows(
    data: &Path,
    events: &Path,
    partitions: u32,
    produce_args: &[&str],
    inserts: &[(&str, &str)],
) -> Vec<Vec<String>> {
    ok(paystream(data).args([
        "topic",
        "create",
        "payments",
        "--partitions",
        &partitions.to_string(),
    ]));
    ok(paystream(data)
        .args(["produce", "payments"])
        .args(produce_args)
        .arg(events));
    let mut job = String::from(
        "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json');\n",
    );
    for (topic, _) in inserts {
        job.push_str(&format!(
            "CREATE SINK {topic} WITH (connector = 'log', topic = '{topic}');\n"
        ));
    }
    for (topic, select) in inserts {
        job.push_str(&format!("INSERT INTO {topic} {select};\n"));
    }
    let q = data.join("job.sql");
    std::fs::write(&q, job).unwrap();
    ok(paystream(data).arg("run").arg(&q).arg("--until-end"));
    inserts
        .iter()
        .map(|(topic, _)| {
            let rows = consume_all(data, topic);
            assert!(!rows.is_empty(), "the reference's {topic} is empty");
            rows
        })
        .collect()
}

/// Runs `paystream run QUERY --checkpoint-interval 200ms` in `data` `rounds` times, killing each
/// with SIGKILL after a random pause in `pause_ms` (seeded from the clock; the seed is printed
/// and returned for the assertions' messages). In the middle round `service` is restarted
/// 700 ms in (a broker going away mid-run and coming back; the rounds before it are short, so
/// it still has data to read). A job that ends on its own fails
/// the test with the end of its standard error, which is kept in `data/round-N.stderr`.
pub fn kill_rounds(
    data: &Path,
    query: &Path,
    rounds: usize,
    pause_ms: std::ops::Range<u64>,
    service: Option<&str>,
) -> u64 {
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..rounds {
        let log = data.join(format!("round-{round}.stderr"));
        let mut child = paystream(data)
            .arg("run")
            .arg(query)
            .args(["--checkpoint-interval", "200ms"])
            .env("PAYSTREAM_LOG", "warn,paystream=info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut alive = |when: &str| {
            if let Some(status) = child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "round {round} (seed {seed}): the job ended {when} ({status}); its stderr ends:\n{}",
                    tail.join("\n")
                );
            }
        };
        if round == rounds / 2
            && let Some(service) = service
        {
            std::thread::sleep(Duration::from_millis(700));
            services::restart(service);
            std::thread::sleep(Duration::from_millis(1500));
            alive(&format!("when {service} restarted"));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(pause_ms.clone())));
        alive("on its own");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Shown when the test fails (or runs with --nocapture): what each round went through.
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("round {round}:\n{err}");
    }
    seed
}

/// The servers the connector tests talk to (`scripts/services.sh`): each is started by the
/// script when nothing answers at its address, and a test that needs one fails — never skips —
/// when it cannot be started, with the script's own account of why.
pub mod services {
    use std::net::TcpStream;
    use std::sync::Mutex;
    use std::time::Duration;

    /// One start at a time (tests run in parallel).
    static STARTING: Mutex<()> = Mutex::new(());

    fn listening(port: u16) -> bool {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .is_ok()
    }

    /// Makes sure `service` answers on 127.0.0.1:`port`.
    pub fn require(service: &str, port: u16) {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if listening(port) {
            return;
        }
        let out = std::process::Command::new(super::repo("scripts/services.sh"))
            .args(["start", service])
            .output()
            .expect("run scripts/services.sh");
        assert!(
            out.status.success() && listening(port),
            "{service} is needed on 127.0.0.1:{port} and `scripts/services.sh start {service}` could not start it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts `service` (its data kept), as a broker that goes away mid-run and comes back.
    pub fn restart(service: &str) {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let out = std::process::Command::new(super::repo("scripts/services.sh"))
            .args(["restart", service])
            .output()
            .expect("run scripts/services.sh");
        assert!(
            out.status.success(),
            "`scripts/services.sh restart {service}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The test PostgreSQL server's URL for database `db`, which is made afresh (dropped if it
    /// exists).
    pub fn postgres_database(db: &str) -> String {
        require("postgres", 5432);
        let base = "postgres://postgres@127.0.0.1:5432";
        let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls)
            .expect("connect to the test PostgreSQL");
        // Two statements: neither runs inside a transaction block.
        for statement in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin
                .batch_execute(&statement)
                .expect("create a test database");
        }
        format!("{base}/{db}")
    }
}
