//! `SESSION`: per-key activity sessions that close after `gap` without events.
//!
//! Each event opens the window `[t, t + gap)`; overlapping windows of the same key merge, so a
//! session is `[first event, last event + gap)`. Sessions merge when an out-of-order event bridges
//! two of them, which is why each session keeps its own DataFusion [`Accumulator`]s (their states
//! merge) rather than a slot in a shared groups accumulator.
//!
//! State: per key, its open sessions and `fired_until` (the end of its last fired session, kept
//! until no on-time event can reach it); a timer set orders sessions by end. An event is late if it
//! would join a session that has already fired (or that should have, given the watermark it arrived
//! under), or if its own window `[t, t + gap)` ended at or before that watermark.

use std::collections::BTreeSet;

use hashbrown::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

use super::aggregate::{AggregateCore, late_events};
use super::distinct_count::{distinct_count_type, row_accumulator, row_accumulator_of};
use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::{Error, Result};
use crate::sql::AggregateSpec;
use crate::state::Snapshot;

struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Rows of the current batch not yet fed to the accumulators.
    pending: Vec<u32>,
}

#[derive(Default)]
struct KeyState {
    /// Row-encoded key.
    key: Vec<u8>,
    sessions: Vec<Session>,
    fired_until: i64,
}

/// The session-window aggregation operator.
pub struct SessionWindow {
    core: AggregateCore,
    gap: i64,
    converter: RowConverter,
    key_ids: HashMap<Vec<u8>, u64>,
    keys: HashMap<u64, KeyState>,
    next_key_id: u64,
    /// (session end, key id) for every open session — and for ends a session has since moved
    /// past or merged away from: a timer whose session is gone is skipped when it comes up,
    /// which is cheaper than finding and removing it each time an event extends a session.
    timers: BTreeSet<(i64, u64)>,
    /// (fired_until + gap, key id): when a key's fired history can be forgotten.
    forget: BTreeSet<(i64, u64)>,
    /// For each aggregate, the value type when it is a `count(DISTINCT x)` (worked out once:
    /// a session creates its accumulators, and sessions are many).
    distinct_types: Vec<Option<DataType>>,
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
        let distinct_types = spec
            .aggregates
            .iter()
            .map(|a| Ok(distinct_count_type(a)?))
            .collect::<Result<_>>()?;
        Ok(SessionWindow {
            distinct_types,
            converter: RowConverter::new(fields)?,
            core: AggregateCore::new(spec)?,
            gap,
            key_ids: HashMap::new(),
            keys: HashMap::new(),
            next_key_id: 0,
            timers: BTreeSet::new(),
            forget: BTreeSet::new(),
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.core
            .spec
            .aggregates
            .iter()
            .zip(&self.distinct_types)
            .map(|(a, d)| Ok(row_accumulator_of(a, d.as_ref())?))
            .collect()
    }

    fn key_id(&mut self, key: &[u8]) -> u64 {
        if let Some(id) = self.key_ids.get(key) {
            return *id;
        }
        let id = self.next_key_id;
        self.next_key_id += 1;
        self.key_ids.insert(key.to_vec(), id);
        self.keys.insert(
            id,
            KeyState {
                key: key.to_vec(),
                sessions: Vec::new(),
                fired_until: i64::MIN,
            },
        );
        id
    }

    /// Feeds pending rows of every touched session to its accumulators.
    /// Feeds pending rows of every touched session to its accumulators: one `take` per
    /// aggregate argument for the whole batch (rows ordered session by session), then each
    /// session's accumulators get zero-copy slices of it.
    fn flush(
        &mut self,
        touched: &[u64],
        args: &[Vec<ArrayRef>],
        filters: &[Option<datafusion::arrow::array::BooleanArray>],
    ) -> Result<()> {
        let mut order: Vec<u32> = Vec::new();
        let mut spans: Vec<(u64, usize, usize, usize)> = Vec::new();
        for id in touched {
            let Some(ks) = self.keys.get_mut(id) else {
                continue;
            };
            for (i, s) in ks.sessions.iter_mut().enumerate() {
                if !s.pending.is_empty() {
                    spans.push((*id, i, order.len(), s.pending.len()));
                    order.append(&mut s.pending);
                }
            }
        }
        if order.is_empty() {
            return Ok(());
        }
        let idx = UInt32Array::from(order);
        for (a, arg_cols) in args.iter().enumerate() {
            let cols = arg_cols
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<Result<Vec<_>, _>>()?;
            let mask = filters[a]
                .as_ref()
                .map(|f| take(f, &idx, None).map(|m| m.as_boolean().clone()))
                .transpose()?;
            // One buffer for every session's slices (a vector per session and aggregate was
            // an allocation per event).
            let mut sliced: Vec<ArrayRef> = Vec::with_capacity(cols.len());
            for &(id, i, start, len) in &spans {
                sliced.clear();
                sliced.extend(cols.iter().map(|c| c.slice(start, len)));
                if let Some(mask) = &mask {
                    let m = mask.slice(start, len);
                    if m.true_count() == 0 {
                        continue;
                    }
                    if m.true_count() != len {
                        for c in sliced.iter_mut() {
                            *c = datafusion::arrow::compute::filter(c, &m)?;
                        }
                    }
                }
                let ks = self.keys.get_mut(&id).expect("touched key");
                ks.sessions[i].accumulators[a].update_batch(&sliced)?;
            }
        }
        Ok(())
    }

    fn emit_until(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let mut fired: Vec<(u64, Session)> = Vec::new();
        while let Some(&(end, id)) = self.timers.first() {
            if end > watermark {
                break;
            }
            self.timers.pop_first();
            let Some(ks) = self.keys.get_mut(&id) else {
                continue;
            };
            let Some(pos) = ks.sessions.iter().position(|s| s.end == end) else {
                continue;
            };
            let s = ks.sessions.remove(pos);
            if ks.fired_until != i64::MIN {
                self.forget
                    .remove(&(ks.fired_until.saturating_add(self.gap), id));
            }
            ks.fired_until = ks.fired_until.max(end);
            self.forget
                .insert((ks.fired_until.saturating_add(self.gap), id));
            fired.push((id, s));
        }
        if !fired.is_empty() {
            self.emit_sessions(fired, out)?;
        }
        // Forget keys whose fired history can no longer make an on-time event late.
        while let Some(&(at, id)) = self.forget.first() {
            if at > watermark {
                break;
            }
            self.forget.pop_first();
            if self.keys.get(&id).is_some_and(|k| k.sessions.is_empty()) {
                let ks = self.keys.remove(&id).expect("present");
                self.key_ids.remove(&ks.key);
            }
        }
        Ok(())
    }

    fn emit_sessions(
        &mut self,
        fired: Vec<(u64, Session)>,
        out: &mut OperatorOutput,
    ) -> Result<()> {
        // Every session fired by one watermark goes out in one batch, each row with its bounds.
        let rows = fired.len();
        let keys = if self.core.spec.keys.is_empty() {
            vec![]
        } else {
            let parser = self.converter.parser();
            let keys = &self.keys;
            self.converter.convert_rows(
                fired
                    .iter()
                    .map(|(id, _)| parser.parse(&keys.get(id).expect("a fired key").key)),
            )?
        };
        let starts: Vec<i64> = fired.iter().map(|(_, s)| s.start).collect();
        let ends: Vec<i64> = fired.iter().map(|(_, s)| s.end).collect();
        let mut fired = fired;
        let mut aggs = Vec::with_capacity(self.core.spec.aggregates.len());
        for a in 0..self.core.spec.aggregates.len() {
            let values = fired
                .iter_mut()
                .map(|(_, s)| s.accumulators[a].evaluate())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            aggs.push(ScalarValue::iter_to_array(values)?);
        }
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
        if p.len() == 0 {
            return Ok(());
        }
        let rows = if p.keys.is_empty() {
            None
        } else {
            Some(self.converter.convert_columns(&p.keys)?)
        };
        let gap = self.gap;
        let mut late_rows = Vec::new();
        let mut touched = Vec::new();
        let mut overlapping: Vec<usize> = Vec::new();
        for r in 0..p.len() {
            let t = p.times[r];
            let input_row = p.input_row(r);
            let wm = input.arrival_watermarks[input_row];
            if t.saturating_add(gap) <= wm {
                late_rows.push(input_row as u32);
                continue;
            }
            let key: &[u8] = rows.as_ref().map_or(&[], |rs| rs.row(r).data());
            let id = self.key_id(key);
            let ks = self.keys.get_mut(&id).expect("just interned");
            // Sessions this event's window [t, t + gap) overlaps.
            overlapping.clear();
            overlapping.extend(
                ks.sessions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| t < s.end && s.start < t + gap)
                    .map(|(i, _)| i),
            );
            if t < ks.fired_until || overlapping.iter().any(|i| ks.sessions[*i].end <= wm) {
                late_rows.push(input_row as u32);
                continue;
            }
            if touched.last() != Some(&id) {
                touched.push(id);
            }
            match overlapping.as_slice() {
                [i] if ks.sessions[*i].start <= t && t + gap <= ks.sessions[*i].end => {
                    ks.sessions[*i].pending.push(r as u32);
                }
                _ => {
                    // Create, extend or merge: take the overlapping sessions out and combine them.
                    let mut merged: Option<Session> = None;
                    for i in overlapping.iter().rev() {
                        let s = ks.sessions.remove(*i);
                        merged = Some(match merged {
                            None => s,
                            Some(mut m) => {
                                merge_into(&mut m, s)?;
                                m
                            }
                        });
                    }
                    let mut m = match merged {
                        Some(m) => m,
                        None => Session {
                            start: t,
                            end: t + gap,
                            accumulators: Vec::new(),
                            pending: Vec::new(),
                        },
                    };
                    if m.accumulators.is_empty() {
                        m.accumulators = self.new_accumulators()?;
                    }
                    m.start = m.start.min(t);
                    m.end = m.end.max(t + gap);
                    m.pending.push(r as u32);
                    // The merged sessions' timers stay: they find no session and are skipped.
                    self.timers.insert((m.end, id));
                    let ks = self.keys.get_mut(&id).expect("present");
                    ks.sessions.push(m);
                }
            }
        }
        self.flush(&touched, &p.args, &p.filters)?;
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
        // One batch of sessions: key bytes, start, end, then every aggregate's state columns; and
        // one batch of fired history: key bytes, fired_until.
        let mut key_col = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut states: Vec<Vec<Vec<ScalarValue>>> =
            vec![Vec::new(); self.core.spec.aggregates.len()];
        let (mut hist_keys, mut hist_until) = (Vec::new(), Vec::new());
        let aggregates = &self.core.spec.aggregates;
        for ks in self.keys.values_mut() {
            if ks.fired_until != i64::MIN {
                hist_keys.push(ks.key.clone());
                hist_until.push(ks.fired_until);
            }
            for s in &mut ks.sessions {
                key_col.push(ks.key.clone());
                starts.push(s.start);
                ends.push(s.end);
                for (a, acc) in s.accumulators.iter_mut().enumerate() {
                    // `state()` may drain an accumulator (count DISTINCT does): rebuild it from
                    // the state so the running session is unchanged by the snapshot.
                    let state = acc.state()?;
                    let arrays = state
                        .iter()
                        .map(|v| v.to_array())
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    let mut fresh = row_accumulator(&aggregates[a])?;
                    fresh.merge_batch(&arrays)?;
                    *acc = fresh;
                    states[a].push(state);
                }
            }
        }
        let mut fields = vec![
            Field::new("key", DataType::Binary, false),
            Field::new("start", DataType::Int64, false),
            Field::new("end", DataType::Int64, false),
        ];
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(key_col.iter())),
            Arc::new(Int64Array::from(starts)),
            Arc::new(Int64Array::from(ends)),
        ];
        for (a, agg) in self.core.spec.aggregates.iter().enumerate() {
            for (j, f) in agg.state_fields()?.iter().enumerate() {
                let col: Vec<ScalarValue> = states[a].iter().map(|s| s[j].clone()).collect();
                let arr = if col.is_empty() {
                    datafusion::arrow::array::new_empty_array(f.data_type())
                } else {
                    ScalarValue::iter_to_array(col)?
                };
                fields.push(Field::new(
                    format!("s{a}_{j}"),
                    arr.data_type().clone(),
                    true,
                ));
                cols.push(arr);
            }
        }
        let sessions = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let history = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key", DataType::Binary, false),
                Field::new("fired_until", DataType::Int64, false),
            ])),
            vec![
                Arc::new(BinaryArray::from_iter_values(hist_keys.iter())),
                Arc::new(Int64Array::from(hist_until)),
            ],
        )?;
        Snapshot {
            header: serde_json::json!({"gap": self.gap}),
            batches: vec![(0, sessions), (1, history)],
        }
        .encode("session_window")
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let snap = Snapshot::decode("session_window", bytes)?;
        let bad = || Error::State {
            operator: "session_window".into(),
            message: "snapshot does not match the query".into(),
        };
        let [(_, sessions), (_, history)] = snap.batches.as_slice() else {
            return Err(bad());
        };
        self.key_ids.clear();
        self.keys.clear();
        self.timers.clear();
        self.forget.clear();
        let keys = sessions.column(0).as_binary::<i32>();
        let starts = sessions
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let ends = sessions
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for r in 0..sessions.num_rows() {
            let id = self.key_id(keys.value(r));
            let mut accumulators = self.new_accumulators()?;
            let mut col = 3;
            for (a, agg) in self.core.spec.aggregates.iter().enumerate() {
                let n = agg.state_fields()?.len();
                let state: Vec<ArrayRef> = sessions
                    .columns()
                    .get(col..col + n)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|c| c.slice(r, 1))
                    .collect();
                accumulators[a].merge_batch(&state)?;
                col += n;
            }
            let (start, end) = (starts.value(r), ends.value(r));
            self.timers.insert((end, id));
            self.keys
                .get_mut(&id)
                .expect("interned")
                .sessions
                .push(Session {
                    start,
                    end,
                    accumulators,
                    pending: Vec::new(),
                });
        }
        let hk = history.column(0).as_binary::<i32>();
        let hu = history
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for r in 0..history.num_rows() {
            let id = self.key_id(hk.value(r));
            let until = hu.value(r);
            self.keys.get_mut(&id).expect("interned").fired_until = until;
            self.forget.insert((until.saturating_add(self.gap), id));
        }
        Ok(())
    }
}

/// Merges session `other` into `into`: bounds, pending rows and accumulator states.
fn merge_into(into: &mut Session, mut other: Session) -> Result<()> {
    into.start = into.start.min(other.start);
    into.end = into.end.max(other.end);
    into.pending.append(&mut other.pending);
    if into.accumulators.is_empty() {
        into.accumulators = other.accumulators;
        return Ok(());
    }
    for (a, acc) in into.accumulators.iter_mut().enumerate() {
        if let Some(o) = other.accumulators.get_mut(a) {
            let state = o
                .state()?
                .iter()
                .map(|s| s.to_array())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            acc.merge_batch(&state)?;
        }
    }
    Ok(())
}
