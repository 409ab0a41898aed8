//! The throughput harness behind `paystream bench` and `cargo bench --bench throughput` (which
//! includes this file): it uses only the library's public API, and is not part of it.
//!
//! Replays one generated file through each shipped query and reports events per second of wall
//! time and per CPU-second, beside same-run baselines: reading the file, and reading plus decoding
//! it to Arrow (the floor any query pays). CPU time is the process's user + system time from
//! `/proc/self/stat`, so a run on N workers is charged for every core it used.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use paystream::decode::decode_json_lines;
use paystream::engine::{Router, RunSpec};
use paystream::error::Result;
use paystream::operators::{Dedup, EventBatch, OperatorOutput, Watermark, build_operator};
use paystream::sink::NullSink;
use paystream::source::FileSource;
use paystream::sql::query_file::parse_replay_query;
use paystream::sql::{LIBRARY_QUERIES, SHIPPED_QUERIES, plan_query};

/// Process CPU time (user + system) in seconds, to the microsecond.
pub fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(u.ru_utime) + secs(u.ru_stime))
}

/// One measured line of the report.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// Events processed.
    pub events: u64,
    /// Wall seconds.
    pub wall: f64,
    /// CPU seconds.
    pub cpu: f64,
}

impl Measurement {
    /// Events per wall second.
    pub fn per_sec(&self) -> f64 {
        self.events as f64 / self.wall.max(1e-9)
    }

    /// Events per CPU-second.
    pub fn per_cpu_sec(&self) -> f64 {
        self.events as f64 / self.cpu.max(1e-9)
    }
}

pub fn measure<T>(
    name: &str,
    workers: usize,
    f: impl FnOnce() -> Result<(u64, T)>,
) -> Result<Measurement> {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let (events, _) = f()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (c0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall * workers as f64,
    };
    Ok(Measurement {
        name: name.to_string(),
        workers,
        events,
        wall,
        cpu,
    })
}

/// Runs `f` `repeat` times and keeps the measurement with the least CPU time.
pub fn measure_best<T>(
    name: &str,
    workers: usize,
    repeat: usize,
    mut f: impl FnMut() -> Result<(u64, T)>,
) -> Result<Measurement> {
    let mut best = measure(name, workers, &mut f)?;
    for _ in 1..repeat {
        let m = measure(name, workers, &mut f)?;
        if m.cpu < best.cpu {
            best = m;
        }
    }
    Ok(best)
}

/// What the query suite measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Worker counts for the replays.
    pub workers: Vec<usize>,
    /// Runs per measurement; the one with the least CPU time is kept.
    pub repeat: usize,
    /// Only measurements whose name contains this (e.g. `operator only`, `card_velocity`).
    pub only: Option<String>,
}

impl BenchOptions {
    /// Every measurement for these worker counts, best of three runs.
    #[allow(dead_code)] // `cargo bench --bench throughput` uses it; the binary sets fields.
    pub fn new(workers: &[usize]) -> Self {
        BenchOptions {
            workers: workers.to_vec(),
            repeat: 3,
            only: None,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }
}

/// Runs the baselines and every shipped query over `input` (JSON Lines) for each worker count,
/// each `repeat` times (the best run is kept).
pub fn run(input: &Path, opts: &BenchOptions) -> Result<Vec<Measurement>> {
    let mut out = Runner {
        opts,
        out: Vec::new(),
    };
    let read_label = format!(
        "baseline: read file ({} MiB chunks)",
        paystream::source::READ_CHUNK >> 20
    );
    out.measure(&read_label, 1, || {
        let mut lines = 0u64;
        for_each_chunk(input, |chunk, _| {
            lines += memchr::memchr_iter(b'\n', chunk).count() as u64
        })?;
        Ok(lines)
    })?;
    out.measure("baseline: read + decode (1 thread)", 1, || {
        let mut records = 0u64;
        for_each_chunk(input, |chunk, first_line| {
            records += decode_json_lines(chunk, first_line, 8192).records;
        })?;
        Ok(records)
    })?;
    // The operators alone, over already decoded and deduplicated batches (one core).
    let batches = if SHIPPED_QUERIES
        .iter()
        .any(|(name, _)| opts.wants(&format!("operator only: {name}")))
    {
        accepted_batches(input)?
    } else {
        Vec::new()
    };
    let events: u64 = batches.iter().map(|(b, _)| b.num_events() as u64).sum();
    for (name, sql) in SHIPPED_QUERIES {
        let plan = plan_query(sql)?;
        out.measure(&format!("operator only: {name}"), 1, || {
            let mut op = build_operator(&plan)?;
            let mut o = OperatorOutput::default();
            for (ev, wm) in &batches {
                op.process(ev, &mut o)?;
                op.advance_watermark(*wm, &mut o)?;
                o.results.clear();
            }
            op.finish(&mut o)?;
            Ok(events)
        })?;
    }
    drop(batches);
    for &w in &opts.workers {
        out.measure("baseline: replay `SELECT event_id WHERE false`", w, || {
            let plan = plan_query("SELECT event_id FROM payments WHERE amount_minor < 0")?;
            Ok(replay_counting(input, &plan, w)?.read)
        })?;
        for (name, sql) in SHIPPED_QUERIES {
            out.measure(name, w, || {
                let plan = plan_query(sql)?;
                Ok(replay_counting(input, &plan, w)?.read)
            })?;
        }
        for (name, sql) in LIBRARY_QUERIES {
            out.measure(name, w, || {
                let file = parse_replay_query(sql)?;
                let plan = file
                    .with_settings(plan_query(&file.select)?)
                    .map_err(|message| paystream::Error::Plan {
                        position: name.to_string(),
                        message,
                    })?;
                Ok(replay_counting(input, &plan, w)?.read)
            })?;
        }
    }
    Ok(out.out)
}

/// Runs the measurements `--only` selects, each best of `--repeat`.
struct Runner<'a> {
    opts: &'a BenchOptions,
    out: Vec<Measurement>,
}

impl Runner<'_> {
    fn measure(
        &mut self,
        name: &str,
        workers: usize,
        mut f: impl FnMut() -> Result<u64>,
    ) -> Result<()> {
        if self.opts.wants(name) {
            let m = measure_best(name, workers, self.opts.repeat.max(1), || Ok((f()?, ())))?;
            self.out.push(m);
        }
        Ok(())
    }
}

/// The file's events after decode, dedup and watermarking, with the watermark after each batch.
fn accepted_batches(path: &Path) -> Result<Vec<(EventBatch, i64)>> {
    let mut router = Router::new(Dedup::new(3_600_000), Watermark::new(5_000, 300_000));
    let mut out = Vec::new();
    let mut err = None;
    for_each_chunk(path, |chunk, line| {
        for b in decode_json_lines(chunk, line, 8192).batches {
            let mut rejects = Vec::new();
            match router.accept(0, &b, |_| String::new(), &mut rejects) {
                Ok(Some(ev)) => out.push((ev, router.watermark.current())),
                Ok(None) => {}
                Err(e) => err = Some(e),
            }
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Reads `path` in chunks cut at line ends, as the engine's reader does.
pub fn for_each_chunk(path: &Path, mut f: impl FnMut(&[u8], u64)) -> Result<()> {
    use std::io::Read;
    let err = |e: std::io::Error| paystream::Error::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let chunk = paystream::source::READ_CHUNK;
    let mut buf = Vec::with_capacity(2 * chunk);
    let mut line = 1u64;
    loop {
        // Into the spare capacity, as the engine's reader does: `resize` zeroed each chunk first.
        let n = (&mut file)
            .take(chunk as u64)
            .read_to_end(&mut buf)
            .map_err(err)?;
        let cut = if n == 0 {
            buf.len()
        } else {
            memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1)
        };
        f(&buf[..cut], line);
        line += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
        buf.drain(..cut);
        if n == 0 {
            return Ok(());
        }
    }
}

/// Replays `input` through `plan` on `workers` workers, every output discarded.
pub fn replay_counting(
    input: &std::path::Path,
    plan: &paystream::sql::StreamPlan,
    workers: usize,
) -> Result<paystream::engine::Summary> {
    let mut spec = RunSpec::single(Arc::new(FileSource::new(input)), plan, Box::new(NullSink));
    spec.options.workers = workers;
    Ok(paystream::engine::run(spec, Arc::default(), Arc::default())?.summary)
}

/// Formats the report as a table, with each query's ratio to the decode baseline.
pub fn report(ms: &[Measurement]) -> String {
    let base = ms
        .iter()
        .find(|m| m.name.starts_with("baseline: read + decode"))
        .map(Measurement::per_cpu_sec);
    let mut s = format!(
        "{:<52} {:>7} {:>10} {:>8} {:>8} {:>14} {:>14} {:>9}\n",
        "measurement",
        "workers",
        "events",
        "wall s",
        "cpu s",
        "events/s",
        "events/cpu-s",
        "vs decode"
    );
    for m in ms {
        s.push_str(&format!(
            "{:<52} {:>7} {:>10} {:>8.3} {:>8.3} {:>14.0} {:>14.0} {:>9}\n",
            m.name,
            m.workers,
            m.events,
            m.wall,
            m.cpu,
            m.per_sec(),
            m.per_cpu_sec(),
            base.map_or("-".into(), |b| format!("{:.2}x", m.per_cpu_sec() / b))
        ));
    }
    s
}
