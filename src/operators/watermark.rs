//! Event-time progress: the watermark and the far-future guard, per source partition.
//!
//! Each source partition (a log partition; a file is one) keeps `max event time seen − delay`
//! (bounded out-of-orderness). The stream's watermark is the minimum over *active* partitions, so
//! a partition that is behind holds time back instead of having its events declared late. A
//! partition with no new records for `idle_timeout` (wall time) stops holding it back; when every
//! partition is idle the watermark moves to the most advanced one. The watermark never goes back.
//!
//! A timestamp more than `max_skew` ahead of its partition's watermark is invalid: it is
//! dead-lettered and never advances the watermark, so one bad clock cannot make every later event
//! late.

use std::time::{Duration, Instant};

/// Lowest possible watermark (before any event).
pub(super) const MIN_WATERMARK: i64 = i64::MIN;

#[derive(Debug, Clone)]
struct Part {
    max_seen: Option<i64>,
    last_active: Instant,
    idle: bool,
}

/// The watermark tracker of one stream.
#[derive(Debug, Clone)]
pub struct Watermark {
    delay: i64,
    max_skew: i64,
    parts: Vec<Part>,
    idle_timeout: Option<Duration>,
    current: i64,
}

/// The persistent part of a [`Watermark`] (idleness restarts on restore).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkState {
    /// Max event time seen per partition.
    pub max_seen: Vec<Option<i64>>,
    /// The stream watermark.
    pub current: i64,
}

/// Refuses a far-future bound (`max_skew`) at or below the watermark delay: the newest event is
/// always `delay` ahead of the watermark, so nearly every event would be dead-lettered as
/// `future_timestamp`. `delay_name` and `skew_name` say where each value came from (`--max-skew`,
/// `SET max_skew at line 3`, …).
pub fn check_max_skew(
    delay: i64,
    max_skew: i64,
    delay_name: &str,
    skew_name: &str,
) -> crate::error::Result<()> {
    if max_skew > delay {
        return Ok(());
    }
    Err(crate::error::Error::Config {
        what: format!("{skew_name} and {delay_name}"),
        message: format!(
            "{skew_name} ({}) must be larger than {delay_name} ({}): an event more than max_skew ahead of the watermark is dead-lettered, and the newest event is always watermark_delay ahead of it, so nearly every event would be dead-lettered; raise max_skew well above watermark_delay (defaults: 5m and 5s)",
            millis_text(max_skew),
            millis_text(delay)
        ),
    })
}

/// A duration in the largest unit that writes it exactly (`5s`, `1500ms`, `2h`).
pub fn millis_text(ms: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Watermark {
    /// A tracker of one partition with the given out-of-orderness bound and future skew (ms).
    pub fn new(delay: i64, max_skew: i64) -> Self {
        Self::partitioned(delay, max_skew, 1, None)
    }

    /// A tracker of `partitions` partitions; with `idle_timeout`, a partition without records for
    /// that long stops holding the watermark back.
    pub fn partitioned(
        delay: i64,
        max_skew: i64,
        partitions: usize,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let now = Instant::now();
        Watermark {
            delay,
            max_skew,
            parts: vec![
                Part {
                    max_seen: None,
                    last_active: now,
                    idle: false,
                };
                partitions.max(1)
            ],
            idle_timeout,
            current: MIN_WATERMARK,
        }
    }

    /// The current watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Whether `ts` is too far ahead of partition `p`'s watermark to be believed.
    pub fn is_far_future(&self, p: usize, ts: i64) -> bool {
        self.parts[p]
            .max_seen
            .is_some_and(|m| ts > (m - self.delay).saturating_add(self.max_skew))
    }

    /// Records an accepted event time from partition `p`.
    pub fn observe(&mut self, p: usize, ts: i64) {
        let single = self.parts.len() == 1;
        let part = &mut self.parts[p];
        let before = part.max_seen;
        if before.is_some_and(|m| m >= ts) {
            return;
        }
        part.max_seen = Some(ts);
        let idle = part.idle;
        if single {
            self.current = self.current.max(ts - self.delay);
        } else if idle || before.is_none_or(|m| m - self.delay <= self.current) {
            // Only a partition that was holding the watermark back can move it.
            self.recompute();
        }
    }

    /// Partition `p` delivered records now: it is active.
    pub fn touch(&mut self, p: usize, now: Instant) {
        let part = &mut self.parts[p];
        part.last_active = now;
        if part.idle {
            part.idle = false;
            self.recompute();
        }
    }

    /// Partition `p` has ended (a source of several streams read one to its end): it no
    /// longer holds the watermark back.
    pub fn end(&mut self, p: usize) {
        if let Some(part) = self.parts.get_mut(p) {
            part.idle = true;
            self.recompute();
        }
    }

    /// Marks partitions idle whose last records are older than the idle timeout; returns whether
    /// the watermark moved.
    pub fn refresh(&mut self, now: Instant) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        let mut changed = false;
        for part in &mut self.parts {
            if !part.idle && now.duration_since(part.last_active) >= timeout {
                part.idle = true;
                changed = true;
            }
        }
        let before = self.current;
        if changed {
            self.recompute();
        }
        self.current != before
    }

    fn recompute(&mut self) {
        let wm = |p: &Part| p.max_seen.map_or(MIN_WATERMARK, |m| m - self.delay);
        let active = self.parts.iter().filter(|p| !p.idle);
        let combined = if self.parts.iter().all(|p| p.idle) {
            self.parts.iter().map(wm).max()
        } else {
            active.map(wm).min()
        };
        self.current = self.current.max(combined.unwrap_or(MIN_WATERMARK));
    }

    /// The state to persist.
    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            max_seen: self.parts.iter().map(|p| p.max_seen).collect(),
            current: self.current,
        }
    }

    /// Restores persisted state (every partition starts active).
    pub fn restore(&mut self, s: &WatermarkState) {
        for (p, m) in self.parts.iter_mut().zip(&s.max_seen) {
            p.max_seen = *m;
        }
        self.current = s.current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_partition_no_longer_holds_the_watermark_back() {
        let mut w = Watermark::partitioned(1_000, 60_000, 2, None);
        w.observe(0, 10_000);
        w.observe(1, 50_000);
        assert_eq!(w.current(), 9_000);
        w.end(0);
        assert_eq!(w.current(), 49_000);
        w.observe(1, 70_000);
        assert_eq!(w.current(), 69_000);
        // Ending a partition never moves time back.
        w.end(1);
        assert_eq!(w.current(), 69_000);
    }

    #[test]
    fn a_max_skew_at_or_below_the_delay_is_refused_naming_both() {
        assert!(check_max_skew(5_000, 300_000, "--watermark-delay", "--max-skew").is_ok());
        for (delay, skew) in [(5_000, 5_000), (10_000, 5_000), (60_000, 0)] {
            let e = check_max_skew(delay, skew, "--watermark-delay", "--max-skew")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--max-skew (") && e.contains("must be larger than --watermark-delay ("),
                "{e}"
            );
        }
        assert_eq!(millis_text(5_000), "5s");
        assert_eq!(millis_text(1_500), "1500ms");
        assert_eq!(millis_text(0), "0ms");
    }

    #[test]
    fn tracks_max_minus_delay_and_guards_the_future() {
        let mut w = Watermark::new(5_000, 300_000);
        assert_eq!(w.current(), MIN_WATERMARK);
        assert!(
            !w.is_far_future(0, i64::MAX / 2),
            "the first event sets the clock"
        );
        w.observe(0, 100_000);
        w.observe(0, 90_000);
        assert_eq!(w.current(), 95_000);
        assert!(!w.is_far_future(0, 95_000 + 300_000));
        assert!(w.is_far_future(0, 95_000 + 300_001));
    }

    #[test]
    fn the_slowest_active_partition_holds_time_until_it_goes_idle() {
        let t0 = Instant::now();
        let mut w = Watermark::partitioned(1_000, 300_000, 3, Some(Duration::from_secs(30)));
        w.observe(0, 50_000);
        w.observe(1, 20_000);
        assert_eq!(w.current(), MIN_WATERMARK, "partition 2 has no data yet");
        w.observe(2, 30_000);
        assert_eq!(w.current(), 19_000);
        w.observe(1, 40_000);
        assert_eq!(w.current(), 29_000);
        // Partition 2 stays silent: after the idle timeout it no longer holds time back.
        w.touch(0, t0 + Duration::from_secs(25));
        w.touch(1, t0 + Duration::from_secs(25));
        assert!(w.refresh(t0 + Duration::from_secs(31)));
        assert_eq!(w.current(), 39_000);
        // Everything idle: the most advanced partition sets time.
        assert!(w.refresh(t0 + Duration::from_secs(60)));
        assert_eq!(w.current(), 49_000);
        // An idle partition coming back with old data never moves the watermark back.
        w.touch(2, t0 + Duration::from_secs(61));
        w.observe(2, 31_000);
        assert_eq!(w.current(), 49_000);
        let s = w.state();
        let mut r = Watermark::partitioned(1_000, 300_000, 3, None);
        r.restore(&s);
        assert_eq!(r.state(), s);
    }
}
