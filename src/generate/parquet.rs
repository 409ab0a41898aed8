//! Generated events as Parquet, in the schema `replay x.parquet` reads
//! (`src/decode/parquet.rs`): one column per event field, named as in JSON.
//!
//! * Ids and codes are `Utf8` (Parquet's dictionary encoding keeps the repetitive codes small);
//!   `amount_minor` and `fee_minor` are `Int64`, read as JSON integers would be.
//! * `event_time` is `Timestamp(Millisecond, "UTC")`, Parquet's own type for an instant: the
//!   reader turns it into epoch milliseconds, the event's millisecond precision exactly.
//! * Every column is nullable: an absent optional field is a null (the reader reads a null
//!   optional field as absent), and a malformed row needs nulls in required ones.
//! * Rows go out in batches of [`BATCH_ROWS`] in delivery order, Snappy-compressed; Parquet
//!   needs no seeking, so a pipe is a fine destination, but its footer comes last: a reader
//!   needs the whole file.
//!
//! Malformed rows (`--malformed`) are written as rows that fail validation, one for each
//! malformed JSON line, so `read` and `dead_lettered` match a replay of the JSON Lines. Typed
//! columns cannot hold some of the JSON mistakes, so those rows fail for another reason:
//!
//! | corruption | JSON line | Parquet row |
//! |---|---|---|
//! | truncated | `malformed` | columns from `card_id` on are null: `null_field` |
//! | amount as text | `wrong_type` | `amount_minor` null: `null_field` |
//! | fractional amount | `wrong_type` | `amount_minor` above 10^15: `out_of_range` |
//! | misspelled `merchant_id` | `missing_field` | `merchant_id` null: `null_field` |
//! | time that is no time | `bad_timestamp` | a time before 1970: `bad_timestamp` |
//! | not an event | `malformed` | every column null: `null_field` |
//!
//! The rest (negative amount, unknown currency, card number in `card_id`) are rejected for the
//! same reason as in JSON.

use std::io::{self, Write};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use super::RecordWriter;
use super::model::{Cell, Corruption, Row};
use crate::decode::MAX_AMOUNT;
use crate::schema::{FieldId, NUM_FIELDS, timestamp_type};

/// Rows per Arrow batch handed to the Parquet writer: large enough for the writer's per-batch
/// work to vanish, small enough that memory stays flat however many events are generated.
const BATCH_ROWS: usize = 8192;

/// One column being built.
enum Column {
    Str(StringBuilder),
    Int(Int64Builder),
    Time(TimestampMillisecondBuilder),
}

/// The Arrow type of field `f` in a generated file.
fn field_type(f: FieldId) -> DataType {
    match f {
        FieldId::EventTime => timestamp_type(),
        FieldId::AmountMinor | FieldId::FeeMinor => DataType::Int64,
        _ => DataType::Utf8,
    }
}

/// The schema of a generated Parquet file: every event field, all nullable.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(
        FieldId::ALL
            .iter()
            .map(|f| Field::new(f.name(), field_type(*f), true))
            .collect::<Vec<_>>(),
    ))
}

/// Writes rows into a Parquet file on `W`.
pub(super) struct ParquetOut<W: Write + Send> {
    writer: Option<ArrowWriter<W>>,
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
}

fn parquet_err(e: datafusion::parquet::errors::ParquetError) -> io::Error {
    // A closed pipe or a full disk under the writer stays what it was, so the command line
    // can tell a closed pipe from a real failure.
    match e {
        datafusion::parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<io::Error>() {
                Ok(io) => *io,
                Err(other) => io::Error::other(other),
            }
        }
        other => io::Error::other(other),
    }
}

impl<W: Write + Send> ParquetOut<W> {
    pub(super) fn new(out: W) -> io::Result<Self> {
        let schema = schema();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer =
            ArrowWriter::try_new(out, Arc::clone(&schema), Some(props)).map_err(parquet_err)?;
        let columns = FieldId::ALL
            .iter()
            .map(|f| match field_type(*f) {
                DataType::Int64 => Column::Int(Int64Builder::with_capacity(BATCH_ROWS)),
                DataType::Utf8 => {
                    Column::Str(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12))
                }
                _ => Column::Time(
                    TimestampMillisecondBuilder::with_capacity(BATCH_ROWS)
                        .with_timezone(Arc::from("UTC")),
                ),
            })
            .collect();
        Ok(ParquetOut {
            writer: Some(writer),
            schema,
            columns,
            rows: 0,
        })
    }

    /// Writes the rows built so far as one batch.
    fn flush_batch(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Str(b) => Arc::new(b.finish()),
                    Column::Int(b) => Arc::new(b.finish()),
                    Column::Time(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .map_err(|e| io::Error::other(format!("generated batch: {e}")))?;
        let writer = self.writer.as_mut().expect("not finished");
        writer.write(&batch).map_err(parquet_err)
    }
}

/// `row`'s cells, made invalid in the way `bad` names; `card` holds the card number
/// [`Corruption::CardNumber`] puts in `card_id`.
fn cells<'a>(
    row: &'a Row,
    bad: Option<Corruption>,
    card: &'a mut String,
) -> [Cell<'a>; NUM_FIELDS] {
    let mut cells = FieldId::ALL.map(|f| row.cell(f));
    let amount = FieldId::AmountMinor as usize;
    let Some(how) = bad else {
        return cells;
    };
    match how {
        Corruption::Truncated => {
            for c in &mut cells[FieldId::CardId as usize..] {
                *c = Cell::Absent;
            }
        }
        Corruption::AmountAsText => cells[amount] = Cell::Absent,
        Corruption::NegativeAmount => {
            if let Cell::Int(v) = cells[amount] {
                cells[amount] = Cell::Int(-v);
            }
        }
        Corruption::UnknownCurrency => cells[FieldId::Currency as usize] = Cell::Str("ZZZ"),
        Corruption::MissingMerchant => cells[FieldId::MerchantId as usize] = Cell::Absent,
        Corruption::CardNumber => {
            *card = row.card_id_with_card_number();
            let card: &'a String = card;
            cells[FieldId::CardId as usize] = Cell::Str(card);
        }
        Corruption::FractionalAmount => {
            if let Cell::Int(v) = cells[amount] {
                cells[amount] = Cell::Int(MAX_AMOUNT + v);
            }
        }
        Corruption::BadTime => {
            if let Cell::Time(ms) = cells[FieldId::EventTime as usize] {
                cells[FieldId::EventTime as usize] = Cell::Time(-ms);
            }
        }
        Corruption::NotAnEvent => cells = [Cell::Absent; NUM_FIELDS],
    }
    cells
}

impl<W: Write + Send> RecordWriter for ParquetOut<W> {
    fn record(&mut self, row: &Row, bad: Option<Corruption>) -> io::Result<()> {
        let mut card = String::new();
        for (col, cell) in self.columns.iter_mut().zip(cells(row, bad, &mut card)) {
            match (col, cell) {
                (Column::Str(b), Cell::Str(s)) => b.append_value(s),
                (Column::Int(b), Cell::Int(v)) => b.append_value(v),
                (Column::Time(b), Cell::Time(ms)) => b.append_value(ms),
                (Column::Str(b), _) => b.append_null(),
                (Column::Int(b), _) => b.append_null(),
                (Column::Time(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Writes the last batch and the footer, then flushes `W`.
    fn finish(&mut self) -> io::Result<()> {
        self.flush_batch()?;
        if let Some(w) = self.writer.take() {
            w.into_inner().map_err(parquet_err)?.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{RejectReason, decode_parquet};
    use crate::generate::model::Event;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn row() -> Row {
        let e = Event {
            id: 7,
            kind: "authorization",
            time: 1_793_491_200_016,
            payment: 3,
            merchant: 42,
            card: 317,
            amount: 1999,
            status: Some("declined"),
            decline: Some("do_not_honor"),
            fee: None,
            device: 634,
            ip_country: "DE",
        };
        Row::new(&e, 1)
    }

    /// One valid row and one of every corruption, written and read back through the replay
    /// reader: the valid row is accepted, every corrupted one rejected for its documented reason.
    #[test]
    fn rows_are_what_the_parquet_reader_reads() {
        let cases = [
            (Corruption::Truncated, RejectReason::NullField),
            (Corruption::AmountAsText, RejectReason::NullField),
            (Corruption::NegativeAmount, RejectReason::OutOfRange),
            (Corruption::UnknownCurrency, RejectReason::UnknownCurrency),
            (Corruption::MissingMerchant, RejectReason::NullField),
            (Corruption::CardNumber, RejectReason::CardNumber),
            (Corruption::FractionalAmount, RejectReason::OutOfRange),
            (Corruption::BadTime, RejectReason::BadTimestamp),
            (Corruption::NotAnEvent, RejectReason::NullField),
        ];
        let mut file = tempfile::tempfile().unwrap();
        let mut w = ParquetOut::new(&mut file).unwrap();
        w.record(&row(), None).unwrap();
        for (how, _) in cases {
            w.record(&row(), Some(how)).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].schema(), schema());
        let d = decode_parquet(&batches[0], 1, 8192);
        assert_eq!(d.records, 1 + cases.len() as u64);
        assert_eq!(d.batches[0].batch.num_rows(), 1);
        let got: Vec<RejectReason> = d.rejects.iter().map(|r| r.reason).collect();
        let want: Vec<RejectReason> = cases.iter().map(|c| c.1).collect();
        assert_eq!(got, want);
    }
}
