//! Aggregate state for every open session at once, one *slot* per session.
//!
//! A session window's groups come and go one by one (a session fires when its own gap has
//! passed), and two sessions merge when an out-of-order event bridges them. DataFusion's
//! [`datafusion::logical_expr::GroupsAccumulator`] fits neither: it emits only a prefix of its
//! groups and cannot fold one group into another. A row [`Accumulator`] per session does both,
//! but costs an allocation (or three) per session and a virtual call per session and batch —
//! most sessions hold one or two events, so that overhead was most of the operator's cost.
//!
//! A [`SlotAggregate`] keeps one aggregate's state for all sessions in flat vectors indexed by
//! slot: a batch updates them in one call, a merge folds one slot into another, and a fired
//! session's slot is read, emptied and reused. The common aggregates have their own
//! implementations (`builtin`); any other aggregate runs its row accumulators per slot
//! ([`RowSlots`]), as every aggregate used to.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;

use super::builtin;
use crate::error::Result;

/// No slot: the row is not aggregated (late, or filtered out).
pub(super) const NONE: u32 = u32::MAX;

/// One aggregate's state for many slots. A slot is *empty* until rows or states are added, and
/// an empty slot evaluates as the aggregate over no rows (`count` 0, `sum` NULL).
pub(super) trait SlotAggregate: Send {
    /// Makes slots `0..n` addressable; new slots are empty.
    fn grow(&mut self, n: usize);
    /// Adds row `i` of `args` to slot `slots[i]` for every row whose slot is not [`NONE`] and
    /// that `filter` (the aggregate's FILTER; null is false) keeps.
    fn update(
        &mut self,
        args: &[ArrayRef],
        slots: &[u32],
        filter: Option<&BooleanArray>,
    ) -> Result<()>;
    /// Folds slot `src` into slot `dst` and empties `src`.
    fn merge(&mut self, dst: u32, src: u32) -> Result<()>;
    /// The final value of each of `slots`, in that order, emptying them.
    fn take(&mut self, slots: &[u32]) -> Result<ArrayRef>;
    /// The current value of each of `slots`, which keep their state (a running aggregate read
    /// at each watermark step).
    fn value(&mut self, slots: &[u32]) -> Result<ArrayRef>;
    /// The state columns (the aggregate's `state_fields`) of `slots`, which keep their state.
    fn state(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>>;
    /// Merges row `row` of state columns `states` into `slot`.
    fn restore(&mut self, slot: u32, states: &[ArrayRef], row: usize) -> Result<()>;
}

/// Whether row `i` passes `filter`.
pub(super) fn kept(filter: Option<&BooleanArray>, i: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

/// The slot aggregate for `agg`: a built-in one where there is one, else [`RowSlots`].
pub(super) fn slot_aggregate(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn SlotAggregate>> {
    if let Some(builtin) = builtin::for_aggregate(agg)? {
        return Ok(builtin);
    }
    Ok(Box::new(RowSlots {
        agg: Arc::clone(agg),
        accumulators: Vec::new(),
    }))
}

/// Any aggregate, as one DataFusion row accumulator per non-empty slot.
pub(super) struct RowSlots {
    agg: Arc<AggregateFunctionExpr>,
    accumulators: Vec<Option<Box<dyn Accumulator>>>,
}

impl RowSlots {
    fn fresh(&self) -> Result<Box<dyn Accumulator>> {
        Ok(self.agg.create_accumulator()?)
    }

    fn slot(&mut self, slot: u32) -> Result<&mut Box<dyn Accumulator>> {
        let fresh = match self.accumulators[slot as usize] {
            Some(_) => None,
            None => Some(self.fresh()?),
        };
        let acc = &mut self.accumulators[slot as usize];
        if let Some(f) = fresh {
            *acc = Some(f);
        }
        Ok(acc.as_mut().expect("just filled"))
    }
}

impl SlotAggregate for RowSlots {
    fn grow(&mut self, n: usize) {
        if self.accumulators.len() < n {
            self.accumulators.resize_with(n, || None);
        }
    }

    fn update(
        &mut self,
        args: &[ArrayRef],
        slots: &[u32],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        // Rows grouped slot by slot: one `take` per argument for the batch, then each slot's
        // accumulator gets a zero-copy slice.
        let mut order: Vec<u32> = (0..slots.len() as u32)
            .filter(|i| slots[*i as usize] != NONE && kept(filter, *i as usize))
            .collect();
        if order.is_empty() {
            return Ok(());
        }
        order.sort_by_key(|i| slots[*i as usize]);
        let idx = UInt32Array::from(order);
        let cols = args
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rows = idx.values();
        let mut sliced: Vec<ArrayRef> = Vec::with_capacity(cols.len());
        let mut start = 0;
        while start < rows.len() {
            let slot = slots[rows[start] as usize];
            let end = start
                + rows[start..]
                    .iter()
                    .take_while(|r| slots[**r as usize] == slot)
                    .count();
            sliced.clear();
            sliced.extend(cols.iter().map(|c| c.slice(start, end - start)));
            self.slot(slot)?.update_batch(&sliced)?;
            start = end;
        }
        Ok(())
    }

    fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        let Some(mut other) = self.accumulators[src as usize].take() else {
            return Ok(());
        };
        let state = other
            .state()?
            .iter()
            .map(ScalarValue::to_array)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.slot(dst)?.merge_batch(&state)?;
        Ok(())
    }

    fn take(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let values = slots
            .iter()
            .map(|s| match self.accumulators[*s as usize].take() {
                Some(mut acc) => Ok(acc.evaluate()?),
                None => Ok(self.fresh()?.evaluate()?),
            })
            .collect::<Result<Vec<_>>>()?;
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.agg.field().data_type(),
            ));
        }
        Ok(ScalarValue::iter_to_array(values)?)
    }

    fn value(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        // Evaluated on a copy rebuilt from the state: `evaluate` may consume an accumulator.
        let values = slots
            .iter()
            .map(|s| {
                let mut copy = self.fresh()?;
                if let Some(acc) = self.accumulators[*s as usize].as_mut() {
                    let state = acc
                        .state()?
                        .iter()
                        .map(ScalarValue::to_array)
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    copy.merge_batch(&state)?;
                    // `state()` may drain it (count DISTINCT does): rebuild it too.
                    let mut rebuilt = self.fresh()?;
                    rebuilt.merge_batch(&state)?;
                    self.accumulators[*s as usize] = Some(rebuilt);
                }
                Ok(copy.evaluate()?)
            })
            .collect::<Result<Vec<_>>>()?;
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.agg.field().data_type(),
            ));
        }
        Ok(ScalarValue::iter_to_array(values)?)
    }

    fn state(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let fields = self.agg.state_fields()?;
        let mut columns: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(slots.len()); fields.len()];
        for s in slots {
            let acc = self.slot(*s)?;
            let state = acc.state()?;
            // `state()` may drain an accumulator (count DISTINCT does): rebuild it from the
            // state, so the running session is unchanged by a snapshot.
            let arrays = state
                .iter()
                .map(ScalarValue::to_array)
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let mut rebuilt = self.fresh()?;
            rebuilt.merge_batch(&arrays)?;
            self.accumulators[*s as usize] = Some(rebuilt);
            for (col, v) in columns.iter_mut().zip(state) {
                col.push(v);
            }
        }
        columns
            .into_iter()
            .zip(fields.iter())
            .map(|(col, f)| {
                Ok(if col.is_empty() {
                    datafusion::arrow::array::new_empty_array(f.data_type())
                } else {
                    ScalarValue::iter_to_array(col)?
                })
            })
            .collect()
    }

    fn restore(&mut self, slot: u32, states: &[ArrayRef], row: usize) -> Result<()> {
        let state: Vec<ArrayRef> = states.iter().map(|c| c.slice(row, 1)).collect();
        self.slot(slot)?.merge_batch(&state)?;
        Ok(())
    }
}

/// Every aggregate's slots, handed out and taken back together.
///
/// Within a batch, a session merged away keeps its slot until the batch's rows are added
/// ([`Slots::update`]): rows assigned to it earlier in the batch follow the merge through
/// `redirect`, and only then is the slot freed for reuse.
pub(in crate::operators) struct Slots {
    aggregates: Vec<Box<dyn SlotAggregate>>,
    /// Slots handed out so far (every aggregate addresses `0..len`).
    pub(super) len: u32,
    pub(super) free: Vec<u32>,
    /// Per slot: the slot it was merged into during this batch, or [`NONE`].
    redirect: Vec<u32>,
    /// Slots merged away during this batch.
    retired: Vec<u32>,
}

impl Slots {
    /// Slots for the aggregates `aggs`.
    pub(in crate::operators) fn new(aggs: &[Arc<AggregateFunctionExpr>]) -> Result<Self> {
        Ok(Slots {
            aggregates: aggs.iter().map(slot_aggregate).collect::<Result<_>>()?,
            len: 0,
            free: Vec::new(),
            redirect: Vec::new(),
            retired: Vec::new(),
        })
    }

    /// An empty slot.
    pub(in crate::operators) fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.len;
        self.len += 1;
        if self.len as usize > self.redirect.len() {
            // Grow by doubling, every aggregate at once.
            let n = (self.len as usize).max(64).next_power_of_two();
            self.redirect.resize(n, NONE);
            for a in &mut self.aggregates {
                a.grow(n);
            }
        }
        s
    }

    /// Folds `src` into `dst`; `src` is freed once the current batch's rows are added.
    pub(in crate::operators) fn merge(&mut self, dst: u32, src: u32) -> Result<()> {
        for a in &mut self.aggregates {
            a.merge(dst, src)?;
        }
        self.redirect[src as usize] = dst;
        self.retired.push(src);
        Ok(())
    }

    /// Adds a batch: row `i` goes to slot `slots[i]` (or to the slot it was merged into).
    pub(in crate::operators) fn update(
        &mut self,
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        slots: &mut [u32],
    ) -> Result<()> {
        if !self.retired.is_empty() {
            for s in slots.iter_mut() {
                while *s != NONE && self.redirect[*s as usize] != NONE {
                    *s = self.redirect[*s as usize];
                }
            }
        }
        for ((a, args), filter) in self.aggregates.iter_mut().zip(args).zip(filters) {
            a.update(args, slots, filter.as_ref())?;
        }
        for s in self.retired.drain(..) {
            self.redirect[s as usize] = NONE;
            self.free.push(s);
        }
        Ok(())
    }

    /// Each aggregate's final values for `slots`, which are freed.
    pub(in crate::operators) fn take(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let values = self
            .aggregates
            .iter_mut()
            .map(|a| a.take(slots))
            .collect::<Result<_>>()?;
        self.free.extend_from_slice(slots);
        Ok(values)
    }

    /// Each aggregate's current values for `slots`, which keep their state.
    pub(in crate::operators) fn peek(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        self.aggregates.iter_mut().map(|a| a.value(slots)).collect()
    }

    /// Each aggregate's state columns for `slots`.
    pub(in crate::operators) fn state(&mut self, slots: &[u32]) -> Result<Vec<Vec<ArrayRef>>> {
        self.aggregates.iter_mut().map(|a| a.state(slots)).collect()
    }

    /// A new slot holding row `row` of each aggregate's state columns.
    pub(in crate::operators) fn restore(
        &mut self,
        states: &[Vec<ArrayRef>],
        row: usize,
    ) -> Result<u32> {
        let slot = self.alloc();
        for (a, cols) in self.aggregates.iter_mut().zip(states) {
            a.restore(slot, cols, row)?;
        }
        Ok(slot)
    }

    /// Drops every slot.
    pub(in crate::operators) fn clear(
        &mut self,
        aggs: &[Arc<AggregateFunctionExpr>],
    ) -> Result<()> {
        *self = Slots::new(aggs)?;
        Ok(())
    }
}
