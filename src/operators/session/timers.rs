//! Timers by time bucket: what fires is found by bucket, not by a priority queue.
//!
//! A session operator sets a timer per session (about one per event on sparse keys) and fires
//! them when the watermark passes. A binary heap of a hundred thousand timers cost ~370
//! instructions a pop, a fifth of the operator. Timers fall within a short span ahead of the
//! watermark (an event's `t + gap`), so they are kept in buckets of `width` milliseconds: a
//! push appends to its bucket, and the watermark takes whole buckets behind it and sifts only
//! the one it is inside. Order within a bucket is arrival order (deterministic, not sorted).

use std::collections::BTreeMap;

/// Timers: (time, key id), fired when a watermark reaches their time.
#[derive(Debug, Clone)]
pub(in crate::operators) struct Timers {
    width: i64,
    buckets: BTreeMap<i64, Vec<(i64, u32)>>,
}

impl Timers {
    /// Timers in buckets of `width` ms (at least 1).
    pub(in crate::operators) fn new(width: i64) -> Self {
        Timers {
            width: width.max(1),
            buckets: BTreeMap::new(),
        }
    }

    /// A bucket width for timers set `horizon` ms ahead: a few dozen buckets cover it, and no
    /// bucket is wider than a second (the watermark sifts the one it is in at each advance).
    pub(in crate::operators) fn width_for(horizon: i64) -> i64 {
        (horizon / 32).clamp(1, 1_000)
    }

    pub(in crate::operators) fn push(&mut self, at: i64, id: u32) {
        self.buckets
            .entry(at.div_euclid(self.width))
            .or_default()
            .push((at, id));
    }

    /// Removes every timer at or before `watermark`, appending its key id to `due`.
    pub(in crate::operators) fn pop_due(&mut self, watermark: i64, due: &mut Vec<u32>) {
        let current = watermark.div_euclid(self.width);
        while let Some(mut entry) = self.buckets.first_entry() {
            let b = *entry.key();
            if b > current {
                break;
            }
            if b < current {
                due.extend(entry.remove().into_iter().map(|(_, id)| id));
                continue;
            }
            // The bucket the watermark is inside: take what is due, keep the rest.
            let timers = entry.get_mut();
            timers.retain(|(at, id)| {
                let fire = *at <= watermark;
                if fire {
                    due.push(*id);
                }
                !fire
            });
            if timers.is_empty() {
                entry.remove();
            }
            break;
        }
    }

    pub(in crate::operators) fn clear(&mut self) {
        self.buckets.clear();
    }

    /// Gives every timer its key's new id (`None`: the key is gone, and so is the timer).
    pub(in crate::operators) fn renumber(&mut self, new_id: impl Fn(u32) -> Option<u32>) {
        for timers in self.buckets.values_mut() {
            timers.retain_mut(|(_, id)| match new_id(*id) {
                Some(n) => {
                    *id = n;
                    true
                }
                None => false,
            });
        }
        self.buckets.retain(|_, t| !t.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_once_when_the_watermark_reaches_them() {
        let mut t = Timers::new(10);
        for (at, id) in [(5, 1), (25, 2), (21, 3), (-7, 4), (i64::MAX, 5), (20, 6)] {
            t.push(at, id);
        }
        let mut due = Vec::new();
        t.pop_due(20, &mut due);
        due.sort();
        assert_eq!(due, [1, 4, 6]);
        due.clear();
        t.pop_due(20, &mut due);
        assert!(due.is_empty(), "nothing fires twice");
        t.renumber(|id| (id != 3).then_some(id * 10));
        t.pop_due(i64::MAX, &mut due);
        due.sort();
        assert_eq!(due, [20, 50], "a dropped key's timer is gone");
    }
}
