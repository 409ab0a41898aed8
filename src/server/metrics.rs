//! `GET /metrics`: the Prometheus text format (version 0.0.4), every name prefixed
//! `paystream_`. Per query: events, duplicates, dead letters, late events, watermark lag,
//! source lag per partition, checkpoints (count, duration, size, age); per operator (each
//! INSERT, named by its sink) events in and rows out; per result table its rows and the rows
//! waiting for their checkpoint; per topic its end offsets and bytes; HTTP requests by route and
//! status. Written by hand: a handful of lines does not need a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::queries::QueryState;

/// HTTP requests served, by (method, route, status).
#[derive(Default)]
pub(crate) struct HttpCounters {
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// Counts every request by its route's pattern (not its path: names stay few).
pub(crate) async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    let key = (method, route, response.status().as_u16());
    *state
        .http_metrics
        .counts
        .lock()
        .expect("http counters lock")
        .entry(key)
        .or_default() += 1;
    response
}

/// A label value, escaped as the format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP paystream_{name} {help}");
        let _ = writeln!(self.0, "# TYPE paystream_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let _ = writeln!(self.0, "paystream_{name}{{{}}} {value}", labels.join(","));
    }
}

/// `GET /metrics`.
pub(crate) async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let st = Arc::clone(&state);
    let text = tokio::task::spawn_blocking(move || render(&st))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn render(state: &AppState) -> String {
    let now = crate::log::producer_now_ms();
    let views = state.queries.views();
    let mut o = Out(String::with_capacity(4096));
    type Pick = fn(&crate::job::JobMetrics) -> u64;
    let counters: [(&str, &str, Pick); 5] = [
        ("events_in_total", "Records read by the query's job.", |m| {
            m.read
        }),
        ("results_total", "Result rows the query wrote.", |m| {
            m.results
        }),
        (
            "duplicates_total",
            "Redelivered events dropped by dedup.",
            |m| m.duplicates,
        ),
        (
            "dead_lettered_total",
            "Records sent to the dead-letter output.",
            |m| m.dead_lettered,
        ),
        (
            "late_events_total",
            "Events behind the watermark, sent to the late output.",
            |m| m.late,
        ),
    ];
    for (name, help, pick) in counters {
        o.family(name, "counter", help);
        for v in &views {
            if let Some(m) = &v.metrics {
                o.sample(name, &[("query", &v.saved.name)], pick(m));
            }
        }
    }
    o.family(
        "query_up",
        "gauge",
        "1 while the query runs, 0 when stopped or failed.",
    );
    for v in &views {
        let up = matches!(v.state, QueryState::Running) as u8;
        o.sample(
            "query_up",
            &[("query", &v.saved.name), ("state", v.state.label())],
            up,
        );
    }
    o.family(
        "watermark_lag_seconds",
        "gauge",
        "Wall clock minus the query's watermark.",
    );
    for v in &views {
        if let Some(m) = v.metrics.as_ref().filter(|m| m.watermark > i64::MIN) {
            o.sample(
                "watermark_lag_seconds",
                &[("query", &v.saved.name)],
                (now - m.watermark) as f64 / 1000.0,
            );
        }
    }
    o.family(
        "source_lag_records",
        "gauge",
        "Records appended to a source partition but not yet read.",
    );
    for v in &views {
        for (p, lag) in v.metrics.iter().flat_map(|m| m.lag.iter()) {
            o.sample(
                "source_lag_records",
                &[("query", &v.saved.name), ("partition", &p.to_string())],
                lag,
            );
        }
    }
    o.family("checkpoints_total", "counter", "Checkpoints completed.");
    for v in &views {
        if let Some(m) = &v.metrics {
            o.sample(
                "checkpoints_total",
                &[("query", &v.saved.name)],
                m.checkpoints,
            );
        }
    }
    let done: Vec<_> = views
        .iter()
        .filter_map(|v| Some((v, v.metrics.as_ref().filter(|m| m.last_checkpoint_id > 0)?)))
        .collect();
    o.family(
        "checkpoint_duration_seconds",
        "gauge",
        "How long the last checkpoint took.",
    );
    for (v, m) in &done {
        o.sample(
            "checkpoint_duration_seconds",
            &[("query", &v.saved.name)],
            m.last_checkpoint_duration_ms as f64 / 1000.0,
        );
    }
    o.family(
        "checkpoint_size_bytes",
        "gauge",
        "Size of the last checkpoint.",
    );
    for (v, m) in &done {
        o.sample(
            "checkpoint_size_bytes",
            &[("query", &v.saved.name)],
            m.last_checkpoint_bytes,
        );
    }
    o.family(
        "checkpoint_age_seconds",
        "gauge",
        "Time since the last checkpoint completed.",
    );
    for (v, m) in &done {
        o.sample(
            "checkpoint_age_seconds",
            &[("query", &v.saved.name)],
            (now - m.last_checkpoint_ms).max(0) as f64 / 1000.0,
        );
    }
    o.family(
        "operator_events_in_total",
        "counter",
        "Events offered to an operator (an INSERT, named by its sink).",
    );
    for v in &views {
        for (sink, events_in, _) in v.metrics.iter().flat_map(|m| m.queries.iter()) {
            o.sample(
                "operator_events_in_total",
                &[("query", &v.saved.name), ("operator", sink)],
                events_in,
            );
        }
    }
    o.family(
        "operator_rows_out_total",
        "counter",
        "Result rows out of an operator.",
    );
    for v in &views {
        for (sink, _, rows_out) in v.metrics.iter().flat_map(|m| m.queries.iter()) {
            o.sample(
                "operator_rows_out_total",
                &[("query", &v.saved.name), ("operator", sink)],
                rows_out,
            );
        }
    }
    let tables = state.results.all();
    o.family("result_table_rows", "gauge", "Rows a result table retains.");
    for t in &tables {
        o.sample("result_table_rows", &[("sink", t.name())], t.len());
    }
    o.family(
        "sink_uncommitted_rows",
        "gauge",
        "Rows a result table shows that wait for their checkpoint.",
    );
    for t in &tables {
        o.sample(
            "sink_uncommitted_rows",
            &[("sink", t.name())],
            t.uncommitted(),
        );
    }
    o.family(
        "topic_end_offset",
        "gauge",
        "The offset the next record of a partition gets.",
    );
    let topics = state.log.topics().unwrap_or_default();
    let stats: Vec<_> = topics
        .iter()
        .filter_map(|t| Some((t, state.log.partition_stats(t).ok()?)))
        .collect();
    for (t, s) in &stats {
        for p in s {
            o.sample(
                "topic_end_offset",
                &[("topic", t), ("partition", &p.partition.to_string())],
                p.end_offset,
            );
        }
    }
    o.family("topic_bytes", "gauge", "Bytes of a topic's segment files.");
    for (t, s) in &stats {
        o.sample(
            "topic_bytes",
            &[("topic", t)],
            s.iter().map(|p| p.bytes).sum::<u64>(),
        );
    }
    o.family("http_requests_total", "counter", "HTTP requests served.");
    for ((method, route, status), n) in state
        .http_metrics
        .counts
        .lock()
        .expect("http counters lock")
        .iter()
    {
        o.sample(
            "http_requests_total",
            &[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ],
            n,
        );
    }
    o.0
}
