//! `paystream run QUERYFILE`: a query file's INSERTs, continuously, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use paystream::job::{JobOptions, run_query_file};

use super::log_cmds::{DataDir, fsync_policy};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The query file: CREATE SOURCE, CREATE SINK, SET and INSERT INTO … SELECT statements.
    query_file: PathBuf,
    /// Workers per query (default: as saved by the previous run, else all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Stop at the source topic's current end and emit the windows still open (for scripts),
    /// instead of running until Ctrl-C / SIGTERM.
    #[arg(long)]
    until_end: bool,
    /// Forget the state and offsets saved by previous runs of this query file; start from the
    /// earliest offsets.
    #[arg(long)]
    reset_state: bool,
    /// Durability of the sink topics: always, interval or never.
    #[arg(long, default_value = "interval")]
    fsync: String,
}

pub(crate) fn run(data: &DataDir, a: RunArgs) -> anyhow::Result<()> {
    if a.workers == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    let mut opts = JobOptions::new(&data.data_dir);
    opts.workers = a.workers;
    opts.until_end = a.until_end;
    opts.reset_state = a.reset_state;
    opts.fsync = fsync_policy(&a.fsync)?;
    if !a.until_end {
        eprintln!(
            "running {} (data dir {}); Ctrl-C or SIGTERM stops it cleanly",
            a.query_file.display(),
            data.data_dir.display()
        );
    }
    let out = run_query_file(
        &a.query_file,
        &opts,
        Arc::default(),
        crate::stop_on_signal(),
    )
    .with_context(|| format!("running {}", a.query_file.display()))?;
    eprintln!(
        "{} job={} resumed={}",
        out.summary.line(),
        out.name,
        out.resumed
    );
    Ok(())
}
