//! What a job's sinks already hold, when the job starts over or its sinks change.
//!
//! `--reset-state` recomputes every result from the earliest offsets. Results the job already
//! committed would then be in its sinks twice, so a reset of a job whose result sinks hold
//! committed results must say what to do with them ([`SinkReset`]): empty those sinks first, or
//! keep them and append. Either way checkpoint numbers continue after the old ones, so the old
//! checkpoints can never be mistaken for newer state, and kept part files are never overwritten.
//!
//! A job that resumes with a sink defined differently from its last run (another topic, another
//! path) goes on writing only what is new into the new sink; that is reported, since the results
//! committed before are in the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::saved_state::SavedState;
use super::{state_dir, status::jobs};
use crate::checkpoint::CheckpointStore;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::sink::PartFiles;
use crate::sql::query_file::{QueryFile, SinkConnector};

/// What `--reset-state` does with results the job already committed to its sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkReset {
    /// Empty the job's sinks first (topics no other job writes; the job's part files).
    Truncate,
    /// Keep them; the recomputed results are appended after them.
    Keep,
}

/// How a reset job opens its sinks.
#[derive(Debug, Default)]
pub(super) struct ResetPlan {
    /// The newest old checkpoint: new checkpoints are numbered after it.
    pub epoch_base: u64,
    /// Sink topics to empty: (topic, partitions).
    pub truncate: BTreeMap<String, u32>,
    /// Recover file sinks to this checkpoint: 0 removes every part file, `epoch_base` keeps them.
    pub files_epoch: u64,
}

/// Decides how a reset job treats its sinks, given the latest checkpoint before the reset.
pub(super) fn plan_reset(
    log: &Log,
    file: &QueryFile,
    job: &str,
    latest: Option<(u64, Vec<u8>)>,
    choice: Option<SinkReset>,
) -> Result<ResetPlan> {
    let Some((epoch, bytes)) = latest else {
        return Ok(ResetPlan::default());
    };
    let saved = SavedState::decode(Path::new("checkpoint"), &bytes).ok();
    let held = committed_results(file, saved.as_ref())?;
    let choice = match choice {
        Some(c) => c,
        None if held.is_empty() => SinkReset::Keep,
        None => {
            return Err(Error::Config {
                what: "--reset-state".into(),
                message: format!(
                    "job {job} already committed results to {}; recomputing them from the earliest offsets would write them a second time. Add --truncate-sinks to empty those sinks first, or --keep-sinks to append the recomputed results after them",
                    held.join(", ")
                ),
            });
        }
    };
    let mut plan = ResetPlan {
        epoch_base: epoch,
        files_epoch: epoch,
        ..ResetPlan::default()
    };
    if choice == SinkReset::Truncate {
        plan.files_epoch = 0;
        let others = topics_of_other_jobs(log, job);
        let written = saved.map(|s| s.sinks).unwrap_or_default();
        for topic in written.keys() {
            if let Some(other) = others.get(topic) {
                tracing::warn!(
                    topic = %topic,
                    job = %other,
                    "--truncate-sinks keeps topic {topic}: job {other} writes it too"
                );
                continue;
            }
            if let Ok(config) = log.topic_config(topic) {
                plan.truncate.insert(topic.clone(), config.partitions);
            }
        }
    }
    Ok(plan)
}

/// The result sinks (INSERT targets) holding results the job committed, described for a user:
/// `topic settlement (1200 records)`, `file out/alerts.jsonl (3 part files)`.
fn committed_results(file: &QueryFile, saved: Option<&SavedState>) -> Result<Vec<String>> {
    let targets: BTreeSet<&str> = file.inserts.iter().map(|i| i.sink.as_str()).collect();
    let mut held = Vec::new();
    for sink in file
        .sinks
        .iter()
        .filter(|s| targets.contains(s.name.as_str()))
    {
        match &sink.connector {
            SinkConnector::Log { topic, .. } => {
                let records: u64 = saved
                    .and_then(|s| s.sinks.get(topic))
                    .map_or(0, |o| o.iter().sum());
                if records > 0 {
                    held.push(format!("topic {topic} ({records} records)"));
                }
            }
            SinkConnector::File { path } if !super::is_stream(path) => {
                let parts = PartFiles::open(path)?.committed_parts()?;
                if !parts.is_empty() {
                    held.push(format!(
                        "file {} ({} part files)",
                        path.display(),
                        parts.len()
                    ));
                }
            }
            SinkConnector::File { .. } => {}
        }
    }
    Ok(held)
}

/// Sink topics other jobs of the data directory wrote, per their latest checkpoint in its
/// default place: topic → job.
fn topics_of_other_jobs(log: &Log, job: &str) -> BTreeMap<String, String> {
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
                out.entry(topic).or_insert_with(|| other.clone());
            }
        }
    }
    out
}

/// How each sink of `file` is defined, by name: what [`report_changed_sinks`] compares.
fn sink_definitions(file: &QueryFile) -> BTreeMap<String, String> {
    file.sinks
        .iter()
        .map(|s| {
            let d = match &s.connector {
                SinkConnector::Log { topic, .. } => format!("topic {topic}"),
                SinkConnector::File { path } => format!("file {}", path.display()),
            };
            (s.name.clone(), d)
        })
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
                    "sink `{name}` changed since the last run of job {job} (was {was}, now {is}): the job resumes where it stopped, so {is} receives only results from here on, and the results committed before stay in {was}. To recompute everything into {is}, run with --reset-state --keep-sinks"
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
