//! The window operators' state codec: frozen groups per window (or pane) start as tagged Arrow
//! batches in a [`Snapshot`]. It lives beside the operators that own the state, so `state` stays
//! a leaf that knows nothing of windows or plans.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt8Array};
use datafusion::arrow::datatypes::{Field, Schema};

use super::FrozenGroups;
use crate::error::Result;
use crate::sql::AggregateSpec;
use crate::state::{Snapshot, state_err};

/// The state of a windowed aggregation: frozen groups per window (or pane) start.
#[derive(Debug, Clone)]
pub(super) struct WindowStates {
    /// (window or pane start, its groups).
    pub(super) windows: Vec<(i64, FrozenGroups)>,
    /// Operator scalars.
    pub(super) extra: serde_json::Value,
    /// Dense windows' live keys ([`super::dense::Dense::snapshot`]), if any.
    pub(super) dense: Option<RecordBatch>,
}

/// The tag of the dense keys' batch (no window starts at it).
const DENSE_TAG: i64 = i64::MIN;

/// Frozen groups as one batch: a row-count column, the keys, then every aggregate's state.
pub(super) fn groups_to_batch(f: &FrozenGroups) -> Result<RecordBatch> {
    let mut fields = vec![Field::new(
        "__rows",
        datafusion::arrow::datatypes::DataType::UInt8,
        false,
    )];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt8Array::from(vec![0u8; f.rows]))];
    for (i, k) in f.keys.iter().enumerate() {
        fields.push(Field::new(format!("k{i}"), k.data_type().clone(), true));
        cols.push(Arc::clone(k));
    }
    for (a, states) in f.states.iter().enumerate() {
        for (j, s) in states.iter().enumerate() {
            fields.push(Field::new(format!("s{a}_{j}"), s.data_type().clone(), true));
            cols.push(Arc::clone(s));
        }
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(f.rows)),
    )?)
}

/// Inverse of [`groups_to_batch`] for the aggregation `spec`.
pub(super) fn batch_to_groups(
    name: &str,
    batch: &RecordBatch,
    spec: &AggregateSpec,
) -> Result<FrozenGroups> {
    let nkeys = spec.keys.len();
    let mut col = 1;
    let keys = batch.columns()[col..col + nkeys].to_vec();
    col += nkeys;
    let mut states = Vec::with_capacity(spec.aggregates.len());
    for a in &spec.aggregates {
        let n = a.state_fields()?.len();
        let cols = batch
            .columns()
            .get(col..col + n)
            .ok_or_else(|| state_err(name, "snapshot does not match the query's aggregates"))?;
        states.push(cols.to_vec());
        col += n;
    }
    if col != batch.num_columns() {
        return Err(state_err(
            name,
            "snapshot does not match the query's aggregates",
        ));
    }
    Ok(FrozenGroups {
        keys,
        states,
        rows: batch.num_rows(),
    })
}

/// Encodes window states for operator `name`.
pub(super) fn encode_windows(name: &str, s: &WindowStates) -> Result<Vec<u8>> {
    let mut batches: Vec<(i64, RecordBatch)> = s
        .windows
        .iter()
        .map(|(start, f)| Ok((*start, groups_to_batch(f)?)))
        .collect::<Result<_>>()?;
    if let Some(d) = &s.dense {
        batches.push((DENSE_TAG, d.clone()));
    }
    Snapshot {
        header: s.extra.clone(),
        batches,
    }
    .encode(name)
}

/// Decodes window states written by [`encode_windows`].
pub(super) fn decode_windows(
    name: &str,
    bytes: &[u8],
    spec: &AggregateSpec,
) -> Result<WindowStates> {
    let snap = Snapshot::decode(name, bytes)?;
    let dense = snap
        .batches
        .iter()
        .find(|(tag, _)| *tag == DENSE_TAG)
        .map(|(_, b)| b.clone());
    let windows = snap
        .batches
        .iter()
        .filter(|(tag, _)| *tag != DENSE_TAG)
        .map(|(start, b)| Ok((*start, batch_to_groups(name, b, spec)?)))
        .collect::<Result<_>>()?;
    Ok(WindowStates {
        windows,
        extra: snap.header,
        dense,
    })
}
