//! The interval join ([`IntervalJoinSpec`]) of the stream with itself — each event may be a
//! left row, a right row, or both — or of two streams, one per side. A left row `L` and a right
//! row `R` of the same key join when `R.time − L.time` is within `[lower, upper]` and the ON
//! condition holds.
//!
//! State is both sides' rows per key, kept only as long as a partner can still arrive: a left
//! row until the watermark passes `L.time + upper` (then, in a left join, it is emitted with
//! nulls if nothing matched), a right row until it passes `R.time − lower` — or, for rows
//! that need not go on time (all but an outer join's left rows), until the key's next
//! deadline after that (see `keep`). An event behind
//! the watermark it arrived under is late (a partner it needs may be gone). A pair is emitted
//! as soon as its second row arrives, so results do not wait for the watermark; each pair
//! exactly once, whichever row came first (a row is added to the left side, then matched as a
//! right row, then matched as a left row, then added to the right side).
//!
//! Rows stay in the batches they arrived in, one store per side (a batch is dropped once none
//! of its rows is kept); a pair's columns are gathered from them with `interleave`.

mod keys;
mod slots;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{cast, interleave, take_record_batch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::JoinSide;
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
use datafusion::physical_plan::PhysicalExpr;

use self::keys::{Kept, Keys};
use super::aggregate::{late_events, where_mask};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::{Error, Result};
use crate::sql::{IntervalJoinSpec, Stage, apply_stages_timed};
use crate::state::{Snapshot, state_err};

const NAME: &str = "interval_join";

/// A candidate pair: the left row (its key id and index in that key's left rows) and both
/// rows' places.
struct Pair {
    key: usize,
    left_at: usize,
    left: (u32, u32),
    right: (u32, u32),
    time: i64,
}

/// One side's batches: those rows were kept from (only the rows the side takes), and how
/// many of their rows are still kept; a slot whose rows are all gone is reused.
#[derive(Default)]
struct Store {
    batches: Vec<Option<RecordBatch>>,
    live: Vec<u32>,
    free: Vec<u32>,
}

impl Store {
    fn push(&mut self, batch: RecordBatch) -> u32 {
        if let Some(b) = self.free.pop() {
            self.batches[b as usize] = Some(batch);
            self.live[b as usize] = 0;
            return b;
        }
        self.batches.push(Some(batch));
        self.live.push(0);
        (self.batches.len() - 1) as u32
    }

    fn release(&mut self, b: u32) {
        self.live[b as usize] -= 1;
        self.drop_if_unused(b);
    }

    /// Drops batch `b` if it keeps no row.
    fn drop_if_unused(&mut self, b: u32) {
        if self.live[b as usize] == 0 && self.batches[b as usize].take().is_some() {
            self.free.push(b);
        }
    }
}

/// Kept rows of one side as `interleave` takes them: the stored batches they are in, each
/// once, and per row (index among those batches, row).
struct Places {
    batches: Vec<u32>,
    idx: Vec<(usize, usize)>,
}

/// Left (0) or right (1).
const LEFT: usize = 0;
const RIGHT: usize = 1;

/// The interval join operator.
pub(super) struct IntervalJoin {
    spec: IntervalJoinSpec,
    /// Each side's events, and their time column.
    schemas: [SchemaRef; 2],
    times: [usize; 2],
    /// What each side stores of its rows: the columns a pair or a result reads (`cols`, in
    /// event order), each event column's place among them (`at`), their schema, the keys over
    /// them (a restore recomputes keys) and the time's place. Copying and keeping all sixteen
    /// columns of a payment was most of the operator's time and memory.
    cols: [Vec<usize>; 2],
    at: [Vec<Option<usize>>; 2],
    narrow: [SchemaRef; 2],
    narrow_keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    narrow_time: [usize; 2],
    /// The joined rows' schema with every column nullable: columns no result reads are nulls.
    relaxed: SchemaRef,
    /// A self-join whose sides' keys are the same expressions: one key per row serves both.
    same_keys: bool,
    converter: RowConverter,
    /// Each right key column's type where it differs from the left key's (cast to it).
    right_casts: Vec<Option<datafusion::arrow::datatypes::DataType>>,
    stores: [Store; 2],
    /// Each key's kept rows and deadline.
    keys: Keys,
}

impl IntervalJoin {
    /// The join of `spec`.
    pub(super) fn new(spec: IntervalJoinSpec) -> Result<Self> {
        let schemas = [
            Arc::clone(spec.left_events.arrow()),
            Arc::clone(spec.right_events.arrow()),
        ];
        let times = [
            spec.left_events.event_time_column(),
            spec.right_events.event_time_column(),
        ];
        let types = spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&schemas[LEFT]))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let right_casts: Vec<Option<datafusion::arrow::datatypes::DataType>> = spec
            .right_keys
            .iter()
            .zip(&types)
            .map(|(k, t)| Ok((k.data_type(&schemas[RIGHT])? != *t).then(|| t.clone())))
            .collect::<Result<_>>()?;
        let cols = needed_columns(&spec, &schemas);
        let mut at: [Vec<Option<usize>>; 2] = [Vec::new(), Vec::new()];
        let mut narrow_keys: [Vec<Arc<dyn PhysicalExpr>>; 2] = [Vec::new(), Vec::new()];
        let mut narrow_time = [0, 0];
        let narrow =
            [0, 1].map(|side| Arc::new(schemas[side].project(&cols[side]).expect("kept columns")));
        for side in [LEFT, RIGHT] {
            at[side] = (0..schemas[side].fields().len())
                .map(|c| cols[side].iter().position(|k| *k == c))
                .collect();
            narrow_time[side] = at[side][times[side]].expect("the time column is kept");
            let keys = if side == LEFT {
                &spec.left_keys
            } else {
                &spec.right_keys
            };
            narrow_keys[side] = keys
                .iter()
                .map(|k| reassign_expr_columns(Arc::clone(k), &narrow[side]))
                .collect::<datafusion::error::Result<_>>()?;
        }
        let relaxed = Arc::new(datafusion::arrow::datatypes::Schema::new(
            spec.joined_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let same_keys = spec.streams.is_empty()
            && right_casts.iter().all(Option::is_none)
            && spec.left_keys.len() == spec.right_keys.len()
            && spec
                .left_keys
                .iter()
                .zip(&spec.right_keys)
                .all(|(l, r)| l.to_string() == r.to_string());
        Ok(IntervalJoin {
            converter: RowConverter::new(types.into_iter().map(SortField::new).collect())?,
            right_casts,
            spec,
            schemas,
            times,
            cols,
            at,
            narrow,
            narrow_keys,
            narrow_time,
            relaxed,
            same_keys,
            stores: [Store::default(), Store::default()],
            keys: Keys::default(),
        })
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

    /// Where side `side`'s kept rows at `at` (batch, row) are, as `interleave` takes them:
    /// worked out once for all the columns gathered from them.
    fn places(&self, side: usize, at: &[(u32, u32)]) -> Places {
        let mut slot = vec![usize::MAX; self.stores[side].batches.len()];
        let mut batches = Vec::new();
        let idx = at
            .iter()
            .map(|(b, r)| {
                let s = &mut slot[*b as usize];
                if *s == usize::MAX {
                    *s = batches.len();
                    batches.push(*b);
                }
                (*s, *r as usize)
            })
            .collect();
        Places { batches, idx }
    }

    /// Event column `c` of side `side`'s kept rows at `at`; nulls for a column the side does
    /// not store (nothing reads it).
    fn gather(&self, side: usize, c: usize, at: &Places) -> Result<ArrayRef> {
        match self.at[side][c] {
            Some(k) => self.gather_stored(side, k, at),
            None => Ok(new_null_array(
                self.schemas[side].field(c).data_type(),
                at.idx.len(),
            )),
        }
    }

    /// Stored column `c` of side `side`'s kept rows at `at`.
    fn gather_stored(&self, side: usize, c: usize, at: &Places) -> Result<ArrayRef> {
        if at.idx.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.narrow[side].field(c).data_type(),
            ));
        }
        let arrays: Vec<&dyn Array> = at
            .batches
            .iter()
            .map(|b| {
                self.stores[side].batches[*b as usize]
                    .as_ref()
                    .expect("kept rows' batch")
                    .column(c)
                    .as_ref()
            })
            .collect();
        Ok(interleave(&arrays, &at.idx)?)
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
        let left_at = self.places(LEFT, left);
        let right_at = right.map(|r| self.places(RIGHT, r));
        let mut cols = Vec::new();
        for c in 0..self.schemas[LEFT].fields().len() {
            cols.push(self.gather(LEFT, c, &left_at)?);
        }
        for c in 0..self.schemas[RIGHT].fields().len() {
            cols.push(match &right_at {
                Some(r) => self.gather(RIGHT, c, r)?,
                None => new_null_array(self.schemas[RIGHT].field(c).data_type(), left.len()),
            });
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.relaxed),
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
        let (left_at, right_at) = (self.places(LEFT, &left), self.places(RIGHT, &right));
        let cols = on
            .column_indices()
            .iter()
            .map(|ci| match ci.side {
                JoinSide::Left => self.gather(LEFT, ci.index, &left_at),
                _ => self.gather(RIGHT, ci.index, &right_at),
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
                self.keys.sides_mut(p.key).left[p.left_at].matched = true;
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
        let due = self.keys.due(wm);
        let (mut unmatched, mut times) = (Vec::new(), Vec::new());
        let mut released: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for id in due {
            let sides = self.keys.sides_mut(id);
            sides.left.retain(|k| {
                if !gone(k.time, upper) {
                    return true;
                }
                if !k.matched {
                    unmatched.push((k.batch, k.row));
                    times.push(k.time);
                }
                released[LEFT].push(k.batch);
                false
            });
            sides.right.retain(|k| {
                if !gone(k.time, lower.saturating_neg()) {
                    return true;
                }
                released[RIGHT].push(k.batch);
                false
            });
            let next = sides
                .left
                .iter()
                .map(|k| k.time.saturating_add(upper))
                .chain(sides.right.iter().map(|k| k.time.saturating_sub(lower)))
                .min();
            match next {
                Some(at) => self.keys.schedule(id, at),
                None if wm.is_some() => self.keys.release_if_empty(id),
                None => {}
            }
        }
        if wm.is_none() {
            // The end: every key is gone; forgetting them one by one cost a lookup each.
            self.keys = Keys::default();
        }
        if self.spec.left_outer {
            // In the order the rows arrived.
            let mut order: Vec<usize> = (0..unmatched.len()).collect();
            order.sort_by_key(|i| unmatched[*i]);
            let l: Vec<(u32, u32)> = order.iter().map(|i| unmatched[*i]).collect();
            let t: Vec<i64> = order.iter().map(|i| times[*i]).collect();
            self.joined(&l, None, &t, out)?;
        }
        for (side, batches) in released.into_iter().enumerate() {
            for b in batches {
                self.stores[side].release(b);
            }
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
            self.keys.sides_mut(id).left.push(k);
            time.saturating_add(self.spec.upper)
        } else {
            self.keys.sides_mut(id).right.push(k);
            time.saturating_sub(self.spec.lower)
        };
        self.stores[if left { LEFT } else { RIGHT }].live[b as usize] += 1;
        // Only an outer join's left row must go on time (it is emitted with nulls then). A row
        // the watermark has passed can match no row that is not late — a new left row has
        // `L.time ≥ watermark > R.time − lower`, a new right row `R.time ≥ watermark > L.time +
        // upper` — so any other row may wait for its key's next deadline: a capture arriving
        // for a waiting authorization costs no deadline of its own.
        match left && self.spec.left_outer {
            true => self.keys.schedule(id, at),
            false => self.keys.schedule_eventually(id, at),
        }
    }

    /// Adds `batch`'s rows that `left` and `right` take (in row order), emitting the pairs.
    /// For a join of two streams, only one side takes rows of a batch.
    fn add(
        &mut self,
        batch: RecordBatch,
        left: &[bool],
        right: &[bool],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        let (any_left, any_right) = (left.contains(&true), right.contains(&true));
        let side = if any_left { LEFT } else { RIGHT };
        let times: Vec<i64> = batch
            .column(self.times[side])
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        let lk = match any_left {
            true => Some(self.side_keys(&batch, &self.spec.left_keys, None)?),
            false => None,
        };
        let casts = self.right_casts.clone();
        let rk = match any_right && !(self.same_keys && any_left) {
            true => Some(self.side_keys(&batch, &self.spec.right_keys, Some(&casts))?),
            false => None,
        };
        let rk = rk.as_ref().or(lk.as_ref().filter(|_| self.same_keys));
        // Each side keeps only the rows it takes: row i is at `pos[side][i]` in its batch.
        let mut pos = [vec![u32::MAX; times.len()], vec![u32::MAX; times.len()]];
        let mut stored = [None, None];
        for (side, takes) in [(LEFT, left), (RIGHT, right)] {
            if !takes.contains(&true) {
                continue;
            }
            let idx: Vec<u32> = (0..takes.len() as u32)
                .filter(|i| takes[*i as usize])
                .collect();
            for (p, i) in idx.iter().enumerate() {
                pos[side][*i as usize] = p as u32;
            }
            let projected = batch.project(&self.cols[side])?;
            let rows = match idx.len() == takes.len() {
                true => projected,
                false => take_record_batch(&projected, &UInt32Array::from(idx))?,
            };
            stored[side] = Some(self.stores[side].push(rows));
        }
        let (bl, br) = (stored[LEFT], stored[RIGHT]);
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        // Each taken row's key hash up front, so the key table's slots can be loaded a few
        // rows ahead of their lookup (most lookups miss every cache).
        // A self-join on one key hashes a row both sides take once.
        let hash_of = |takes: &[bool],
                       keys: Option<&datafusion::arrow::row::Rows>,
                       known: &[u64]|
         -> Vec<u64> {
            match keys {
                Some(k) => (0..takes.len())
                    .map(|i| match (takes[i], known.get(i)) {
                        (false, _) => 0,
                        (true, Some(h)) if self.same_keys && left[i] => *h,
                        (true, _) => Keys::hash(k.row(i).as_ref()),
                    })
                    .collect(),
                None => Vec::new(),
            }
        };
        let lh = hash_of(left, lk.as_ref(), &[]);
        let rh = hash_of(right, rk, &lh);
        const AHEAD: usize = 8;
        let mut pairs = Vec::new();
        for i in 0..times.len() {
            if let Some(h) = lh.get(i + AHEAD).filter(|_| left[i + AHEAD]) {
                self.keys.prefetch(*h);
            }
            if let Some(h) = rh.get(i + AHEAD).filter(|_| right[i + AHEAD]) {
                self.keys.prefetch(*h);
            }
            let t = times[i];
            let (lrow, rrow) = (pos[LEFT][i], pos[RIGHT][i]);
            let lid = match (left[i], &lk) {
                (true, Some(lk)) => Some(self.keys.id_hashed(lk.row(i).as_ref(), lh[i])),
                _ => None,
            };
            let rid = match (right[i], rk) {
                (true, Some(rk)) => Some(self.keys.id_hashed(rk.row(i).as_ref(), rh[i])),
                _ => None,
            };
            if let (Some(id), Some(bl)) = (lid, bl) {
                self.keep(id, bl, lrow, t, true);
            }
            if let (Some(id), Some(br)) = (rid, br) {
                for (at, l) in self.keys.sides(id).left.iter().enumerate() {
                    let d = t - l.time;
                    if d >= lower && d <= upper {
                        pairs.push(Pair {
                            key: id,
                            left_at: at,
                            left: (l.batch, l.row),
                            right: (br, rrow),
                            time: t.max(l.time),
                        });
                    }
                }
            }
            if let (Some(id), Some(bl)) = (lid, bl) {
                let left_at = self.keys.sides(id).left.len() - 1;
                for r in &self.keys.sides(id).right {
                    let d = r.time - t;
                    if d >= lower && d <= upper {
                        pairs.push(Pair {
                            key: id,
                            left_at,
                            left: (bl, lrow),
                            right: (r.batch, r.row),
                            time: t.max(r.time),
                        });
                    }
                }
            }
            if let (Some(id), Some(br)) = (rid, br) {
                self.keep(id, br, rrow, t, false);
            }
        }
        self.emit_pairs(pairs, out)?;
        if let Some(bl) = bl {
            self.stores[LEFT].drop_if_unused(bl);
        }
        if let Some(br) = br {
            self.stores[RIGHT].drop_if_unused(br);
        }
        Ok(())
    }

    /// What the kept state depends on: keys, bounds, which rows each side keeps, the join type.
    fn fingerprint(&self) -> String {
        let s = &self.spec;
        let list = |v: &[Arc<dyn PhysicalExpr>]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let opt = |e: &Option<Arc<dyn PhysicalExpr>>| e.as_ref().map(|e| e.to_string());
        format!(
            "{} [{}] [{}] {}..={} {:?} {:?}",
            if s.left_outer { "left" } else { "inner" },
            list(&s.left_keys),
            list(&s.right_keys),
            s.lower,
            s.upper,
            opt(&s.left_filter),
            opt(&s.right_filter)
        )
    }

    /// Which sides take rows of a batch of stream `stream`: both for a self-join.
    fn sides_of(&self, stream: usize) -> (bool, bool) {
        if self.spec.streams.is_empty() {
            return (true, true);
        }
        (
            stream == self.spec.left_stream,
            stream == self.spec.right_stream,
        )
    }

    /// Side `side`'s kept rows as one batch of its events, with whether each matched.
    fn kept_rows(&self, side: usize) -> Result<RecordBatch> {
        let mut rows: Vec<(u32, u32, bool)> = self
            .keys
            .all()
            .flat_map(|k| if side == LEFT { &k.left } else { &k.right })
            .map(|k| (k.batch, k.row, k.matched))
            .collect();
        rows.sort_unstable();
        let places: Vec<(u32, u32)> = rows.iter().map(|r| (r.0, r.1)).collect();
        let at = self.places(side, &places);
        let schema = &self.narrow[side];
        let mut cols = (0..schema.fields().len())
            .map(|c| self.gather_stored(side, c, &at))
            .collect::<Result<Vec<_>>>()?;
        cols.push(Arc::new(
            rows.iter().map(|r| Some(r.2)).collect::<BooleanArray>(),
        ));
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            "_matched",
            datafusion::arrow::datatypes::DataType::Boolean,
            false,
        )));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }

    /// Keeps the rows of `batch` (a snapshot's, with `_matched` last) on side `side`, without
    /// matching them: every pair among kept rows was emitted before the snapshot.
    fn restore_side(&mut self, side: usize, batch: &RecordBatch) -> Result<()> {
        let bad = || state_err(NAME, "snapshot does not match the query");
        let schema = &self.narrow[side];
        let width = schema.fields().len();
        if batch.num_columns() != width + 1 {
            return Err(bad());
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let matched = batch
            .column(width)
            .as_boolean_opt()
            .ok_or_else(bad)?
            .clone();
        let events = RecordBatch::try_new(Arc::clone(schema), batch.columns()[..width].to_vec())
            .map_err(|_| bad())?;
        let times: Vec<i64> = events
            .column(self.narrow_time[side])
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        let keys = match side {
            LEFT => self.side_keys(&events, &self.narrow_keys[LEFT].clone(), None)?,
            _ => {
                let casts = self.right_casts.clone();
                self.side_keys(&events, &self.narrow_keys[RIGHT].clone(), Some(&casts))?
            }
        };
        let b = self.stores[side].push(events);
        for (i, t) in times.iter().enumerate() {
            let bytes = keys.row(i);
            let id = self
                .keys
                .id_hashed(bytes.as_ref(), Keys::hash(bytes.as_ref()));
            self.keep(id, b, i as u32, *t, side == LEFT);
            if side == LEFT {
                let k = self.keys.sides_mut(id).left.last_mut().expect("just kept");
                k.matched = matched.value(i);
            }
        }
        self.stores[side].drop_if_unused(b);
        Ok(())
    }
}

impl Operator for IntervalJoin {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let (takes_left, takes_right) = self.sides_of(input.stream);
        // Not compacted: rows the router did not select (duplicates) are simply not taken, and
        // each side copies only its own columns of the rows it takes (compacting copied every
        // column of every selected row first).
        let ev = input;
        let batch = &ev.batch;
        let selection = ev.selection.as_ref();
        let none = || vec![false; batch.num_rows()];
        let mut left = match takes_left {
            true => Self::side_mask(&self.spec.left_filter, batch, selection)?,
            false => none(),
        };
        let mut right = match takes_right {
            true => Self::side_mask(&self.spec.right_filter, batch, selection)?,
            false => none(),
        };
        // Late: behind the watermark it arrived under (a partner it needs may be gone).
        let time = self.times[if takes_left { LEFT } else { RIGHT }];
        let times = batch
            .column(time)
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
            out.late.push(late_events(ev, &late)?);
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
        Snapshot {
            header: serde_json::json!({ "join": self.fingerprint() }),
            batches: vec![(0, self.kept_rows(LEFT)?), (1, self.kept_rows(RIGHT)?)],
        }
        .encode(NAME)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap = Snapshot::decode(NAME, bytes)?;
        let [(_, left), (_, right)] = snap.batches.as_slice() else {
            return Err(state_err(NAME, "snapshot does not match the query"));
        };
        if snap.header.get("join").and_then(serde_json::Value::as_str) != Some(&self.fingerprint())
        {
            return Err(state_err(
                NAME,
                "the join's keys, bounds or conditions changed since this state was saved; run with --reset-state",
            ));
        }
        self.stores = [Store::default(), Store::default()];
        self.keys = Keys::default();
        self.restore_side(LEFT, left)?;
        self.restore_side(RIGHT, right)
    }
}

/// The event columns each side must store: its time, what its keys read, what the ON
/// condition reads of it, and what the result reads of it (the columns of the output stages
/// up to the SELECT list; all of them when there is none).
fn needed_columns(spec: &IntervalJoinSpec, schemas: &[SchemaRef; 2]) -> [Vec<usize>; 2] {
    let width = schemas[LEFT].fields().len();
    let mut need = [
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    ];
    need[LEFT].insert(spec.left_events.event_time_column());
    need[RIGHT].insert(spec.right_events.event_time_column());
    for (side, keys) in [(LEFT, &spec.left_keys), (RIGHT, &spec.right_keys)] {
        for k in keys {
            need[side].extend(collect_columns(k).iter().map(|c| c.index()));
        }
    }
    for ci in spec.on.column_indices() {
        match ci.side {
            JoinSide::Left => need[LEFT].insert(ci.index),
            _ => need[RIGHT].insert(ci.index),
        };
    }
    let mut joined = std::collections::BTreeSet::new();
    let mut projected = false;
    for stage in &spec.output_stages {
        match stage {
            Stage::Filter(p) => joined.extend(collect_columns(p).iter().map(|c| c.index())),
            Stage::Project { exprs, .. } => {
                for e in exprs {
                    joined.extend(collect_columns(e).iter().map(|c| c.index()));
                }
                projected = true;
                break;
            }
            Stage::Rank { .. } | Stage::Lookup(_) => break,
        }
    }
    if !projected {
        joined.extend(0..width + schemas[RIGHT].fields().len());
    }
    for j in joined {
        match j < width {
            true => need[LEFT].insert(j),
            false => need[RIGHT].insert(j - width),
        };
    }
    need.map(|n| n.into_iter().collect())
}
