//! [`PostgresSink`]: result rows into a PostgreSQL table, exactly once per checkpoint.
//!
//! ```text
//!  rows ─▶ pending (JSON, this epoch) ─ pre_commit(e) ─▶ staging table, committed ─┐
//!                                                                                   │ checkpoint e durable
//!  target table ◀─ one transaction: epoch row checked and set to e, rows applied ◀──┘ (commit action)
//! ```
//! Phase one stages the epoch's rows in `paystream_sink_staging` (durable, invisible to the
//! table's readers); phase two applies them to the table and records the epoch in
//! `paystream_sink_epochs` in the same transaction, so an epoch is applied once even when a
//! recovery runs the action again. A recovery to checkpoint `n` applies what `n` covers and
//! drops rows staged after it. Without checkpoints (a replay) rows are written as they come,
//! at least once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};

use super::client::Connection;
use super::sql::{self, EPOCHS, Rows, STAGING, TableShape};
use crate::error::Result;
use crate::sink::{Prepared, Recovery, Sink};
use crate::sql::CHANGELOG_OP;

/// Where a sink writes: the table and the sink's name in the bookkeeping tables.
#[derive(Debug)]
pub(super) struct Target {
    /// The table, quoted (maybe qualified).
    pub table: String,
    /// Its schema, quoted with its dot (or empty): the bookkeeping tables are beside it.
    pub schema: String,
    /// The sink's name in the bookkeeping tables (`sink:table`).
    pub id: String,
    /// `primary_key` as given.
    pub key: Vec<String>,
}

/// Rows written through before a flush when the run has no checkpoints.
const DIRECT_ROWS: usize = 10_000;

/// The column that holds records given as JSON (dead letters, late events).
const RECORD: &str = "record";

/// See the module's documentation.
pub(super) struct PostgresSink {
    target: Arc<Target>,
    conn: Arc<Mutex<Connection>>,
    exactly_once: bool,
    /// This sink's number among the writers of its declared sink (two queries can write one).
    writer: i64,
    schema: Option<SchemaRef>,
    changelog_keys: Vec<String>,
    /// The table as the server has it, once created or checked.
    shape: Option<TableShape>,
    /// Rows of this epoch, as JSON objects.
    pending: Vec<String>,
    last_flush: Instant,
}

impl PostgresSink {
    pub(super) fn new(
        target: Arc<Target>,
        conn: Arc<Mutex<Connection>>,
        exactly_once: bool,
        writer: i64,
    ) -> Self {
        PostgresSink {
            target,
            conn,
            exactly_once,
            writer,
            schema: None,
            changelog_keys: Vec::new(),
            shape: None,
            pending: Vec::new(),
            last_flush: Instant::now(),
        }
    }

    /// The columns the sink writes: the query's (without a changelog's `op`, which says what
    /// to do with a key rather than being a value), or one `jsonb` column of JSON records.
    fn columns(&self) -> Vec<Field> {
        match &self.schema {
            Some(s) => s
                .fields()
                .iter()
                .filter(|f| self.changelog_keys.is_empty() || f.name() != CHANGELOG_OP)
                .map(|f| f.as_ref().clone())
                .collect(),
            None => vec![Field::new(RECORD, DataType::Utf8, false)],
        }
    }

    /// Creates the table (typed from the query's columns) and the bookkeeping tables if they
    /// are missing, and checks a table that exists takes every column the query writes.
    fn ready(&mut self) -> Result<TableShape> {
        if let Some(s) = &self.shape {
            return Ok(s.clone());
        }
        let columns = self.columns();
        let key = match self.target.key.is_empty() {
            true => self.changelog_keys.clone(),
            false => self.target.key.clone(),
        };
        let t = Arc::clone(&self.target);
        let mut create = sql::create_table(&t.table, &columns, &key);
        if self.schema.is_none() {
            create = create.replacen(" text NOT NULL", " jsonb NOT NULL", 1);
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let shape = conn.run("create the table", |c| {
            c.batch_execute(&sql::create_bookkeeping(&t.schema))?;
            c.batch_execute(&create)?;
            shape_of(c, &t.table)
        })?;
        if let Some(missing) = columns.iter().find(|f| !shape.columns.contains(f.name())) {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "the table exists without column `{}`, which the query writes; add the column or point the sink at another table",
                    missing.name()
                ),
            ));
        }
        if !self.target.key.is_empty() && shape.key != self.target.key {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "the table exists with primary key ({}), not primary_key = '{}'; make them agree or point the sink at another table",
                    shape.key.join(","),
                    self.target.key.join(",")
                ),
            ));
        }
        self.shape = Some(shape.clone());
        Ok(shape)
    }

    /// Writes the pending rows to the table now (a run without checkpoints).
    fn write_through(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let shape = self.ready()?;
        let t = Arc::clone(&self.target);
        let rows = std::mem::take(&mut self.pending);
        let statements = sql::apply(&t.table, &t.schema, &shape, &Rows::Given);
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.run(&format!("write table {}", t.table), |c| {
            let mut tx = c.transaction()?;
            for s in &statements {
                tx.execute(s.as_str(), &[&rows])?;
            }
            tx.commit()
        })
    }
}

/// The table's columns and primary key as the server has them.
fn shape_of(
    c: &mut postgres::Client,
    table: &str,
) -> std::result::Result<TableShape, postgres::Error> {
    let names =
        |q: &str, c: &mut postgres::Client| -> std::result::Result<Vec<String>, postgres::Error> {
            Ok(c.query(q, &[&table])?.iter().map(|r| r.get(0)).collect())
        };
    Ok(TableShape {
        columns: names(sql::COLUMNS_OF, c)?,
        key: names(sql::KEY_OF, c)?,
    })
}

/// Applies the rows staged for `target` up to epoch `upto` that are not applied yet, records
/// `upto`, and drops the staged rows it covers: one transaction, idempotent.
fn apply_staged(conn: &Mutex<Connection>, target: &Target, upto: u64) -> Result<()> {
    let upto = upto as i64;
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let (s, id) = (&target.schema, &target.id);
    conn.run(&format!("commit checkpoint {upto} to {}", target.table), |c| {
        let kept: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}{EPOCHS}")])?
            .get(0);
        if !kept {
            // Nothing was ever staged here.
            return Ok(());
        }
        let shape = shape_of(c, &target.table)?;
        let mut tx = c.transaction()?;
        tx.execute(
            &format!("INSERT INTO {s}{EPOCHS} (sink, epoch) VALUES ($1, 0) ON CONFLICT (sink) DO NOTHING"),
            &[id],
        )?;
        let done: i64 = tx
            .query_one(&format!("SELECT epoch FROM {s}{EPOCHS} WHERE sink = $1 FOR UPDATE"), &[id])?
            .get(0);
        if done < upto && !shape.columns.is_empty() {
            for statement in sql::apply(&target.table, s, &shape, &Rows::Staged) {
                tx.execute(statement.as_str(), &[id, &done, &upto])?;
            }
            tx.execute(&format!("UPDATE {s}{EPOCHS} SET epoch = $2 WHERE sink = $1"), &[id, &upto])?;
        }
        tx.execute(&format!("DELETE FROM {s}{STAGING} WHERE sink = $1 AND epoch <= $2"), &[id, &upto])?;
        tx.commit()
    })
}

/// The last checkpoint applied to `target`'s table (0: none), if the bookkeeping exists.
pub(super) fn applied_epoch(conn: &Mutex<Connection>, target: &Target) -> Result<u64> {
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let (s, id) = (&target.schema, &target.id);
    conn.run("read the sink's last checkpoint", |c| {
        let exists: bool = c
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{s}{EPOCHS}")],
            )?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let row = c.query_opt(
            &format!("SELECT epoch FROM {s}{EPOCHS} WHERE sink = $1"),
            &[id],
        )?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    })
}

impl Sink for PostgresSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        for row in 0..batch.num_rows() {
            let mut out = Vec::with_capacity(128);
            crate::sink::write_row(&mut out, batch, row);
            // The JSON writer writes UTF-8 (names and values are escaped text).
            self.pending
                .push(String::from_utf8_lossy(&out).into_owned());
        }
        if !self.exactly_once && self.pending.len() >= DIRECT_ROWS {
            self.write_through()?;
        }
        Ok(())
    }

    fn write_record(&mut self, json: &[u8]) -> Result<()> {
        let mut row = String::with_capacity(json.len() + 12);
        row.push_str("{\"record\":");
        row.push_str(&String::from_utf8_lossy(json));
        row.push('}');
        self.pending.push(row);
        if !self.exactly_once && self.pending.len() >= DIRECT_ROWS {
            self.write_through()?;
        }
        Ok(())
    }

    fn key_rows_by(&mut self, columns: &[usize]) {
        if let Some(s) = &self.schema {
            self.changelog_keys = columns.iter().map(|&i| s.field(i).name().clone()).collect();
        }
    }

    fn rows_schema(&mut self, schema: &SchemaRef) {
        self.schema = Some(Arc::clone(schema));
    }

    fn flush(&mut self) -> Result<()> {
        // With checkpoints, rows wait for theirs (pre_commit); without, they go now.
        match self.exactly_once {
            true => Ok(()),
            false => self.write_through(),
        }
    }

    fn flush_if_due(&mut self) -> Result<()> {
        if !self.exactly_once && self.last_flush.elapsed() > Duration::from_secs(1) {
            self.write_through()?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<Prepared> {
        if !self.exactly_once {
            self.write_through()?;
            return Ok(Prepared::default());
        }
        let started = Instant::now();
        self.ready()?;
        let rows = std::mem::take(&mut self.pending);
        let t = Arc::clone(&self.target);
        let (writer, e) = (self.writer, epoch as i64);
        if !rows.is_empty() {
            let stage = format!(
                "INSERT INTO {}{STAGING} (sink, epoch, writer, seq, row) \
                 SELECT $1, $2, $3, n, r::jsonb FROM unnest($4::text[]) WITH ORDINALITY AS u(r, n) \
                 ON CONFLICT DO NOTHING",
                t.schema
            );
            let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            conn.run(&format!("stage checkpoint {epoch} for {}", t.table), |c| {
                c.execute(stage.as_str(), &[&t.id, &e, &writer, &rows])
                    .map(|_| ())
            })?;
        }
        let (conn, target) = (Arc::clone(&self.conn), Arc::clone(&self.target));
        let mut prepared = Prepared {
            started,
            ..Prepared::default()
        };
        prepared.commits.insert(
            format!("postgres {} {}", t.table, t.id),
            Box::new(move || apply_staged(&conn, &target, epoch)),
        );
        Ok(prepared)
    }

    fn recover(&mut self, to: &Recovery<'_>) -> Result<()> {
        let t = Arc::clone(&self.target);
        let (s, id, epoch) = (&t.schema, &t.id, to.epoch as i64);
        {
            let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            conn.run(&format!("recover {} to checkpoint {epoch}", t.table), |c| {
                let exists: bool = c
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}{STAGING}")])?
                    .get(0);
                if !exists {
                    return Ok(());
                }
                let mut tx = c.transaction()?;
                // Rows staged after the checkpoint are recomputed by this run.
                tx.execute(&format!("DELETE FROM {s}{STAGING} WHERE sink = $1 AND epoch > $2"), &[id, &epoch])?;
                // The table has rows of later checkpoints only if the checkpoint store was
                // reset: they stay (nothing a run made is deleted), and the sink's count
                // starts again from the restored checkpoint so its epochs apply.
                let later = tx.execute(
                    &format!("UPDATE {s}{EPOCHS} SET epoch = $2 WHERE sink = $1 AND epoch > $2"),
                    &[id, &epoch],
                )?;
                if later > 0 {
                    tracing::warn!(table = %t.table, "the table holds results of checkpoints after the restored one ({epoch}); they are kept, and keys written again are replaced");
                }
                tx.commit()
            })?;
        }
        // What the checkpoint covers but was not applied before the stop (a crash between
        // the checkpoint and its commit action).
        if to.epoch > 0 {
            apply_staged(&self.conn, &t, to.epoch)?;
        }
        Ok(())
    }
}
