//! A job's status: what `paystream run` prints every few seconds and `paystream status` shows.
//!
//! The running job samples its [`Progress`] counters ([`StatusProbe`]) and keeps the latest
//! sample in `<data-dir>/_queries/<job>/status.json`, replaced atomically, so another process can
//! read it without talking to the job. After a stop the file holds the last sample, which is what
//! the job had done when it stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::state_dir;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::log::Log;

pub use crate::connector::waiting::WaitingFor;

/// One sample of a job's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// The process running it.
    pub pid: u32,
    /// When the sample was taken (epoch ms).
    pub updated_ms: i64,
    /// Records read per second since the previous sample.
    pub events_per_sec: f64,
    /// Records read since the job started.
    pub read: u64,
    /// The watermark (epoch ms), once there is one.
    pub watermark: Option<i64>,
    /// Records in the source topic not read yet (a log source).
    pub lag: Option<u64>,
    /// Result rows written.
    pub results: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Late events.
    pub late: u64,
    /// Checkpoints taken since the job started.
    pub checkpoints: u64,
    /// When the last checkpoint completed (epoch ms).
    pub last_checkpoint_ms: Option<i64>,
    /// Whether the job had stopped when this sample was taken.
    pub stopped: bool,
    /// Servers the process is waiting for (down at start, gone mid-run), while it retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<WaitingFor>,
}

impl JobStatus {
    /// The status as one `key=value` line; times relative to `now_ms`.
    pub fn line(&self, now_ms: i64) -> String {
        let watermark = match self.watermark {
            Some(w) => {
                let mut b = Vec::new();
                crate::time::format_rfc3339_millis(w, &mut b);
                String::from_utf8_lossy(&b).into_owned()
            }
            None => "none".into(),
        };
        let lag = self.lag.map_or("unknown".into(), |l| l.to_string());
        let checkpoint = match self.last_checkpoint_ms {
            Some(t) => format!("{}s_ago", (now_ms - t).max(0) / 1000),
            None => "none".into(),
        };
        let mut line = format!(
            "job={} events_per_sec={:.0} read={} watermark={watermark} lag={lag} results={} dead_lettered={} late={} checkpoints={} last_checkpoint={checkpoint}",
            self.job,
            self.events_per_sec,
            self.read,
            self.results,
            self.dead_lettered,
            self.late,
            self.checkpoints
        );
        for w in &self.waiting_for {
            line.push_str(&format!(
                " waiting_for=\"{} ({}s: {})\"",
                w.server,
                (now_ms - w.since_ms).max(0) / 1000,
                w.reason.replace('"', "'")
            ));
        }
        line
    }

    /// Replaces the job's status file with this sample.
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let path = status_path(data_dir, &self.job);
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| Error::Output {
            target: path.display().to_string(),
            source: e,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The job's last sample, if it ever wrote one.
    pub fn read(data_dir: &Path, job: &str) -> Result<Option<JobStatus>> {
        let path = status_path(data_dir, job);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Input {
                    path,
                    message: format!(
                        "unreadable job status ({e}); it is rewritten when the job runs"
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Input {
                path,
                message: format!("cannot read the job status: {e}"),
            }),
        }
    }
}

fn status_path(data_dir: &Path, job: &str) -> PathBuf {
    state_dir(data_dir, job).join("status.json")
}

/// Jobs with a state directory in `data_dir`, by name.
pub fn jobs(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir.join("_queries"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Samples a running job's counters.
pub struct StatusProbe {
    job: String,
    progress: Arc<Progress>,
    log: Log,
    topics: Vec<String>,
    last: (u64, Instant),
}

impl StatusProbe {
    /// A probe of `progress`, the counters of job `job` reading `topics` (its log sources; none
    /// for files) of `log`.
    pub fn new(job: &str, progress: Arc<Progress>, log: Log, topics: Vec<String>) -> Self {
        StatusProbe {
            job: job.into(),
            last: (progress.read.load(Ordering::Relaxed), Instant::now()),
            progress,
            log,
            topics,
        }
    }

    /// A sample now; the rate is over the time since the previous sample.
    pub fn sample(&mut self, stopped: bool) -> JobStatus {
        let p = &self.progress;
        let read = p.read.load(Ordering::Relaxed);
        let now = Instant::now();
        let secs = now.duration_since(self.last.1).as_secs_f64();
        let rate = if secs > 0.0 {
            read.saturating_sub(self.last.0) as f64 / secs
        } else {
            0.0
        };
        self.last = (read, now);
        // Every source topic's records, less those read (positions cover all of them).
        let lag = (!self.topics.is_empty())
            .then(|| {
                let mut end = 0u64;
                for t in &self.topics {
                    end += self
                        .log
                        .partition_stats(t)
                        .ok()?
                        .iter()
                        .map(|s| s.end_offset)
                        .sum::<u64>();
                }
                let read: u64 = p.positions.lock().expect("progress lock").values().sum();
                Some(end.saturating_sub(read))
            })
            .flatten();
        let wm = p.watermark.load(Ordering::Relaxed);
        let last_checkpoint = p.last_checkpoint_ms.load(Ordering::Relaxed);
        JobStatus {
            job: self.job.clone(),
            pid: std::process::id(),
            updated_ms: crate::log::producer_now_ms(),
            events_per_sec: rate,
            read,
            watermark: (wm != i64::MIN).then_some(wm),
            lag,
            results: p.results.load(Ordering::Relaxed),
            dead_lettered: p.dead_lettered.load(Ordering::Relaxed),
            late: p.late.load(Ordering::Relaxed),
            checkpoints: p.checkpoints.load(Ordering::Relaxed),
            last_checkpoint_ms: (last_checkpoint != i64::MIN).then_some(last_checkpoint),
            stopped,
            waiting_for: crate::connector::waiting::now_for(&self.job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_through_its_file_and_reads_as_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state_dir(dir.path(), "risk")).unwrap();
        assert_eq!(JobStatus::read(dir.path(), "risk").unwrap(), None);
        let progress = Arc::new(Progress::default());
        progress.read.store(1000, Ordering::Relaxed);
        progress.results.store(7, Ordering::Relaxed);
        let mut probe =
            StatusProbe::new("risk", Arc::clone(&progress), Log::new(dir.path()), vec![]);
        let s = probe.sample(false);
        assert_eq!(
            (s.read, s.results, s.watermark, s.lag),
            (1000, 7, None, None)
        );
        s.write(dir.path()).unwrap();
        assert_eq!(
            JobStatus::read(dir.path(), "risk").unwrap(),
            Some(s.clone())
        );
        let line = s.line(s.updated_ms);
        assert!(
            line.starts_with("job=risk events_per_sec=")
                && line.contains(" read=1000 watermark=none lag=unknown results=7 ")
                && line.ends_with("checkpoints=0 last_checkpoint=none"),
            "{line}"
        );
        assert_eq!(jobs(dir.path()), vec!["risk".to_string()]);
    }
}
