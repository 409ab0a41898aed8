//! A query's result rows as they are emitted: Server-Sent Events at
//! `/api/queries/{name}/results` (one event per row, one `data:` line holding the row as a JSON
//! object) and a WebSocket at `/api/queries/{name}/ws` (one text message per row).
//!
//! `?committed=true` sends only rows whose checkpoint committed them (they wait for it);
//! `?from=earliest` sends the retained rows first. A query with several result tables tags each
//! row with `"_sink"`. A subscriber that falls [`SUBSCRIBER_BACKLOG`] rows behind is sent a
//! `dropped` event saying so and disconnected: it never holds the engine back.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, StreamExt};
use serde::Deserialize;

use super::AppState;
use super::api::{error, no_query};
use crate::sink::table::{Lagged, SUBSCRIBER_BACKLOG};

#[derive(Deserialize, Default)]
pub(crate) struct Params {
    committed: Option<bool>,
    from: Option<String>,
}

/// What a subscriber is sent.
enum Item {
    Row(Arc<str>),
    /// It fell behind: the message, then the end.
    Dropped(String),
}

/// The rows of query `name`'s result tables, merged.
fn rows(
    state: &AppState,
    name: &str,
    p: &Params,
) -> Result<BoxStream<'static, Item>, (StatusCode, Json<serde_json::Value>)> {
    let sinks = state.queries.sinks(name).ok_or_else(|| no_query(name))?;
    let tables: Vec<String> = sinks
        .iter()
        .filter(|s| s.table)
        .map(|s| s.name.clone())
        .collect();
    if tables.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "query {name} has no result table (its sinks: {}); declare one with CREATE SINK … WITH (connector = 'table')",
                sinks
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.connector))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let committed = p.committed.unwrap_or(false);
    let earliest = match p.from.as_deref() {
        None | Some("latest") => false,
        Some("earliest") => true,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "from={other} is not known; use from=earliest (the retained rows first) or from=latest"
                ),
            ));
        }
    };
    let tag = tables.len() > 1;
    let mut streams = Vec::new();
    for t in tables {
        let Some(table) = state.results.get(&t) else {
            continue;
        };
        let (backlog, rx) = table.subscribe(committed);
        let backlog: VecDeque<Arc<str>> = if earliest {
            backlog.into()
        } else {
            VecDeque::new()
        };
        let sink = tag.then(|| t.clone());
        let s = stream::unfold(Some((backlog, rx)), move |st| {
            let sink = sink.clone();
            async move {
                let (mut backlog, mut rx) = st?;
                let item = match backlog.pop_front() {
                    Some(row) => Item::Row(row),
                    None => match rx.recv().await {
                        Ok(row) => Item::Row(row),
                        Err(Lagged::Lagged(n)) => {
                            return Some((
                                Item::Dropped(format!(
                                    "this subscriber fell more than {SUBSCRIBER_BACKLOG} rows behind ({n} rows were passed over) and was dropped; reconnect, with ?from=earliest for the retained rows"
                                )),
                                None,
                            ));
                        }
                        Err(Lagged::Closed) => return None,
                    },
                };
                let item = match (item, &sink) {
                    (Item::Row(r), Some(s)) => Item::Row(tagged(&r, s)),
                    (i, _) => i,
                };
                Some((item, Some((backlog, rx))))
            }
        });
        streams.push(s.boxed());
    }
    // A dropped subscriber's stream ends with the message: the merged one ends with it too.
    let merged = stream::select_all(streams).scan(false, |done, item| {
        let out = if *done {
            None
        } else {
            *done = matches!(item, Item::Dropped(_));
            Some(item)
        };
        futures::future::ready(out)
    });
    Ok(merged.boxed())
}

/// `row` with `"_sink": sink` first.
fn tagged(row: &str, sink: &str) -> Arc<str> {
    let mut out = String::with_capacity(row.len() + sink.len() + 12);
    out.push_str("{\"_sink\":");
    out.push_str(&serde_json::Value::String(sink.to_string()).to_string());
    match row.strip_prefix('{') {
        Some("}") => out.push('}'),
        Some(rest) => {
            out.push(',');
            out.push_str(rest);
        }
        None => return Arc::from(row),
    }
    Arc::from(out)
}

/// `GET /api/queries/{name}/results`: Server-Sent Events.
pub(crate) async fn sse(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    match rows(&state, &name, &p) {
        Ok(rows) => {
            let events = rows.map(|item| {
                Ok::<_, Infallible>(match item {
                    Item::Row(r) => Event::default().data(&*r),
                    Item::Dropped(m) => Event::default()
                        .event("dropped")
                        .data(serde_json::json!({ "error": m }).to_string()),
                })
            });
            Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// `GET /api/queries/{name}/ws`: one text message per row.
pub(crate) async fn ws(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
    upgrade: WebSocketUpgrade,
) -> Response {
    match rows(&state, &name, &p) {
        Ok(rows) => upgrade.on_upgrade(move |socket| send_rows(socket, rows)),
        Err(r) => r.into_response(),
    }
}

async fn send_rows(mut socket: WebSocket, mut rows: BoxStream<'static, Item>) {
    while let Some(item) = rows.next().await {
        let msg = match item {
            Item::Row(r) => Message::Text(r.to_string().into()),
            Item::Dropped(m) => {
                let _ = socket
                    .send(Message::Text(
                        serde_json::json!({ "error": m }).to_string().into(),
                    ))
                    .await;
                break;
            }
        };
        if socket.send(msg).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_are_tagged_with_their_sink() {
        assert_eq!(
            &*super::tagged("{\"a\":1}", "s"),
            "{\"_sink\":\"s\",\"a\":1}"
        );
        assert_eq!(&*super::tagged("{}", "s"), "{\"_sink\":\"s\"}");
    }
}
