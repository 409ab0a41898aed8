//! The session window's snapshot: one batch of open sessions (row-encoded key, start, end, then
//! every aggregate's state columns) and one of fired history (row-encoded key, `fired_until`).
//! The layout is the one the operator has always written, so checkpoints taken before the slot
//! redesign restore.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

use super::{KeyState, Session, SessionWindow};
use crate::error::Result;
use crate::state::{Snapshot, state_err};

const NAME: &str = "session_window";

/// Each key's row-encoded bytes, by key id (empty bytes when the query has no keys).
fn key_bytes(op: &SessionWindow, ids: &[u32]) -> Result<Vec<Vec<u8>>> {
    if op.core.spec.keys.is_empty() {
        return Ok(vec![Vec::new(); ids.len()]);
    }
    let columns = op.key_ids.keys(ids)?;
    let rows = op.converter.convert_columns(&columns)?;
    Ok(rows.iter().map(|r| r.data().to_vec()).collect())
}

/// The key ids of row-encoded keys, interning them.
fn key_ids_of(op: &mut SessionWindow, keys: &BinaryArray) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    if op.core.spec.keys.is_empty() {
        ids.resize(keys.len(), 0);
    } else {
        let parser = op.converter.parser();
        let columns = op
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k.unwrap_or_default())))?;
        op.key_ids.intern(&columns, keys.len(), &mut ids)?;
    }
    if op.keys.len() < op.key_ids.len() {
        op.keys.resize_with(op.key_ids.len(), KeyState::default);
    }
    Ok(ids)
}

pub(super) fn snapshot(op: &mut SessionWindow) -> Result<Vec<u8>> {
    let (mut session_ids, mut starts, mut ends, mut slots) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut history_ids, mut history_until) = (Vec::new(), Vec::new());
    for (id, ks) in op.keys.iter().enumerate() {
        if ks.fired_until != i64::MIN {
            history_ids.push(id as u32);
            history_until.push(ks.fired_until);
        }
        for s in &ks.sessions {
            session_ids.push(id as u32);
            starts.push(s.start);
            ends.push(s.end);
            slots.push(s.slot);
        }
    }
    let mut fields = vec![
        Field::new("key", DataType::Binary, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter_values(key_bytes(op, &session_ids)?)),
        Arc::new(Int64Array::from(starts)),
        Arc::new(Int64Array::from(ends)),
    ];
    for (a, states) in op.slots.state(&slots)?.into_iter().enumerate() {
        for (j, col) in states.into_iter().enumerate() {
            fields.push(Field::new(
                format!("s{a}_{j}"),
                col.data_type().clone(),
                true,
            ));
            cols.push(col);
        }
    }
    let sessions = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    let history = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("fired_until", DataType::Int64, false),
        ])),
        vec![
            Arc::new(BinaryArray::from_iter_values(key_bytes(op, &history_ids)?)),
            Arc::new(Int64Array::from(history_until)),
        ],
    )?;
    Snapshot {
        header: serde_json::json!({"gap": op.gap}),
        batches: vec![(0, sessions), (1, history)],
    }
    .encode(NAME)
}

pub(super) fn restore(op: &mut SessionWindow, bytes: &[u8]) -> Result<()> {
    let snap = Snapshot::decode(NAME, bytes)?;
    let bad = || state_err(NAME, "snapshot does not match the query");
    let [(_, sessions), (_, history)] = snap.batches.as_slice() else {
        return Err(bad());
    };
    op.keys.clear();
    op.timers.clear();
    op.forget.clear();
    op.key_ids = super::KeyIds::new(&op.core.spec)?;
    op.slots.clear(&op.core.spec.aggregates)?;
    // The state columns of each aggregate, in order after key, start and end.
    let mut states: Vec<Vec<ArrayRef>> = Vec::new();
    let mut col = 3;
    for agg in &op.core.spec.aggregates {
        let n = agg.state_fields()?.len();
        let cols = sessions.columns().get(col..col + n).ok_or_else(bad)?;
        states.push(cols.to_vec());
        col += n;
    }
    if col != sessions.num_columns() {
        return Err(bad());
    }
    let ids = key_ids_of(op, sessions.column(0).as_binary::<i32>())?;
    let starts = sessions.column(1).as_primitive::<Int64Type>();
    let ends = sessions.column(2).as_primitive::<Int64Type>();
    for (r, id) in ids.iter().enumerate() {
        let slot = op.slots.restore(&states, r)?;
        let (start, end) = (starts.value(r), ends.value(r));
        op.timers.push(end, *id);
        op.keys[*id as usize].sessions.push(Session {
            start,
            end,
            armed: end,
            slot,
        });
    }
    let ids = key_ids_of(op, history.column(0).as_binary::<i32>())?;
    let until = history.column(1).as_primitive::<Int64Type>();
    for (r, id) in ids.iter().enumerate() {
        let until = until.value(r);
        op.keys[*id as usize].fired_until = until;
        op.forget.push(until.saturating_add(op.gap), *id);
    }
    Ok(())
}
