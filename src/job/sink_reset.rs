//! What a job's sinks already hold, when the job starts over or its sinks change.
//!
//! `--reset-state` recomputes every result from the earliest offsets. Results the job already
//! committed would then be in its sinks twice, so a reset of a job whose result sinks hold
//! committed results must say what to do with them ([`SinkReset`]): empty those sinks first, or
//! keep them and append. Either way checkpoint numbers continue after the old ones, so the old
//! checkpoints can never be mistaken for newer state, and kept part files are never overwritten.
//!
//! A reset is made durable before anything is emptied: its plan is written to
//! `_queries/<job>/reset.json`, and until a checkpoint newer than the old ones completes, every
//! start of the job (after a crash, an error, a Ctrl-C) carries the same reset on — emptying the
//! same sinks again, which removes whatever the interrupted run wrote — instead of restoring the
//! state from before it.
//!
//! A job that resumes with a sink defined differently from its last run (another topic, another
//! path) goes on writing only what is new into the new sink; that is reported, since the results
//! committed before are in the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::saved_state::SavedState;
use super::{state_dir, status::jobs};
use crate::checkpoint::CheckpointStore;
use crate::error::{Error, Result};
use crate::log::{GroupOffsets, Log};
use crate::sql::query_file::QueryFile;

/// What `--reset-state` does with results the job already committed to its sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkReset {
    /// Empty the job's sinks first (topics no other job writes or reads; the job's part files).
    Truncate,
    /// Keep them; the recomputed results are appended after them.
    Keep,
}

/// How a reset job opens its sinks; kept in `reset.json` until the reset's first checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ResetPlan {
    /// The newest old checkpoint: new checkpoints are numbered after it.
    pub epoch_base: u64,
    /// Sink topics to empty: each partition truncated to its first stored offset.
    pub truncate: BTreeMap<String, Vec<u64>>,
    /// Recover file sinks to this checkpoint: 0 removes every part file, `epoch_base` keeps them.
    pub files_epoch: u64,
}

fn err(message: String) -> Error {
    Error::Config {
        what: "--reset-state".into(),
        message,
    }
}

fn marker_path(data_dir: &Path, job: &str) -> PathBuf {
    state_dir(data_dir, job).join("reset.json")
}

/// The reset this start carries out, if any: a new one (`reset` set), or one an earlier start
/// began and no checkpoint completed since. `None`: restore as usual.
pub(super) fn reset_in_force(
    log: &Log,
    store: &CheckpointStore,
    file: &QueryFile,
    job: &str,
    reset: bool,
    choice: Option<SinkReset>,
) -> Result<Option<ResetPlan>> {
    let marker = marker_path(log.dir(), job);
    let pending: Option<ResetPlan> = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if pending.is_none() && !reset {
        return Ok(None);
    }
    let latest = store.latest()?;
    if let Some(p) = pending {
        if latest.as_ref().is_some_and(|(e, _)| *e > p.epoch_base) {
            // The reset reached a checkpoint of its own: it is done.
            let _ = std::fs::remove_file(&marker);
        } else if !reset {
            tracing::warn!(
                "job {job}: continuing the --reset-state that an earlier run began and did not checkpoint"
            );
            return Ok(Some(p));
        }
    }
    if !reset {
        return Ok(None);
    }
    let plan = plan_reset(log, store, file, job, latest, choice)?;
    std::fs::create_dir_all(state_dir(log.dir(), job)).map_err(|e| err(e.to_string()))?;
    let bytes = serde_json::to_vec(&plan).map_err(|e| Error::Internal(e.to_string()))?;
    crate::log::write_atomic(&marker, &bytes).map_err(|e| err(e.to_string()))?;
    Ok(Some(plan))
}

/// Forgets a reset an earlier start began (a savepoint restore supersedes it).
pub(super) fn drop_pending_reset(data_dir: &Path, job: &str) {
    let _ = std::fs::remove_file(marker_path(data_dir, job));
}

/// Decides how a reset job treats its sinks, given the latest checkpoint before the reset.
fn plan_reset(
    log: &Log,
    store: &CheckpointStore,
    file: &QueryFile,
    job: &str,
    latest: Option<(u64, Vec<u8>)>,
    choice: Option<SinkReset>,
) -> Result<ResetPlan> {
    let epoch_base = store.newest_epoch()?;
    let Some((_, bytes)) = latest else {
        return Ok(ResetPlan {
            epoch_base,
            files_epoch: epoch_base,
            ..ResetPlan::default()
        });
    };
    let saved = SavedState::decode(Path::new("checkpoint"), &bytes);
    let choice = match (choice, &saved) {
        (Some(c), _) => c,
        (None, Err(e)) => {
            return Err(err(format!(
                "job {job}'s latest checkpoint cannot be read ({e}), so what its sinks hold is unknown; add --truncate-sinks to empty them first, or --keep-sinks to append after what they hold"
            )));
        }
        (None, Ok(saved)) => {
            let held = committed_results(file, saved)?;
            if !held.is_empty() {
                return Err(err(format!(
                    "job {job} already committed results to {}; recomputing them from the earliest offsets would write them a second time. Add --truncate-sinks to empty those sinks first, or --keep-sinks to append the recomputed results after them",
                    held.join(", ")
                )));
            }
            SinkReset::Keep
        }
    };
    let mut plan = ResetPlan {
        epoch_base,
        files_epoch: epoch_base,
        ..ResetPlan::default()
    };
    if choice == SinkReset::Truncate {
        plan.files_epoch = 0;
        let others = other_jobs_topics(log, job);
        let written = saved.map(|s| s.sinks).unwrap_or_default();
        for topic in written.keys() {
            if let Some((other, how)) = others.get(topic) {
                return Err(err(format!(
                    "--truncate-sinks would empty topic {topic}, which job {other} {how} too; use --keep-sinks, or give this job sinks of its own"
                )));
            }
            if let Ok(stats) = log.partition_stats(topic) {
                plan.truncate.insert(
                    topic.clone(),
                    stats.iter().map(|s| s.start_offset).collect(),
                );
            }
        }
    }
    Ok(plan)
}

/// Empties `topics`, the declared log-topic sinks of a job over files run again with
/// `--truncate-sinks`, after refusing any that a checkpointed job of the data directory writes
/// or reads; each topic's consumer groups are rewound to where it starts again at once, so a
/// run that fails later leaves no group past the end of an emptied topic.
pub(super) fn empty_topics(
    log: &Log,
    job: &str,
    topics: &[String],
    fsync: crate::log::FsyncPolicy,
) -> Result<()> {
    let others = other_jobs_topics(log, job);
    if let Some((topic, (other, how))) = topics.iter().find_map(|t| others.get(t).map(|o| (t, o))) {
        return Err(err(format!(
            "--truncate-sinks would empty topic {topic}, which job {other} {how} too; use --keep-sinks, or give this job sinks of its own"
        )));
    }
    for topic in topics {
        let starts: Vec<u64> = log
            .partition_stats(topic)?
            .iter()
            .map(|s| s.start_offset)
            .collect();
        let mut writer = log.writer(topic, fsync)?;
        for (p, start) in starts.iter().enumerate() {
            writer.truncate_to(p as u32, *start)?;
        }
        drop(writer);
        rewind_topic_groups(log, topic, &starts)?;
    }
    Ok(())
}

/// Empties the reset's topics' consumer groups back to where the topics now start, so a group
/// that had read the old results reads the recomputed ones (the emptied offsets are reused).
pub(super) fn rewind_groups(log: &Log, plan: &ResetPlan) -> Result<()> {
    for (topic, starts) in &plan.truncate {
        rewind_topic_groups(log, topic, starts)?;
    }
    Ok(())
}

/// Commits every consumer group of `topic` at `starts` (one offset per partition).
fn rewind_topic_groups(log: &Log, topic: &str, starts: &[u64]) -> Result<()> {
    let offsets = GroupOffsets {
        offsets: starts
            .iter()
            .enumerate()
            .map(|(p, o)| (p as u32, *o))
            .collect(),
    };
    for group in log.groups(topic) {
        log.commit_offsets(topic, &group, &offsets)?;
    }
    Ok(())
}

/// The result sinks (INSERT targets) holding results the job committed, described for a user:
/// `topic settlement (1200 records)`, `file out/alerts.jsonl (3 part files)`.
fn committed_results(file: &QueryFile, saved: &SavedState) -> Result<Vec<String>> {
    let targets: BTreeSet<&str> = file.inserts.iter().map(|i| i.sink.as_str()).collect();
    let mut held = Vec::new();
    for sink in file
        .sinks
        .iter()
        .filter(|s| targets.contains(s.name.as_str()))
    {
        if let Some(h) = sink.connector.committed_results(&saved.sinks)? {
            held.push(h);
        }
    }
    Ok(held)
}

/// Topics other jobs of the data directory write or read, per their latest checkpoint in its
/// default place: topic → (job, "writes" or "reads").
fn other_jobs_topics(log: &Log, job: &str) -> BTreeMap<String, (String, &'static str)> {
    let mut out = BTreeMap::new();
    for other in jobs(log.dir()).into_iter().filter(|j| j != job) {
        let dir = state_dir(log.dir(), &other).join("checkpoints");
        if !dir.exists() {
            continue;
        }
        let Ok(store) = CheckpointStore::open(&dir.display().to_string(), 3) else {
            continue;
        };
        let Ok(Some((_, bytes))) = store.latest() else {
            continue;
        };
        if let Ok(s) = SavedState::decode(&dir, &bytes) {
            for topic in s.sinks.into_keys() {
                out.entry(topic)
                    .or_insert_with(|| (other.clone(), "writes"));
            }
            out.entry(s.topic)
                .or_insert_with(|| (other.clone(), "reads"));
        }
    }
    out
}

/// How each sink of `file` is defined, by name: what [`report_changed_sinks`] compares.
fn sink_definitions(file: &QueryFile) -> BTreeMap<String, String> {
    file.sinks
        .iter()
        .map(|s| (s.name.clone(), s.connector.describe()))
        .collect()
}

/// Records the sinks of this run, and on a resume reports each sink whose definition changed
/// since the last run: `(sink, was, now)`.
pub(super) fn report_changed_sinks(
    data_dir: &Path,
    job: &str,
    file: &QueryFile,
    resumed: bool,
) -> Result<Vec<(String, String, String)>> {
    let path = state_dir(data_dir, job).join("sinks.json");
    let now = sink_definitions(file);
    let before: Option<BTreeMap<String, String>> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut changed = Vec::new();
    if let (true, Some(before)) = (resumed, before) {
        for (name, was) in &before {
            if let Some(is) = now.get(name)
                && is != was
            {
                tracing::warn!(
                    "sink `{name}` changed since the last run of job {job} (was {was}, now {is}): the job resumes where it stopped, so {is} receives only results from here on, and the results committed before stay in {was}. To recompute everything, run with --reset-state and --truncate-sinks or --keep-sinks"
                );
                changed.push((name.clone(), was.clone(), is.clone()));
            }
        }
    }
    std::fs::create_dir_all(state_dir(data_dir, job)).map_err(|e| Error::Output {
        target: path.display().to_string(),
        source: e,
    })?;
    let bytes = serde_json::to_vec(&now).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(|e| Error::Output {
        target: path.display().to_string(),
        source: e,
    })?;
    Ok(changed)
}
