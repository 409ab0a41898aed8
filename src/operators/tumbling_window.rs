//! `TUMBLE`: fixed, non-overlapping event-time windows aligned to the epoch.
//!
//! State: one [`GroupTable`] per open window, keyed by window start. A window `[s, s + size)`
//! fires when the watermark reaches `s + size`; an event whose window has already fired (its end
//! is at or behind the watermark it arrived under) is late.

use std::collections::BTreeMap;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::concat;

use super::aggregate::{AggregateCore, Buckets, bucket_rows};
use super::dense::Dense;
use super::group_table::GroupTable;
use super::window_state::{WindowStates, decode_windows, encode_windows};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::Result;
use crate::sql::AggregateSpec;

/// The tumbling-window aggregation operator.
pub struct TumblingWindow {
    core: AggregateCore,
    /// Window length in milliseconds.
    size: i64,
    /// Open windows by start.
    windows: BTreeMap<i64, GroupTable>,
    /// Quiet windows filled per key (`SET dense_windows`).
    dense: Option<Dense>,
}

impl TumblingWindow {
    /// A tumbling window of `size` milliseconds over the aggregation.
    pub fn new(spec: AggregateSpec, size: i64) -> Result<Self> {
        Ok(TumblingWindow {
            core: AggregateCore::new(spec)?,
            size,
            windows: BTreeMap::new(),
            dense: None,
        })
    }

    /// The same, dense: every key seen gets a row for each window until it has been quiet for
    /// `ttl` ms (`SET dense_windows`).
    pub fn dense(spec: AggregateSpec, size: i64, ttl: i64) -> Result<Self> {
        let dense = Dense::new(&spec, size, ttl)?;
        let mut w = TumblingWindow::new(spec, size)?;
        w.dense = Some(dense);
        Ok(w)
    }

    /// Emits, in order, every window (quiet ones too) the watermark closes.
    fn emit_dense(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let Some(dense) = &mut self.dense else {
            return Ok(());
        };
        // A window emitted already that got events again (after `finish`): its own groups.
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if !dense.behind(start) || start.saturating_add(self.size) > watermark {
                break;
            }
            let (keys, aggs, rows) = entry.remove().emit()?;
            dense.emitted_again(start, &keys, rows)?;
            window_output(&self.core, start, self.size, (keys, aggs, rows), out)?;
        }
        while let Some(start) = dense.due(watermark, &self.windows) {
            let mut table = match self.windows.remove(&start) {
                Some(t) => t,
                None => GroupTable::new(&self.core.spec)?,
            };
            let (mut keys, mut aggs, mut rows) = table.emit()?;
            if let Some((quiet, n)) = dense.fill(start, &keys, rows)? {
                let (args, filters) = self.core.no_rows(n)?;
                let mut empty = GroupTable::new(&self.core.spec)?;
                empty.update(&quiet, &args, &filters, n)?;
                let (k, a, m) = empty.emit()?;
                let join = |x: Vec<ArrayRef>, y: Vec<ArrayRef>| {
                    x.iter()
                        .zip(&y)
                        .map(|(x, y)| concat(&[x.as_ref(), y.as_ref()]))
                        .collect::<std::result::Result<Vec<_>, _>>()
                };
                keys = if rows == 0 { k } else { join(keys, k)? };
                aggs = if rows == 0 { a } else { join(aggs, a)? };
                rows += m;
            }
            window_output(&self.core, start, self.size, (keys, aggs, rows), out)?;
        }
        Ok(())
    }

    fn start_of(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.size)
    }

    fn emit_until(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        if self.dense.is_some() {
            return self.emit_dense(watermark, out);
        }
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start.saturating_add(self.size) > watermark {
                break;
            }
            let mut table = entry.remove();
            let (keys, aggs, rows) = table.emit()?;
            window_output(&self.core, start, self.size, (keys, aggs, rows), out)?;
        }
        Ok(())
    }
}

/// The rows of the window `[start, start + size)` from its groups' keys and aggregates, through
/// HAVING and the SELECT list, stamped with the window's end.
fn window_output(
    core: &AggregateCore,
    start: i64,
    size: i64,
    (keys, aggs, rows): (Vec<ArrayRef>, Vec<ArrayRef>, usize),
    out: &mut OperatorOutput,
) -> Result<()> {
    let batch = core.output(start, start + size, keys, aggs, rows)?;
    if batch.num_rows() > 0 {
        out.results.push(Emitted {
            batch,
            times: RowTimes::All(start + size),
        });
    }
    Ok(())
}

impl Operator for TumblingWindow {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let mut p = self.core.prepare(input)?;
        let size = self.size;
        if let Some(late) = p.split_late(input, |ts, wm| ts - ts.rem_euclid(size) + size <= wm)? {
            out.late.push(late);
        }
        if p.len() == 0 {
            return Ok(());
        }
        let buckets = bucket_rows(&p.times, |t| self.start_of(t));
        if let Some(d) = &mut self.dense {
            match &buckets {
                Buckets::One(start) => d.saw(*start),
                Buckets::Many(b) => b.iter().for_each(|(start, _)| d.saw(*start)),
            }
        }
        match buckets {
            Buckets::One(start) => {
                let table = match self.windows.entry(start) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(GroupTable::new(&self.core.spec)?)
                    }
                };
                table.update(&p.keys, &p.args, &p.filters, p.len())?;
            }
            Buckets::Many(buckets) => {
                for (start, rows) in buckets {
                    let idx = UInt32Array::from(rows);
                    let (keys, args, filters) = p.select(&idx)?;
                    let table = match self.windows.entry(start) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(GroupTable::new(&self.core.spec)?)
                        }
                    };
                    table.update(&keys, &args, &filters, idx.len())?;
                }
            }
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
        let mut frozen = Vec::with_capacity(self.windows.len());
        for (start, table) in &mut self.windows {
            let f = table.freeze()?;
            // Freezing empties the table; merge the state straight back so the operator goes on.
            table.merge(&f)?;
            frozen.push((*start, f));
        }
        let (dense_header, dense) = match &self.dense {
            Some(d) => d.snapshot()?,
            None => (serde_json::Value::Null, None),
        };
        encode_windows(
            "tumbling_window",
            &WindowStates {
                windows: frozen,
                extra: serde_json::json!({"size": self.size, "dense": dense_header}),
                dense,
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let states = decode_windows("tumbling_window", bytes, &self.core.spec)?;
        if let Some(d) = &mut self.dense {
            d.restore(
                "tumbling_window",
                &states.extra["dense"],
                states.dense.as_ref(),
            )?;
        }
        self.windows.clear();
        for (start, f) in states.windows {
            let mut t = GroupTable::new(&self.core.spec)?;
            t.merge(&f)?;
            self.windows.insert(start, t);
        }
        Ok(())
    }
}
