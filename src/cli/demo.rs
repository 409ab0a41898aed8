//! `paystream demo`: the embedded log end to end, with nothing to set up.
//!
//! Generates payment events, produces them into a `payments` topic at a pace (so time moves
//! like a live stream, faster), runs the shipped queries continuously over the topic — one
//! shared read, results into one topic per query — and prints results as their windows close.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::log_cmds::DataDir;
use paystream::LogSource;
use paystream::engine::{OnStop, QueryRun, RunOutcome, RunSpec};
use paystream::generate::{GenConfig, generate};
use paystream::log::{FsyncPolicy, Log, Producer, StartAt, TopicConfig, TopicConsumer};
use paystream::plan_query;
use paystream::sink::{TopicSink, WriterSink};
use paystream::sql::SHIPPED_QUERIES as SHIPPED;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Seconds to produce them over; the stream then stops cleanly once the queries have read
    /// every event.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Result rows to print per query (then only counts).
    #[arg(long, default_value_t = 5)]
    show: usize,
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

pub(crate) fn demo(data: &DataDir, a: DemoArgs) -> anyhow::Result<()> {
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
    let cfg = GenConfig {
        events: a.events,
        malformed_rate: 0.001,
        spike_at_ms: Some(60_000),
        ..GenConfig::default()
    };
    let mut events = Vec::new();
    let stats = generate(&cfg, &mut events)?;
    println!(
        "generated {} events ({} duplicates, {} malformed); producing them into topic `payments` (4 partitions) in {} over {}s",
        stats.lines,
        stats.duplicates,
        stats.malformed,
        dir.display(),
        a.seconds
    );

    let stop = super::signals::stop_on_signal();
    let produced = Arc::new(AtomicU64::new(0));
    let screened = Arc::new(AtomicU64::new(0));
    // Set when every event is stored: the bytes the queries must read to have seen them all.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(paystream::engine::Progress::default());
    let producer = {
        let (log, stop, produced) = (log.clone(), Arc::clone(&stop), Arc::clone(&produced));
        let screened = Arc::clone(&screened);
        let (target, done) = (Arc::clone(&target), Arc::clone(&done));
        let seconds = a.seconds.max(1);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut p = Producer::new(log.writer("payments", FsyncPolicy::Never)?, Some("card_id"));
            let started = Instant::now();
            let total = events.len().max(1);
            let mut rest: &[u8] = &events;
            while !rest.is_empty() && !stop.load(Ordering::Relaxed) {
                // Pace: the share of the bytes due by now.
                let due =
                    (started.elapsed().as_secs_f64() / seconds as f64 * total as f64) as usize;
                let sent = total - rest.len();
                if due <= sent {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let cut = (due - sent).min(rest.len());
                let end = memchr::memrchr(b'\n', &rest[..cut]).map_or(0, |i| i + 1);
                if end == 0 && cut < rest.len() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let end = if end == 0 { rest.len() } else { end };
                let line = produced.load(Ordering::Relaxed) + 1;
                let n = p.send_json_lines(&rest[..end], line, &mut |_| {})?;
                p.flush()?;
                produced.fetch_add(n, Ordering::Relaxed);
                rest = &rest[end..];
            }
            screened.store(p.screened(), Ordering::Relaxed);
            // What the queries' source reads for the stored records: each value and a newline.
            target.store(p.stored_bytes() + p.produced(), Ordering::Relaxed);
            done.store(true, Ordering::Relaxed);
            p.finish()?;
            Ok(())
        })
    };

    // The shipped queries, continuously, one topic each.
    let plans = SHIPPED
        .iter()
        .map(|(name, sql)| plan_query(sql).with_context(|| format!("shipped query {name}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let progress_seen = Arc::clone(&progress);
    let runner = {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        let dir = dir.clone();
        std::thread::spawn(move || -> anyhow::Result<RunOutcome> {
            let mut queries = Vec::new();
            for ((name, _), plan) in SHIPPED.iter().zip(&plans) {
                log.ensure_topic(name, &TopicConfig::default())?;
                let w = log.writer(name, FsyncPolicy::Never)?;
                let p = Arc::new(std::sync::Mutex::new(Producer::new(w, None)));
                queries.push(QueryRun {
                    name: name.to_string(),
                    plan: plan.clone(),
                    results: Box::new(TopicSink::new(*name, p)),
                });
            }
            let mut spec = RunSpec::new(Arc::new(LogSource::new(log, "payments")), queries);
            spec.options.idle_timeout = Some(Duration::from_secs(2));
            spec.dead_letter = Box::new(WriterSink::create(
                "dead letters",
                &dir.join("dead_letters.jsonl"),
            )?);
            spec.late = Box::new(WriterSink::create(
                "late events",
                &dir.join("late_events.jsonl"),
            )?);
            spec.on_stop = OnStop::Snapshot;
            Ok(paystream::engine::run(spec, progress, stop)?)
        })
    };

    // Tail the result topics and print as windows close.
    // The stream runs until every event is produced and the queries have read them all (then a
    // second more, for the last results to reach their topics), however slow the machine; a
    // cap keeps a stuck run from going on forever.
    let cap = Instant::now() + Duration::from_secs(a.seconds.max(1) + 120);
    let mut caught_up: Option<Instant> = None;
    let deadline_passed = |caught_up: &mut Option<Instant>| {
        if Instant::now() >= cap {
            return true;
        }
        let read = progress_seen.bytes_read.load(Ordering::Relaxed);
        if done.load(Ordering::Relaxed) && read >= target.load(Ordering::Relaxed) {
            let at = *caught_up.get_or_insert_with(Instant::now);
            return at.elapsed() >= Duration::from_secs(1);
        }
        false
    };
    let mut consumers = Vec::new();
    let mut counts = vec![0u64; SHIPPED.len()];
    let mut last_status = Instant::now();
    while !deadline_passed(&mut caught_up) && !stop.load(Ordering::Relaxed) {
        if consumers.len() < SHIPPED.len() {
            consumers = SHIPPED
                .iter()
                .filter_map(|(name, _)| TopicConsumer::open(&log, name, &StartAt::Earliest).ok())
                .collect();
            if consumers.len() < SHIPPED.len() {
                consumers.clear();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let mut any = false;
        for (i, c) in consumers.iter_mut().enumerate() {
            c.poll(|_, r| {
                any = true;
                counts[i] += 1;
                if counts[i] as usize <= a.show {
                    println!("[{}] {}", SHIPPED[i].0, String::from_utf8_lossy(r.value));
                }
            })?;
        }
        if last_status.elapsed() >= Duration::from_secs(2) {
            println!(
                "... produced {} events; results so far: {}",
                produced.load(Ordering::Relaxed),
                SHIPPED
                    .iter()
                    .zip(&counts)
                    .map(|((n, _), c)| format!("{n}={c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            last_status = Instant::now();
        }
        if !any {
            consumers[0].wait(Duration::from_millis(100));
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let out = runner
        .join()
        .map_err(|_| anyhow::anyhow!("the query thread panicked"))??;
    println!("{}", out.summary.line());
    let screened = screened.load(Ordering::Relaxed);
    if screened > 0 {
        println!(
            "{screened} generated events held a card number: `produce` refused them at the log's door (no topic holds a card number)"
        );
    }
    println!(
        "stopped cleanly (windows still open when the stream stopped were not emitted). Look around:\n  paystream --data-dir {d} topic describe payments\n  paystream --data-dir {d} consume card_velocity --until-end",
        d = dir.display()
    );
    Ok(())
}
