//! A table over a topic of the embedded log: a changelog keyed by the table's primary key.
//!
//! Each record is a JSON object of the table's columns, an upsert of its key; later records
//! replace earlier ones. A record deletes its key when its value is `null` (keyed by the
//! record key: the key's text, for a one-column key) or when it carries `"op": "delete"` (the
//! changelog rows an updating query writes, so a table can be built from another query's
//! results). A record's time (the `event_time` member it was produced with, else when it was
//! appended) is when its version starts, unless the table has a `valid_from` column.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;

use super::{TableDecl, TableSource};
use crate::error::{Error, Result};
use crate::log::{GroupOffsets, Isolation, Log, ReadTopic, StartAt, read_topic};

/// A topic's rows: every version and tombstone in log order (partition by partition).
pub(super) struct Loaded {
    /// The rows (a tombstone has its key's columns and nulls).
    pub all: RecordBatch,
    /// Per row, the record's time.
    pub times: Vec<i64>,
    /// Per row, whether it deletes its key.
    pub deleted: Vec<bool>,
    /// What was read: the topic's identity, then the end offset of each partition ([`ends`]).
    pub ends: Vec<u64>,
}

/// The topic's identity, then the visible end of each partition of `topic` (what a change to
/// the table moves): a sink's records count once committed, so a query's results show when
/// its checkpoint commits them. The identity (when its `topic.json` was written, to the
/// nanosecond, and its inode, which a new file may reuse) tells a topic deleted and created
/// again, whose offsets start over, from the same topic grown; a rewritten `topic.json` (a
/// topic made compacted) reads the table whole once more, which is only slower.
pub(super) fn ends(log_dir: &Path, topic: &str) -> Option<Vec<u64>> {
    use std::os::unix::fs::MetadataExt;
    let stats = Log::new(log_dir).partition_stats(topic).ok()?;
    let m = std::fs::metadata(log_dir.join(topic).join("topic.json")).ok()?;
    let id = xxhash_rust::xxh3::xxh3_64(
        &[m.ino(), m.ctime() as u64, m.ctime_nsec() as u64]
            .map(u64::to_le_bytes)
            .concat(),
    );
    Some(
        std::iter::once(id)
            .chain(
                stats
                    .iter()
                    .map(|s| s.committed.map_or(s.end_offset, |c| c.min(s.end_offset))),
            )
            .collect(),
    )
}

/// Reads `decl`'s topic from its start (or from the offsets `from`, where an earlier read
/// ended) to its end: records appended while it reads are left for the next read.
pub(super) fn read(decl: &TableDecl, log_dir: &Path, from: Option<&[u64]>) -> Result<Loaded> {
    let TableSource::Log { topic } = &decl.source else {
        return Err(Error::Internal("a file table read as a topic".into()));
    };
    let fail = |message: String| Error::Input {
        path: log_dir.join(topic),
        message: crate::decode::redact(&format!("table `{}`: {message}", decl.name)),
    };
    let log = Log::new(log_dir);
    let ends = ends(log_dir, topic).ok_or_else(|| {
        fail(format!(
            "there is no topic `{topic}` in {}; create it (paystream topic create {topic}) or produce the table's rows to it",
            log_dir.display()
        ))
    })?;
    let key_names: Vec<&str> = decl
        .primary_key
        .iter()
        .map(|&i| decl.schema.field(i).name().as_str())
        .collect();
    // Each row as a JSON line of the table's columns, then decoded in one go.
    let mut lines: Vec<u8> = Vec::new();
    let (mut times, mut deleted) = (Vec::new(), Vec::new());
    // Records that are no row of the table: skipped (the topic cannot be rewritten), counted.
    let mut skipped = 0u64;
    let mut first_skipped: Option<String> = None;
    let has_valid_from = decl.valid_from().is_some();
    let start = match from {
        None => StartAt::Earliest,
        Some(from) => StartAt::Committed(GroupOffsets {
            offsets: (0..).zip(from.iter().copied()).collect(),
        }),
    };
    let opts = ReadTopic {
        start: Some(start),
        isolation: Isolation::ReadCommitted,
        skip_corrupt: false,
        until_end: true,
        max_records: None,
        group: None,
    };
    read_topic(
        &log,
        topic,
        &opts,
        &AtomicBool::new(false),
        |partition, r| {
            if ends
                .get(partition as usize + 1)
                .is_none_or(|end| r.offset >= *end)
            {
                return Ok(());
            }
            let value = std::str::from_utf8(r.value).unwrap_or("");
            let trimmed = value.trim();
            let row = if trimmed.is_empty() || trimmed == "null" {
                // A tombstone: its key is the record key.
                match (r.key.map(String::from_utf8_lossy), key_names.as_slice()) {
                    (Some(k), [one]) => Some((serde_json::json!({ *one: k }), true)),
                    _ => None,
                }
            } else {
                match serde_json::from_str::<serde_json::Value>(trimmed) {
                    Ok(serde_json::Value::Object(mut o)) => {
                        let delete = o
                            .remove(crate::sql::CHANGELOG_OP)
                            .is_some_and(|op| op == crate::sql::OP_DELETE);
                        // Every row names its key.
                        key_names
                            .iter()
                            .all(|k| o.get(*k).is_some_and(|v| !v.is_null()))
                            .then_some((serde_json::Value::Object(o), delete))
                    }
                    _ => None,
                }
            };
            match row {
                Some((mut v, delete)) => {
                    // A delete without a start of its own starts when it was recorded.
                    if delete
                        && has_valid_from
                        && let serde_json::Value::Object(o) = &mut v
                        && o.get(super::VALID_FROM)
                            .is_none_or(serde_json::Value::is_null)
                    {
                        o.insert(
                            super::VALID_FROM.into(),
                            crate::time::rfc3339(r.timestamp).into(),
                        );
                    }
                    lines.extend_from_slice(v.to_string().as_bytes());
                    lines.push(b'\n');
                    times.push(r.timestamp);
                    deleted.push(delete);
                }
                None => {
                    skipped += 1;
                    first_skipped.get_or_insert_with(|| {
                        format!("partition {partition}, offset {}", r.offset)
                    });
                }
            }
            Ok(())
        },
        || Ok(()),
    )
    .map_err(|e| fail(e.to_string()))?;
    if let Some(first) = first_skipped {
        tracing::warn!(
            table = %decl.name,
            topic = %topic,
            "{skipped} records are no row of the table and were skipped (the first at {first}): a row is a JSON object with its key's columns; a delete adds \"op\": \"delete\", or is a null value keyed by the key"
        );
    }
    let nullable = Arc::new(Schema::new(
        decl.schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let reader = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&nullable))
        .build(std::io::Cursor::new(lines))
        .map_err(|e| fail(e.to_string()))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let all = datafusion::arrow::compute::concat_batches(&nullable, &batches)?;
    Ok(Loaded {
        all,
        times,
        deleted,
        ends,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::super::ReferenceTable;
    use super::*;
    use crate::log::{BatchBuilder, FsyncPolicy, TopicConfig};

    #[test]
    fn later_records_replace_earlier_ones_and_a_null_value_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        log.create_topic("cards", &TopicConfig::default()).unwrap();
        let mut w = log.writer("cards", FsyncPolicy::Never).unwrap();
        let mut b = BatchBuilder::with_capacity(1024);
        b.push(Some(b"c1"), br#"{"card_id":"c1","reason":"lost"}"#, 10);
        b.push(Some(b"c2"), br#"{"card_id":"c2","reason":"stolen"}"#, 20);
        b.push(Some(b"c1"), br#"{"card_id":"c1","reason":"fraud"}"#, 30);
        b.push(Some(b"c2"), b"null", 40);
        w.append(0, &mut b).unwrap();
        w.flush().unwrap();
        drop(w);
        let decl = TableDecl {
            name: "blocked".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("card_id", DataType::Utf8, false),
                Field::new("reason", DataType::Utf8, true),
            ])),
            primary_key: vec![0],
            source: TableSource::Log {
                topic: "cards".into(),
            },
            line: 1,
        };
        let t = ReferenceTable::new(decl);
        // No log attached: the error says how to run it.
        assert!(t.load().unwrap_err().to_string().contains("paystream run"));
        t.attach_log(dir.path());
        let s = t.snapshot().unwrap();
        let (times, deleted) = s.changelog.clone().unwrap();
        assert_eq!(
            (times, deleted),
            (vec![10, 20, 30, 40], vec![false, false, false, true])
        );
        let current: Vec<_> = (0..s.current.num_rows())
            .map(|r| {
                (
                    s.current.column(0).as_string::<i32>().value(r).to_string(),
                    s.current.column(1).as_string::<i32>().value(r).to_string(),
                )
            })
            .collect();
        assert_eq!(current, [("c1".to_string(), "fraud".to_string())]);
        // A new record is a change: the table is read again.
        let mut w = log.writer("cards", FsyncPolicy::Never).unwrap();
        let mut b = BatchBuilder::with_capacity(1024);
        b.push(
            Some(b"c3"),
            br#"{"card_id":"c3","reason":"lost","op":"insert"}"#,
            50,
        );
        // Later in the log, earlier in time: the current contents follow the log.
        b.push(Some(b"c1"), br#"{"card_id":"c1","reason":"older"}"#, 5);
        // No row of the table (no key, not an object): skipped, not a failed load.
        b.push(None, br#"{"reason":"no key"}"#, 60);
        b.push(None, b"[1, 2]", 60);
        w.append(0, &mut b).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(t.refresh().unwrap());
        let s = t.snapshot().unwrap();
        let current: Vec<String> = s
            .current
            .column(1)
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect();
        assert_eq!(current, ["lost", "older"]);
        assert_eq!(s.all.num_rows(), 6);

        // Read on from where it was: a card number in one record skips that record only.
        let mut w = log.writer("cards", FsyncPolicy::Never).unwrap();
        let mut b = BatchBuilder::with_capacity(1024);
        b.push(
            Some(b"c4"),
            br#"{"card_id":"c4","reason":"4111111111111111"}"#,
            70,
        );
        b.push(Some(b"c5"), br#"{"card_id":"c5","reason":"lost"}"#, 80);
        w.append(0, &mut b).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(t.refresh().unwrap());
        let s = t.snapshot().unwrap();
        assert_eq!(s.all.num_rows(), 7, "c5 appended, c4 skipped");
        assert_eq!(
            s.all.column(0).as_string::<i32>().value(6),
            "c5",
            "the good record of the window"
        );

        // The topic deleted and created again: its offsets start over, so it is read whole.
        log.delete_topic("cards").unwrap();
        log.create_topic("cards", &TopicConfig::default()).unwrap();
        let mut w = log.writer("cards", FsyncPolicy::Never).unwrap();
        let mut b = BatchBuilder::with_capacity(1024);
        for i in 0..12 {
            let v = format!(r#"{{"card_id":"n{i}","reason":"new"}}"#);
            b.push(Some(format!("n{i}").as_bytes()), v.as_bytes(), 100 + i);
        }
        w.append(0, &mut b).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(t.refresh().unwrap());
        let s = t.snapshot().unwrap();
        assert_eq!(s.all.num_rows(), 12, "only the new topic's rows");
    }
}
