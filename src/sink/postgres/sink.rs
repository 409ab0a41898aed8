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
    /// The job that owns the sink's bookkeeping row.
    job: String,
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
        job: String,
    ) -> Self {
        PostgresSink {
            target,
            conn,
            exactly_once,
            writer,
            job,
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
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(long) = columns.iter().find(|f| f.name().len() > sql::MAX_NAME) {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "column `{}` is longer than PostgreSQL's {} bytes; name it shorter with AS in the query",
                    long.name(),
                    sql::MAX_NAME
                ),
            ));
        }
        let mut create = sql::create_table(&t.table, &columns, &key);
        if self.schema.is_none() {
            create = create.replacen(" text NOT NULL", " jsonb NOT NULL", 1);
        }
        let job = self.job.clone();
        let shape = conn.run("create the table", |c| {
            c.batch_execute(&sql::create_bookkeeping(&t.schema))?;
            c.batch_execute(&create)?;
            claim(c, &t, &job)?;
            shape_of(c, &t.table)
        })?;
        let owner = conn.run("read the sink's owner", |c| owner_of(c, &t))?;
        if owner.as_deref().is_some_and(|o| o != self.job) {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "sink `{}` of job `{}` already writes this table; two jobs cannot share a sink's table (rename one sink or point it at another table)",
                    t.id,
                    owner.unwrap_or_default()
                ),
            ));
        }
        if let Some(missing) = columns.iter().find(|f| !shape.columns.contains(f.name())) {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "the table exists without column `{}`, which the query writes; add the column or point the sink at another table",
                    missing.name()
                ),
            ));
        }
        if !key.is_empty() && shape.key != key {
            return Err(conn.error(
                &format!("write table {}", t.table),
                &format!(
                    "the table exists with primary key ({}), but the sink writes rows keyed by ({}){}; make them agree or point the sink at another table",
                    shape.key.join(","),
                    key.join(","),
                    if self.target.key.is_empty() { " (the query's group key)" } else { "" }
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

/// Records `job` as the owner of `target`'s bookkeeping row unless it has one.
fn claim(
    c: &mut postgres::Client,
    target: &Target,
    job: &str,
) -> std::result::Result<(), postgres::Error> {
    c.execute(
        &format!(
            "INSERT INTO {}{EPOCHS} (sink, job, epoch) VALUES ($1, $2, 0) ON CONFLICT (sink) DO NOTHING",
            target.schema
        ),
        &[&target.id, &job],
    )
    .map(|_| ())
}

/// The job that owns `target`'s bookkeeping row, if it has one.
fn owner_of(
    c: &mut postgres::Client,
    target: &Target,
) -> std::result::Result<Option<String>, postgres::Error> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}{EPOCHS}", target.schema)],
        )?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(c.query_opt(
        &format!("SELECT job FROM {}{EPOCHS} WHERE sink = $1", target.schema),
        &[&target.id],
    )?
    .map(|r| r.get(0)))
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
    let mut missing = false;
    conn.run(
        &format!("commit checkpoint {upto} to {}", target.table),
        |c| {
            let kept: bool = c
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{s}{EPOCHS}")],
                )?
                .get(0);
            if !kept {
                // Nothing was ever staged here.
                return Ok(());
            }
            let shape = shape_of(c, &target.table)?;
            let mut tx = c.transaction()?;
            let done: Option<i64> = tx
                .query_opt(
                    &format!("SELECT epoch FROM {s}{EPOCHS} WHERE sink = $1 FOR UPDATE"),
                    &[id],
                )?
                .map(|r| r.get(0));
            let Some(done) = done else {
                // Nothing was ever staged for this sink.
                return tx.commit();
            };
            if done < upto && shape.columns.is_empty() {
                missing = true;
                return tx.commit();
            }
            if done < upto {
                for statement in sql::apply(&target.table, s, &shape, &Rows::Staged) {
                    tx.execute(statement.as_str(), &[id, &done, &upto])?;
                }
                tx.execute(
                    &format!("UPDATE {s}{EPOCHS} SET epoch = $2 WHERE sink = $1"),
                    &[id, &upto],
                )?;
            }
            tx.execute(
                &format!("DELETE FROM {s}{STAGING} WHERE sink = $1 AND epoch <= $2"),
                &[id, &upto],
            )?;
            tx.commit()
        },
    )?;
    if missing {
        // The rows stay staged: recreating the table lets a restart apply them.
        return Err(conn.error(
            &format!("commit checkpoint {upto} to {}", target.table),
            &"the table no longer exists, so the checkpoint's rows stay staged; recreate it (or drop it from the query file) and restart",
        ));
    }
    Ok(())
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
            let owner = conn.run("read the sink's owner", |c| owner_of(c, &t))?;
            if let Some(o) = owner.filter(|o| *o != self.job) {
                return Err(conn.error(
                    &format!("recover table {}", t.table),
                    &format!(
                        "sink `{}` of job `{o}` already writes this table; two jobs cannot share a sink's table (rename one sink or point it at another table)",
                        t.id
                    ),
                ));
            }
            let ahead = conn.run(&format!("recover {} to checkpoint {epoch}", t.table), |c| {
                let exists: bool = c
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{s}{STAGING}")])?
                    .get(0);
                if !exists {
                    return Ok(None);
                }
                let shape = shape_of(c, &t.table)?;
                let mut tx = c.transaction()?;
                // Rows staged after the checkpoint are recomputed by this run.
                tx.execute(&format!("DELETE FROM {s}{STAGING} WHERE sink = $1 AND epoch > $2"), &[id, &epoch])?;
                let done: Option<i64> = tx
                    .query_opt(&format!("SELECT epoch FROM {s}{EPOCHS} WHERE sink = $1 FOR UPDATE"), &[id])?
                    .map(|r| r.get(0));
                if let Some(done) = done.filter(|d| *d > epoch) {
                    // The table has results of checkpoints after the restored one (an older
                    // savepoint, a reset): a keyed table takes them again as upserts; appending
                    // them again would repeat rows.
                    if shape.key.is_empty() && !shape.columns.is_empty() {
                        return Ok(Some(done));
                    }
                    tx.execute(&format!("UPDATE {s}{EPOCHS} SET epoch = $2 WHERE sink = $1"), &[id, &epoch])?;
                    tracing::warn!(table = %t.table, "the table holds results of checkpoints up to {done}, after the restored one ({epoch}); they are kept, and keys written again are replaced");
                }
                tx.commit()?;
                Ok(None)
            })?;
            if let Some(done) = ahead {
                return Err(conn.error(
                    &format!("recover table {} to checkpoint {epoch}", t.table),
                    &format!(
                        "the table (no primary key: rows are appended) holds results of checkpoints up to {done}, after the restored checkpoint {epoch}, so recomputing them would append them twice; delete those rows and set the sink's epoch in {EPOCHS} to {epoch} (or drop the table), or point the sink at another table"
                    ),
                ));
            }
        }
        // What the checkpoint covers but was not applied before the stop (a crash between
        // the checkpoint and its commit action).
        if to.epoch > 0 {
            apply_staged(&self.conn, &t, to.epoch)?;
        }
        Ok(())
    }
}
