//! `paystream run QUERYFILE`: a query file's INSERTs, continuously, until Ctrl-C or SIGTERM;
//! `paystream savepoint JOB`: a named snapshot of a running (or stopped) job;
//! `paystream status [JOB]`: what the jobs of a data directory are doing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paystream::checkpoint::CheckpointStore;
use paystream::job::savepoint::{SavepointWait, await_savepoint};
use paystream::job::status::{JobStatus, StatusProbe, jobs};
use paystream::job::{Job, JobOptions, SinkReset, state_dir};
use paystream::log::Log;

use super::surprises::{Hints, report};
use paystream::time::parse_duration_millis;

use super::log_cmds::{DataDir, fsync_policy};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The query file: CREATE SOURCE, CREATE SINK, SET and INSERT INTO … SELECT statements.
    query_file: PathBuf,
    /// Workers per query (default: as in the restored checkpoint, else all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Stop at the source topic's current end and emit the windows still open (for scripts),
    /// instead of running until Ctrl-C / SIGTERM.
    #[arg(long)]
    until_end: bool,
    /// Ignore checkpoints of previous runs of this query file; start from the earliest offsets.
    /// When the job already committed results to its sinks, say what to do with them:
    /// --truncate-sinks or --keep-sinks.
    #[arg(long)]
    reset_state: bool,
    /// With --reset-state: empty the job's sinks first (its result topics and part files; a
    /// topic another job also writes is kept).
    #[arg(long, requires = "reset_state", conflicts_with_all = ["keep_sinks", "from_savepoint"])]
    truncate_sinks: bool,
    /// With --reset-state: keep what the sinks hold and append the recomputed results.
    #[arg(long, requires = "reset_state", conflicts_with = "from_savepoint")]
    keep_sinks: bool,
    /// No status line on stderr while the job runs.
    #[arg(long, short)]
    quiet: bool,
    /// How often the status line is printed (and `paystream status` updated).
    #[arg(long, default_value = "5s")]
    status_every: String,
    /// Fail (exit 1) when more than 1% of the records were dead-lettered or late, instead of
    /// only warning.
    #[arg(long)]
    strict: bool,
    /// Durability of the sink topics between checkpoints: always, interval or never.
    #[arg(long, default_value = "interval")]
    fsync: String,
    /// Take a checkpoint this often (default: `SET checkpoint_interval` in the file, else 10s).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Where checkpoints are kept: a directory, file:// URL or s3://bucket/prefix (AWS_*
    /// variables configure S3, e.g. AWS_ENDPOINT for MinIO; default:
    /// <data-dir>/_queries/<job>/checkpoints).
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Start from this savepoint (see `paystream savepoint`) instead of the latest checkpoint.
    #[arg(long)]
    from_savepoint: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct SavepointArgs {
    /// The job: the query file's name without `.sql` (e.g. risk_pipeline).
    job: String,
    /// Where the job keeps checkpoints, if not the default.
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// List the job's savepoints (names for `run --from-savepoint`) instead of taking one.
    #[arg(long)]
    list: bool,
}

fn pid_file(data: &Path, job: &str) -> PathBuf {
    state_dir(data, job).join("pid")
}

/// SIGUSR1 asks a running job for a savepoint.
/// Takes the job's lock (`<data-dir>/_queries/<job>/job.lock`), held until the returned file is
/// dropped; a job already running elsewhere is an error naming its pid.
fn lock_job(data: &Path, job: &str) -> anyhow::Result<std::fs::File> {
    let dir = state_dir(data, job);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("job.lock");
    let lock = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(pid_file(data, job)).unwrap_or_default();
            bail!(
                "job {job} is already running{} in {}; stop it first (Ctrl-C or `kill -TERM`), or run the query file under another name",
                match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                },
                data.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub(crate) fn run(data: &DataDir, a: RunArgs) -> anyhow::Result<()> {
    if a.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let mut opts = JobOptions::new(&data.data_dir);
    opts.workers = a.workers;
    opts.until_end = a.until_end;
    opts.reset_state = a.reset_state;
    opts.sink_reset = match (a.truncate_sinks, a.keep_sinks) {
        (true, _) => Some(SinkReset::Truncate),
        (_, true) => Some(SinkReset::Keep),
        _ => None,
    };
    let status_every = Duration::from_millis(
        parse_duration_millis(&a.status_every)
            .map_err(|e| anyhow::anyhow!("invalid --status-every: {e}"))?
            .max(100) as u64,
    );
    opts.fsync = fsync_policy(&a.fsync)?;
    opts.checkpoint_location = a.checkpoint_dir.clone();
    opts.from_savepoint = a.from_savepoint.clone();
    opts.checkpoint_interval = match &a.checkpoint_interval {
        Some(s) => Some(Duration::from_millis(
            parse_duration_millis(s)
                .map_err(|e| anyhow::anyhow!("invalid --checkpoint-interval: {e}"))?
                .max(1) as u64,
        )),
        None => None,
    };
    // The first listener decides: `run` also takes SIGUSR1 (a savepoint request).
    let signals = super::signals::listen(true);
    // Parsed, planned and checked before anything is locked, written or opened: one job per
    // set of sources the file's queries read.
    let prepared = Job::from_file_per_source(&a.query_file)
        .with_context(|| format!("running {}", a.query_file.display()))?;
    let several = prepared.len() > 1;
    if several && opts.from_savepoint.is_some() {
        bail!(
            "--from-savepoint restores one job, and {} runs as several ({}: one per set of sources its queries read); run each job's queries from a file of their own to start one from a savepoint",
            a.query_file.display(),
            prepared
                .iter()
                .map(Job::name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let names: Vec<String> = prepared.iter().map(|j| j.name().to_string()).collect();
    // One process per job: the lock is held for the whole run, and only its holder writes
    // (and later removes) the pid file, so a refused second run leaves the first one's alone.
    // Every lock first: a job already running elsewhere leaves no pid file of ours behind.
    let locks = names
        .iter()
        .map(|job| lock_job(&data.data_dir, job))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for job in &names {
        let pid = pid_file(&data.data_dir, job);
        std::fs::write(&pid, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", pid.display()))?;
    }
    if !a.until_end {
        let jobs = match several {
            false => format!("job {}", names[0]),
            true => format!(
                "jobs {} (one per set of sources its queries read)",
                names.join(", ")
            ),
        };
        eprintln!(
            "running {} as {jobs} (data dir {}); Ctrl-C or SIGTERM stops it cleanly, `paystream savepoint {}` snapshots it",
            a.query_file.display(),
            data.data_dir.display(),
            names[0]
        );
    }
    // SIGUSR1 asks every job for a savepoint: each has its own flag, which it clears.
    let requests: Vec<Arc<AtomicBool>> = names.iter().map(|_| Arc::default()).collect();
    let forwarding = Arc::new(AtomicBool::new(true));
    let forwarder = {
        let (requests, forwarding) = (requests.clone(), Arc::clone(&forwarding));
        std::thread::spawn(move || {
            while forwarding.load(Ordering::Relaxed) {
                if signals.savepoint.swap(false, Ordering::Relaxed) {
                    for r in &requests {
                        r.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut running = Vec::with_capacity(prepared.len());
    for (job, request) in prepared.into_iter().zip(requests) {
        let mut opts = opts.clone();
        opts.savepoint_request = Some(request);
        if several && let Some(dir) = &opts.checkpoint_location {
            // Each job keeps its checkpoints apart.
            opts.checkpoint_location =
                Some(format!("{}/{}", dir.trim_end_matches('/'), job.name()));
        }
        let name = job.name().to_string();
        let topics = job
            .source_topics()
            .into_iter()
            .map(str::to_string)
            .collect();
        let handle = job.spawn(opts, Some(Arc::clone(&signals.stop)));
        let probe = StatusProbe::new(&name, handle.progress(), Log::new(&data.data_dir), topics);
        let done = Arc::new(AtomicBool::new(false));
        let reporter = report_status(
            probe,
            data.data_dir.clone(),
            status_every,
            !a.quiet,
            Arc::clone(&done),
        );
        running.push((name, handle, done, reporter));
    }
    let mut outcome = Ok(());
    // Jobs are joined as they end, so a job that fails stops the others at once.
    while !running.is_empty() {
        let Some(at) = running
            .iter()
            .position(|(_, h, _, _)| h.state() == paystream::job::JobState::Ended)
        else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (name, handle, done, reporter) = running.swap_remove(at);
        let out = handle.join();
        done.store(true, Ordering::Relaxed);
        let _ = reporter.join();
        let _ = std::fs::remove_file(pid_file(&data.data_dir, &name));
        let r = out
            .with_context(|| format!("running {}", a.query_file.display()))
            .and_then(|out| finished(&a, out));
        match r {
            Ok(()) => {}
            // One job: its error, as it is.
            Err(e) if !several => outcome = Err(e),
            Err(e) => {
                // The other jobs stop too, with their state saved; the first error is the
                // command's, any other is printed.
                signals.stop.store(true, Ordering::Relaxed);
                match outcome {
                    Ok(()) => outcome = Err(e.context(format!("job {name}"))),
                    Err(_) => eprintln!(
                        "error: job {name}: {}",
                        paystream::decode::redact(&super::common::error_text(&e))
                    ),
                }
            }
        }
    }
    forwarding.store(false, Ordering::Relaxed);
    let _ = forwarder.join();
    drop(locks);
    outcome
}

/// The summary of a job that ended, and what to do about its dead letters and late events.
fn finished(a: &RunArgs, out: paystream::job::JobOutcome) -> anyhow::Result<()> {
    let (n, ms, bytes) = out
        .checkpoints
        .iter()
        .fold((0, 0u128, 0), |(n, ms, b), (d, s)| {
            (n + 1, ms.max(d.as_millis()), b.max(*s))
        });
    eprintln!(
        "{} job={} resumed={} checkpoints={n} max_checkpoint_ms={ms} max_checkpoint_bytes={bytes}",
        out.summary.line(),
        out.name,
        out.resumed
    );
    let hints = Hints {
        dead_letters: out.dead_letters.where_to_look(),
        late: format!(
            "Their event times were behind the watermark: loading an older file into a topic that already holds later events makes it late. Load it into a new topic (and point the query file's source at it), or start over with `paystream run {} --reset-state --truncate-sinks`.",
            a.query_file.display()
        ),
    };
    report(&out.summary, &hints, a.strict)
}

/// Samples the job's progress every `every` into its status file (and, unless `quiet`, a
/// `status …` line on stderr) until `done`, then once more as it stopped.
fn report_status(
    mut probe: StatusProbe,
    data_dir: PathBuf,
    every: Duration,
    print: bool,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now() + every;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(every));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            let s = probe.sample(false);
            if let Err(e) = s.write(&data_dir) {
                tracing::debug!(error = %e, "cannot write the job status");
            }
            if print {
                eprintln!("status {}", s.line(s.updated_ms));
            }
        }
        let _ = probe.sample(true).write(&data_dir);
    })
}

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// A job's name (the query file's name without `.sql`); all jobs when absent.
    job: Option<String>,
}

/// `paystream status [JOB]`: jobs of the data directory, running or stopped, with their last
/// status sample.
pub(crate) fn status(data: &DataDir, a: StatusArgs) -> anyhow::Result<()> {
    let all = jobs(&data.data_dir);
    let names = match a.job {
        Some(j) if all.contains(&j) => vec![j],
        Some(j) => bail!(
            "no job {j} in {}{}",
            data.data_dir.display(),
            if all.is_empty() {
                String::new()
            } else {
                format!(" (jobs: {})", all.join(", "))
            }
        ),
        None if all.is_empty() => {
            eprintln!(
                "no jobs in {}; start one with `paystream run QUERYFILE`",
                data.data_dir.display()
            );
            return Ok(());
        }
        None => all,
    };
    let now = paystream::log::producer_now_ms();
    for job in names {
        let pid = running_pid(&data.data_dir, &job);
        let state = match pid {
            Some(pid) => format!("running pid={pid}"),
            None => "stopped".into(),
        };
        let sample = JobStatus::read(&data.data_dir, &job).unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            None
        });
        // A running job's own samples only: until its first, the file holds the last run's.
        match sample.filter(|s| pid.is_none_or(|p| s.pid as i32 == p)) {
            Some(s) => println!(
                "{job}\t{state}\tupdated={}s_ago\t{}",
                (now - s.updated_ms).max(0) / 1000,
                s.line(now)
            ),
            None => println!("{job}\t{state}\tno status yet"),
        }
    }
    Ok(())
}

fn running_pid(data: &Path, job: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(data, job))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

pub(crate) fn savepoint(data: &DataDir, a: SavepointArgs) -> anyhow::Result<()> {
    let location = match &a.checkpoint_dir {
        // A job of a file of several sources keeps its checkpoints in `D/<job>`.
        Some(d) if Path::new(d).join(&a.job).is_dir() => {
            format!("{}/{}", d.trim_end_matches('/'), a.job)
        }
        Some(d) => d.clone(),
        None => state_dir(&data.data_dir, &a.job)
            .join("checkpoints")
            .display()
            .to_string(),
    };
    let store = CheckpointStore::open(&location, 3)?;
    if a.list {
        let names = store.savepoints()?;
        if names.is_empty() {
            eprintln!("job {} has no savepoints in {location}", a.job);
        }
        for n in names {
            println!("{n}");
        }
        return Ok(());
    }
    match running_pid(&data.data_dir, &a.job) {
        Some(pid) => {
            let before = store.latest()?.map_or(0, |(e, _)| e);
            // SAFETY: plain kill(2) on the job's pid, read from its pid file.
            if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
                bail!("cannot signal job {} (pid {pid})", a.job);
            }
            let alive = || running_pid(&data.data_dir, &a.job) == Some(pid);
            match await_savepoint(&store, &a.job, before, Duration::from_secs(120), alive)? {
                SavepointWait::Taken(name) => {
                    println!("{name}");
                    eprintln!(
                        "savepoint {name} written; resume with: paystream run <file> --from-savepoint {name}"
                    );
                    Ok(())
                }
                SavepointWait::Ended => bail!(
                    "job {} stopped before it took the savepoint; `paystream savepoint {}` now makes its final checkpoint one",
                    a.job,
                    a.job
                ),
                SavepointWait::TimedOut => {
                    bail!("job {} did not take a savepoint within 2 minutes", a.job)
                }
            }
        }
        None => {
            let Some((epoch, bytes)) = store.latest()? else {
                bail!(
                    "job {} is not running and has no checkpoint in {location}",
                    a.job
                );
            };
            let name = format!("{}-{epoch}", a.job);
            store.write_savepoint(&name, epoch, bytes)?;
            println!("{name}");
            eprintln!(
                "job {} is not running; its latest checkpoint is now savepoint {name}",
                a.job
            );
            Ok(())
        }
    }
}
