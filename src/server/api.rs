//! The JSON API's handlers: queries, topics, batch SQL, health. Every error is
//! `{"error": "…"}` with the status that says whose fault it is (a query's refusal adds the
//! `line` and `column` in the submitted text).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::queries::{QueryError, QueryView};
use crate::log::{LogError, TopicConfig};
use crate::time::rfc3339;

/// An error answer: `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

/// 404 for query `name`.
pub(crate) fn no_query(name: &str) -> (StatusCode, Json<Value>) {
    error(
        StatusCode::NOT_FOUND,
        format!("no query named {name}; GET /api/queries lists them"),
    )
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match self {
            QueryError::Invalid(r) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": r.error, "line": r.line, "column": r.column})),
            )
                .into_response(),
            QueryError::NotFound(name) => no_query(&name).into_response(),
            QueryError::Conflict(m) => error(StatusCode::CONFLICT, m).into_response(),
            QueryError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
        }
    }
}

/// The body as the JSON asked for, whatever its `Content-Type` (`curl -d` sends a form's): a
/// 400 saying what was expected otherwise.
fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, (StatusCode, Json<Value>)> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON expected ({e}); send {expected}"),
        )
    })
}

#[derive(Deserialize)]
pub(crate) struct Submit {
    name: String,
    sql: String,
}

/// `POST /api/queries`.
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Response {
    let s: Submit = match parse(&body, r#"{"name": "…", "sql": "…"}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let st = Arc::clone(&state);
    let r = tokio::task::spawn_blocking(move || st.queries.submit(&s.name, &s.sql)).await;
    match r {
        Ok(Ok(v)) => (
            StatusCode::CREATED,
            Json(json!({"id": v.saved.id, "name": v.saved.name, "state": v.state.label()})),
        )
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("submitting failed: {e}; this is a bug"),
        )
        .into_response(),
    }
}

/// `GET /api/queries`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let st = Arc::clone(&state);
    let views = tokio::task::spawn_blocking(move || st.queries.views())
        .await
        .unwrap_or_default();
    Json(Value::Array(views.iter().map(query_json).collect()))
}

/// `GET /api/queries/{name}`.
pub(crate) async fn show(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    // Its metrics read the source topics' ends: off the runtime.
    let (st, n) = (Arc::clone(&state), name.clone());
    match tokio::task::spawn_blocking(move || st.queries.view(&n)).await {
        Ok(Some(v)) => Json(query_json(&v)).into_response(),
        _ => QueryError::NotFound(name).into_response(),
    }
}

/// `DELETE /api/queries/{name}`: stops it with a final checkpoint (a stopped one is forgotten).
pub(crate) async fn stop(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let (st, n) = (Arc::clone(&state), name.clone());
    match tokio::task::spawn_blocking(move || st.queries.stop(&n)).await {
        Ok(Ok(s)) => Json(json!({"name": name, "state": s})).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stopping failed: {e}; this is a bug"),
        )
        .into_response(),
    }
}

/// `POST /api/queries/{name}/savepoint`.
pub(crate) async fn savepoint(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let (st, n) = (Arc::clone(&state), name.clone());
    match tokio::task::spawn_blocking(move || st.queries.savepoint(&n)).await {
        Ok(Ok(sp)) => Json(json!({"name": name, "savepoint": sp})).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("savepoint failed: {e}; this is a bug"),
        )
        .into_response(),
    }
}

/// A query as the API shows it.
pub(crate) fn query_json(v: &QueryView) -> Value {
    let now = crate::log::producer_now_ms();
    let metrics = v.metrics.as_ref().map(|m| {
        let watermark = (m.watermark > i64::MIN).then_some(m.watermark);
        let lag_total: u64 = m.lag.values().sum();
        json!({
            "events_in": m.read,
            "events_out": m.results,
            "duplicates": m.duplicates,
            "dead_lettered": m.dead_lettered,
            "late": m.late,
            "watermark": watermark.map(rfc3339),
            "watermark_delay_ms": watermark.map(|w| (now - w).max(0)),
            "lag": m.lag.iter().map(|(p, l)| (p.to_string(), json!(l))).collect::<serde_json::Map<_, _>>(),
            "lag_total": lag_total,
            "last_checkpoint": (m.last_checkpoint_id > 0).then(|| json!({
                "id": m.last_checkpoint_id,
                "age_ms": (now - m.last_checkpoint_ms).max(0),
                "duration_ms": m.last_checkpoint_duration_ms,
                "bytes": m.last_checkpoint_bytes,
            })),
            "checkpoints": m.checkpoints,
            "operators": m.queries.iter().map(|(sink, events_in, rows_out)| json!({
                "sink": sink, "events_in": events_in, "rows_out": rows_out,
            })).collect::<Vec<_>>(),
            "events_per_second": (v.events_per_second * 10.0).round() / 10.0,
        })
    });
    let error = match &v.state {
        super::queries::QueryState::Failed(e) => Some(e.clone()),
        _ => None,
    };
    json!({
        "id": v.saved.id,
        "name": v.saved.name,
        "state": v.state.label(),
        "error": error,
        "sql": v.saved.sql,
        "created": rfc3339(v.saved.created_ms),
        "sinks": v.sinks.iter().map(|s| json!({
            "name": s.name,
            "connector": s.connector,
            "table": s.table,
            "key": s.keys,
            "columns": s.schema.fields().iter().map(|f| json!({
                "name": f.name(),
                "type": type_name(f.data_type()),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "metrics": metrics,
    })
}

/// A column type as a dashboard groups them.
fn type_name(t: &datafusion::arrow::datatypes::DataType) -> &'static str {
    use datafusion::arrow::datatypes::DataType as D;
    match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            "integer"
        }
        D::Float16 | D::Float32 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => "number",
        D::Timestamp(..) | D::Date32 | D::Date64 => "timestamp",
        D::Boolean => "boolean",
        _ => "string",
    }
}

#[derive(Deserialize)]
pub(crate) struct CreateTopic {
    name: String,
    partitions: Option<u32>,
}

/// `POST /api/topics`: 201, or 409 when it exists.
pub(crate) async fn create_topic(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Response {
    let c: CreateTopic = match parse(&body, r#"{"name": "payments", "partitions": 8}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let partitions = c.partitions.unwrap_or(1);
    if partitions == 0 || partitions > 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "partitions must be between 1 and 1024",
        )
        .into_response();
    }
    let config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    match state.log.create_topic(&c.name, &config) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({"name": c.name, "partitions": partitions})),
        )
            .into_response(),
        Err(LogError::TopicExists(_)) => error(
            StatusCode::CONFLICT,
            format!(
                "topic {} already exists; GET /api/topics/{} describes it",
                c.name, c.name
            ),
        )
        .into_response(),
        Err(e @ LogError::Invalid(_)) => {
            error(StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/topics`.
pub(crate) async fn topics(State(state): State<Arc<AppState>>) -> Response {
    let log = state.log.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, LogError> {
        log.topics()?.iter().map(|t| topic_json(&log, t)).collect()
    })
    .await;
    match r {
        Ok(Ok(t)) => Json(Value::Array(t)).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/topics/{topic}`.
pub(crate) async fn topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Response {
    let log = state.log.clone();
    let t = topic.clone();
    match tokio::task::spawn_blocking(move || topic_json(&log, &t)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(LogError::NoSuchTopic { .. })) => error(
            StatusCode::NOT_FOUND,
            format!("no topic named {topic}; GET /api/topics lists them"),
        )
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A topic: partitions with offsets and sizes, and each consumer group's lag.
fn topic_json(log: &crate::log::Log, topic: &str) -> Result<Value, LogError> {
    let config = log.topic_config(topic)?;
    let stats = log.partition_stats(topic)?;
    let groups: Vec<Value> = log
        .groups(topic)
        .iter()
        .filter_map(|g| {
            let offsets = log.group_offsets(topic, g).ok()?;
            let lag: u64 = stats
                .iter()
                .map(|s| {
                    let at = offsets
                        .offsets
                        .get(&s.partition)
                        .copied()
                        .unwrap_or(s.start_offset);
                    s.end_offset.saturating_sub(at)
                })
                .sum();
            Some(json!({"group": g, "offsets": offsets.offsets, "lag": lag}))
        })
        .collect();
    Ok(json!({
        "name": topic,
        "partitions": config.partitions,
        "records": stats.iter().map(|s| s.end_offset - s.start_offset).sum::<u64>(),
        "bytes": stats.iter().map(|s| s.bytes).sum::<u64>(),
        "partition_stats": stats.iter().map(|s| json!({
            "partition": s.partition,
            "start_offset": s.start_offset,
            "end_offset": s.end_offset,
            "committed": s.committed,
            "bytes": s.bytes,
            "segments": s.segments,
        })).collect::<Vec<_>>(),
        "consumer_groups": groups,
    }))
}

#[derive(Deserialize)]
pub(crate) struct Sql {
    sql: String,
}

/// `POST /api/sql`: a batch query over the result tables, as an array of row objects.
pub(crate) async fn sql(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let q: Sql = match parse(&body, r#"{"sql": "SELECT … FROM <result table>"}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let statement = match state.sql.state().create_logical_plan(&q.sql).await {
        Ok(plan) => plan,
        Err(e) => return error(StatusCode::BAD_REQUEST, sql_error(&e)).into_response(),
    };
    if let Some(name) = crate::sql::window_only_aggregate(&statement) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{name} is a window function: use it with OVER (PARTITION BY … ORDER BY …), not as an aggregate (its result depends on the order of the values)"),
        )
        .into_response();
    }
    if !matches!(
        statement,
        datafusion::logical_expr::LogicalPlan::Projection(_)
            | datafusion::logical_expr::LogicalPlan::Sort(_)
            | datafusion::logical_expr::LogicalPlan::Limit(_)
            | datafusion::logical_expr::LogicalPlan::Aggregate(_)
            | datafusion::logical_expr::LogicalPlan::Filter(_)
            | datafusion::logical_expr::LogicalPlan::Distinct(_)
            | datafusion::logical_expr::LogicalPlan::Union(_)
            | datafusion::logical_expr::LogicalPlan::Window(_)
            | datafusion::logical_expr::LogicalPlan::SubqueryAlias(_)
            | datafusion::logical_expr::LogicalPlan::TableScan(_)
            | datafusion::logical_expr::LogicalPlan::Values(_)
            | datafusion::logical_expr::LogicalPlan::EmptyRelation(_)
            | datafusion::logical_expr::LogicalPlan::Join(_)
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "only queries are run here (SELECT … FROM a result table); result tables are filled by stream queries (POST /api/queries)",
        )
        .into_response();
    }
    let batches = match state.sql.execute_logical_plan(statement).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    match batches {
        Ok(batches) => {
            let mut out = Vec::with_capacity(1024);
            out.push(b'[');
            let mut first = true;
            for b in &batches {
                let mut rows = Vec::new();
                crate::sink::write_batch(&mut rows, b);
                for line in rows.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(line);
                }
            }
            out.push(b']');
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                out,
            )
                .into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, sql_error(&e)).into_response(),
    }
}

/// A DataFusion error as a user reads it: the message without the plan around it.
fn sql_error(e: &datafusion::error::DataFusionError) -> String {
    let root = e.find_root().to_string();
    let msg = root
        .strip_prefix("Error during planning: ")
        .or_else(|| root.strip_prefix("SQL error: "))
        .unwrap_or(&root);
    format!("{msg}; result tables are named after their query's sink (GET /api/queries)")
}

/// `GET /healthz`: 200 once the saved queries are resumed.
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// Anything else: 404 naming the API.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "nothing at {}; the API is described at /api/openapi.json",
            uri.path()
        ),
    )
    .into_response()
}
