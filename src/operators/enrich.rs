//! Events joined to reference tables before a stateful operator: a window, OVER or running
//! aggregate over `payments JOIN merchants` ([`crate::sql::PlanKind::Enriched`]).
//!
//! The join stages turn each batch of events into joined rows, carrying every row's source
//! position and arrival watermark along (a row of an event that matched two table rows has the
//! event's twice), and hand them to the inner operator as its events. The inner operator's
//! late rows are joined rows: they go to the late output as the events they came from, once.

use datafusion::arrow::array::{Array, AsArray, UInt32Array};

use super::{EventBatch, LateEvents, Operator, OperatorOutput};
use crate::error::{Error, Result};
use crate::sql::Stage;

/// The join stages, then the operator over the joined rows.
pub(super) struct Enriched {
    stages: Vec<Stage>,
    inner: Box<dyn Operator>,
    /// How many columns the events have (the joined rows' first columns).
    event_columns: usize,
}

impl Enriched {
    pub(super) fn new(stages: Vec<Stage>, inner: Box<dyn Operator>, event_columns: usize) -> Self {
        Enriched {
            stages,
            inner,
            event_columns,
        }
    }

    /// The joined rows of `input`'s events.
    fn join(&self, input: &EventBatch) -> Result<EventBatch> {
        let mut rows = input.compacted()?;
        // Keys the router evaluated are of the events, not of the joined rows: the inner
        // operator evaluates its own.
        rows.keys = None;
        for stage in &self.stages {
            if rows.batch.num_rows() == 0 {
                break;
            }
            match stage {
                Stage::Filter(p) => {
                    let mask = p.evaluate(&rows.batch)?.into_array(rows.batch.num_rows())?;
                    let mask = mask.as_boolean_opt().ok_or_else(|| {
                        Error::Internal(format!("a filter produced {}", mask.data_type()))
                    })?;
                    if mask.true_count() != rows.batch.num_rows() {
                        let keep = UInt32Array::from_iter_values(
                            (0..mask.len())
                                .filter(|&i| mask.is_valid(i) && mask.value(i))
                                .map(|i| i as u32),
                        );
                        rows = rows.take(&keep)?;
                    }
                }
                Stage::Lookup(join) => {
                    let (joined, from) = join.apply(&rows.batch)?;
                    if let Some(from) = from {
                        rows.reindex(&from);
                    }
                    rows.batch = joined;
                }
                Stage::Project { .. } | Stage::Rank { .. } => {
                    return Err(Error::Internal(
                        "a projection between the stream and its join".into(),
                    ));
                }
            }
        }
        Ok(rows)
    }

    /// Late joined rows as the events they came from, each once.
    fn events_of(&self, out: &mut OperatorOutput, from: usize) -> Result<()> {
        for late in &mut out.late[from..] {
            let mut keep = Vec::with_capacity(late.positions.len());
            for i in 0..late.positions.len() {
                if i == 0 || late.positions[i] != late.positions[i - 1] {
                    keep.push(i as u32);
                }
            }
            let columns: Vec<usize> = (0..self.event_columns).collect();
            let events = late.batch.project(&columns)?;
            let keep = UInt32Array::from(keep);
            *late = LateEvents {
                batch: datafusion::arrow::compute::take_record_batch(&events, &keep)?,
                positions: keep
                    .values()
                    .iter()
                    .map(|&i| late.positions[i as usize])
                    .collect(),
                watermarks: keep
                    .values()
                    .iter()
                    .map(|&i| late.watermarks[i as usize])
                    .collect(),
            };
        }
        Ok(())
    }
}

impl Operator for Enriched {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let rows = self.join(input)?;
        let before = out.late.len();
        if rows.batch.num_rows() > 0 {
            self.inner.process(&rows, out)?;
        }
        self.events_of(out, before)
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut OperatorOutput) -> Result<()> {
        self.inner.advance_watermark(watermark, out)
    }

    fn finish(&mut self, out: &mut OperatorOutput) -> Result<()> {
        self.inner.finish(out)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.inner.snapshot()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.restore(bytes)
    }
}
