//! A table file read whole into one batch of the declared columns: CSV with a header row
//! (columns matched by name, in any order; extra columns ignored), JSON Lines (members by
//! name) or Parquet (columns by name, cast to the declared types). A declared column the file
//! lacks is null, or an error when it is NOT NULL or part of the key; a CSV header or Parquet
//! schema without it gets a warning naming the columns the file has (a typo reads as nulls
//! otherwise); a value that looks like a card number is refused (tables hold tokens, never
//! card numbers).

use std::fs::File;
use std::io::{BufReader, Seek};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{TableDecl, TableSource};
use crate::decode::Format;
use crate::error::{Error, Result};

/// The rows of `decl`'s file, as a batch of its declared columns.
pub(super) fn read(decl: &TableDecl) -> Result<RecordBatch> {
    let TableSource::File { path, format } = &decl.source else {
        return Err(Error::Internal("a topic table read as a file".into()));
    };
    // Arrow's parse errors quote the row: never a card number in a message.
    let fail = |message: String| Error::Input {
        path: path.clone(),
        message: crate::decode::redact(&format!("table `{}`: {message}", decl.name)),
    };
    let file = File::open(path).map_err(|e| {
        fail(format!(
            "{e}; the path is relative to the working directory ({})",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ))
    })?;
    // Read with every column nullable, so a missing value is reported with its row.
    let schema = &Arc::new(Schema::new(
        decl.schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let (batches, names) = match format {
        Format::Csv => read_csv(file, schema).map_err(fail)?,
        Format::JsonLines => (read_json(file, schema).map_err(fail)?, None),
        Format::Parquet => read_parquet(file, schema).map_err(fail)?,
    };
    if let Some(names) = names {
        warn_missing(decl, path, &names);
    }
    let all = concat_batches(schema, &batches)?;
    check(decl, &all).map_err(fail)?;
    Ok(RecordBatch::try_new(
        Arc::clone(&decl.schema),
        all.columns().to_vec(),
    )?)
}

/// Warns of each declared column the file's header (or Parquet schema) `names` lacks: it reads
/// as null, which is what a misspelt name would give too.
fn warn_missing(decl: &TableDecl, path: &std::path::Path, names: &[String]) {
    for f in decl.schema.fields() {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(f.name())) {
            tracing::warn!(
                "table `{}`: {} has no column `{}` (it has {}); its values are null",
                decl.name,
                path.display(),
                f.name(),
                names
                    .iter()
                    .map(|n| format!("`{}`", crate::decode::redact(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// `columns` (by name, as read) as the declared columns, in their order and types.
fn declared(
    schema: &SchemaRef,
    names: &[String],
    columns: &[ArrayRef],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut out = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let at = names
            .iter()
            .position(|n| n == f.name())
            .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(f.name())));
        out.push(match at {
            Some(i) if columns[i].data_type() == f.data_type() => Arc::clone(&columns[i]),
            // A value that does not convert is an error, never a silent null.
            Some(i) => cast_with_options(
                &columns[i],
                f.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| {
                format!(
                    "column `{}` cannot be read as {}: {e}",
                    f.name(),
                    crate::sql::source_columns::sql_name(f.data_type())
                )
            })?,
            None => new_null_array(f.data_type(), rows),
        });
    }
    RecordBatch::try_new(Arc::clone(schema), out).map_err(|e| e.to_string())
}

/// The batches, and the header's column names.
type Read = (Vec<RecordBatch>, Option<Vec<String>>);

fn read_csv(mut file: File, schema: &SchemaRef) -> std::result::Result<Read, String> {
    use datafusion::arrow::csv::ReaderBuilder;
    use datafusion::arrow::csv::reader::Format as CsvFormat;
    let (header, _) = CsvFormat::default()
        .with_header(true)
        .infer_schema(BufReader::new(&mut file), Some(0))
        .map_err(|e| format!("cannot read the header row: {e}"))?;
    file.rewind().map_err(|e| e.to_string())?;
    let names: Vec<String> = header.fields().iter().map(|f| f.name().clone()).collect();
    // Declared columns with their types, the rest as text (skipped by the projection).
    let fields: Vec<Field> = names
        .iter()
        .map(|n| {
            schema
                .fields()
                .iter()
                .find(|f| f.name() == n || f.name().eq_ignore_ascii_case(n))
                .map(|f| Field::new(n, f.data_type().clone(), true))
                .unwrap_or_else(|| Field::new(n, DataType::Utf8, true))
        })
        .collect();
    let file_schema = Arc::new(Schema::new(fields));
    let reader = ReaderBuilder::new(file_schema)
        .with_header(true)
        .build(BufReader::new(file))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut line = 2u64;
    for b in reader {
        let b = b.map_err(|e| format!("near line {line}: {e}"))?;
        line += b.num_rows() as u64;
        out.push(declared(schema, &names, b.columns(), b.num_rows())?);
    }
    Ok((out, Some(names)))
}

fn read_json(file: File, schema: &SchemaRef) -> std::result::Result<Vec<RecordBatch>, String> {
    use datafusion::arrow::json::ReaderBuilder;
    let reader = ReaderBuilder::new(Arc::clone(schema))
        .build(BufReader::new(file))
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut out = Vec::new();
    let mut line = 1u64;
    for b in reader {
        let b = b.map_err(|e| format!("near line {line}: {e}"))?;
        line += b.num_rows() as u64;
        out.push(
            declared(schema, &names, b.columns(), b.num_rows()).map_err(|e| {
                // A NOT NULL member missing from some line: arrow says which column.
                format!("near line {line}: {e}")
            })?,
        );
    }
    Ok(out)
}

fn read_parquet(file: File, schema: &SchemaRef) -> std::result::Result<Read, String> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let reader = builder.build().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        out.push(declared(schema, &names, b.columns(), b.num_rows())?);
    }
    Ok((out, Some(names)))
}

/// The loaded rows obey the declaration: NOT NULL and key columns have values, and no text
/// looks like a card number.
pub(super) fn check(decl: &TableDecl, all: &RecordBatch) -> std::result::Result<(), String> {
    for (i, f) in decl.schema.fields().iter().enumerate() {
        let col = all.column(i);
        let required = !f.is_nullable() || decl.primary_key.contains(&i);
        if required && col.null_count() > 0 {
            let row = (0..col.len()).find(|r| col.is_null(*r)).unwrap_or(0);
            return Err(format!(
                "row {} has no value for `{}`, which is {}",
                row + 1,
                f.name(),
                if decl.primary_key.contains(&i) {
                    "part of the PRIMARY KEY"
                } else {
                    "NOT NULL"
                }
            ));
        }
        // A card number stored as a number is one too.
        if let Some(n) = col.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>() {
            for (r, v) in n.iter().enumerate() {
                if v.is_some_and(|v| crate::decode::contains_card_number(v.to_string().as_bytes()))
                {
                    return Err(format!(
                        "row {}, column `{}` looks like a card number; a table holds card tokens, never card numbers",
                        r + 1,
                        f.name()
                    ));
                }
            }
        }
        if let Some(s) = col.as_string_opt::<i32>() {
            for (r, v) in s.iter().enumerate() {
                if v.is_some_and(|v| crate::decode::contains_card_number(v.as_bytes())) {
                    return Err(format!(
                        "row {}, column `{}` looks like a card number; a table holds card tokens, never card numbers",
                        r + 1,
                        f.name()
                    ));
                }
            }
        }
    }
    Ok(())
}
