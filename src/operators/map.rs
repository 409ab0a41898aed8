//! A stateless filter/projection: rows stream through as they arrive.
//!
//! With `FROM TUMBLE(...)` and no aggregation, each row gets its window's bounds as
//! `window_start`/`window_end`; nothing is held back, so no event is ever late here.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::TimestampMillisecondType;

use super::{Emitted, EventBatch, Operator, OperatorOutput, RowTimes};
use crate::error::Result;
use crate::schema::EventSchema;
use crate::sql::{Stage, WindowKind, apply_stages_timed};
use crate::state::Snapshot;

/// The stateless operator.
pub struct MapOperator {
    stages: Vec<Stage>,
    window: Option<WindowKind>,
    events: Arc<EventSchema>,
}

impl MapOperator {
    /// A map over `stages` of `events`, adding tumbling window bounds when `window` is set.
    pub fn new(stages: Vec<Stage>, window: Option<WindowKind>, events: Arc<EventSchema>) -> Self {
        MapOperator {
            stages,
            window,
            events,
        }
    }
}

impl Operator for MapOperator {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let batch = match self.window {
            Some(WindowKind::Tumble { size }) => {
                let ts = input
                    .batch
                    .column(self.events.event_time_column())
                    .as_primitive::<TimestampMillisecondType>();
                let starts: TimestampMillisecondArray = ts.unary(|t| t - t.rem_euclid(size));
                let ends: TimestampMillisecondArray = starts.unary(|s| s + size);
                let mut cols = input.batch.columns().to_vec();
                cols.push(Arc::new(starts.with_timezone("UTC")));
                cols.push(Arc::new(ends.with_timezone("UTC")));
                RecordBatch::try_new(Arc::clone(self.events.windowed()), cols)?
            }
            _ => input.batch.clone(),
        };
        // A per-event result stands for its event's time.
        let times = batch
            .column(self.events.event_time_column())
            .as_primitive::<TimestampMillisecondType>()
            .values();
        let (result, times) =
            apply_stages_timed(&self.stages, &batch, input.selection.as_ref(), times)?;
        if result.num_rows() > 0 {
            out.results.push(Emitted {
                batch: result,
                times: RowTimes::Each(times),
            });
        }
        Ok(())
    }

    fn advance_watermark(&mut self, _watermark: i64, _out: &mut OperatorOutput) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut OperatorOutput) -> Result<()> {
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        Snapshot::default().encode("map")
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        Snapshot::decode("map", bytes).map(|_| ())
    }
}
