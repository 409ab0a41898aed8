//! Event-time progress: the watermark and the far-future guard.
//!
//! Watermark = max event time seen − `delay` (bounded out-of-orderness). A timestamp more than
//! `max_skew` ahead of the watermark is invalid: it is dead-lettered and never advances the
//! watermark, so one bad clock cannot make every later event late.

/// The watermark tracker of one stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    delay: i64,
    max_skew: i64,
    max_seen: Option<i64>,
}

/// Lowest possible watermark (before any event).
pub(super) const MIN_WATERMARK: i64 = i64::MIN;

impl Watermark {
    /// A tracker with the given out-of-orderness bound and future skew, in milliseconds.
    pub fn new(delay: i64, max_skew: i64) -> Self {
        Watermark {
            delay,
            max_skew,
            max_seen: None,
        }
    }

    /// The current watermark.
    pub fn current(&self) -> i64 {
        self.max_seen.map_or(MIN_WATERMARK, |m| m - self.delay)
    }

    /// Whether `ts` is too far ahead of the current watermark to be believed.
    pub fn is_far_future(&self, ts: i64) -> bool {
        self.max_seen.is_some() && ts > self.current().saturating_add(self.max_skew)
    }

    /// Records an accepted event time.
    pub fn observe(&mut self, ts: i64) {
        self.max_seen = Some(self.max_seen.map_or(ts, |m| m.max(ts)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_max_minus_delay_and_guards_the_future() {
        let mut w = Watermark::new(5_000, 300_000);
        assert_eq!(w.current(), MIN_WATERMARK);
        assert!(
            !w.is_far_future(i64::MAX / 2),
            "the first event sets the clock"
        );
        w.observe(100_000);
        w.observe(90_000);
        assert_eq!(w.current(), 95_000);
        assert!(!w.is_far_future(95_000 + 300_000));
        assert!(w.is_far_future(95_000 + 300_001));
    }
}
