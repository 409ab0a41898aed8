//! A table's rows in a checkpoint.
//!
//! A query joined each event with the table as it was then; a restart must not depend on the
//! source still holding those rows. A file may be gone or rewritten, and a topic's old versions
//! may have been removed by retention or compaction, so a temporal join replaying the events
//! after the checkpoint would pick other versions. Each checkpoint therefore carries every
//! table's rows (all versions, with a topic's record times and deletes) and the source's stamp
//! when they were read; a restored table starts from them and reads only what its source
//! gained since (a topic from the saved end offsets, a file if it changed).
//!
//! The encoding is the operators' snapshot format (`state`): a header naming the table and
//! what its rows fit (columns, key, source), and one Arrow batch. A table that did not change
//! between checkpoints is not encoded again.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

use super::{ReferenceTable, TableSource};
use crate::error::Result;
use crate::state::Snapshot;

const NAME: &str = "reference_table";

impl ReferenceTable {
    /// What the saved rows fit: the declared columns, key and source. A checkpoint of another
    /// declaration is not restored (the table is read from its source instead).
    fn fits(&self) -> String {
        let d = &self.decl;
        let columns: Vec<String> = d
            .schema
            .fields()
            .iter()
            .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
            .collect();
        let source = match &d.source {
            TableSource::File { path, format } => format!("file {} {format:?}", path.display()),
            TableSource::Log { topic } => format!("log {topic}"),
        };
        format!(
            "{} ({}) key {:?} from {source}",
            d.name,
            columns.join(", "),
            d.primary_key
        )
    }

    /// The table's current rows, encoded for a checkpoint (`None` if it was never read).
    pub fn saved(&self) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(snap) = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(None);
        };
        let mut cache = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, bytes)) = cache.as_ref()
            && *version == snap.version
        {
            return Ok(Some(Arc::clone(bytes)));
        }
        let mut fields: Vec<Field> = snap
            .all
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = snap.all.columns().to_vec();
        if let Some((times, deleted)) = &snap.changelog {
            fields.push(Field::new("_record_time", DataType::Int64, false));
            fields.push(Field::new("_deletes", DataType::Boolean, false));
            columns.push(Arc::new(Int64Array::from(times.clone())));
            columns.push(Arc::new(BooleanArray::from(deleted.clone())));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let bytes = Arc::new(
            Snapshot {
                header: serde_json::json!({
                    "fits": self.fits(),
                    "stamp": snap.stamp,
                    "changelog": snap.changelog.is_some(),
                }),
                batches: vec![(0, batch)],
            }
            .encode(NAME)?,
        );
        *cache = Some((snap.version, Arc::clone(&bytes)));
        Ok(Some(bytes))
    }

    /// Makes the rows of [`Self::saved`]'s `bytes` the table's, with the source as it was
    /// then; whether they fit the table as declared now (if not, nothing changes and the
    /// caller reads the source).
    pub fn restore(&self, bytes: &[u8]) -> Result<bool> {
        let snap = Snapshot::decode(NAME, bytes)?;
        if snap.header.get("fits").and_then(|f| f.as_str()) != Some(self.fits().as_str()) {
            return Ok(false);
        }
        let [(_, batch)] = snap.batches.as_slice() else {
            return Ok(false);
        };
        let stamp: Option<Vec<u64>> =
            serde_json::from_value(snap.header.get("stamp").cloned().unwrap_or_default())
                .unwrap_or(None);
        let width = self.decl.schema.fields().len();
        let changelog = snap
            .header
            .get("changelog")
            .and_then(|c| c.as_bool())
            .unwrap_or(false);
        if batch.num_columns() != width + if changelog { 2 } else { 0 } {
            return Ok(false);
        }
        let all = RecordBatch::try_new(
            Arc::clone(&self.decl.schema),
            batch.columns()[..width].to_vec(),
        )?;
        let changelog = match changelog {
            true => {
                let (Some(times), Some(deleted)) = (
                    batch.column(width).as_primitive_opt::<Int64Type>(),
                    batch.column(width + 1).as_boolean_opt(),
                ) else {
                    return Ok(false);
                };
                Some((
                    times.values().to_vec(),
                    (0..deleted.len()).map(|i| deleted.value(i)).collect(),
                ))
            }
            false => None,
        };
        self.install(all, changelog, stamp)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use datafusion::arrow::datatypes::Schema;

    use super::super::{TableDecl, VALID_FROM};
    use super::*;
    use crate::decode::Format;

    fn decl(path: PathBuf, tier: DataType) -> TableDecl {
        TableDecl {
            name: "merchants".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("merchant_id", DataType::Utf8, false),
                Field::new("risk_tier", tier, true),
                Field::new(VALID_FROM, crate::schema::timestamp_type(), true),
            ])),
            primary_key: vec![0],
            source: TableSource::File {
                path,
                format: Format::Csv,
            },
            line: 1,
        }
    }

    #[test]
    fn a_saved_table_restores_without_its_file_and_only_into_the_same_declaration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            "merchant_id,risk_tier,valid_from\nm1,low,2026-11-01T00:00:00Z\nm1,high,2026-11-01T00:05:00Z\n",
        )
        .unwrap();
        let t = ReferenceTable::new(decl(path.clone(), DataType::Utf8));
        t.load().unwrap();
        let bytes = t.saved().unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&bytes, &t.saved().unwrap().unwrap()),
            "an unchanged table is encoded once"
        );
        let stamp = t.snapshot().unwrap().stamp.clone();
        std::fs::remove_file(&path).unwrap();

        let back = ReferenceTable::new(decl(path.clone(), DataType::Utf8));
        assert!(back.restore(&bytes).unwrap());
        let s = back.snapshot().unwrap();
        assert_eq!(s.all, t.snapshot().unwrap().all);
        assert_eq!(s.current.num_rows(), 1);
        assert_eq!(s.stamp, stamp);
        assert!(
            !back.refresh().unwrap(),
            "a missing file keeps the saved rows"
        );

        let other = ReferenceTable::new(decl(path, DataType::Int64));
        assert!(!other.restore(&bytes).unwrap(), "another declaration");
        assert!(
            other.snapshot().is_err(),
            "and nothing installed: the file is read"
        );
    }
}
