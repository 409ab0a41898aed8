//! A GROUP BY without a window ([`UpdatingSpec`]): running aggregates per key, emitted as a
//! changelog.
//!
//! A running total is never final, so instead of one row per closed window each key's row is
//! re-emitted when it changes: `insert` the first time, `update` after, `delete` when its state
//! expires (`SET state_ttl`) or it stops passing HAVING. Changes are gathered between
//! watermark steps and emitted at each step (one row per changed key, however many events it
//! had) and at the end of input. Every event counts, however late: a changelog can always
//! correct a key, so nothing is late here.
//!
//! State per key: a slot of every aggregate (the session window's [`Slots`]), whether the key
//! is shown (its last row was an insert or update), whether it changed since the last step, and
//! its latest event time (for the TTL, checked by lazily re-armed [`Timers`]). A key's state
//! ends a TTL after its latest event, whichever comes first: the watermark passing that time,
//! or an event of the key at or after it (which then starts a new state, after the old one's
//! delete) — so how events were batched, which decides where the watermark steps fall, never
//! decides which events are counted together, as long as none is behind the watermark (an
//! event that is, is late, and where the watermark stood when it came depends on batching).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};

use super::aggregate::AggregateCore;
use super::key_ids::KeyIds;
use super::session::{Slots, Timers};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::Result;
use crate::sql::{OP_DELETE, OP_INSERT, OP_UPDATE, Stage, UpdatingSpec, apply_stages};
use crate::state::{Snapshot, state_err};

const NAME: &str = "updating_aggregate";

/// No slot: the key has no state (it expired).
const NONE: u32 = u32::MAX;

/// One key's state.
#[derive(Debug, Clone, Copy)]
struct KeyState {
    /// Its aggregates' slot, or [`NONE`].
    slot: u32,
    /// Its last row was an insert or an update.
    shown: bool,
    /// It changed since the last step.
    dirty: bool,
    /// Its latest event time.
    last: i64,
}

/// The updating aggregation operator.
pub(super) struct UpdatingAggregate {
    core: AggregateCore,
    key_ids: KeyIds,
    slots: Slots,
    keys: Vec<KeyState>,
    /// Key ids changed since the last step, in the order they first changed.
    dirty: Vec<u32>,
    ttl: Option<i64>,
    /// (latest event time + TTL, key id), re-armed when a key has moved on.
    timers: Timers,
    /// The output stages with HAVING left out: a deleted key's row goes through them.
    unfiltered: Vec<Stage>,
    /// Result rows: the SELECT list, then `op`.
    schema: SchemaRef,
    /// Row-encoded keys, for snapshots.
    converter: RowConverter,
    /// The watermark of the last step that emitted: the operator is told the watermark after
    /// every batch, and emits only when it has risen.
    emitted_at: i64,
    ids: Vec<u32>,
    due: Vec<u32>,
}

impl UpdatingAggregate {
    /// The operator of `spec`, whose result rows have `schema` (ending with `op`).
    pub(super) fn new(spec: &UpdatingSpec, schema: SchemaRef) -> Result<Self> {
        let agg = spec.aggregate.clone();
        let fields = agg
            .key_schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let unfiltered = agg
            .output_stages
            .iter()
            .filter(|s| !matches!(s, Stage::Filter(_)))
            .cloned()
            .collect();
        Ok(UpdatingAggregate {
            converter: RowConverter::new(fields)?,
            key_ids: KeyIds::new(&agg)?,
            slots: Slots::new(&agg.aggregates)?,
            core: AggregateCore::new(agg)?,
            keys: Vec::new(),
            dirty: Vec::new(),
            ttl: spec.state_ttl,
            timers: Timers::new(Timers::width_for(spec.state_ttl.unwrap_or(1_000))),
            unfiltered,
            schema,
            emitted_at: i64::MIN,
            ids: Vec::new(),
            due: Vec::new(),
        })
    }

    /// The slot of key `id`, giving it one (and a TTL timer) if it has none.
    fn slot_of(&mut self, id: u32, ts: i64) -> u32 {
        if self.keys.len() <= id as usize {
            self.keys.resize(
                id as usize + 1,
                KeyState {
                    slot: NONE,
                    shown: false,
                    dirty: false,
                    last: i64::MIN,
                },
            );
        }
        let k = &mut self.keys[id as usize];
        if k.slot == NONE {
            k.slot = self.slots.alloc();
            if let Some(ttl) = self.ttl {
                self.timers.push(ts.saturating_add(ttl), id);
            }
        }
        k.slot
    }

    /// Emits a row for every key that changed, and a delete for every key whose state expired
    /// under `watermark` (`None`: the end of input, nothing expires).
    fn emit(&mut self, watermark: Option<i64>, time: i64, out: &mut OperatorOutput) -> Result<()> {
        let mut expired = Vec::new();
        if let (Some(wm), Some(ttl)) = (watermark, self.ttl) {
            self.timers.pop_due(wm, &mut self.due);
            // A key whose state an event ended (`process`) has a timer of its old state and one
            // of its new: each key is looked at once.
            let mut looked = std::collections::HashSet::new();
            for id in std::mem::take(&mut self.due) {
                let k = self.keys[id as usize];
                if k.slot == NONE || !looked.insert(id) {
                    continue;
                }
                let until = k.last.saturating_add(ttl);
                if until > wm {
                    self.timers.push(until, id);
                } else {
                    expired.push(id);
                }
            }
        }
        let mut batches = Vec::new();
        // Changed keys: their current values, through HAVING and the SELECT list.
        let expiring: std::collections::HashSet<u32> = expired.iter().copied().collect();
        let changed: Vec<u32> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|id| {
                let k = &mut self.keys[*id as usize];
                k.dirty = false;
                k.slot != NONE && !expiring.contains(id)
            })
            .collect();
        if !changed.is_empty() {
            let slots: Vec<u32> = changed
                .iter()
                .map(|id| self.keys[*id as usize].slot)
                .collect();
            let aggs = self.slots.peek(&slots)?;
            let rows = self
                .core
                .unwindowed(self.key_ids.keys(&changed)?, aggs, changed.len())?;
            let index: Vec<i64> = (0..changed.len() as i64).collect();
            let (shown, passed) =
                crate::sql::apply_stages_timed(&self.core.spec.output_stages, &rows, None, &index)?;
            let ops: Vec<&str> = passed
                .iter()
                .map(|r| {
                    let k = &mut self.keys[changed[*r as usize] as usize];
                    let op = if k.shown { OP_UPDATE } else { OP_INSERT };
                    k.shown = true;
                    op
                })
                .collect();
            batches.push(self.with_ops(&shown, &ops)?);
            // Shown keys that no longer pass HAVING are deleted.
            let mut passing = vec![false; changed.len()];
            for r in &passed {
                passing[*r as usize] = true;
            }
            let gone: Vec<u32> = (0..changed.len() as u32)
                .filter(|r| {
                    let k = &mut self.keys[changed[*r as usize] as usize];
                    let gone = !passing[*r as usize] && k.shown;
                    if gone {
                        k.shown = false;
                    }
                    gone
                })
                .collect();
            if !gone.is_empty() {
                let rows = take_record_batch(&rows, &UInt32Array::from(gone))?;
                batches.push(self.deleted(&rows)?);
            }
        }
        if !expired.is_empty() {
            let slots: Vec<u32> = expired
                .iter()
                .map(|id| self.keys[*id as usize].slot)
                .collect();
            let aggs = self.slots.take(&slots)?;
            let shown: Vec<u32> = (0..expired.len() as u32)
                .filter(|r| self.keys[expired[*r as usize] as usize].shown)
                .collect();
            let rows = self
                .core
                .unwindowed(self.key_ids.keys(&expired)?, aggs, expired.len())?;
            if !shown.is_empty() {
                let rows = take_record_batch(&rows, &UInt32Array::from(shown))?;
                batches.push(self.deleted(&rows)?);
            }
            for id in &expired {
                self.keys[*id as usize] = KeyState {
                    slot: NONE,
                    shown: false,
                    dirty: false,
                    last: i64::MIN,
                };
            }
            self.compact()?;
        }
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if !batches.is_empty() {
            out.results.push(Emitted {
                batch: concat_batches(&self.schema, &batches)?,
                times: RowTimes::All(time),
            });
        }
        Ok(())
    }

    /// Frees the states that ended before a later event of their key, and emits the delete of
    /// each that was shown, timed when it ended.
    fn end_states(
        &mut self,
        ended: &[(u32, u32, bool, i64)],
        out: &mut OperatorOutput,
    ) -> Result<()> {
        let slots: Vec<u32> = ended.iter().map(|e| e.1).collect();
        let aggs = self.slots.take(&slots)?;
        let ids: Vec<u32> = ended.iter().map(|e| e.0).collect();
        let rows = self
            .core
            .unwindowed(self.key_ids.keys(&ids)?, aggs, ids.len())?;
        let shown: Vec<u32> = (0..ended.len() as u32)
            .filter(|r| ended[*r as usize].2)
            .collect();
        if shown.is_empty() {
            return Ok(());
        }
        let times = shown.iter().map(|r| ended[*r as usize].3).collect();
        let rows = take_record_batch(&rows, &UInt32Array::from(shown))?;
        let deleted = self.deleted(&rows)?;
        if deleted.num_rows() > 0 {
            out.results.push(Emitted {
                batch: deleted,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }

    /// `rows` (aggregated, before HAVING) as delete rows.
    fn deleted(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let projected = apply_stages(&self.unfiltered, rows)?;
        let ops = vec![OP_DELETE; projected.num_rows()];
        self.with_ops(&projected, &ops)
    }

    /// `batch` (the SELECT list) with the `op` column.
    fn with_ops(&self, batch: &RecordBatch, ops: &[&str]) -> Result<RecordBatch> {
        if batch.num_rows() == 0 {
            // The stages stop at an empty batch, before the SELECT list shapes it.
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(StringArray::from(ops.to_vec())));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }

    /// Forgets the keys of expired ids once they are most of the table.
    fn compact(&mut self) -> Result<()> {
        if !self.key_ids.wants_compaction() {
            return Ok(());
        }
        let live: Vec<u32> = (0..self.keys.len() as u32)
            .filter(|id| self.keys[*id as usize].slot != NONE)
            .collect();
        let Some(renumber) = self.key_ids.compact(&live)? else {
            return Ok(());
        };
        let mut keys = vec![
            KeyState {
                slot: NONE,
                shown: false,
                dirty: false,
                last: i64::MIN,
            };
            live.len()
        ];
        for old in &live {
            keys[renumber[*old as usize] as usize] = self.keys[*old as usize];
        }
        self.keys = keys;
        for id in &mut self.dirty {
            *id = renumber[*id as usize];
        }
        self.dirty.retain(|id| *id != u32::MAX);
        self.timers
            .renumber(|id| Some(renumber[id as usize]).filter(|n| *n != u32::MAX));
        Ok(())
    }

    /// Each key's row-encoded bytes, by key id.
    fn key_bytes(&self, ids: &[u32]) -> Result<Vec<Vec<u8>>> {
        if self.core.spec.keys.is_empty() {
            return Ok(vec![Vec::new(); ids.len()]);
        }
        let rows = self.converter.convert_columns(&self.key_ids.keys(ids)?)?;
        Ok(rows.iter().map(|r| r.data().to_vec()).collect())
    }
}

impl Operator for UpdatingAggregate {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let p = self.core.prepare(input)?;
        if p.len() == 0 {
            return Ok(());
        }
        let mut ids = std::mem::take(&mut self.ids);
        self.key_ids.intern(&p.keys, p.len(), &mut ids)?;
        let mut slots = Vec::with_capacity(ids.len());
        // States that ended before an event of their key (key id, slot, shown, when it ended).
        let mut ended: Vec<(u32, u32, bool, i64)> = Vec::new();
        for (id, ts) in ids.iter().zip(&p.times) {
            if let Some(ttl) = self.ttl
                && let Some(k) = self.keys.get_mut(*id as usize)
                && k.slot != NONE
                && *ts >= k.last.saturating_add(ttl)
            {
                // Its rows so far still go to the old slot (updated below, then taken).
                ended.push((*id, k.slot, k.shown, k.last.saturating_add(ttl)));
                k.slot = NONE;
                k.shown = false;
                k.last = i64::MIN;
            }
            let slot = self.slot_of(*id, *ts);
            let k = &mut self.keys[*id as usize];
            k.last = k.last.max(*ts);
            if !k.dirty {
                k.dirty = true;
                self.dirty.push(*id);
            }
            slots.push(slot);
        }
        self.slots.update(&p.args, &p.filters, &mut slots)?;
        self.ids = ids;
        if !ended.is_empty() {
            self.end_states(&ended, out)?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        if watermark <= self.emitted_at {
            return Ok(());
        }
        self.emitted_at = watermark;
        self.emit(Some(watermark), watermark, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        // Stamped no earlier than any step before it.
        let latest = self
            .keys
            .iter()
            .filter(|k| k.dirty)
            .map(|k| k.last)
            .max()
            .unwrap_or(0)
            .max(self.emitted_at);
        self.emit(None, latest, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let ids: Vec<u32> = (0..self.keys.len() as u32)
            .filter(|id| self.keys[*id as usize].slot != NONE)
            .collect();
        let pick = |f: &dyn Fn(&KeyState) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|id| f(&self.keys[*id as usize])),
            ))
        };
        let mut fields = vec![
            Field::new("key", DataType::Binary, false),
            Field::new("last", DataType::Int64, false),
            Field::new("shown", DataType::Boolean, false),
            Field::new("dirty", DataType::Boolean, false),
        ];
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(self.key_bytes(&ids)?)),
            pick(&|k| k.last),
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|id| Some(self.keys[*id as usize].shown)),
            )),
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|id| Some(self.keys[*id as usize].dirty)),
            )),
        ];
        let slots: Vec<u32> = ids.iter().map(|id| self.keys[*id as usize].slot).collect();
        for (a, states) in self.slots.state(&slots)?.into_iter().enumerate() {
            for (j, col) in states.into_iter().enumerate() {
                fields.push(Field::new(
                    format!("s{a}_{j}"),
                    col.data_type().clone(),
                    true,
                ));
                cols.push(col);
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        Snapshot {
            header: serde_json::json!({ "ttl": self.ttl, "emitted_at": self.emitted_at }),
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
        self.emitted_at = snap
            .header
            .get("emitted_at")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(i64::MIN);
        self.keys.clear();
        self.dirty.clear();
        self.timers.clear();
        self.key_ids = KeyIds::new(&self.core.spec)?;
        self.slots.clear(&self.core.spec.aggregates)?;
        let mut states: Vec<Vec<ArrayRef>> = Vec::new();
        let mut col = 4;
        for agg in &self.core.spec.aggregates {
            let n = agg.state_fields()?.len();
            states.push(batch.columns().get(col..col + n).ok_or_else(bad)?.to_vec());
            col += n;
        }
        if col != batch.num_columns() {
            return Err(bad());
        }
        let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(bad)?;
        let mut ids = Vec::new();
        if self.core.spec.keys.is_empty() {
            ids.resize(keys.len(), 0);
        } else {
            let parser = self.converter.parser();
            let columns = self
                .converter
                .convert_rows(keys.iter().map(|k| parser.parse(k.unwrap_or_default())))?;
            self.key_ids.intern(&columns, keys.len(), &mut ids)?;
        }
        let last = batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?;
        let shown = batch.column(2).as_boolean_opt().ok_or_else(bad)?;
        let dirty = batch.column(3).as_boolean_opt().ok_or_else(bad)?;
        for (r, id) in ids.iter().enumerate() {
            let slot = self.slots.restore(&states, r)?;
            if self.keys.len() <= *id as usize {
                self.keys.resize(
                    *id as usize + 1,
                    KeyState {
                        slot: NONE,
                        shown: false,
                        dirty: false,
                        last: i64::MIN,
                    },
                );
            }
            let k = KeyState {
                slot,
                shown: shown.value(r),
                dirty: dirty.value(r),
                last: last.value(r),
            };
            self.keys[*id as usize] = k;
            if k.dirty {
                self.dirty.push(*id);
            }
            if let Some(ttl) = self.ttl {
                self.timers.push(k.last.saturating_add(ttl), *id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{PlanKind, plan_query};

    const BASE: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    /// Events (card, seconds after BASE, amount) as one batch.
    fn batch(events: &[(&str, i64, i64)]) -> EventBatch {
        let text: String = events
            .iter()
            .enumerate()
            .map(|(i, (card, s, amount))| {
                format!(
                    "{{\"event_id\":\"e{i}_{s}_{card}\",\"event_type\":\"authorization\",\
                     \"event_time\":\"{}\",\"payment_id\":\"p{i}_{s}\",\
                     \"merchant_id\":\"m1\",\"card_id\":\"{card}\",\"amount_minor\":{amount},\
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

    fn rows(out: &mut OperatorOutput) -> Vec<String> {
        let mut lines = Vec::new();
        for r in out.results.drain(..) {
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
        lines
    }

    fn operator(ttl: Option<i64>) -> UpdatingAggregate {
        let mut plan = plan_query(
            "SELECT card_id, count(*) AS n, sum(amount_minor) AS total FROM payments GROUP BY card_id",
        )
        .unwrap();
        if let Some(ttl) = ttl {
            plan = plan.with_state_ttl(ttl);
        }
        let PlanKind::Updating(spec) = &plan.kind else {
            panic!("{:?}", plan.kind)
        };
        UpdatingAggregate::new(spec, Arc::clone(&plan.output_schema)).unwrap()
    }

    #[test]
    fn changes_come_once_per_step_and_idle_keys_expire_with_a_delete() {
        let mut op = operator(Some(10_000));
        let mut out = OperatorOutput::default();
        op.process(
            &batch(&[("c1", 1, 10), ("c2", 2, 20), ("c1", 3, 30)]),
            &mut out,
        )
        .unwrap();
        assert!(
            rows(&mut out).is_empty(),
            "nothing before the watermark moves"
        );
        op.advance_watermark(BASE + 3_000, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["c1,2,40,insert", "c2,1,20,insert"]);
        // A step without changes emits nothing.
        op.advance_watermark(BASE + 4_000, &mut out).unwrap();
        assert!(rows(&mut out).is_empty());
        op.process(&batch(&[("c1", 12, 5)]), &mut out).unwrap();
        op.advance_watermark(BASE + 12_000, &mut out).unwrap();
        // c2's last event (2 s) is 10 s behind: gone, with its last values; c1 changed.
        assert_eq!(rows(&mut out), ["c1,3,45,update", "c2,1,20,delete"]);
        // A snapshot keeps it all: c2 comes back as new, c1 expires 10 s after its last event.
        let bytes = op.snapshot().unwrap();
        let mut back = operator(Some(10_000));
        back.restore(&bytes).unwrap();
        back.process(&batch(&[("c2", 15, 7)]), &mut out).unwrap();
        back.advance_watermark(BASE + 21_000, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["c2,1,7,insert"]);
        back.advance_watermark(BASE + 22_000, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["c1,3,45,delete"]);
        // Without a TTL nothing expires; the end of input emits what changed.
        let mut op = operator(None);
        op.process(&batch(&[("c1", 1, 10)]), &mut out).unwrap();
        op.advance_watermark(BASE + 1_000_000, &mut out).unwrap();
        op.process(&batch(&[("c1", 2, 10)]), &mut out).unwrap();
        op.finish(&mut out).unwrap();
        assert_eq!(rows(&mut out), ["c1,1,10,insert", "c1,2,20,update"]);
    }
}
