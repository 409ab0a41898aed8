//! `paystream bench`: the throughput harness over a generated (or given) event file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use paystream::generate::{GenConfig, generate};

pub(crate) mod harness;
mod http;
pub(crate) mod log_harness;
mod serve_harness;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Events in the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Worker counts to measure, comma-separated.
    #[arg(long, default_value = "1,2")]
    workers: String,
    /// Use this JSON Lines file instead of generating one.
    #[arg(long)]
    input: Option<PathBuf>,
    /// What to measure: queries (replay), log (produce, consume, run from a topic), serve (a
    /// server on loopback: ingest over HTTP with 8 clients, the latency from a post to its
    /// window's row over SSE at 10,000 events/s, 200 SSE subscribers and a stalled one), or all.
    #[arg(long, default_value = "all")]
    suite: String,
    /// Runs of each query measurement; the report keeps the one with the least CPU time
    /// (the machine's noise only ever adds time).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Only the query-suite measurements whose name contains this text (e.g. `operator only`,
    /// `card_velocity`, `baseline`).
    #[arg(long)]
    only: Option<String>,
}

pub(crate) fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let workers: Vec<usize> = a
        .workers
        .split(',')
        .map(|w| w.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .with_context(|| format!("invalid --workers {:?}: use e.g. 1,2", a.workers))?;
    // Check every argument before the minute of generating input.
    match a.suite.as_str() {
        "all" | "queries" | "log" | "serve" => {}
        other => bail!("unknown --suite {other:?}: use all, queries, log or serve"),
    }
    // A generated input is removed when the bench ends, however it ends.
    let mut generated = None;
    let input = match a.input {
        Some(p) => p,
        None => {
            let p =
                tempfile_dir()?.join(format!("bench-{}-{}.jsonl", a.events, std::process::id()));
            eprintln!(
                "generating {} events into {} (removed afterwards; pass --input FILE to reuse one) ...",
                a.events,
                p.display()
            );
            let file = RemoveOnDrop(p.clone());
            let cfg = GenConfig {
                events: a.events,
                ..GenConfig::default()
            };
            let mut w = std::io::BufWriter::new(std::fs::File::create(&p)?);
            generate(&cfg, &mut w)?;
            std::io::Write::flush(&mut w)?;
            generated = Some(file);
            p
        }
    };
    eprintln!("measuring over {} ...", input.display());
    let mut ms = Vec::new();
    let runs = |suite: &str| a.suite == "all" || a.suite == suite;
    if runs("queries") {
        let opts = harness::BenchOptions {
            workers: workers.clone(),
            repeat: a.repeat.max(1),
            only: a.only.clone(),
        };
        ms.extend(harness::run(&input, &opts)?);
    }
    if runs("log") {
        ms.extend(log_harness::run(&input, &workers, a.repeat.max(1))?);
    }
    let mut notes = Vec::new();
    if runs("serve") {
        let r = serve_harness::run(&input)?;
        ms.extend(r.measurements);
        notes = r.lines;
    }
    if ms.is_empty() {
        bail!(
            "no measurement matches --only {:?}; names contain e.g. `baseline`, `decode`, `operator only`, `settlement_per_minute`, `card_velocity`, `card_sessions`",
            a.only.unwrap_or_default()
        );
    }
    print!("{}", harness::report(&ms));
    for n in notes {
        println!("{n}");
    }
    drop(generated);
    Ok(())
}

/// Removes a file the command created when dropped (on success and on error alike).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join("paystream-bench");
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}
