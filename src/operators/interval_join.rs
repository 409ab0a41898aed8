//! The interval join of the stream with itself ([`IntervalJoinSpec`]): each event may be a left
//! row, a right row, or both; a left row `L` and a right row `R` of the same key join when
//! `R.time − L.time` is within `[lower, upper]` and the ON condition holds.
//!
//! State is both sides' rows per key, kept only as long as a partner can still arrive: a left
//! row until the watermark passes `L.time + upper` (then, in a left join, it is emitted with
//! nulls if nothing matched), a right row until it passes `R.time − lower`. An event behind
//! the watermark it arrived under is late (a partner it needs may be gone). A pair is emitted
//! as soon as its second row arrives, so results do not wait for the watermark; each pair
//! exactly once, whichever row came first (a row is added to the left side, then matched as a
//! right row, then matched as a left row, then added to the right side).
//!
//! Rows stay in the batches they arrived in (a batch is dropped once none of its rows is
//! kept); a pair's columns are gathered from them with `interleave`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::JoinSide;
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate::{late_events, where_mask};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::{Error, Result};
use crate::sql::{IntervalJoinSpec, apply_stages_timed};
use crate::state::{Snapshot, state_err};

const NAME: &str = "interval_join";

/// A kept row: where it is, its time, and (a left row) whether it matched.
#[derive(Debug, Clone, Copy)]
struct Kept {
    batch: u32,
    row: u32,
    time: i64,
    matched: bool,
}

/// One key's kept rows.
#[derive(Debug, Default)]
struct Sides {
    left: Vec<Kept>,
    right: Vec<Kept>,
}

/// A candidate pair: the left row (its key id and index in that key's left rows) and both
/// rows' places.
struct Pair {
    key: usize,
    left_at: usize,
    left: (u32, u32),
    right: (u32, u32),
    time: i64,
}

/// The interval join operator.
pub(super) struct IntervalJoin {
    spec: IntervalJoinSpec,
    events: SchemaRef,
    time: usize,
    converter: RowConverter,
    /// Each right key column's type where it differs from the left key's (cast to it).
    right_casts: Vec<Option<datafusion::arrow::datatypes::DataType>>,
    /// Batches rows were kept from, and how many of their rows are kept.
    store: Vec<Option<RecordBatch>>,
    live: Vec<u32>,
    ids: HashMap<Box<[u8]>, usize>,
    keys: Vec<Sides>,
    key_bytes: Vec<Box<[u8]>>,
    free: Vec<usize>,
    /// (when a key's oldest kept row may go, key id).
    expiry: BinaryHeap<Reverse<(i64, usize)>>,
}

impl IntervalJoin {
    /// The join of `spec` over events of `events`, timed by column `time`.
    pub(super) fn new(spec: IntervalJoinSpec, events: SchemaRef, time: usize) -> Result<Self> {
        let types = spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&events))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let right_casts = spec
            .right_keys
            .iter()
            .zip(&types)
            .map(|(k, t)| Ok((k.data_type(&events)? != *t).then(|| t.clone())))
            .collect::<Result<_>>()?;
        Ok(IntervalJoin {
            converter: RowConverter::new(types.into_iter().map(SortField::new).collect())?,
            right_casts,
            spec,
            events,
            time,
            store: Vec::new(),
            live: Vec::new(),
            ids: HashMap::new(),
            keys: Vec::new(),
            key_bytes: Vec::new(),
            free: Vec::new(),
            expiry: BinaryHeap::new(),
        })
    }

    /// The key id of `bytes`, interning it.
    fn key_id(&mut self, bytes: &[u8]) -> usize {
        if let Some(id) = self.ids.get(bytes) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.key_bytes[id] = bytes.into();
                id
            }
            None => {
                self.keys.push(Sides::default());
                self.key_bytes.push(bytes.into());
                self.keys.len() - 1
            }
        };
        self.ids.insert(bytes.into(), id);
        id
    }

    /// Each row's key bytes for one side (`None` for rows the side does not take).
    fn side_keys(
        &self,
        batch: &RecordBatch,
        exprs: &[Arc<dyn PhysicalExpr>],
        casts: Option<&[Option<datafusion::arrow::datatypes::DataType>]>,
    ) -> Result<datafusion::arrow::row::Rows> {
        let n = batch.num_rows();
        let cols = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let c = e.evaluate(batch)?.into_array(n)?;
                Ok(match casts.and_then(|c| c[i].as_ref()) {
                    Some(t) => cast(&c, t)?,
                    None => c,
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(self.converter.convert_columns(&cols)?)
    }

    /// Which rows of `batch` (selected by `selection`) each side takes.
    fn side_mask(
        filter: &Option<Arc<dyn PhysicalExpr>>,
        batch: &RecordBatch,
        selection: Option<&BooleanArray>,
    ) -> Result<Vec<bool>> {
        let filters: Vec<Arc<dyn PhysicalExpr>> = filter.iter().cloned().collect();
        Ok(match where_mask(&filters, batch, selection)? {
            Some(m) => (0..batch.num_rows()).map(|i| m.value(i)).collect(),
            None => vec![true; batch.num_rows()],
        })
    }

    fn release(&mut self, batch: u32) {
        let b = batch as usize;
        self.live[b] -= 1;
        if self.live[b] == 0 {
            self.store[b] = None;
        }
    }

    /// Column `c` of the kept rows at `at` (batch, row).
    fn gather(&self, c: usize, at: &[(u32, u32)]) -> Result<ArrayRef> {
        // The batches the rows are in, each once.
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut arrays: Vec<&dyn Array> = Vec::new();
        let mut idx = Vec::with_capacity(at.len());
        for (b, r) in at {
            let i = *index.entry(*b).or_insert_with(|| {
                let batch = self.store[*b as usize].as_ref().expect("kept rows' batch");
                arrays.push(batch.column(c).as_ref());
                arrays.len() - 1
            });
            idx.push((i, *r as usize));
        }
        if at.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.events.field(c).data_type(),
            ));
        }
        Ok(interleave(&arrays, &idx)?)
    }

    /// Joined rows of `pairs` of (left place, right place or none), through the output stages.
    fn joined(
        &self,
        left: &[(u32, u32)],
        right: Option<&[(u32, u32)]>,
        times: &[i64],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        if left.is_empty() {
            return Ok(());
        }
        let width = self.events.fields().len();
        let mut cols = Vec::with_capacity(width * 2);
        for c in 0..width {
            cols.push(self.gather(c, left)?);
        }
        for c in 0..width {
            cols.push(match right {
                Some(r) => self.gather(c, r)?,
                None => new_null_array(self.events.field(c).data_type(), left.len()),
            });
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.spec.joined_schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(left.len())),
        )?;
        let (batch, times) = apply_stages_timed(&self.spec.output_stages, &batch, None, times)?;
        if batch.num_rows() > 0 {
            out.results.push(Emitted {
                batch,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }

    /// Evaluates the ON condition over candidate pairs; emits those that hold.
    fn emit_pairs(&mut self, pairs: Vec<Pair>, out: &mut OperatorOutput) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let on = &self.spec.on;
        let left: Vec<(u32, u32)> = pairs.iter().map(|p| p.left).collect();
        let right: Vec<(u32, u32)> = pairs.iter().map(|p| p.right).collect();
        let cols = on
            .column_indices()
            .iter()
            .map(|ci| match ci.side {
                JoinSide::Left => self.gather(ci.index, &left),
                _ => self.gather(ci.index, &right),
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(on.schema()),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?;
        let holds = on.expression().evaluate(&batch)?.into_array(pairs.len())?;
        let holds = holds
            .as_boolean_opt()
            .ok_or_else(|| Error::Internal("a join condition that is not a boolean".into()))?;
        let (mut l, mut r, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in pairs.iter().enumerate() {
            if holds.is_valid(i) && holds.value(i) {
                self.keys[p.key].left[p.left_at].matched = true;
                l.push(p.left);
                r.push(p.right);
                t.push(p.time);
            }
        }
        self.joined(&l, Some(&r), &t, out)
    }

    /// Drops what the watermark `wm` has passed (all, for `None`: the end), emitting unmatched
    /// left rows of a left join.
    fn expire(&mut self, wm: Option<i64>, out: &mut OperatorOutput) -> Result<()> {
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        let gone = |t: i64, bound: i64| wm.is_none_or(|w| t.saturating_add(bound) < w);
        let mut due: Vec<usize> = Vec::new();
        match wm {
            None => due.extend(0..self.keys.len()),
            Some(w) => {
                while let Some(Reverse((at, id))) = self.expiry.peek().copied() {
                    if at >= w {
                        break;
                    }
                    self.expiry.pop();
                    due.push(id);
                }
            }
        }
        due.sort_unstable();
        due.dedup();
        let (mut unmatched, mut times) = (Vec::new(), Vec::new());
        let mut released = Vec::new();
        for id in due {
            let sides = &mut self.keys[id];
            sides.left.retain(|k| {
                if !gone(k.time, upper) {
                    return true;
                }
                if !k.matched {
                    unmatched.push((k.batch, k.row));
                    times.push(k.time);
                }
                released.push(k.batch);
                false
            });
            sides.right.retain(|k| {
                if !gone(k.time, lower.saturating_neg()) {
                    return true;
                }
                released.push(k.batch);
                false
            });
            let next = sides
                .left
                .iter()
                .map(|k| k.time.saturating_add(upper))
                .chain(sides.right.iter().map(|k| k.time.saturating_sub(lower)))
                .min();
            match next {
                Some(at) => self.expiry.push(Reverse((at, id))),
                None if self.ids.remove(&self.key_bytes[id]).is_some() => self.free.push(id),
                None => {}
            }
        }
        if self.spec.left_outer {
            // In the order the rows arrived.
            let mut order: Vec<usize> = (0..unmatched.len()).collect();
            order.sort_by_key(|i| unmatched[*i]);
            let l: Vec<(u32, u32)> = order.iter().map(|i| unmatched[*i]).collect();
            let t: Vec<i64> = order.iter().map(|i| times[*i]).collect();
            self.joined(&l, None, &t, out)?;
        }
        for b in released {
            self.release(b);
        }
        Ok(())
    }

    /// Keeps row `row` of stored batch `b` on one side of key `id`.
    fn keep(&mut self, id: usize, b: u32, row: u32, time: i64, left: bool) {
        let k = Kept {
            batch: b,
            row,
            time,
            matched: false,
        };
        let at = if left {
            self.keys[id].left.push(k);
            time.saturating_add(self.spec.upper)
        } else {
            self.keys[id].right.push(k);
            time.saturating_sub(self.spec.lower)
        };
        self.live[b as usize] += 1;
        self.expiry.push(Reverse((at, id)));
    }

    /// Adds `batch`'s rows that `left` and `right` take (in row order), emitting the pairs.
    fn add(
        &mut self,
        batch: RecordBatch,
        left: &[bool],
        right: &[bool],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        let b = self.store.len() as u32;
        let times: Vec<i64> = batch
            .column(self.time)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        let lk = self.side_keys(&batch, &self.spec.left_keys, None)?;
        let casts = self.right_casts.clone();
        let rk = self.side_keys(&batch, &self.spec.right_keys, Some(&casts))?;
        self.store.push(Some(batch));
        self.live.push(0);
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        let mut pairs = Vec::new();
        for i in 0..times.len() {
            let t = times[i];
            let row = i as u32;
            if left[i] {
                let id = self.key_id(lk.row(i).as_ref());
                self.keep(id, b, row, t, true);
            }
            if right[i] {
                let id = self.key_id(rk.row(i).as_ref());
                for (at, l) in self.keys[id].left.iter().enumerate() {
                    let d = t - l.time;
                    if d >= lower && d <= upper {
                        pairs.push(Pair {
                            key: id,
                            left_at: at,
                            left: (l.batch, l.row),
                            right: (b, row),
                            time: t.max(l.time),
                        });
                    }
                }
            }
            if left[i] {
                let id = self.key_id(lk.row(i).as_ref());
                let left_at = self.keys[id].left.len() - 1;
                for r in &self.keys[id].right {
                    let d = r.time - t;
                    if d >= lower && d <= upper {
                        pairs.push(Pair {
                            key: id,
                            left_at,
                            left: (b, row),
                            right: (r.batch, r.row),
                            time: t.max(r.time),
                        });
                    }
                }
            }
            if right[i] {
                let id = self.key_id(rk.row(i).as_ref());
                self.keep(id, b, row, t, false);
            }
        }
        self.emit_pairs(pairs, out)?;
        if self.live[b as usize] == 0 {
            self.store[b as usize] = None;
        }
        Ok(())
    }
}

impl Operator for IntervalJoin {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let ev = input.compacted()?;
        let batch = &ev.batch;
        let mut left = Self::side_mask(&self.spec.left_filter, batch, None)?;
        let mut right = Self::side_mask(&self.spec.right_filter, batch, None)?;
        // Late: behind the watermark it arrived under (a partner it needs may be gone).
        let times = batch
            .column(self.time)
            .as_primitive::<TimestampMillisecondType>();
        let late: Vec<u32> = (0..batch.num_rows())
            .filter(|i| (left[*i] || right[*i]) && times.value(*i) < ev.arrival_watermarks[*i])
            .map(|i| i as u32)
            .collect();
        if !late.is_empty() {
            for i in &late {
                left[*i as usize] = false;
                right[*i as usize] = false;
            }
            out.late.push(late_events(&ev, &late)?);
        }
        if left.iter().chain(&right).any(|x| *x) {
            self.add(batch.clone(), &left, &right, out)?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.expire(Some(watermark), out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.expire(None, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        // Every kept row once, with the sides that keep it and whether its left row matched.
        let mut rows: Vec<(u32, u32, bool, bool, bool)> = Vec::new();
        let mut at: HashMap<(u32, u32), usize> = HashMap::new();
        for sides in &self.keys {
            for (k, is_left) in sides
                .left
                .iter()
                .map(|k| (k, true))
                .chain(sides.right.iter().map(|k| (k, false)))
            {
                let i = *at.entry((k.batch, k.row)).or_insert_with(|| {
                    rows.push((k.batch, k.row, false, false, false));
                    rows.len() - 1
                });
                if is_left {
                    rows[i].2 = true;
                    rows[i].4 = k.matched;
                } else {
                    rows[i].3 = true;
                }
            }
        }
        rows.sort_unstable();
        let places: Vec<(u32, u32)> = rows.iter().map(|r| (r.0, r.1)).collect();
        let mut cols = (0..self.events.fields().len())
            .map(|c| self.gather(c, &places))
            .collect::<Result<Vec<_>>>()?;
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            self.events.fields().iter().cloned().collect();
        for (name, pick) in [("_left", 2usize), ("_right", 3), ("_matched", 4)] {
            let v: BooleanArray = rows
                .iter()
                .map(|r| {
                    Some(match pick {
                        2 => r.2,
                        3 => r.3,
                        _ => r.4,
                    })
                })
                .collect();
            cols.push(Arc::new(v));
            fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
                name,
                datafusion::arrow::datatypes::DataType::Boolean,
                false,
            )));
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Snapshot {
            header: serde_json::json!({ "lower": self.spec.lower, "upper": self.spec.upper }),
            batches: vec![(0, batch)],
        }
        .encode(NAME)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap = Snapshot::decode(NAME, bytes)?;
        let bad = || state_err(NAME, "snapshot does not match the query");
        let [(_, batch)] = snap.batches.as_slice() else {
            return Err(bad());
        };
        let width = self.events.fields().len();
        if batch.num_columns() != width + 3 {
            return Err(bad());
        }
        self.store.clear();
        self.live.clear();
        self.ids.clear();
        self.keys.clear();
        self.key_bytes.clear();
        self.free.clear();
        self.expiry.clear();
        let flag = |c: usize| -> Result<Vec<bool>> {
            let a = batch.column(c).as_boolean_opt().ok_or_else(bad)?;
            Ok((0..a.len()).map(|i| a.value(i)).collect())
        };
        let (left, right, matched) = (flag(width)?, flag(width + 1)?, flag(width + 2)?);
        let events =
            RecordBatch::try_new(Arc::clone(&self.events), batch.columns()[..width].to_vec())
                .map_err(|_| bad())?;
        if events.num_rows() == 0 {
            return Ok(());
        }
        // Re-added without matching: every pair among them was emitted before the snapshot.
        let b = self.store.len() as u32;
        let times: Vec<i64> = events
            .column(self.time)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        let lk = self.side_keys(&events, &self.spec.left_keys, None)?;
        let casts = self.right_casts.clone();
        let rk = self.side_keys(&events, &self.spec.right_keys, Some(&casts))?;
        self.store.push(Some(events));
        self.live.push(0);
        for i in 0..times.len() {
            if left[i] {
                let id = self.key_id(lk.row(i).as_ref());
                self.keep(id, b, i as u32, times[i], true);
                let k = self.keys[id].left.last_mut().expect("just kept");
                k.matched = matched[i];
            }
            if right[i] {
                let id = self.key_id(rk.row(i).as_ref());
                self.keep(id, b, i as u32, times[i], false);
            }
        }
        Ok(())
    }
}
