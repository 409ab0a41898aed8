//! The per-window aggregation state: group keys → accumulator slots.
//!
//! One [`GroupTable`] holds one tumbling window. Keys are interned by DataFusion's vectorised
//! [`GroupValues`]; each aggregate keeps its state in a [`GroupsAccumulator`] indexed by group
//! id, so a batch updates all groups of a window in one call per aggregate. A table can be
//! *frozen* into plain arrays (keys + accumulator state), which is how window state is
//! snapshotted (hop panes, which share keys across windows, hold key ids instead: see
//! `id_groups`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::error::Result;
use crate::sql::AggregateSpec;

/// Keys and accumulator states of a table, detached from it.
#[derive(Debug, Clone)]
pub struct FrozenGroups {
    /// Group key columns (empty when the query has no non-window keys).
    pub keys: Vec<ArrayRef>,
    /// For each aggregate, its state columns.
    pub states: Vec<Vec<ArrayRef>>,
    /// Number of groups.
    pub rows: usize,
}

/// Group keys and accumulators of one window or pane.
pub(super) struct GroupTable {
    values: Option<Box<dyn GroupValues>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    groups: usize,
    scratch: Vec<usize>,
}

pub(super) fn new_accumulator(
    agg: &Arc<AggregateFunctionExpr>,
) -> Result<Box<dyn GroupsAccumulator>> {
    if let Some(data_type) = super::distinct_count::distinct_count_type(agg)? {
        return Ok(Box::new(super::distinct_count::DistinctCountGroups::new(
            data_type,
        )?));
    }
    if agg.groups_accumulator_supported() {
        Ok(agg.create_groups_accumulator()?)
    } else {
        let agg = Arc::clone(agg);
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            agg.create_accumulator()
        })))
    }
}

/// DataFusion's group values for the aggregation's keys (`None`: no keys besides the window).
pub(super) fn key_values(spec: &AggregateSpec) -> Result<Option<Box<dyn GroupValues>>> {
    if spec.keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(new_group_values(
        Arc::clone(&spec.key_schema),
        &GroupOrdering::None,
    )?))
}

impl GroupTable {
    /// An empty table for the aggregation.
    pub(super) fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(GroupTable {
            values: key_values(spec)?,
            accumulators: spec
                .aggregates
                .iter()
                .map(new_accumulator)
                .collect::<Result<_>>()?,
            groups: 0,
            scratch: Vec::new(),
        })
    }

    fn intern(&mut self, keys: &[ArrayRef], rows: usize) -> Result<()> {
        match &mut self.values {
            Some(v) => {
                v.intern(keys, &mut self.scratch)?;
                self.groups = v.len();
            }
            None => {
                self.scratch.clear();
                self.scratch.resize(rows, 0);
                if rows > 0 {
                    self.groups = 1;
                }
            }
        }
        Ok(())
    }

    /// Adds `rows` input rows: key columns, each aggregate's argument columns and filter.
    pub(super) fn update(
        &mut self,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        rows: usize,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.intern(keys, rows)?;
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            acc.update_batch(&args[i], &self.scratch, filters[i].as_ref(), self.groups)?;
        }
        Ok(())
    }

    /// Merges frozen state (from a pane or a snapshot) into this table.
    pub(super) fn merge(&mut self, frozen: &FrozenGroups) -> Result<()> {
        if frozen.rows == 0 {
            return Ok(());
        }
        self.intern(&frozen.keys, frozen.rows)?;
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            acc.merge_batch(&frozen.states[i], &self.scratch, self.groups)?;
        }
        Ok(())
    }

    /// Emits every group's keys and resets the key table for reuse. DataFusion's multi-column
    /// group values keep their hash map after `EmitTo::All` (its hash aggregate follows a full
    /// emit with `clear_shrink`), so a table that lives on — a snapshot merged back — must reset
    /// it, or re-interning finds stale group ids and panics.
    fn emit_keys(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(match &mut self.values {
            Some(v) => {
                let keys = v.emit(EmitTo::All)?;
                // Room for as many groups as just left: a reused table refills to about that.
                v.clear_shrink(self.groups);
                keys
            }
            None => vec![],
        })
    }

    /// Final values: key columns and one column per aggregate. Empties the table.
    pub(super) fn emit(&mut self) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>, usize)> {
        let rows = self.groups;
        let keys = self.emit_keys()?;
        let aggs = self
            .accumulators
            .iter_mut()
            .map(|a| a.evaluate(EmitTo::All))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.groups = 0;
        Ok((keys, aggs, rows))
    }

    /// Detaches keys and accumulator state. Empties the table.
    pub(super) fn freeze(&mut self) -> Result<FrozenGroups> {
        let rows = self.groups;
        let keys = self.emit_keys()?;
        let states = self
            .accumulators
            .iter_mut()
            .map(|a| a.state(EmitTo::All))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.groups = 0;
        Ok(FrozenGroups { keys, states, rows })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;
    use crate::sql::{PlanKind, plan_query};

    fn spec() -> AggregateSpec {
        let plan = plan_query(
            "SELECT merchant_id, currency, window_start, sum(amount_minor) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, currency, window_start",
        )
        .unwrap();
        match plan.kind {
            PlanKind::Window { aggregate, .. } => aggregate,
            _ => unreachable!(),
        }
    }

    fn keys(m: &[&str], c: &[&str]) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from(m.to_vec())),
            Arc::new(StringArray::from(c.to_vec())),
        ]
    }

    #[test]
    fn freeze_then_merge_back_then_update() {
        let spec = spec();
        let mut t = GroupTable::new(&spec).unwrap();
        let args = vec![vec![Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef]];
        t.update(
            &keys(&["a", "b", "a"], &["EUR", "EUR", "EUR"]),
            &args,
            &[None],
            3,
        )
        .unwrap();
        let f = t.freeze().unwrap();
        assert_eq!(f.rows, 2);
        t.merge(&f).unwrap();
        t.update(
            &keys(&["b", "c", "a"], &["EUR", "USD", "EUR"]),
            &args,
            &[None],
            3,
        )
        .unwrap();
        let (k, aggs, rows) = t.emit().unwrap();
        assert_eq!(rows, 3);
        let m = k[0].as_any().downcast_ref::<StringArray>().unwrap();
        // Sums of integers are exact decimals.
        let s = aggs[0]
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Decimal128Array>()
            .unwrap();
        let got: std::collections::BTreeMap<&str, i128> =
            (0..3).map(|i| (m.value(i), s.value(i))).collect();
        assert_eq!(got, [("a", 7), ("b", 3), ("c", 2)].into_iter().collect());
    }
}
