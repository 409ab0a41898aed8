//! `paystream run QUERYFILE`: a query file's INSERTs, continuously, until Ctrl-C or SIGTERM;
//! `paystream savepoint JOB`: a named snapshot of a running (or stopped) job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paystream::checkpoint::CheckpointStore;
use paystream::job::{JobOptions, job_name, run_query_file, state_dir};
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
    #[arg(long)]
    reset_state: bool,
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

fn savepoint_on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    crate::on_signals(move || async move {
        let Ok(mut s) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            return;
        };
        while s.recv().await.is_some() {
            f.store(true, Ordering::Relaxed);
        }
    });
    flag
}

pub(crate) fn run(data: &DataDir, a: RunArgs) -> anyhow::Result<()> {
    if a.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let mut opts = JobOptions::new(&data.data_dir);
    opts.workers = a.workers;
    opts.until_end = a.until_end;
    opts.reset_state = a.reset_state;
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
    opts.savepoint_request = Some(savepoint_on_signal());
    let job = job_name(&a.query_file);
    let pid = pid_file(&data.data_dir, &job);
    // One process per job: the lock is held for the whole run, and only its holder writes
    // (and later removes) the pid file, so a refused second run leaves the first one's alone.
    let _job_lock = lock_job(&data.data_dir, &job)?;
    std::fs::write(&pid, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", pid.display()))?;
    if !a.until_end {
        eprintln!(
            "running {} as job {job} (data dir {}); Ctrl-C or SIGTERM stops it cleanly, `paystream savepoint {job}` snapshots it",
            a.query_file.display(),
            data.data_dir.display()
        );
    }
    let out = run_query_file(
        &a.query_file,
        &opts,
        Arc::default(),
        crate::stop_on_signal(),
    );
    let _ = std::fs::remove_file(&pid);
    let out = out.with_context(|| format!("running {}", a.query_file.display()))?;
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
    let location = a.checkpoint_dir.clone().unwrap_or_else(|| {
        state_dir(&data.data_dir, &a.job)
            .join("checkpoints")
            .display()
            .to_string()
    });
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
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut epoch = before + 1;
            loop {
                let name = format!("{}-{epoch}", a.job);
                if store.savepoint(&name)?.is_some() {
                    println!("{name}");
                    eprintln!(
                        "savepoint {name} written; resume with: paystream run <file> --from-savepoint {name}"
                    );
                    return Ok(());
                }
                if let Some((latest, _)) = store.latest()?
                    && latest > epoch
                {
                    epoch += 1;
                    continue;
                }
                if Instant::now() > deadline {
                    bail!("job {} did not take a savepoint within 2 minutes", a.job);
                }
                std::thread::sleep(Duration::from_millis(100));
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
