//! Which decoder a source's records go through: the payment event's own, or a declared
//! schema's ([`DeclaredDecoder`]), chosen once from the events the source produces.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use super::{
    CsvHeader, DeclaredDecoder, Decoded, Projection, RecordMeta, decode_csv,
    decode_json_lines_projected, decode_parquet,
};
use crate::error::Result;
use crate::schema::EventSchema;

/// The decoder of one source's records, shared by its decoder threads.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// The built-in payment event ([`EventSchema::payments`]): its fast path and validation;
    /// JSON Lines are decoded into the columns of the projection (CSV and Parquet into all).
    Payments(Projection),
    /// A source declared with its own columns.
    Declared(Arc<DeclaredDecoder>),
}

impl Decoder {
    /// The decoder producing `events`.
    pub fn for_events(events: &Arc<EventSchema>) -> Result<Decoder> {
        if events.is_declared() {
            Ok(Decoder::Declared(Arc::new(DeclaredDecoder::new(
                Arc::clone(events),
            )?)))
        } else {
            Ok(Decoder::Payments(Projection::ALL))
        }
    }

    /// This decoder building only the columns `projection` may read (of JSON Lines; CSV and
    /// Parquet build all).
    pub fn projected(self, projection: &Projection) -> Decoder {
        match self {
            Decoder::Payments(_) => Decoder::Payments(projection.clone()),
            Decoder::Declared(d) => Decoder::Declared(d.projected(projection)),
        }
    }

    /// Decodes a chunk of JSON Lines (see [`decode_json_lines_projected`]); `meta` holds the
    /// records' metadata when the events have metadata columns.
    pub fn json_lines(
        &self,
        chunk: &[u8],
        first_line: u64,
        batch_size: usize,
        lines: usize,
        meta: Option<&RecordMeta>,
    ) -> Decoded {
        match self {
            Decoder::Payments(p) => {
                decode_json_lines_projected(chunk, first_line, batch_size, lines, p)
            }
            Decoder::Declared(d) => d.json_lines(chunk, first_line, batch_size, lines, meta),
        }
    }

    /// Parses a CSV file's header record, checked against the columns the events need.
    pub fn csv_header(&self, line: &str) -> std::result::Result<CsvHeader, String> {
        match self {
            Decoder::Payments(_) => CsvHeader::parse(line).map_err(|e| e.to_string()),
            Decoder::Declared(d) => {
                let h = CsvHeader::parse_names(line).map_err(|e| e.to_string())?;
                d.csv_columns(&h)?;
                Ok(h)
            }
        }
    }

    /// Decodes a chunk of CSV records (see [`decode_csv`]).
    pub fn csv(
        &self,
        chunk: &[u8],
        first_line: u64,
        header: &CsvHeader,
        batch_size: usize,
    ) -> Decoded {
        match self {
            Decoder::Payments(_) => decode_csv(chunk, first_line, header, batch_size),
            Decoder::Declared(d) => d.csv(chunk, first_line, header, batch_size),
        }
    }

    /// Checks a Parquet file's schema against the columns the events need, before any row is
    /// read (a declared column missing from the file).
    pub fn check_parquet(
        &self,
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> std::result::Result<(), String> {
        match self {
            Decoder::Payments(_) => Ok(()),
            Decoder::Declared(d) => d.parquet_columns(schema),
        }
    }

    /// Decodes a Parquet batch (see [`decode_parquet`]).
    pub fn parquet(&self, batch: &RecordBatch, first_row: u64, batch_size: usize) -> Decoded {
        match self {
            Decoder::Payments(_) => decode_parquet(batch, first_row, batch_size),
            Decoder::Declared(d) => d.parquet(batch, first_row, batch_size),
        }
    }
}
