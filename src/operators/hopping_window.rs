//! `HOP`: windows of `size` every `slide`, computed from shared panes.
//!
//! Each event is aggregated once, into its *pane* — a slot of `gcd(slide, size)` milliseconds —
//! not copied into every window that contains it. Every pane lies within exactly the same set of
//! windows, so a pane is complete (frozen into plain state arrays) when its earliest window fires.
//! A window fires by merging its panes' states into the operator's one window [`GroupTable`],
//! which each emit empties for the next.
//!
//! ```text
//!  panes    |p0|p1|p2|p3|p4|p5|p6|p7|      slide = 2 panes, size = 6 panes
//!  windows  [p0 ........ p5)
//!                 [p2 ........ p7)
//! ```

use std::collections::BTreeMap;

use datafusion::arrow::array::UInt32Array;

use super::aggregate::{AggregateCore, Buckets, bucket_rows};
use super::group_table::{FrozenGroups, GroupTable};
use super::{EventBatch, Operator, OperatorOutput, first_window_end};
use crate::error::Result;
use crate::sql::{AggregateSpec, WindowKind};
use crate::state::{WindowStates, decode_windows, encode_windows};

enum Pane {
    Open(GroupTable),
    Frozen(FrozenGroups),
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The hopping-window aggregation operator.
pub struct HoppingWindow {
    core: AggregateCore,
    slide: i64,
    size: i64,
    pane: i64,
    /// Panes by start.
    panes: BTreeMap<i64, Pane>,
    /// Start of the next window that may fire; windows before it have fired.
    next_start: i64,
    /// The table a firing window's panes merge into, emptied by each emit and reused.
    window: GroupTable,
    /// Emptied tables of frozen panes, for the next panes to open.
    spare: Vec<GroupTable>,
}

impl HoppingWindow {
    /// A hopping window of `size` every `slide` milliseconds.
    pub fn new(spec: AggregateSpec, slide: i64, size: i64) -> Result<Self> {
        Ok(HoppingWindow {
            window: GroupTable::reusable(&spec)?,
            core: AggregateCore::new(spec)?,
            slide,
            size,
            pane: gcd(slide, size),
            panes: BTreeMap::new(),
            next_start: i64::MIN,
            spare: Vec::new(),
        })
    }

    fn kind(&self) -> WindowKind {
        WindowKind::Hop {
            slide: self.slide,
            size: self.size,
        }
    }

    /// Start of the earliest window containing time `t`.
    fn first_window_start(&self, t: i64) -> i64 {
        first_window_end(self.kind(), t) - self.size
    }

    fn open_pane(&mut self, start: i64) -> Result<&mut GroupTable> {
        let pane = match self.panes.entry(start) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let table = match self.spare.pop() {
                    Some(t) => t,
                    None => GroupTable::reusable(&self.core.spec)?,
                };
                e.insert(Pane::Open(table))
            }
        };
        match pane {
            Pane::Open(t) => Ok(t),
            Pane::Frozen(_) => Err(crate::error::Error::Internal(format!(
                "event added to pane {start} after it was frozen"
            ))),
        }
    }

    fn fire_until(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        // Freeze every pane whose earliest window is due: nothing can be added to it any more.
        let kind = self.kind();
        for (start, pane) in self.panes.iter_mut() {
            if first_window_end(kind, *start) > watermark {
                break;
            }
            if let Pane::Open(t) = pane {
                let frozen = Pane::Frozen(t.freeze()?);
                // The emptied table keeps its capacity for the next pane (a few are enough: one
                // pane opens per slide).
                if let Pane::Open(t) = std::mem::replace(pane, frozen)
                    && self.spare.len() < 4
                {
                    self.spare.push(t);
                }
            }
        }
        while let Some((&first, _)) = self.panes.first_key_value() {
            let start = self.next_start.max(self.first_window_start(first));
            let end = start.saturating_add(self.size);
            if end > watermark {
                break;
            }
            let table = &mut self.window;
            for (_, pane) in self.panes.range(start..end) {
                match pane {
                    Pane::Frozen(f) => table.merge(f)?,
                    Pane::Open(_) => {
                        return Err(crate::error::Error::Internal(
                            "firing a window over an open pane".into(),
                        ));
                    }
                }
            }
            let (keys, aggs, rows) = table.emit()?;
            let batch = self.core.output(start, end, keys, aggs, rows)?;
            if batch.num_rows() > 0 {
                out.results.push(batch);
            }
            self.next_start = start + self.slide;
            // Panes before the next window's start are no longer needed.
            while let Some(e) = self.panes.first_entry() {
                if *e.key() >= self.next_start {
                    break;
                }
                e.remove();
            }
        }
        Ok(())
    }
}

impl Operator for HoppingWindow {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let mut p = self.core.prepare(&input.batch, input.selection.as_ref())?;
        let kind = self.kind();
        if let Some(late) = p.split_late(input, |ts, wm| first_window_end(kind, ts) <= wm)? {
            out.late.push(late);
        }
        if p.len() == 0 {
            return Ok(());
        }
        let pane = self.pane;
        match bucket_rows(&p.times, |t| t - t.rem_euclid(pane)) {
            Buckets::One(start) => {
                let (keys, args, filters, n) = (&p.keys, &p.args, &p.filters, p.len());
                self.open_pane(start)?.update(keys, args, filters, n)?;
            }
            Buckets::Many(buckets) => {
                for (start, rows) in buckets {
                    let idx = UInt32Array::from(rows);
                    let (keys, args, filters) = p.select(&idx)?;
                    self.open_pane(start)?
                        .update(&keys, &args, &filters, idx.len())?;
                }
            }
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.fire_until(watermark, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.fire_until(i64::MAX, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut windows = Vec::with_capacity(self.panes.len());
        let mut frozen_flags = Vec::with_capacity(self.panes.len());
        for (start, pane) in self.panes.iter_mut() {
            match pane {
                Pane::Open(t) => {
                    let f = t.freeze()?;
                    t.merge(&f)?;
                    windows.push((*start, f));
                    frozen_flags.push(false);
                }
                Pane::Frozen(f) => {
                    windows.push((*start, f.clone()));
                    frozen_flags.push(true);
                }
            }
        }
        encode_windows(
            "hopping_window",
            &WindowStates {
                windows,
                extra: serde_json::json!({
                    "slide": self.slide, "size": self.size,
                    "next_start": self.next_start, "frozen": frozen_flags,
                }),
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let s = decode_windows("hopping_window", bytes, &self.core.spec)?;
        let frozen: Vec<bool> =
            serde_json::from_value(s.extra["frozen"].clone()).unwrap_or_default();
        self.next_start = s.extra["next_start"].as_i64().unwrap_or(i64::MIN);
        self.panes.clear();
        for (i, (start, f)) in s.windows.into_iter().enumerate() {
            let pane = if frozen.get(i).copied().unwrap_or(false) {
                Pane::Frozen(f)
            } else {
                let mut t = GroupTable::new(&self.core.spec)?;
                t.merge(&f)?;
                Pane::Open(t)
            };
            self.panes.insert(start, pane);
        }
        Ok(())
    }
}
