//! The records behind a projected batch, so late events still go out whole.
//!
//! When the run's queries read only some of the events' columns, the decoder leaves the
//! others empty ([`crate::decode::Projection`]; a declared source's string columns too).
//! Results never show them, but the late output writes each late event entire; so a batch
//! from such a decoder carries, row by row, where its record is in the chunk it was decoded
//! from, and the few late rows are decoded again, whole, from there. The chunk is the one the batch already holds for dead letters
//! (`DecodedBatch::source`): carrying it costs a range per row.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use crate::decode::{ChunkBytes, DecodedBatch, RawSource, Redecode};

/// Where each row's record is in the chunk it was decoded from.
#[derive(Debug, Clone)]
pub struct RawEvents {
    chunk: Arc<ChunkBytes>,
    spans: Vec<(u32, u32)>,
    /// The decoder that builds every column.
    decoder: Redecode,
}

impl RawEvents {
    /// The records of `d`'s rows, when its decoder left columns out; `None` when every column
    /// was built (or nothing was kept to decode again: the columns were then all built).
    pub fn of(d: &DecodedBatch) -> Option<RawEvents> {
        match (&d.source, &d.projected) {
            (Some(RawSource::Text(chunk)), Some(decoder)) => Some(RawEvents {
                chunk: Arc::clone(chunk),
                spans: d.raw_spans.clone(),
                decoder: decoder.clone(),
            }),
            _ => None,
        }
    }

    /// The records of rows `rows`, in that order.
    pub fn take(&self, rows: &[u32]) -> RawEvents {
        RawEvents {
            chunk: Arc::clone(&self.chunk),
            decoder: self.decoder.clone(),
            spans: rows
                .iter()
                .map(|&i| self.spans.get(i as usize).copied().unwrap_or((0, 0)))
                .collect(),
        }
    }

    /// `batch` (whose rows are these records', its first columns the events') with the
    /// events' columns decoded again, whole. `batch` unchanged if a record does not decode
    /// to the one row it decoded to before (not expected: decoding is deterministic).
    pub fn whole(&self, batch: &RecordBatch) -> RecordBatch {
        self.try_whole(batch).unwrap_or_else(|| {
            tracing::error!(
                rows = batch.num_rows(),
                "late events could not be decoded again from their records: written with only the columns the queries read (a bug: please report it)"
            );
            batch.clone()
        })
    }

    fn try_whole(&self, batch: &RecordBatch) -> Option<RecordBatch> {
        let events = self.decoder.events();
        let n = events.fields().len();
        let schema = batch.schema();
        if self.spans.len() != batch.num_rows()
            || schema.fields().len() < n
            || (0..n).any(|i| schema.field(i).name() != events.field(i).name())
        {
            return None;
        }
        if batch.num_rows() == 0 {
            return Some(batch.clone());
        }
        let bytes = self.chunk.bytes();
        let mut text = Vec::new();
        for &(start, end) in &self.spans {
            let record = bytes.get(start as usize..end as usize)?;
            if record.contains(&b'\n') {
                return None;
            }
            text.extend_from_slice(record);
            text.push(b'\n');
        }
        let decoded = self.decoder.json_lines(&text, batch.num_rows());
        let rows: usize = decoded.batches.iter().map(|b| b.batch.num_rows()).sum();
        if !decoded.rejects.is_empty() || rows != batch.num_rows() {
            return None;
        }
        let whole = datafusion::arrow::compute::concat_batches(
            &events,
            decoded.batches.iter().map(|b| &b.batch),
        )
        .ok()?;
        let mut columns = whole.columns().to_vec();
        columns.extend_from_slice(&batch.columns()[n..]);
        RecordBatch::try_new(schema, columns).ok()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::UInt32Array;

    use super::*;
    use crate::decode::{Projection, decode_json_lines_projected};
    use crate::operators::EventBatch;
    use crate::schema::{FieldId, NUM_FIELDS};

    /// Decoded with `projection`, the chunk kept, as the router hands it on.
    fn batch(text: &[u8], projection: &Projection) -> EventBatch {
        let mut d = decode_json_lines_projected(text, 1, 10_000, 100, projection);
        d.keep_source(RawSource::Text(Arc::new(ChunkBytes::new(
            text.to_vec(),
            None,
        ))));
        let b = &d.batches[0];
        EventBatch {
            raw: RawEvents::of(b),
            ..EventBatch::all(
                b.batch.clone(),
                b.positions.clone(),
                vec![0; b.batch.num_rows()],
            )
        }
    }

    #[test]
    fn a_declared_sources_left_out_columns_come_back_whole() {
        use crate::decode::{DeclaredDecoder, Decoder};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let arrow = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("ts", crate::schema::timestamp_type(), false),
            Field::new("shop", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        let events = crate::schema::EventSchema::declared("orders", arrow, Some("order_id"), "ts");
        let whole = Arc::new(DeclaredDecoder::new(Arc::new(events.unwrap())).unwrap());
        let text: String = (0..50)
            .map(|i| {
                let note = if i % 3 == 0 {
                    "null".to_string()
                } else {
                    format!("\"n{i}\"")
                };
                format!(
                    r#"{{"note":{note},"ts":{},"order_id":"o{i}","shop":"s{}"}}"#,
                    1000 + i,
                    i % 4
                ) + "\n"
            })
            .collect();
        let decode = |d: &DeclaredDecoder| {
            let mut out = d.json_lines(text.as_bytes(), 1, 1000, 50, None);
            out.keep_source(RawSource::Text(Arc::new(ChunkBytes::new(
                text.clone().into_bytes(),
                None,
            ))));
            out.batches.remove(0)
        };
        let Decoder::Declared(some) =
            Decoder::Declared(Arc::clone(&whole)).projected(&Projection::of_names(["shop"]))
        else {
            unreachable!()
        };
        let (full, part) = (decode(&whole), decode(&some));
        assert!(RawEvents::of(&full).is_none(), "nothing to decode again");
        let raw = RawEvents::of(&part).expect("the note was left out");
        assert_ne!(part.batch.column(3), full.batch.column(3));
        let rows = UInt32Array::from(vec![7, 0, 7, 49, 3]);
        let take =
            |b: &RecordBatch| datafusion::arrow::compute::take_record_batch(b, &rows).unwrap();
        assert_eq!(
            raw.take(rows.values()).whole(&take(&part.batch)),
            take(&full.batch)
        );
    }

    #[test]
    fn left_out_columns_come_back_whole_for_any_rows() {
        let mut text = Vec::new();
        let cfg = crate::generate::GenConfig {
            events: 300,
            ..Default::default()
        };
        crate::generate::generate(&cfg, &mut text).unwrap();
        let full = batch(&text, &Projection::ALL);
        assert!(full.raw.is_none(), "nothing to decode again");
        let some = batch(&text, &Projection::of_names(["merchant_id"]));
        let card = FieldId::CardId as usize;
        assert_eq!(
            some.batch.column(FieldId::MerchantId as usize),
            full.batch.column(FieldId::MerchantId as usize)
        );
        assert_ne!(
            some.batch.column(card),
            full.batch.column(card),
            "card_id was left out"
        );
        // Rows picked, repeated and reordered (a lookup join's), then taken again.
        let from: Vec<u32> = vec![7, 7, 3, 250, 0, 99];
        let mut picked = some.take(&UInt32Array::from(from.clone())).unwrap();
        let again = [5, 0, 1, 2];
        picked.batch = datafusion::arrow::compute::take_record_batch(
            &picked.batch,
            &UInt32Array::from(again.to_vec()),
        )
        .unwrap();
        picked.reindex(&again);
        let want = full
            .take(&UInt32Array::from(vec![from[5], from[0], from[1], from[2]]))
            .unwrap();
        let whole = picked.raw.as_ref().unwrap().whole(&picked.batch);
        for c in 0..NUM_FIELDS {
            assert_eq!(
                whole.column(c).to_data(),
                want.batch.column(c).to_data(),
                "column {c}"
            );
        }
        assert_eq!(picked.positions, want.positions);
    }
}
