//! `UNION ALL` of queries ([`crate::sql::UnionSpec`]): every branch's operator sees every event
//! of its stream (all of them, over one stream; over several, the batches of its own), and its
//! rows go to the one output in the union's schema. Time is the run's: every branch sees every
//! watermark, which over several streams is the least of theirs.
//!
//! An event late for several branches is reported late once (by its position), so the late
//! output and its count hold each event at most once, as for any query.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::{EventBatch, LateEvents, Operator, OperatorOutput};
use crate::error::{Error, Result};
use crate::sql::UnionSpec;

/// What a snapshot starts with (and its version).
const MAGIC: &[u8; 8] = b"union001";

/// One branch: its operator, the casts that bring its rows to the union's types, and the
/// stream it reads ([`EventBatch::stream`]).
struct Branch {
    operator: Box<dyn Operator>,
    casts: Vec<Option<DataType>>,
    stream: usize,
}

/// The branches of a `UNION ALL`.
pub(super) struct UnionOperator {
    branches: Vec<Branch>,
    schema: SchemaRef,
}

impl UnionOperator {
    /// The operator of `spec`, whose rows have `schema`.
    pub(super) fn new(spec: &UnionSpec, schema: SchemaRef) -> Result<Self> {
        let branches = spec
            .branches
            .iter()
            .zip(&spec.casts)
            .enumerate()
            .map(|(i, (plan, casts))| {
                Ok(Branch {
                    operator: super::build_unnamed(plan)?,
                    casts: casts.clone(),
                    stream: spec.branch_streams.get(i).copied().unwrap_or(0),
                })
            })
            .collect::<Result<_>>()?;
        Ok(UnionOperator { branches, schema })
    }

    /// Runs `step` on every branch, gathering their rows (in the union's schema) and their
    /// late events (each position once) into `out`.
    /// With `stream`, only on the branches that read it.
    fn each(
        &mut self,
        stream: Option<usize>,
        out: &mut OperatorOutput,
        mut step: impl FnMut(&mut dyn Operator, &mut OperatorOutput) -> Result<()>,
    ) -> Result<()> {
        let mut late: Vec<LateEvents> = Vec::new();
        for branch in &mut self.branches {
            if stream.is_some_and(|s| s != branch.stream) {
                continue;
            }
            let mut own = OperatorOutput::default();
            step(branch.operator.as_mut(), &mut own)?;
            for mut emitted in own.results {
                emitted.batch = conform(&emitted.batch, &branch.casts, &self.schema)?;
                out.results.push(emitted);
            }
            late.extend(own.late);
        }
        match late.len() {
            0 => {}
            1 => out.late.extend(late),
            _ => out.late.extend(once_each(late)?),
        }
        Ok(())
    }
}

/// `batch` with the union's schema: columns cast where the branch's type differs.
fn conform(
    batch: &RecordBatch,
    casts: &[Option<DataType>],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(casts)
        .map(|(c, t)| match t {
            Some(t) => Ok(cast(c, t)?),
            None => Ok(Arc::clone(c)),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// Late events of several branches, each position once.
fn once_each(late: Vec<LateEvents>) -> Result<Vec<LateEvents>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(late.len());
    for l in late {
        let keep: Vec<u32> = (0..l.positions.len() as u32)
            .filter(|i| seen.insert(l.positions[*i as usize]))
            .collect();
        if keep.len() == l.positions.len() {
            out.push(l);
        } else if !keep.is_empty() {
            let idx = datafusion::arrow::array::UInt32Array::from(keep);
            out.push(LateEvents {
                batch: datafusion::arrow::compute::take_record_batch(&l.batch, &idx)?,
                positions: idx
                    .values()
                    .iter()
                    .map(|i| l.positions[*i as usize])
                    .collect(),
                watermarks: idx
                    .values()
                    .iter()
                    .map(|i| l.watermarks[*i as usize])
                    .collect(),
            });
        }
    }
    Ok(out)
}

impl Operator for UnionOperator {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        self.each(Some(input.stream), out, |op, own| op.process(input, own))
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.each(None, out, |op, own| op.advance_watermark(watermark, own))
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.each(None, out, |op, own| op.finish(own))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut b = Vec::from(MAGIC.as_slice());
        b.extend_from_slice(&(self.branches.len() as u32).to_le_bytes());
        for branch in &mut self.branches {
            let s = branch.operator.snapshot()?;
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(&s);
        }
        Ok(b)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = || Error::State {
            operator: "union".into(),
            message: "the saved state is not this UNION ALL's state; run with --reset-state".into(),
        };
        let mut rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let n = rest
            .get(..4)
            .and_then(|w| w.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(bad)?;
        if n as usize != self.branches.len() {
            return Err(bad());
        }
        rest = &rest[4..];
        for branch in &mut self.branches {
            let len = rest
                .get(..8)
                .and_then(|w| w.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(bad)? as usize;
            let end = len.checked_add(8).ok_or_else(bad)?;
            let state = rest.get(8..end).ok_or_else(bad)?;
            branch.operator.restore(state)?;
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(())
    }
}
