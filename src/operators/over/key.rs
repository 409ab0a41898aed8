//! One key's state for the over operator: its history of rows in event-time order, where each
//! frame stands in it, and the rows waiting for their results.
//!
//! ```text
//!  seq:   base ─────────────── done ───────────── next
//!         │ history (ts, argument values)          │
//!         │   frame f: [start, end) of rows in its accumulators
//!         │                     │ waiting: appended, result not computed yet (lead)
//! ```
//!
//! Every frame only moves forward, so each row enters and leaves each accumulator once: the
//! cost per event is constant, whatever the frame's length. The history keeps only what a
//! frame or `lag` can still read; several frames over the same key share it.

use std::collections::VecDeque;

use super::acc::Acc;
use super::value::Val;
use crate::error::Result;
use crate::sql::{Frame, FunctionKind};

/// Where a buffered event row is: chunk and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowRef {
    pub chunk: u32,
    pub row: u32,
}

/// The functions computed over one frame: (function, argument slot).
pub(super) type Members = Vec<(usize, Option<usize>)>;

/// One function: its kind, its argument's slot, and (aggregates) its frame and its place among
/// the frame's accumulators.
pub(super) type Function = (FunctionKind, Option<usize>, Option<(usize, usize)>);

/// What the functions of a query need, shared by every key.
#[derive(Debug)]
pub(super) struct Layout {
    /// Distinct frames, each with the functions computed over it: (function, slot).
    pub frames: Vec<(Frame, Members)>,
    /// Every function.
    pub functions: Vec<Function>,
    /// Argument values kept per row.
    pub slots: usize,
    /// Which slots hold floats.
    pub float_slots: Vec<bool>,
    /// Longest `lag` offset.
    pub max_lag: u64,
    /// Longest `lead` offset (0: none).
    pub max_lead: u64,
    /// Defaults of `lag`/`lead`, per function.
    pub defaults: Vec<Val>,
}

impl Layout {
    /// Empty accumulators for every frame.
    pub(super) fn new_frames(&self) -> Vec<FrameState> {
        self.frames
            .iter()
            .map(|(frame, members)| {
                let bounded = matches!(
                    frame,
                    Frame::Rows { start: Some(_), .. } | Frame::Range { start: Some(_), .. }
                );
                FrameState {
                    start: 0,
                    end: 0,
                    accs: members
                        .iter()
                        .map(|(f, slot)| {
                            Acc::new(
                                &self.functions[*f].0,
                                slot.is_some_and(|s| self.float_slots[s]),
                                bounded,
                            )
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// Rows `[start, end)` of the history are in the accumulators.
#[derive(Debug, Clone)]
pub(super) struct FrameState {
    pub start: u64,
    pub end: u64,
    pub accs: Vec<Acc>,
}

/// One key's state.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// Sequence number of the first row in the history.
    pub base: u64,
    /// Rows whose results are computed.
    pub done: u64,
    /// Sequence number the next appended row gets.
    pub next: u64,
    /// Event time of each history row.
    pub ts: VecDeque<i64>,
    /// Argument values of each history row, `slots` per row.
    pub vals: VecDeque<Val>,
    /// Each frame's place and accumulators (empty until the key's first row).
    pub frames: Vec<FrameState>,
    /// Rows `done..next`, waiting for their results.
    pub waiting: VecDeque<RowRef>,
    /// Event time of the newest row.
    pub last_ts: i64,
}

impl KeyState {
    /// Whether the key holds nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.next == 0
    }

    /// Appends a row (event time `ts`, argument values `vals`), waiting for its result.
    pub(super) fn append(
        &mut self,
        layout: &Layout,
        ts: i64,
        vals: impl Iterator<Item = Val>,
        at: RowRef,
    ) {
        if self.frames.is_empty() && !layout.frames.is_empty() {
            self.frames = layout.new_frames();
        }
        self.ts.push_back(ts);
        self.vals.extend(vals);
        debug_assert_eq!(self.vals.len(), self.ts.len() * layout.slots);
        self.waiting.push_back(at);
        self.next += 1;
        self.last_ts = ts;
    }

    fn val(&self, layout: &Layout, seq: u64, slot: usize) -> &Val {
        &self.vals[(seq - self.base) as usize * layout.slots + slot]
    }

    fn ts_at(&self, seq: u64) -> i64 {
        self.ts[(seq - self.base) as usize]
    }

    /// Computes the results of waiting rows, in order, as far as they can be (a row with
    /// `lead` waits for the rows it reads, unless `finishing`). `emit` receives each row, its
    /// event time and its function values.
    pub(super) fn compute(
        &mut self,
        layout: &Layout,
        finishing: bool,
        values: &mut [Vec<Val>],
        emit: &mut impl FnMut(RowRef, i64),
    ) -> Result<()> {
        while self.done < self.next {
            let i = self.done;
            if !finishing && layout.max_lead > 0 && i + layout.max_lead >= self.next {
                break;
            }
            let t = self.ts_at(i);
            for (f, (frame, members)) in layout.frames.iter().enumerate() {
                self.move_frame(layout, f, *frame, members, i, t);
            }
            for (f, (kind, slot, frame)) in layout.functions.iter().enumerate() {
                let v = match kind {
                    FunctionKind::RowNumber => Val::Int(i as i64 + 1),
                    FunctionKind::Lag { offset, .. } => match i.checked_sub(*offset) {
                        Some(j) => self
                            .val(layout, j, slot.expect("lag reads a value"))
                            .clone(),
                        None => layout.defaults[f].clone(),
                    },
                    FunctionKind::Lead { offset, .. } => {
                        let j = i + offset;
                        if j < self.next {
                            self.val(layout, j, slot.expect("lead reads a value"))
                                .clone()
                        } else {
                            layout.defaults[f].clone()
                        }
                    }
                    kind => {
                        let (frame, member) = frame.expect("an aggregate has a frame");
                        self.frames[frame].accs[member].value(kind)?
                    }
                };
                values[f].push(v);
            }
            let at = self
                .waiting
                .pop_front()
                .expect("a waiting row per uncomputed row");
            emit(at, t);
            self.done += 1;
            self.evict(layout);
        }
        Ok(())
    }

    /// Moves frame `f` to where it stands for row `i` (event time `t`).
    fn move_frame(
        &mut self,
        layout: &Layout,
        f: usize,
        frame: Frame,
        members: &[(usize, Option<usize>)],
        i: u64,
        t: i64,
    ) {
        let (start, end) = (self.frames[f].start, self.frames[f].end);
        let (new_start, new_end) = match frame {
            Frame::Rows { start: s, end: e } => {
                let new_end = (i + 1).saturating_sub(e).max(end);
                let new_start = s.map_or(start, |s| i.saturating_sub(s).max(start));
                (new_start.min(new_end), new_end)
            }
            Frame::Range { start: s, end: e } => {
                let upto = t.saturating_sub(e);
                let mut new_end = end;
                while new_end < self.next && self.ts_at(new_end) <= upto {
                    new_end += 1;
                }
                let mut new_start = start;
                if let Some(s) = s {
                    let from = t.saturating_sub(s);
                    while new_start < new_end && self.ts_at(new_start) < from {
                        new_start += 1;
                    }
                }
                (new_start, new_end)
            }
        };
        // Rows leave in the order they entered. When the frame jumped past its old end, the
        // rows between never enter at all.
        let (leave, enter) = if new_start >= end {
            (start..end, new_start..new_end)
        } else {
            (start..new_start, end..new_end)
        };
        let base = self.base;
        let slots = layout.slots;
        let vals = &self.vals;
        let at = |seq: u64, s: usize| &vals[(seq - base) as usize * slots + s];
        let state = &mut self.frames[f];
        let mut apply = |range: std::ops::Range<u64>, enter: bool| {
            for seq in range {
                for (m, (_, slot)) in members.iter().enumerate() {
                    let v = slot.map(|s| at(seq, s));
                    if enter {
                        state.accs[m].add(seq, v);
                    } else {
                        state.accs[m].remove(seq, v);
                    }
                }
            }
        };
        if new_start >= end {
            apply(leave, false);
            apply(enter, true);
        } else {
            apply(enter, true);
            apply(leave, false);
        }
        state.start = new_start;
        state.end = new_end;
    }

    /// Drops history rows no frame, `lag` or waiting row can read any more.
    fn evict(&mut self, layout: &Layout) {
        let mut keep_from = self.done.saturating_sub(layout.max_lag);
        for ((frame, _), state) in layout.frames.iter().zip(&self.frames) {
            let needed = match frame {
                Frame::Rows { start: None, .. } | Frame::Range { start: None, .. } => state.end,
                _ => state.start,
            };
            keep_from = keep_from.min(needed);
        }
        while self.base < keep_from {
            self.ts.pop_front();
            self.vals.drain(..layout.slots);
            self.base += 1;
        }
    }
}
