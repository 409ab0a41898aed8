//! The watermark each event arrived under, as a column: what `booking_time` reads.
//!
//! A query that books late money at the watermark (`booking_time(event_time, INTERVAL '7'
//! DAY)`, `sql/booking.rs`) is planned over the events plus [`crate::schema::ARRIVAL_WATERMARK`]. The router
//! knows each row's arrival watermark (`EventBatch::arrival_watermarks`); this operator
//! appends it to the batch — NULL while the stream has no watermark yet — and runs the inner
//! plan over the result. It holds no state of its own.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::SchemaRef;

use super::{EventBatch, Operator, OperatorOutput};
use crate::error::Result;

/// The inner plan's operator, fed the events with their arrival watermarks.
pub(super) struct Booked {
    inner: Box<dyn Operator>,
    /// The events' schema with [`crate::schema::ARRIVAL_WATERMARK`] last.
    schema: SchemaRef,
}

impl Booked {
    /// Feeds `inner` events of `schema` (the events, then the arrival watermark).
    pub(super) fn new(inner: Box<dyn Operator>, schema: SchemaRef) -> Self {
        Booked { inner, schema }
    }
}

impl Operator for Booked {
    fn process(&mut self, input: &EventBatch, out: &mut OperatorOutput) -> Result<()> {
        let arrival: TimestampMillisecondArray = input
            .arrival_watermarks
            .iter()
            .map(|w| (*w != i64::MIN).then_some(*w))
            .collect();
        let mut columns = input.batch.columns().to_vec();
        columns.push(Arc::new(arrival.with_timezone("UTC")));
        let booked = EventBatch {
            batch: RecordBatch::try_new(Arc::clone(&self.schema), columns)?,
            keys: None,
            ..input.clone()
        };
        let late_from = out.late.len();
        self.inner.process(&booked, out)?;
        // Late events go out as they came, without the column added here.
        let n = input.batch.num_columns();
        for late in &mut out.late[late_from..] {
            if late.batch.num_columns() > n {
                late.batch = late.batch.project(&(0..n).collect::<Vec<_>>())?;
            }
        }
        Ok(())
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
