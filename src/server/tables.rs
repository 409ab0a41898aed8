//! Batch SQL over the live result tables: one DataFusion session whose `public` schema is the
//! server's [`ResultTables`], read by `POST /api/sql` and by the Postgres wire protocol.
//!
//! ```text
//!  SELECT … FROM settlement ─▶ ResultSchema::table("settlement") ─▶ ResultTableScan::scan
//!     └─ snapshot of the retained rows (JSON) ─▶ arrow-json decode with the query's schema ─▶ batch
//! ```
//! A scan reads the table as it is at that moment; tables appear and go with the queries that
//! fill them (the schema lists the registry, nothing is registered by hand).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::sink::{ResultTable, ResultTables};

/// A session whose default schema is `tables` (catalog `datafusion`, schema `public`, as
/// Postgres clients expect), with the Postgres catalog tables clients probe.
pub(crate) fn session(tables: Arc<ResultTables>) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public");
    let ctx = SessionContext::new_with_config(config);
    // `to_major`, `business_date` and the rest mean here what they mean in stream queries.
    crate::functions::register(&ctx);
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| DataFusionError::Internal("no default catalog".into()))?;
    catalog.register_schema("public", Arc::new(ResultSchema(tables)))?;
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        "datafusion",
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| *e)?;
    Ok(ctx)
}

/// The result tables as a DataFusion schema.
#[derive(Debug)]
struct ResultSchema(Arc<ResultTables>);

#[async_trait]
impl SchemaProvider for ResultSchema {
    fn table_names(&self) -> Vec<String> {
        self.0
            .all()
            .iter()
            .filter(|t| t.schema().is_some())
            .map(|t| t.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.0.get(name).and_then(|t| {
            let schema = t.schema()?;
            Some(Arc::new(ResultTableScan { table: t, schema }) as Arc<dyn TableProvider>)
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|t| t.schema().is_some())
    }
}

/// One result table, read whole at scan time.
#[derive(Debug)]
struct ResultTableScan {
    table: Arc<ResultTable>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for ResultTableScan {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = table_batch(&self.table, &self.schema)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// The retained rows of `table` as one batch of `schema`.
pub(crate) fn table_batch(table: &ResultTable, schema: &SchemaRef) -> Result<RecordBatch> {
    let (_, rows) = table.snapshot();
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    let mut text = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum());
    for r in &rows {
        text.push_str(r);
        text.push('\n');
    }
    let mut input = text.as_bytes();
    while !input.is_empty() {
        let n = decoder.decode(input)?;
        if n == 0 {
            break;
        }
        input = &input[n..];
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::table::Change;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    /// A query sees the rows a table holds at that moment, timestamps as timestamps.
    #[tokio::test]
    async fn sql_reads_the_live_rows() {
        let tables = Arc::new(ResultTables::default());
        let t = tables.table("settlement", i64::MAX, 100);
        t.set_schema(Arc::new(Schema::new(vec![
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("net_minor", DataType::Int64, true),
        ])));
        let ctx = session(Arc::clone(&tables)).unwrap();
        let count = |ctx: SessionContext| async move {
            let b = ctx
                .sql("SELECT count(*) AS n, sum(net_minor) AS s FROM settlement WHERE window_end > '2026-01-01T00:00:00Z'")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string()
        };
        assert!(count(ctx.clone()).await.contains("| 0 |"));
        let rows = [
            r#"{"merchant_id":"m1","window_end":"2026-12-04T10:01:00.000Z","net_minor":150}"#,
            r#"{"merchant_id":"m2","window_end":"2026-12-04T10:01:00.000Z","net_minor":-20}"#,
        ];
        t.push(
            rows.iter().map(|r| (0, None, Change::Append, r.as_bytes())),
            true,
        );
        let out = count(ctx).await;
        assert!(out.contains("| 2 | 130 |"), "{out}");
    }
}
