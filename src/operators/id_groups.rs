//! Aggregation state of one pane or window whose groups are operator-wide key ids.
//!
//! The hop operator interns each key once ([`super::key_ids::KeyIds`]); its panes and its window
//! table then find a group's slot by the key's id in a plain array instead of hashing the key
//! again. Accumulators are DataFusion's [`GroupsAccumulator`]s, indexed by slot, as in
//! [`super::group_table::GroupTable`].

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::group_table::new_accumulator;
use crate::error::Result;
use crate::sql::AggregateSpec;

/// No slot (in [`IdGroups::slot_of`]) or no id.
const NONE: u32 = u32::MAX;

/// Key ids and accumulator states of a table, detached from it.
#[derive(Debug, Clone)]
pub(super) struct FrozenIds {
    /// Key id of each group.
    pub ids: Vec<u32>,
    /// For each aggregate, its state columns.
    pub states: Vec<Vec<ArrayRef>>,
}

/// Groups (by key id) and accumulators of one pane or window.
pub(super) struct IdGroups {
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Key id of each slot.
    ids: Vec<u32>,
    /// Slot of each key id ([`NONE`]: not in this table). As long as the operator's id table;
    /// entries are reset one by one when the table empties, so an empty table is all [`NONE`].
    slot_of: Vec<u32>,
    scratch: Vec<usize>,
}

impl IdGroups {
    /// An empty table for the aggregation.
    pub(super) fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(IdGroups {
            accumulators: spec
                .aggregates
                .iter()
                .map(new_accumulator)
                .collect::<Result<_>>()?,
            ids: Vec::new(),
            slot_of: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Key ids of the groups, by slot.
    pub(super) fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Fills `scratch` with the slot of each of `ids` (ids below `id_count`), adding groups.
    fn slots(&mut self, ids: &[u32], id_count: usize) {
        if self.slot_of.len() < id_count {
            self.slot_of.resize(id_count, NONE);
        }
        // Disjoint borrows, so the loop keeps the vectors' pointers in registers.
        let (slot_of, held, scratch) = (&mut self.slot_of, &mut self.ids, &mut self.scratch);
        scratch.clear();
        scratch.extend(ids.iter().map(|&id| {
            let slot = &mut slot_of[id as usize];
            if *slot == NONE {
                *slot = held.len() as u32;
                held.push(id);
            }
            *slot as usize
        }));
    }

    /// Adds input rows: their key ids (below `id_count`), each aggregate's argument columns and
    /// filter.
    pub(super) fn update(
        &mut self,
        ids: &[u32],
        id_count: usize,
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.slots(ids, id_count);
        let groups = self.ids.len();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            acc.update_batch(&args[i], &self.scratch, filters[i].as_ref(), groups)?;
        }
        Ok(())
    }

    /// Merges frozen state (a pane's) into this table.
    pub(super) fn merge(&mut self, frozen: &FrozenIds, id_count: usize) -> Result<()> {
        if frozen.ids.is_empty() {
            return Ok(());
        }
        self.slots(&frozen.ids, id_count);
        let groups = self.ids.len();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            acc.merge_batch(&frozen.states[i], &self.scratch, groups)?;
        }
        Ok(())
    }

    /// Takes the key ids out, leaving the table without groups.
    fn take_ids(&mut self) -> Vec<u32> {
        for id in &self.ids {
            self.slot_of[*id as usize] = NONE;
        }
        std::mem::take(&mut self.ids)
    }

    /// Final values: the groups' key ids and one column per aggregate. Empties the table.
    pub(super) fn emit(&mut self) -> Result<(Vec<u32>, Vec<ArrayRef>)> {
        let aggs = self
            .accumulators
            .iter_mut()
            .map(|a| a.evaluate(EmitTo::All))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok((self.take_ids(), aggs))
    }

    /// Detaches key ids and accumulator state. Empties the table.
    pub(super) fn freeze(&mut self) -> Result<FrozenIds> {
        let states = self
            .accumulators
            .iter_mut()
            .map(|a| a.state(EmitTo::All))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(FrozenIds {
            ids: self.take_ids(),
            states,
        })
    }

    /// Renumbers the groups' key ids after the operator's ids were compacted (`renumber[old]`
    /// is the new id; every id held here survives).
    pub(super) fn renumber(&mut self, renumber: &[u32]) {
        renumber_ids(&mut self.ids, renumber);
        self.slot_of.clear();
        self.slot_of.resize(renumber.len(), NONE);
        for (slot, id) in self.ids.iter().enumerate() {
            self.slot_of[*id as usize] = slot as u32;
        }
    }
}

impl FrozenIds {
    /// Renumbers key ids after the operator's ids were compacted.
    pub(super) fn renumber(&mut self, renumber: &[u32]) {
        renumber_ids(&mut self.ids, renumber);
    }
}

/// `ids` under their new numbers (`renumber[old]`).
fn renumber_ids(ids: &mut [u32], renumber: &[u32]) {
    for id in ids {
        *id = renumber[*id as usize];
    }
}
