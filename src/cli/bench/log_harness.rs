//! Log measurements: producing into and consuming from the embedded log, beside same-run
//! baselines of writing and reading the same bytes with plain buffered file I/O, and a
//! continuous query from a topic beside the same query replayed from the file.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::harness::{Measurement, for_each_chunk, measure, measure_best, replay_counting};
use paystream::engine::{OnStop, QueryRun, RunSpec};
use paystream::error::{Error, Result};
use paystream::log::{FsyncPolicy, Log, Producer, StartAt, TopicConfig, TopicConsumer};
use paystream::sink::NullSink;
use paystream::source::LogSource;
use paystream::sql::plan_query;

/// Partitions of the benchmark topic.
pub const PARTITIONS: u32 = 8;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Produces `input` (JSON Lines) into an 8-partition topic and consumes it back; then runs
/// settlement_per_minute over the topic and over the file, per worker count.
pub fn run(input: &Path, workers: &[usize], repeat: usize) -> Result<Vec<Measurement>> {
    let dir = tempfile_dir()?;
    let data = dir.join("log");
    let _ = std::fs::remove_dir_all(&data);
    let plain = dir.join("plain.jsonl");
    let _ = std::fs::remove_file(&plain);
    let mut out = Vec::new();

    // Producing: both sides read the file in 1 MiB chunks, as `paystream produce FILE` does, and
    // write into files that do not exist yet; both end durable (sync).
    settle();
    out.push(measure(
        "baseline: buffered write, line by line",
        1,
        || {
            let f = std::fs::File::create(&plain).map_err(io_err(&plain))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let (mut lines, mut err) = (0u64, None);
            for_each_chunk(input, |chunk, _| {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', chunk) {
                    if let Err(e) = w.write_all(&chunk[start..=end]) {
                        err = Some(e);
                    }
                    start = end + 1;
                    lines += 1;
                }
            })?;
            if let Some(e) = err {
                return Err(io_err(&plain)(e));
            }
            let f = w.into_inner().map_err(|e| io_err(&plain)(e.into_error()))?;
            f.sync_data().map_err(io_err(&plain))?;
            Ok((lines, ()))
        },
    )?);
    let log = Log::new(&data);
    log.create_topic(
        "payments",
        &TopicConfig {
            partitions: PARTITIONS,
            ..TopicConfig::default()
        },
    )?;
    settle();
    out.push(measure(
        "produce into 8 partitions (key card_id)",
        1,
        || {
            let w = log.writer("payments", FsyncPolicy::Interval(Duration::from_secs(1)))?;
            let mut p = Producer::new(w, Some("card_id"));
            let mut err = None;
            for_each_chunk(input, |chunk, _| {
                if let Err(e) = p.send_json_lines(chunk, 1, &mut |_| {}) {
                    err = Some(e);
                }
            })?;
            if let Some(e) = err {
                return Err(e.into());
            }
            let n = p.produced();
            p.finish()?;
            Ok((n, ()))
        },
    )?);
    settle();

    // Consuming: every record's value, one at a time.
    out.push(measure("baseline: buffered read, line by line", 1, || {
        let f = std::fs::File::open(&plain).map_err(io_err(&plain))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut line = Vec::with_capacity(1024);
        let (mut n, mut sum) = (0u64, 0u64);
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).map_err(io_err(&plain))? == 0 {
                break;
            }
            n += 1;
            sum += line.len() as u64;
        }
        std::hint::black_box(sum);
        Ok((n, ()))
    })?);
    out.push(measure("consume all 8 partitions", 1, || {
        let mut c = TopicConsumer::open(&log, "payments", &StartAt::Earliest)?;
        let (mut n, mut sum) = (0u64, 0u64);
        while c.poll(|_, r| {
            n += 1;
            sum += r.value.len() as u64;
        })? > 0
        {}
        std::hint::black_box(sum);
        Ok((n, ()))
    })?);

    // A continuous query from the topic against the same query replayed from the file.
    let (name, sql) = paystream::sql::SHIPPED_QUERIES[0];
    let plan = plan_query(sql)?;
    for &w in workers {
        // Best of `repeat` runs each, like the query suite: a first run right after `produce`
        // also pays for the page cache settling.
        out.push(measure_best(
            &format!("replay from file: {name}"),
            w,
            repeat,
            || Ok((replay_counting(input, &plan, w)?.read, ())),
        )?);
        out.push(measure_best(
            &format!("run from topic: {name}"),
            w,
            repeat,
            || {
                let source = LogSource::new(log.clone(), "payments").until_end(true);
                let q = QueryRun {
                    name: name.into(),
                    plan: plan.clone(),
                    results: Box::new(NullSink),
                };
                let mut spec = RunSpec::new(Arc::new(source), vec![q]);
                spec.options.workers = w;
                spec.on_stop = OnStop::Snapshot;
                let o =
                    paystream::engine::run(spec, Arc::default(), Arc::new(AtomicBool::new(false)))?;
                Ok((o.summary.read, ()))
            },
        )?);
    }
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&plain);
    Ok(out)
}

/// Flushes every dirty page of the machine, so one measurement's writeback does not land on the
/// next one's clock.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join("paystream-bench");
    std::fs::create_dir_all(&d).map_err(io_err(&d))?;
    Ok(d)
}
