//! `paystream demo`: `serve` on a fresh embedded log, with generated traffic and the shipped
//! queries, nothing to set up.
//!
//! ```text
//!  generator (chunks of a minute, wall-clock event times, attacks and a spike each)
//!    ─paced─▶ topic `payments` ─▶ the shipped queries (one job each) ─▶ result tables
//!                                                   dashboard, SSE, psql ◀──┘   └─▶ printed here
//! ```
//! Runs until Ctrl-C, or for `--for`; stops every query with a final checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::log_cmds::DataDir;
use paystream::generate::{GenConfig, Scenarios, generate};
use paystream::log::{FsyncPolicy, Log, Producer, TopicConfig};
use paystream::server::{ServeConfig, Server};
use paystream::sql::SHIPPED_QUERIES as SHIPPED;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Stop after this long (e.g. 30s, 5m); default: run until Ctrl-C.
    #[arg(long = "for")]
    run_for: Option<String>,
    /// Events per second produced into `payments`.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Result rows printed per query per 10 s (then only counts).
    #[arg(long, default_value_t = 3)]
    show: usize,
    /// Address of the dashboard and the HTTP API (a busy default port falls back to a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// Address of the Postgres wire protocol, or `off`.
    #[arg(long, default_value = "127.0.0.1:4566")]
    pg: String,
    /// Directory for the demo's log, recreated on every run (default: `demo` under the
    /// `--data-dir`). A non-empty directory the demo did not create is refused, never emptied.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The file that marks a directory as the demo's own, so a re-run may empty it.
const MARKER: &str = ".paystream-demo";

/// Empties and recreates `dir` for the demo — only if it is new, empty, or the demo's own.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return create_marked(dir);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    if entries.next().is_some() {
        if !dir.join(MARKER).is_file() {
            bail!(
                "refusing to use {} for the demo: it is not empty and the demo did not create it (no {MARKER} file), and the demo deletes its directory's contents on every run; pass a new or empty directory with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot empty the demo directory {}", dir.display()))?;
    }
    create_marked(dir)
}

fn create_marked(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "created by `paystream demo`, which empties this directory on every run\n",
    )
    .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Seconds of event time per generated chunk.
const CHUNK_SECS: u64 = 60;

/// The library patterns the demo's traffic holds besides the attacks and the spike: those that
/// fit in a minute's chunk (small then large; a dispute wave or a ticket shift starts minutes
/// in, and chargebacks come minutes after their captures).
const DEMO_SCENARIOS: Scenarios = Scenarios {
    small_then_large: true,
    refund_after_chargeback: false,
    ticket_shift: false,
    late_money: false,
    dispute_wave: false,
    decline_wave: false,
    new_country: false,
};

/// Produces generated events into `payments` at `rate` per second until `stop`: a minute of
/// traffic at a time (its own seed, so event ids never repeat), each record sent when the wall
/// clock reaches its event time.
fn traffic(
    log: Log,
    rate: u64,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
    screened: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut p = Producer::new(log.writer("payments", FsyncPolicy::Never)?, Some("card_id"));
    let finder = memchr::memmem::Finder::new(b"\"event_time\":\"");
    let time_of = |line: &[u8]| {
        let i = finder.find(line)?;
        let rest = &line[i + finder.needle().len()..];
        let end = memchr::memchr(b'"', rest)?;
        paystream::time::parse_rfc3339_millis(std::str::from_utf8(&rest[..end]).ok()?)
    };
    let authorizations = rate as f64 / events_per_authorization(&time_of)?;
    for chunk in 0u64.. {
        let start = paystream::log::producer_now_ms();
        let cfg = GenConfig {
            start,
            ..demo_traffic(rate * CHUNK_SECS, 1_000 + chunk, authorizations)
        };
        let mut events = Vec::new();
        generate(&cfg, &mut events)?;
        let started = Instant::now();
        let mut line_no = 0;
        for line in events.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if stop.load(Ordering::Relaxed) {
                p.finish()?;
                return Ok(());
            }
            let at = time_of(line).unwrap_or(start);
            let due = Duration::from_millis((at - start).max(0) as u64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                p.flush()?;
                std::thread::sleep(wait.min(Duration::from_millis(200)));
            }
            line_no += 1;
            p.send_json_lines(line, line_no, &mut |_| {
                screened.fetch_add(1, Ordering::Relaxed);
            })?;
            produced.fetch_add(1, Ordering::Relaxed);
        }
        p.flush()?;
    }
    Ok(())
}

/// The demo's generated traffic: `events` records from `seed`, `authorizations` new ones a
/// second (captures, refunds and the rest follow them), a few malformed, a spike 30 s in, and
/// [`DEMO_SCENARIOS`].
fn demo_traffic(events: u64, seed: u64, authorizations: f64) -> GenConfig {
    GenConfig {
        events,
        seed,
        rate: authorizations,
        malformed_rate: 0.001,
        spike_at_ms: Some(30_000),
        scenarios: DEMO_SCENARIOS,
        ..GenConfig::default()
    }
}

/// Events the generator writes per second of event time for each new authorization a second
/// (captures, refunds, attacks and spikes come with the authorizations), measured on a sample:
/// the middle 90 % of its events over the event time they span.
fn events_per_authorization(time_of: &dyn Fn(&[u8]) -> Option<i64>) -> anyhow::Result<f64> {
    let cfg = demo_traffic(20_000, 999, 100.0);
    let mut events = Vec::new();
    generate(&cfg, &mut events)?;
    let mut times: Vec<i64> = events.split(|b| *b == b'\n').filter_map(time_of).collect();
    times.sort_unstable();
    let (lo, hi) = (times.len() / 20, times.len() * 19 / 20);
    let span_s =
        (times.get(hi).copied().unwrap_or(0) - times.get(lo).copied().unwrap_or(0)) as f64 / 1000.0;
    Ok(if span_s > 0.0 {
        ((hi - lo) as f64 / span_s / cfg.rate).max(0.1)
    } else {
        2.0
    })
}

pub(crate) fn demo(data: &DataDir, a: DemoArgs) -> anyhow::Result<()> {
    if a.rate == 0 {
        bail!("--rate must be at least 1 event per second");
    }
    let run_for = a
        .run_for
        .as_deref()
        .map(|s| {
            paystream::time::parse_duration_millis(s)
                .map(|ms| Duration::from_millis(ms.max(1) as u64))
                .map_err(|e| anyhow::anyhow!("invalid --for: {e}"))
        })
        .transpose()?;
    let dir = a.dir.clone().unwrap_or_else(|| data.data_dir.join("demo"));
    prepare_dir(&dir)?;
    let log = Log::new(&dir);
    log.create_topic(
        "payments",
        &TopicConfig {
            partitions: 4,
            ..TopicConfig::default()
        },
    )?;
    let stop = super::signals::stop_on_signal();
    let rt = super::serve_cmd::runtime()?;
    let pg = super::serve_cmd::parse_pg(&a.pg)?;
    let server = rt.block_on(async {
        let mut config = ServeConfig::new(&dir);
        config.http = a.http;
        config.pg = pg;
        config.checkpoint_interval = Some(Duration::from_secs(5));
        match Server::bind(config.clone()).await {
            Ok(s) => Ok(s),
            // A busy default port: any free one, so the first command always runs.
            Err(e) => {
                eprintln!("note: {e}; using free ports instead");
                config.http.set_port(0);
                if let Some(p) = config.pg.as_mut() {
                    p.set_port(0);
                }
                Server::bind(config).await
            }
        }
    })?;
    // The library's rules too: bare queries with their parameters.
    for (name, sql) in SHIPPED.iter().chain(paystream::sql::LIBRARY_QUERIES.iter()) {
        server
            .submit(name, sql)
            .map_err(|e| anyhow::anyhow!("shipped query {name}: {e}"))?;
    }
    super::serve_cmd::announce(&server, None);
    println!(
        "producing about {} events/s into topic `payments` (4 partitions) in {}; {}",
        a.rate,
        dir.display(),
        match run_for {
            Some(d) => format!("stopping after {}s", d.as_secs_f64()),
            None => "Ctrl-C stops".to_string(),
        }
    );
    let produced = Arc::new(AtomicU64::new(0));
    let screened = Arc::new(AtomicU64::new(0));
    let producer = {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        let (produced, screened) = (Arc::clone(&produced), Arc::clone(&screened));
        let rate = a.rate;
        std::thread::spawn(move || traffic(log, rate, stop, produced, screened))
    };
    let results = server.results();
    let deadline = run_for.map(|d| Instant::now() + d);
    let printer_stop = Arc::clone(&stop);
    let show = a.show;
    rt.block_on(async move {
        let stopper = {
            let stop = Arc::clone(&printer_stop);
            async move {
                while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                stop.store(true, Ordering::Relaxed);
            }
        };
        let printer = tokio::spawn(print_results(results, show, Arc::clone(&printer_stop)));
        let r = server.run(stopper).await;
        printer.abort();
        r
    })?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    println!(
        "stopped: produced {} events ({} refused for holding a card number); every query took its final checkpoint.\n  look around: paystream --data-dir {d} serve   (resumes the queries)\n               paystream --data-dir {d} topic describe payments",
        produced.load(Ordering::Relaxed),
        screened.load(Ordering::Relaxed),
        d = dir.display()
    );
    Ok(())
}

/// Prints up to `show` rows per result table every 10 s, then how many more there were.
async fn print_results(
    results: Arc<paystream::sink::ResultTables>,
    show: usize,
    stop: Arc<AtomicBool>,
) {
    let mut subs: Vec<(String, tokio::sync::broadcast::Receiver<Arc<str>>)> = Vec::new();
    let mut counts: Vec<(usize, u64)> = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        for t in results.all() {
            if !subs.iter().any(|(n, _)| n == t.name()) {
                subs.push((t.name().to_string(), t.subscribe(false).1));
                counts.push((0, 0));
            }
        }
        for ((name, rx), (shown, total)) in subs.iter_mut().zip(counts.iter_mut()) {
            while let Ok(row) = rx.try_recv() {
                *total += 1;
                if *shown < show {
                    *shown += 1;
                    println!("[{name}] {row}");
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::select! {
            _ = every.tick() => {
                let line: Vec<String> = subs.iter().zip(counts.iter_mut()).map(|((n, _), (shown, total))| {
                    *shown = 0;
                    format!("{n}={total}")
                }).collect();
                if !line.is_empty() {
                    println!("... result rows so far: {}", line.join(" "));
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
