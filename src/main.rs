//! The `paystream` command line: a thin layer over the library; `anyhow` lives only here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod cli;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use paystream::engine::defaults;
use paystream::generate::{GenConfig, Lifecycle, generate};
use paystream::sink::{NullSink, Sink, WriterSink};
use paystream::time::{parse_duration_millis, parse_rfc3339_millis};
use paystream::{FileSource, Format, Progress, RunOptions, RunSpec, plan_query};

/// paystream: event-time windowed stream SQL over payment events.
#[derive(Parser)]
#[command(name = "paystream", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    data: cli::log_cmds::DataDir,
}

#[derive(Subcommand)]
enum Command {
    /// Replay an event file (JSON Lines, CSV with header, or Parquet) through a stream query.
    ///
    /// Results are written as JSON Lines, one object per row, when each window closes (the
    /// watermark passes its end) and for all open windows at the end of the file.
    Replay(ReplayArgs),
    /// Write deterministic synthetic payment events as JSON Lines, CSV or Parquet.
    ///
    /// The same seed gives the same events in every format: replaying the CSV or Parquet gives
    /// the results and counts of replaying the JSON Lines. Malformed records (--malformed) are
    /// written in each format as records `replay` dead-letters; Parquet's typed columns cannot
    /// hold every JSON mistake, so some of its rows are rejected for another reason (a null
    /// instead of a string amount, for one).
    Gen(GenArgs),
    /// Produce generated events into a topic and run the shipped queries live over it (no setup).
    Demo(cli::demo::DemoArgs),
    /// Measure throughput: each shipped query over a generated file, beside same-run baselines.
    Bench(BenchArgs),
    /// Manage topics of the embedded log: create, describe, list.
    Topic {
        #[command(subcommand)]
        command: cli::log_cmds::TopicCommand,
    },
    /// Append JSON Lines (a file or standard input) to a topic, one record per line.
    ///
    /// Each record's key is a JSON field (`card_id` by default), so every card's events stay in
    /// order in one partition; its timestamp is its `event_time`. Records are not validated
    /// here: the query reading the topic dead-letters invalid ones.
    Produce {
        #[command(flatten)]
        args: cli::log_cmds::ProduceArgs,
    },
    /// Run a query file continuously: read its source topic, write results to its sink topics.
    ///
    /// Checkpoints every 10 s (--checkpoint-interval); results reach read_committed consumers
    /// when their checkpoint completes, exactly once. Runs until Ctrl-C or SIGTERM, then stops
    /// with a final checkpoint; the next run of the same file resumes from the latest one, also
    /// after a crash. Prints a status line every 5 s on stderr (--quiet: none); `paystream
    /// status` shows it from another shell. Result records in sink topics are stamped with the
    /// event time they stand for (a window's end), so `consume --from TIME` finds them by it.
    Run {
        #[command(flatten)]
        args: cli::run_cmd::RunArgs,
    },
    /// Take a savepoint of a job: a named checkpoint to resume from with `run --from-savepoint`.
    ///
    /// A running job is asked (SIGUSR1) to take one at its next barrier; for a stopped job the
    /// latest checkpoint becomes the savepoint. Prints the savepoint's name.
    Savepoint {
        #[command(flatten)]
        args: cli::run_cmd::SavepointArgs,
    },
    /// Show the jobs of the data directory: running or stopped, events/s, watermark, lag,
    /// results, dead letters, late events and the last checkpoint.
    Status {
        #[command(flatten)]
        args: cli::run_cmd::StatusArgs,
    },
    /// Print a topic's records, one value a line; tails new records until Ctrl-C.
    Consume {
        #[command(flatten)]
        args: cli::log_cmds::ConsumeArgs,
    },
    /// Consumer groups of a topic: list them with their lag, or reset their offsets.
    Group {
        #[command(subcommand)]
        command: cli::log_cmds::GroupCommand,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Events in the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Worker counts to measure, comma-separated.
    #[arg(long, default_value = "1,2")]
    workers: String,
    /// Use this JSON Lines file instead of generating one.
    #[arg(long)]
    input: Option<PathBuf>,
    /// What to measure: queries (replay), log (produce, consume, run from a topic), or all.
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

#[derive(clap::Args)]
struct ReplayArgs {
    /// The event file; `-` reads standard input (JSON Lines unless `--format csv`).
    file: PathBuf,
    /// The SQL file holding the stream query (reads the stream `payments`).
    #[arg(long, short, required_unless_present = "into", conflicts_with = "into")]
    query: Option<PathBuf>,
    /// Instead of running a query, load the file into this topic of the embedded log (JSON
    /// Lines as they are; CSV and Parquet rows as JSON events, invalid rows to --dead-letter).
    #[arg(long, value_name = "TOPIC")]
    into: Option<String>,
    /// Result file (JSON Lines); standard output when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// File for rejected records: reason, detail, file and line, redacted raw record.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// File for late events (arrived after their window fired).
    #[arg(long)]
    late: Option<PathBuf>,
    /// Bounded out-of-orderness: watermark = max event time seen - delay.
    #[arg(long, default_value = defaults::WATERMARK_DELAY_TEXT)]
    watermark_delay: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// `max`, or N to replay N times faster than event time (for demos).
    #[arg(long, default_value = "max")]
    speed: String,
    /// Input format when the extension does not tell: json, csv or parquet.
    #[arg(long)]
    format: Option<String>,
    /// Rows per batch.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    batch_size: usize,
    /// How long (in event time) event ids are remembered for deduplication.
    #[arg(long, default_value = defaults::DEDUP_TTL_TEXT)]
    dedup_ttl: String,
    /// Event times further than this ahead of the watermark are dead-lettered.
    #[arg(long, default_value = defaults::MAX_SKEW_TEXT)]
    max_skew: String,
    /// Fail (exit 1) when more than 1% of the records were dead-lettered or late, instead of
    /// only warning.
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Number of records to write (lines; rows of Parquet), duplicates and malformed included.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Random seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file; standard output when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Output format: json (JSON Lines), csv (with a header row) or parquet. Default: from the
    /// --output extension (.jsonl, .json, .csv, .parquet), else json. Parquet needs --output or
    /// a redirected standard output: it is binary and its footer is written last.
    #[arg(long)]
    format: Option<String>,
    /// Event time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    start: String,
    /// New authorizations per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Number of merchants.
    #[arg(long, default_value_t = 200)]
    merchants: u32,
    /// Number of cards.
    #[arg(long, default_value_t = 50_000)]
    cards: u32,
    /// Maximum out-of-order delivery delay.
    #[arg(long, default_value = "2s")]
    disorder: String,
    /// Fraction of events delivered twice (delayed duplicates).
    #[arg(long, default_value_t = 0.005)]
    duplicates: f64,
    /// Fraction of records that are malformed or invalid.
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// When (after --start) a merchant's volume spikes for a minute; `none` to disable.
    #[arg(long, default_value = "10m")]
    spike_at: String,
    /// Lifecycle lags: fast (seconds, for tests and demos) or realistic (minutes to days).
    #[arg(long, default_value = "fast")]
    lifecycle: String,
}

/// mimalloc instead of glibc malloc: batches are freed on other threads than the ones that
/// allocated them, and glibc's arena locks showed up as futex waits in profiles. Its v2 line
/// (the `v2` feature), whose per-thread segments hand freed memory back out sooner than v3's
/// shared arenas: card_velocity touched less fresh memory (page faults 2,040 → 1,670 per 1 M
/// events) and took 3–5 % less CPU, settlement the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's `mi_option_set`.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` (index 15 of `mi_option_e` in both mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc returns freed pages to the OS after 10 ms by default; the engine frees and
/// reallocates megabytes of batches every few milliseconds, so pages were faulted in and zeroed
/// over and over (`clear_page_erms` was 9 % of a replay's profile, sys time 0.13–0.27 s per 1 M
/// events). Keeping freed memory for a second cuts sys time to 0.05–0.07 s and still gives it
/// back when the load drops. `MIMALLOC_PURGE_DELAY` overrides this.
fn tune_allocator() {
    // mimalloc has read its options by now (at the first allocation), so set it outright.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options atomically.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

fn duration(what: &str, s: &str) -> anyhow::Result<i64> {
    parse_duration_millis(s).map_err(|e| anyhow::anyhow!("invalid {what}: {e}"))
}

fn main() {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    quiet_on_closed_stdout(&cli.command);
    let r = match cli.command {
        Command::Replay(a) => replay(a, &cli.data),
        Command::Gen(a) => gen_cmd(a),
        Command::Demo(a) => cli::demo::demo(&cli.data, a),
        Command::Bench(a) => bench(a),
        Command::Topic { command } => cli::log_cmds::topic(&cli.data, command),
        Command::Produce { args } => cli::log_cmds::produce(&cli.data, args),
        Command::Consume { args } => cli::log_cmds::consume(&cli.data, args),
        Command::Group { command } => cli::log_cmds::group(&cli.data, command),
        Command::Run { args } => cli::run_cmd::run(&cli.data, args),
        Command::Savepoint { args } => cli::run_cmd::savepoint(&cli.data, args),
        Command::Status { args } => cli::run_cmd::status(&cli.data, args),
    };
    if let Err(e) = r {
        if e.downcast_ref::<Interrupted>().is_some() {
            std::process::exit(130);
        }
        if is_broken_pipe(&e) {
            // The reader of our output went away (`| head`): nothing more to say.
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// What a shell reports for a process ended by SIGPIPE (128 + 13), as for `seq 1e9 | head -1`.
const EXIT_BROKEN_PIPE: i32 = 141;

/// A closed standard output ends a command quietly, as coreutils do: SIGPIPE takes its default
/// action (Rust ignores it, so `println!` would panic). `consume` and `run` keep it ignored and
/// handle the write error themselves: `consume` commits its group's offsets for what it
/// printed, and a continuous job must stop through its checkpoint path, never mid-write.
fn quiet_on_closed_stdout(command: &Command) {
    if matches!(command, Command::Consume { .. } | Command::Run { .. }) {
        return;
    }
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether an error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe")
    })
}

/// Runs `listen` on a small runtime of its own thread: the binary's signal handling.
fn on_signals<F: std::future::Future<Output = ()>>(listen: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(listen());
        }
    });
}

/// Sets the returned flag on Ctrl-C or SIGTERM: the run stops reading and drains cleanly.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    on_signals(move || async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

fn output_sink(option: &str, path: Option<&Path>) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match path {
        Some(p) => Box::new(WriterSink::create(option, p)?),
        None => Box::new(NullSink),
    })
}

/// Where `-` (standard input) is read from: the process's own stdin as a file, so the reader
/// needs no second code path.
const STDIN_PATH: &str = "/dev/stdin";

fn replay(mut a: ReplayArgs, data: &cli::log_cmds::DataDir) -> anyhow::Result<()> {
    if a.file.as_os_str() == "-" {
        match a.format.as_deref() {
            Some("parquet") => bail!(
                "Parquet cannot be read from standard input (its footer is at the end): pass the file's path"
            ),
            None => a.format = Some("json".into()),
            Some(_) => {}
        }
        a.file = PathBuf::from(STDIN_PATH);
    }
    let Some(query) = &a.query else {
        let topic = a.into.as_deref().expect("clap requires --query or --into");
        return cli::log_cmds::load_file(
            data,
            &a.file,
            a.format.as_deref(),
            topic,
            a.dead_letter.as_deref(),
            a.strict,
        );
    };
    let sql = std::fs::read_to_string(query)
        .with_context(|| format!("cannot read the query file {}", query.display()))?;
    let mut opts = RunOptions::default();
    let mut format = None;
    opts.watermark_delay = duration("--watermark-delay", &a.watermark_delay)?;
    opts.dedup_ttl = duration("--dedup-ttl", &a.dedup_ttl)?;
    opts.max_skew = duration("--max-skew", &a.max_skew)?;
    paystream::operators::check_max_skew(
        opts.watermark_delay,
        opts.max_skew,
        "--watermark-delay",
        "--max-skew",
    )?;
    let plan = plan_query(&sql)
        .with_context(|| format!("in {}", query.display()))?
        .named(format!("the query in {}", query.display()));
    if let Some(w) = a.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        opts.workers = w;
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    opts.batch_size = a.batch_size;
    opts.speed = match a.speed.as_str() {
        "max" => None,
        n => Some(
            n.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0)
                .with_context(|| {
                    format!("invalid --speed {n:?}: use `max` or a positive number")
                })?,
        ),
    };
    if let Some(f) = &a.format {
        format = Some(
            Format::from_name(f)
                .with_context(|| format!("unknown --format {f:?}: use json, csv or parquet"))?,
        );
    }
    if !a.file.exists() {
        bail!(
            "the event file {} does not exist (use `-` for standard input)",
            a.file.display()
        );
    }
    let results: Box<dyn Sink> = match &a.output {
        Some(p) => Box::new(WriterSink::create("--output", p)?),
        None => Box::new(WriterSink::stdout()),
    };
    let source = FileSource::new(&a.file).format(format);
    let mut spec = RunSpec::single(Arc::new(source), &plan, results);
    spec.dead_letter = output_sink("--dead-letter", a.dead_letter.as_deref())?;
    spec.late = output_sink("--late", a.late.as_deref())?;
    spec.options = opts;
    let total = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let stop = stop_on_signal();
    let summary = with_progress(total, |progress| {
        paystream::engine::run(spec, progress, Arc::clone(&stop)).map(|o| o.summary)
    })?;
    let hints = cli::surprises::Hints {
        dead_letters: match &a.dead_letter {
            Some(p) => format!("They are in {} with reason and line.", p.display()),
            None => {
                "Re-run with --dead-letter FILE to see each one with its reason and line.".into()
            }
        },
        late: format!(
            "Their event times were behind the watermark (the latest event time seen minus --watermark-delay, {}): if the file is far out of order, raise --watermark-delay; {}",
            a.watermark_delay,
            match &a.late {
                Some(p) => format!("they are in {}.", p.display()),
                None => "--late FILE lists them.".into(),
            }
        ),
    };
    finish_summary(summary.line(), &stop)?;
    cli::surprises::report(&summary, &hints, a.strict)
}

/// A command stopped by Ctrl-C or SIGTERM before its input ended: its summary says
/// `interrupted=true` and it exits 130, so a script can tell it from a complete run.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// Prints a summary line, marked `interrupted=true` (and an [`Interrupted`] error, exit 130)
/// when a signal stopped the command early.
fn finish_summary(line: String, stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        eprintln!("{line} interrupted=true");
        return Err(Interrupted.into());
    }
    eprintln!("{line}");
    Ok(())
}

/// Runs `f` with a progress bar on stderr when it is a terminal.
fn with_progress<T>(
    total: u64,
    f: impl FnOnce(Arc<Progress>) -> paystream::Result<T> + Send,
) -> anyhow::Result<T>
where
    T: Send,
{
    let progress = Arc::new(Progress::default());
    if !std::io::stderr().is_terminal() {
        return Ok(f(progress)?);
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    let done = Arc::new(AtomicBool::new(false));
    let r = std::thread::scope(|s| {
        let (p, d, b) = (Arc::clone(&progress), Arc::clone(&done), bar.clone());
        s.spawn(move || {
            while !d.load(Ordering::Relaxed) {
                b.set_position(p.bytes_read.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = f(Arc::clone(&progress));
        done.store(true, Ordering::Relaxed);
        r
    });
    bar.finish_and_clear();
    Ok(r?)
}

fn gen_config(a: &GenArgs) -> anyhow::Result<GenConfig> {
    Ok(GenConfig {
        events: a.events,
        seed: a.seed,
        start: parse_rfc3339_millis(&a.start).with_context(|| {
            format!(
                "invalid --start {:?}: use RFC 3339, e.g. 2026-11-01T00:00:00Z",
                a.start
            )
        })?,
        rate: a.rate,
        merchants: a.merchants.max(1),
        cards: a.cards.max(1),
        disorder_ms: duration("--disorder", &a.disorder)?,
        duplicate_rate: a.duplicates.clamp(0.0, 1.0),
        malformed_rate: a.malformed.clamp(0.0, 1.0),
        spike_at_ms: match a.spike_at.as_str() {
            "none" => None,
            s => Some(duration("--spike-at", s)?),
        },
        lifecycle: match a.lifecycle.as_str() {
            "fast" => Lifecycle::Fast,
            "realistic" => Lifecycle::Realistic,
            other => bail!("unknown --lifecycle {other:?}: use fast or realistic"),
        },
    })
}

fn gen_cmd(a: GenArgs) -> anyhow::Result<()> {
    // What `replay` would read the output as: an explicit --format that contradicts the
    // extension would give a file replay then misreads, so it is refused.
    let by_extension = a.output.as_deref().and_then(Format::from_path);
    let format = match a.format.as_deref() {
        Some(f) => {
            let format = Format::from_name(f)
                .with_context(|| format!("unknown --format {f:?}: use json, csv or parquet"))?;
            if let (Some(p), Some(ext)) = (&a.output, by_extension)
                && ext != format
            {
                let name = match ext {
                    Format::JsonLines => "json",
                    Format::Csv => "csv",
                    Format::Parquet => "parquet",
                };
                bail!(
                    "--format {f} contradicts the extension of {}, which replay reads as {name}: \
                     change one of them",
                    p.display()
                );
            }
            format
        }
        None => by_extension.unwrap_or(Format::JsonLines),
    };
    if format == Format::Parquet && a.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "Parquet is binary and cannot be written to a terminal: pass --output FILE.parquet \
             (or redirect standard output to a file)"
        );
    }
    let cfg = gen_config(&a)?;
    let stats = match &a.output {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let mut w = std::io::BufWriter::new(f);
            let s = paystream::generate::generate_as(&cfg, format, &mut w)?;
            std::io::Write::flush(&mut w)?;
            s
        }
        None => {
            // `Stdout`, not its lock: the Parquet writer needs a `Send` destination.
            let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            let s = paystream::generate::generate_as(&cfg, format, &mut w)?;
            std::io::Write::flush(&mut w)?;
            s
        }
    };
    eprintln!(
        "generated lines={} events={} duplicates={} malformed={}",
        stats.lines, stats.events, stats.duplicates, stats.malformed
    );
    Ok(())
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let workers: Vec<usize> = a
        .workers
        .split(',')
        .map(|w| w.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .with_context(|| format!("invalid --workers {:?}: use e.g. 1,2", a.workers))?;
    // Check every argument before the minute of generating input.
    match a.suite.as_str() {
        "all" | "queries" | "log" => {}
        other => bail!("unknown --suite {other:?}: use all, queries or log"),
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
    if a.suite != "log" {
        let opts = paystream::throughput::BenchOptions {
            workers: workers.clone(),
            repeat: a.repeat.max(1),
            only: a.only.clone(),
        };
        ms.extend(paystream::throughput::run(&input, &opts)?);
    }
    if a.suite != "queries" {
        ms.extend(paystream::throughput::log::run(
            &input,
            &workers,
            a.repeat.max(1),
        )?);
    }
    if ms.is_empty() {
        bail!(
            "no measurement matches --only {:?}; names contain e.g. `baseline`, `decode`, `operator only`, `settlement_per_minute`, `card_velocity`, `card_sessions`",
            a.only.unwrap_or_default()
        );
    }
    print!("{}", paystream::throughput::report(&ms));
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
