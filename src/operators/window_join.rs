//! Window joins: two windowed aggregates of the stream side by side (per-minute
//! authorizations and captures per merchant), joined on their keys and window bounds.
//!
//! Both sides run as the windowed aggregates they are, over every event. They have the same
//! windows, so a window closes on both sides at the same watermark: the rows each side emits
//! in one call are joined there (a hash join on the key, the rest of ON checked on each pair),
//! and a left join emits a left row without a partner with nulls. Nothing is kept between
//! calls but the two aggregates' own state.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::row::{RowConverter, SortField};

use super::{Emitted, EventBatch, LateEvents, Operator, OperatorOutput, RowTimes};
use crate::error::{Error, Result};
use crate::sql::WindowJoinSpec;

/// What a window join's snapshot starts with (its format's name and version).
const TAG: &[u8] = b"wjoin1";

/// The two aggregates and the join of what they emit.
pub(super) struct WindowJoin {
    spec: WindowJoinSpec,
    left: Box<dyn Operator>,
    right: Box<dyn Operator>,
}

impl WindowJoin {
    pub(super) fn new(
        spec: WindowJoinSpec,
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
    ) -> Self {
        WindowJoin { spec, left, right }
    }

    /// Joins what the two sides emitted in one call into `out`; their late events once each.
    fn join(&self, l: OperatorOutput, r: OperatorOutput, out: &mut OperatorOutput) -> Result<()> {
        // An event late for one side is late for the other too (the same windows): once.
        let mut seen = std::collections::HashSet::new();
        for late in l.late.into_iter().chain(r.late) {
            let keep: Vec<u32> = (0..late.positions.len())
                .filter(|&i| seen.insert(late.positions[i]))
                .map(|i| i as u32)
                .collect();
            if keep.len() == late.positions.len() {
                out.late.push(late);
            } else if !keep.is_empty() {
                let idx = UInt32Array::from(keep.clone());
                out.late.push(LateEvents {
                    batch: datafusion::arrow::compute::take_record_batch(&late.batch, &idx)?,
                    positions: keep.iter().map(|&i| late.positions[i as usize]).collect(),
                    watermarks: keep.iter().map(|&i| late.watermarks[i as usize]).collect(),
                });
            }
        }
        let (left, left_times) = rows_of(&l.results, &self.spec.left.output_schema)?;
        let (right, _) = rows_of(&r.results, &self.spec.right.output_schema)?;
        if left.num_rows() == 0 {
            return Ok(());
        }
        let keys = |exprs: &[Arc<dyn datafusion::physical_plan::PhysicalExpr>],
                    b: &RecordBatch|
         -> Result<Vec<ArrayRef>> {
            exprs
                .iter()
                .map(|e| Ok(e.evaluate(b)?.into_array(b.num_rows())?))
                .collect()
        };
        let lk = keys(&self.spec.left_keys, &left)?;
        let mut rk = keys(&self.spec.right_keys, &right)?;
        for (r, l) in rk.iter_mut().zip(&lk) {
            if r.data_type() != l.data_type() {
                *r = cast(r, l.data_type())?;
            }
        }
        let converter = RowConverter::new(
            lk.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let (lrows, rrows) = (
            converter.convert_columns(&lk)?,
            converter.convert_columns(&rk)?,
        );
        let has_null = |cols: &[ArrayRef], i: usize| cols.iter().any(|c| c.is_null(i));
        let mut by_key: hashbrown::HashMap<&[u8], Vec<u32>> = hashbrown::HashMap::new();
        for i in 0..right.num_rows() {
            if !has_null(&rk, i) {
                by_key
                    .entry(rrows.row(i).data())
                    .or_default()
                    .push(i as u32);
            }
        }
        let (mut li, mut ri): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        for i in 0..left.num_rows() {
            if has_null(&lk, i) {
                continue;
            }
            if let Some(found) = by_key.get(lrows.row(i).data()) {
                for &j in found {
                    li.push(i as u32);
                    ri.push(j);
                }
            }
        }
        if let Some(f) = &self.spec.residual
            && !li.is_empty()
        {
            // The same check as a lookup join's: the pair's columns, DataFusion's filter.
            let mask = super::lookup_join::residual_mask(f, &left, &right, &li, &ri)?;
            let keep: Vec<usize> = (0..li.len())
                .filter(|&k| mask.is_valid(k) && mask.value(k))
                .collect();
            li = keep.iter().map(|&k| li[k]).collect();
            ri = keep.iter().map(|&k| ri[k]).collect();
        }
        // In left order; a left join's unmatched left rows with nulls.
        let mut pairs: Vec<(u32, Option<u32>)> =
            li.iter().zip(&ri).map(|(&a, &b)| (a, Some(b))).collect();
        if self.spec.left_outer {
            let mut matched = vec![false; left.num_rows()];
            for &a in &li {
                matched[a as usize] = true;
            }
            pairs.extend(
                (0..left.num_rows() as u32)
                    .filter(|a| !matched[*a as usize])
                    .map(|a| (a, None)),
            );
        }
        pairs.sort_by_key(|p| p.0);
        if pairs.is_empty() {
            return Ok(());
        }
        let lt = UInt32Array::from(pairs.iter().map(|p| p.0).collect::<Vec<_>>());
        let rt: UInt32Array = pairs.iter().map(|p| p.1).collect();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for c in left.columns() {
            cols.push(take(c.as_ref(), &lt, None)?);
        }
        for c in right.columns() {
            cols.push(take(c.as_ref(), &rt, None)?);
        }
        let cols = cols
            .into_iter()
            .zip(self.spec.joined_schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c),
                false => cast(&c, f.data_type()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let joined = RecordBatch::try_new_with_options(
            Arc::clone(&self.spec.joined_schema),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?;
        let times: Vec<i64> = pairs.iter().map(|p| left_times[p.0 as usize]).collect();
        let (batch, times) =
            crate::sql::apply_stages_timed(&self.spec.output_stages, &joined, None, &times)?;
        if batch.num_rows() > 0 {
            out.results.push(Emitted {
                batch,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }
}

/// The rows one side emitted, as one batch, with each row's time.
fn rows_of(
    emitted: &[Emitted],
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<(RecordBatch, Vec<i64>)> {
    let batches: Vec<RecordBatch> = emitted.iter().map(|e| e.batch.clone()).collect();
    let mut times = Vec::new();
    for e in emitted {
        times.extend((0..e.batch.num_rows()).map(|i| e.times.get(i)));
    }
    Ok((concat_batches(schema, &batches)?, times))
}

impl Operator for WindowJoin {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let (mut l, mut r) = (OperatorOutput::default(), OperatorOutput::default());
        self.left.process(input, &mut l)?;
        self.right.process(input, &mut r)?;
        self.join(l, r, out)
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let (mut l, mut r) = (OperatorOutput::default(), OperatorOutput::default());
        self.left.advance_watermark(watermark, &mut l)?;
        self.right.advance_watermark(watermark, &mut r)?;
        self.join(l, r, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        let (mut l, mut r) = (OperatorOutput::default(), OperatorOutput::default());
        self.left.finish(&mut l)?;
        self.right.finish(&mut r)?;
        self.join(l, r, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let (l, r) = (self.left.snapshot()?, self.right.snapshot()?);
        let mut out = Vec::with_capacity(TAG.len() + 8 + l.len() + r.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(&(l.len() as u64).to_le_bytes());
        out.extend_from_slice(&l);
        out.extend_from_slice(&r);
        Ok(out)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = || Error::State {
            operator: "window join".into(),
            message: "the snapshot does not hold the join's two sides".into(),
        };
        let bytes = bytes.strip_prefix(TAG).ok_or_else(bad)?;
        let n = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(bad)?;
        let end = n.checked_add(8).ok_or_else(bad)?;
        let l = bytes.get(8..end).ok_or_else(bad)?;
        let r = bytes.get(end..).ok_or_else(bad)?;
        self.left.restore(l)?;
        self.right.restore(r)
    }
}
