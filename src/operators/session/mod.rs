//! `SESSION`: per-key activity sessions that close after `gap` without events.
//!
//! Each event opens the window `[t, t + gap)`; overlapping windows of the same key merge, so a
//! session is `[first event, last event + gap)`. Sessions merge when an out-of-order event bridges
//! two of them.
//!
//! State, per key (interned once to a dense id, [`KeyIds`]): its open sessions, and `fired_until`
//! (the end of its last fired session, kept until no on-time event can reach it). Each session's
//! aggregates live in a slot of [`Slots`], flat per-aggregate vectors, so a batch updates them in
//! one pass per aggregate and a session costs no allocation of its own.
//!
//! Timers are lazy: a session is armed once, at the end it had when it opened. Extending it (what
//! nearly every event of an active key does) sets no new timer; when the timer comes up and the
//! session has moved on, it is re-armed at its current end. A key's timer looks at all its
//! sessions, so a timer left behind by a merge is harmless.
//!
//! An event is late if it would join a session that has already fired (or that should have, given
//! the watermark it arrived under), or if its own window `[t, t + gap)` ended at or before that
//! watermark.

mod builtin;
mod slots;
mod state;
mod timers;

use datafusion::arrow::row::{RowConverter, SortField};

use self::slots::NONE;
pub(super) use self::slots::Slots;
pub(super) use self::timers::Timers;
use super::aggregate::{AggregateCore, late_events};
use super::key_ids::KeyIds;
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::Result;
use crate::sql::AggregateSpec;

/// An open session.
#[derive(Debug, Clone, Copy)]
struct Session {
    start: i64,
    end: i64,
    /// When its timer comes up (at most `end`).
    armed: i64,
    /// Its aggregates' slot.
    slot: u32,
}

/// One key's sessions.
#[derive(Debug, Clone)]
struct KeyState {
    sessions: Vec<Session>,
    /// End of the key's last fired session; `i64::MIN`: none remembered.
    fired_until: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            sessions: Vec::new(),
            fired_until: i64::MIN,
        }
    }
}

impl KeyState {
    /// Whether the key holds anything (a key that does not is as good as unseen).
    fn is_live(&self) -> bool {
        !self.sessions.is_empty() || self.fired_until != i64::MIN
    }
}

/// The session-window aggregation operator.
pub struct SessionWindow {
    core: AggregateCore,
    gap: i64,
    key_ids: KeyIds,
    /// Per key id.
    keys: Vec<KeyState>,
    slots: Slots,
    /// (armed time, key id) of every open session, and stale ones left by merges.
    timers: Timers,
    /// (fired_until + gap, key id): when a key's fired history may be forgotten.
    forget: Timers,
    /// Row-encoded keys, for snapshots (the format predates [`KeyIds`]).
    converter: RowConverter,
    /// Scratch: each row's key id, and its slot; key ids whose timers are due.
    ids: Vec<u32>,
    due: Vec<u32>,
    row_slots: Vec<u32>,
}

impl SessionWindow {
    /// A session window with inactivity `gap` milliseconds.
    pub fn new(spec: AggregateSpec, gap: i64) -> Result<Self> {
        let fields = spec
            .key_schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(SessionWindow {
            converter: RowConverter::new(fields)?,
            key_ids: KeyIds::new(&spec)?,
            slots: Slots::new(&spec.aggregates)?,
            core: AggregateCore::new(spec)?,
            gap,
            keys: Vec::new(),
            timers: Timers::new(Timers::width_for(gap)),
            forget: Timers::new(Timers::width_for(gap)),
            ids: Vec::new(),
            due: Vec::new(),
            row_slots: Vec::new(),
        })
    }

    /// The slot for an event at `t` of key `id`, whose window overlaps no fired session:
    /// the session that already covers `[t, t + gap)`, or one created, extended or merged.
    fn slot_for(&mut self, id: u32, t: i64) -> Result<u32> {
        let gap = self.gap;
        let ks = &mut self.keys[id as usize];
        let mut hit: Option<usize> = None;
        let mut i = 0;
        while i < ks.sessions.len() {
            let s = ks.sessions[i];
            if !(t < s.end && s.start < t + gap) {
                i += 1;
                continue;
            }
            match hit {
                None => {
                    hit = Some(i);
                    i += 1;
                }
                Some(h) => {
                    // The event bridges two sessions: fold this one into the first.
                    self.slots.merge(ks.sessions[h].slot, s.slot)?;
                    let first = &mut ks.sessions[h];
                    first.start = first.start.min(s.start);
                    first.end = first.end.max(s.end);
                    first.armed = first.armed.min(s.armed);
                    ks.sessions.remove(i);
                }
            }
        }
        Ok(match hit {
            Some(h) => {
                let s = &mut ks.sessions[h];
                s.start = s.start.min(t);
                s.end = s.end.max(t + gap);
                s.slot
            }
            None => {
                let slot = self.slots.alloc();
                ks.sessions.push(Session {
                    start: t,
                    end: t + gap,
                    armed: t + gap,
                    slot,
                });
                self.timers.push(t + gap, id);
                slot
            }
        })
    }

    fn emit_until(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        // (end, key id, start, slot) of each session that fires.
        let mut fired: Vec<(i64, u32, i64, u32)> = Vec::new();
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.timers.pop_due(watermark, &mut due);
        for &id in &due {
            let ks = &mut self.keys[id as usize];
            let before = fired.len();
            let mut i = 0;
            while i < ks.sessions.len() {
                let s = &mut ks.sessions[i];
                if s.end <= watermark {
                    fired.push((s.end, id, s.start, s.slot));
                    ks.fired_until = ks.fired_until.max(s.end);
                    ks.sessions.swap_remove(i);
                    continue;
                }
                if s.armed <= watermark {
                    s.armed = s.end;
                    self.timers.push(s.end, id);
                }
                i += 1;
            }
            if fired.len() > before {
                self.forget
                    .push(ks.fired_until.saturating_add(self.gap), id);
            }
        }
        // In the order their timers came up (deterministic; a sink orders nothing by it).
        let emitted = match fired.is_empty() {
            true => Ok(()),
            false => self.emit_sessions(&fired, out),
        };
        // Forget fired history that can no longer make an on-time event late.
        due.clear();
        self.forget.pop_due(watermark, &mut due);
        for &id in &due {
            let ks = &mut self.keys[id as usize];
            if ks.sessions.is_empty() && ks.fired_until.saturating_add(self.gap) <= watermark {
                ks.fired_until = i64::MIN;
            }
        }
        self.due = due;
        emitted?;
        self.compact_keys()
    }

    /// Drops the keys nothing refers to any more, once enough have been handed out.
    fn compact_keys(&mut self) -> Result<()> {
        if !self.key_ids.wants_compaction() {
            return Ok(());
        }
        let live: Vec<u32> = (0..self.keys.len() as u32)
            .filter(|id| self.keys[*id as usize].is_live())
            .collect();
        let Some(renumber) = self.key_ids.compact(&live)? else {
            return Ok(());
        };
        let mut keys = vec![KeyState::default(); live.len()];
        for old in &live {
            keys[renumber[*old as usize] as usize] = std::mem::take(&mut self.keys[*old as usize]);
        }
        self.keys = keys;
        let new_id = |id: u32| {
            renumber
                .get(id as usize)
                .copied()
                .filter(|n| *n != u32::MAX)
        };
        self.timers.renumber(new_id);
        self.forget.renumber(new_id);
        Ok(())
    }

    fn emit_sessions(
        &mut self,
        fired: &[(i64, u32, i64, u32)],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        // Every session fired by one watermark goes out in one batch, each row with its bounds.
        let rows = fired.len();
        let ids: Vec<u32> = fired.iter().map(|f| f.1).collect();
        let slots: Vec<u32> = fired.iter().map(|f| f.3).collect();
        let keys = self.key_ids.keys(&ids)?;
        let starts: Vec<i64> = fired.iter().map(|f| f.2).collect();
        let ends: Vec<i64> = fired.iter().map(|f| f.0).collect();
        let aggs = self.slots.take(&slots)?;
        let (batch, ends) = self.core.output_rows(&starts, &ends, keys, aggs, rows)?;
        if batch.num_rows() > 0 {
            out.results.push(Emitted {
                batch,
                times: RowTimes::Each(ends),
            });
        }
        Ok(())
    }
}

impl Operator for SessionWindow {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let mut p = self.core.prepare(input)?;
        p.index_rows();
        let n = p.len();
        if n == 0 {
            return Ok(());
        }
        let mut ids = std::mem::take(&mut self.ids);
        self.key_ids.intern(&p.keys, n, &mut ids)?;
        if self.keys.len() < self.key_ids.len() {
            self.keys.resize_with(self.key_ids.len(), KeyState::default);
        }
        let mut row_slots = std::mem::take(&mut self.row_slots);
        row_slots.clear();
        row_slots.resize(n, NONE);
        let gap = self.gap;
        let mut late_rows = Vec::new();
        for r in 0..n {
            let t = p.times[r];
            let input_row = p.input_row(r);
            let wm = input.arrival_watermarks[input_row];
            let id = ids[r];
            let ks = &self.keys[id as usize];
            // Late: its own window has passed, or it reaches a session that fired (or should
            // have, under the watermark it arrived behind).
            let late = t.saturating_add(gap) <= wm
                || t < ks.fired_until
                || ks
                    .sessions
                    .iter()
                    .any(|s| t < s.end && s.start < t + gap && s.end <= wm);
            if late {
                late_rows.push(input_row as u32);
                continue;
            }
            row_slots[r] = self.slot_for(id, t)?;
        }
        let updated = self.slots.update(&p.args, &p.filters, &mut row_slots);
        self.ids = ids;
        self.row_slots = row_slots;
        updated?;
        if !late_rows.is_empty() {
            out.late.push(late_events(input, &late_rows)?);
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.emit_until(watermark, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.emit_until(i64::MAX, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        state::snapshot(self)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        state::restore(self, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{PlanKind, plan_query};

    const SQL: &str = "SELECT card_id, window_start, window_end, count(*) AS n, \
        count(DISTINCT merchant_id) AS merchants, sum(amount_minor) AS total, max(amount_minor) AS hi, \
        first_value(merchant_id ORDER BY event_time) AS first_merchant \
        FROM SESSION(payments, event_time, INTERVAL '10' SECOND) GROUP BY card_id, window_start, window_end";

    fn operator() -> SessionWindow {
        match plan_query(SQL).unwrap().kind {
            PlanKind::Window { aggregate, .. } => SessionWindow::new(aggregate, 10_000).unwrap(),
            k => panic!("{k:?}"),
        }
    }

    /// Events (card, seconds, merchant, amount) as one batch, all on time.
    fn batch(events: &[(&str, i64, &str, i64)]) -> EventBatch {
        let text: String = events
            .iter()
            .enumerate()
            .map(|(i, (card, s, merchant, amount))| {
                format!(
                    "{{\"event_id\":\"e{i}_{s}\",\"event_type\":\"authorization\",\
                     \"event_time\":\"{}\",\"payment_id\":\"p{i}_{s}\",\
                     \"merchant_id\":\"{merchant}\",\"card_id\":\"{card}\",\"amount_minor\":{amount},\
                     \"currency\":\"EUR\"}}\n",
                    crate::time::rfc3339(BASE + s * 1000)
                )
            })
            .collect();
        let decoded = crate::decode::decode_json_lines(text.as_bytes(), 1, 1_000);
        assert!(decoded.rejects.is_empty() && decoded.batches.len() == 1);
        let b = decoded.batches.into_iter().next().unwrap().batch;
        let n = b.num_rows();
        EventBatch::all(b, (0..n as u64).collect(), vec![i64::MIN; n])
    }

    fn rows(out: &OperatorOutput) -> Vec<String> {
        let mut lines = Vec::new();
        for r in &out.results {
            for i in 0..r.batch.num_rows() {
                let row: Vec<String> = r
                    .batch
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect();
                lines.push(row.join(","));
            }
        }
        lines.sort();
        lines
    }

    /// 2026-11-01T00:00:00Z.
    const BASE: i64 = 1_793_491_200_000;

    #[test]
    fn state_is_proportional_to_open_sessions() {
        // 3,000 cards, one event each, a second apart, with a 10 s gap: about ten sessions are
        // open at a time. Slots are reused and the keys of fired sessions are compacted away.
        let mut op = operator();
        let mut out = OperatorOutput::default();
        let cards: Vec<String> = (0..3_000).map(|i| format!("c{i}")).collect();
        for chunk in (0..3_000i64).collect::<Vec<_>>().chunks(100) {
            let events: Vec<(&str, i64, &str, i64)> = chunk
                .iter()
                .map(|i| (cards[*i as usize].as_str(), *i, "m", 1))
                .collect();
            op.process(&batch(&events), &mut out).unwrap();
            op.advance_watermark(BASE + chunk[chunk.len() - 1] * 1000, &mut out)
                .unwrap();
            assert!(op.slots.len <= 256, "slots: {}", op.slots.len);
            assert!(op.keys.len() <= 1_024, "keys: {}", op.keys.len());
        }
        op.finish(&mut out).unwrap();
        assert_eq!(
            out.results
                .iter()
                .map(|r| r.batch.num_rows())
                .sum::<usize>(),
            3_000
        );
    }

    const MERGED: [&str; 2] = [
        "c1,2026-11-01T00:00:00Z,2026-11-01T00:00:26Z,3,2,600,300,m_a",
        "c2,2026-11-01T00:00:05Z,2026-11-01T00:00:15Z,1,1,7,7,m_z",
    ];

    #[test]
    fn an_event_bridging_two_sessions_merges_them_within_a_batch() {
        // [0, 10) and [16, 26) of c1 are bridged by the event at 8 s ([8, 18)), in the same
        // batch that opened them: its rows follow the merged slot.
        let mut op = operator();
        let mut out = OperatorOutput::default();
        op.process(
            &batch(&[
                ("c1", 0, "m_a", 100),
                ("c1", 16, "m_b", 300),
                ("c2", 5, "m_z", 7),
                ("c1", 8, "m_a", 200),
            ]),
            &mut out,
        )
        .unwrap();
        op.finish(&mut out).unwrap();
        assert_eq!(rows(&out), MERGED);
        assert_eq!(op.slots.free.len(), 3, "every slot is free again");
    }

    #[test]
    fn sessions_merge_across_batches_and_a_snapshot() {
        let mut op = operator();
        let mut out = OperatorOutput::default();
        op.process(
            &batch(&[
                ("c1", 0, "m_a", 100),
                ("c1", 16, "m_b", 300),
                ("c2", 5, "m_z", 7),
            ]),
            &mut out,
        )
        .unwrap();
        let bytes = op.snapshot().unwrap();
        let mut restored = operator();
        restored.restore(&bytes).unwrap();
        for op in [&mut op, &mut restored] {
            let mut out = OperatorOutput::default();
            op.process(&batch(&[("c1", 8, "m_a", 200)]), &mut out)
                .unwrap();
            // 2026-11-01T00:00:15Z
            op.advance_watermark(1_793_491_215_000, &mut out).unwrap();
            assert_eq!(rows(&out), MERGED[1..], "c2's session fired at its end");
            op.finish(&mut out).unwrap();
            assert_eq!(rows(&out), MERGED);
        }
    }
}
