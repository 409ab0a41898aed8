//! A query over a windowed query's results: the inner operator's rows are the outer one's
//! events ([`crate::sql::ChainSpec`]).
//!
//! ```text
//!  events ─▶ inner (per-minute totals) ──rows, as windows close──▶ outer (maximum per hour)
//!  watermark W ──────────────▶ inner ─────────── W − lag ─────────▶ outer
//! ```
//! The inner rows come out in watermark order, each window once and final, so the outer
//! operator sees an ordered stream of events timed by one of the inner window's bounds; its
//! watermark trails the stream's by the plan's `lag`, the time an inner window's rows can
//! still arrive after the watermark passed its bound. No inner row is ever late for the outer
//! operator, and a result equals the outer query over all the inner query's results.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use super::{EventBatch, Operator, OperatorOutput};
use crate::error::{Error, Result};
use crate::sql::ChainSpec;

/// Two operators in a row.
pub(super) struct ChainOperator {
    inner: Box<dyn Operator>,
    outer: Box<dyn Operator>,
    /// The outer plan's events: which inner result column each is.
    columns: Vec<usize>,
    schema: SchemaRef,
    lag: i64,
    /// The watermark the outer operator was last given.
    outer_watermark: i64,
}

/// What a snapshot starts with (and its version).
const MAGIC: &[u8; 8] = b"chain001";

impl ChainOperator {
    /// The operator of `spec`.
    pub(super) fn new(spec: &ChainSpec) -> Result<Self> {
        Ok(ChainOperator {
            inner: super::build_unnamed(&spec.inner)?,
            outer: super::build_unnamed(&spec.outer)?,
            columns: spec.columns.clone(),
            schema: Arc::clone(spec.outer.events.arrow()),
            lag: spec.lag,
            outer_watermark: i64::MIN,
        })
    }

    /// Hands the inner operator's results to the outer one; the outer operator's results go
    /// to `out`.
    fn forward(&mut self, inner: OperatorOutput, out: &mut OperatorOutput) -> Result<()> {
        out.late.extend(inner.late);
        for emitted in inner.results {
            let n = emitted.batch.num_rows();
            if n == 0 {
                continue;
            }
            let columns: Vec<ArrayRef> = self
                .columns
                .iter()
                .map(|c| Arc::clone(emitted.batch.column(*c)))
                .collect();
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            let events = EventBatch::all(batch, vec![0; n], vec![self.outer_watermark; n]);
            let mut outer = OperatorOutput::default();
            self.outer.process(&events, &mut outer)?;
            self.take_outer(outer, out)?;
        }
        Ok(())
    }

    /// The outer operator's results; it can have no late events (see the module docs), and a
    /// late row here would be a bug in the lag, not an event to report.
    fn take_outer(&self, outer: OperatorOutput, out: &mut OperatorOutput) -> Result<()> {
        if let Some(l) = outer.late.first() {
            return Err(Error::Internal(format!(
                "an inner window's row reached the outer window after the watermark {} (lag {})",
                l.watermarks.first().copied().unwrap_or_default(),
                self.lag
            )));
        }
        out.results.extend(outer.results);
        Ok(())
    }
}

impl Operator for ChainOperator {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let mut inner = OperatorOutput::default();
        self.inner.process(input, &mut inner)?;
        self.forward(inner, out)
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        let mut inner = OperatorOutput::default();
        self.inner.advance_watermark(watermark, &mut inner)?;
        self.forward(inner, out)?;
        let w = watermark.saturating_sub(self.lag);
        if w > self.outer_watermark {
            self.outer_watermark = w;
            let mut outer = OperatorOutput::default();
            self.outer.advance_watermark(w, &mut outer)?;
            self.take_outer(outer, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        let mut inner = OperatorOutput::default();
        self.inner.finish(&mut inner)?;
        self.forward(inner, out)?;
        let mut outer = OperatorOutput::default();
        self.outer.finish(&mut outer)?;
        self.take_outer(outer, out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let inner = self.inner.snapshot()?;
        let outer = self.outer.snapshot()?;
        let mut b = Vec::with_capacity(32 + inner.len() + outer.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.outer_watermark.to_le_bytes());
        b.extend_from_slice(&(inner.len() as u64).to_le_bytes());
        b.extend_from_slice(&inner);
        b.extend_from_slice(&outer);
        Ok(b)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = || {
            Error::State {
            operator: "chain".into(),
            message: "the saved state is not a query over a windowed query's state; run with --reset-state".into(),
        }
        };
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
        let word = |b: &[u8]| -> Option<[u8; 8]> { b.get(..8)?.try_into().ok() };
        let wm = i64::from_le_bytes(word(rest).ok_or_else(bad)?);
        let len = u64::from_le_bytes(word(&rest[8..]).ok_or_else(bad)?) as usize;
        let body = &rest[16..];
        if body.len() < len {
            return Err(bad());
        }
        self.inner.restore(&body[..len])?;
        self.outer.restore(&body[len..])?;
        self.outer_watermark = wm;
        Ok(())
    }
}
