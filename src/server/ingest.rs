//! `POST /api/topics/{topic}/events`: events into a topic over HTTP, durable before the answer.
//!
//! The body is JSON Lines or one JSON array of events. Each is stored as `produce` stores a
//! line: keyed by its `card_id` (or `?key=FIELD`, `?key=none` for round-robin), timestamped by
//! its `event_time`, refused if it holds a card number (the answer lists those lines). Nothing
//! else is checked here: an invalid event reaches the queries' dead-letter output, with its
//! reason and offset, as any record of the topic does.
//!
//! A topic has one writer: the server keeps one producer per topic, shared by concurrent
//! requests, each of which appends, flushes and fsyncs before it is answered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::api::error;
use crate::log::{FsyncPolicy, LogError, Producer, Sent};

/// A topic's producer, shared by the requests writing it.
type SharedProducer = Arc<Mutex<Producer>>;

/// One producer per topic written over HTTP (a topic has one writer).
#[derive(Default)]
pub(crate) struct Writers {
    producers: Mutex<BTreeMap<String, SharedProducer>>,
}

impl Writers {
    /// The producer of `topic` (opened on first use).
    fn producer(&self, log: &crate::log::Log, topic: &str) -> Result<SharedProducer, LogError> {
        let mut producers = self.producers.lock().expect("writers lock");
        if let Some(p) = producers.get(topic) {
            return Ok(Arc::clone(p));
        }
        let writer = log.writer(topic, FsyncPolicy::Never)?;
        let p = Arc::new(Mutex::new(Producer::new(writer, None)));
        producers.insert(topic.to_string(), Arc::clone(&p));
        Ok(p)
    }

    /// Flushes and closes every producer (the server is stopping).
    pub(crate) fn close(&self) {
        let producers = std::mem::take(&mut *self.producers.lock().expect("writers lock"));
        for (topic, p) in producers {
            if let Ok(p) = Arc::try_unwrap(p)
                && let Err(e) = p.into_inner().expect("producer lock").finish()
            {
                tracing::warn!(topic, "closing the topic's writer failed: {e}");
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Params {
    key: Option<String>,
}

/// What one request stored.
#[derive(Debug, Default)]
struct Appended {
    appended: u64,
    first: Option<(u32, u64)>,
    ranges: BTreeMap<u32, (u64, u64)>,
    screened: Vec<u64>,
}

/// `POST /api/topics/{topic}/events`.
pub(crate) async fn append(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let key = params.key.unwrap_or_else(|| "card_id".to_string());
    let st = Arc::clone(&state);
    let t = topic.clone();
    let r = tokio::task::spawn_blocking(move || store(&st, &t, &key, &body)).await;
    match r {
        Ok(Ok(a)) => Json(json!({
            "appended": a.appended,
            "first_offset": a.first.map(|(_, o)| o),
            "partition": a.first.map(|(p, _)| p),
            "offsets": a.ranges.iter().map(|(p, (from, to))| (p.to_string(), json!([from, to]))).collect::<serde_json::Map<_, _>>(),
            "screened": a.screened.len(),
            "screened_lines": a.screened,
        }))
        .into_response(),
        Ok(Err((status, m))) => error(status, m).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("ingest failed: {e}; this is a bug")).into_response(),
    }
}

fn store(
    state: &AppState,
    topic: &str,
    key: &str,
    body: &[u8],
) -> Result<Appended, (StatusCode, String)> {
    let p = state.ingest.producer(&state.log, topic).map_err(|e| match e {
        LogError::NoSuchTopic { .. } => (
            StatusCode::NOT_FOUND,
            format!("no topic named {topic}; create it first with POST /api/topics {{\"name\": \"{topic}\", \"partitions\": 4}}"),
        ),
        LogError::Locked(_) => (
            StatusCode::CONFLICT,
            format!("topic {topic} is being written by another process (one writer per topic); stop it or post to another topic"),
        ),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let mut p = p.lock().expect("producer lock");
    p.set_key_field((key != "none").then_some(key));
    let before = p.end_offsets();
    let mut a = Appended::default();
    let on_stored = |p: &Producer, a: &mut Appended| {
        if a.first.is_none()
            && let Some(part) = p.last_partition()
        {
            a.first = Some((part, before[part as usize]));
        }
    };
    let bad = |e: LogError| match e {
        e @ LogError::RecordTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let sent = send_all(&mut p, body, &mut a, &on_stored, &bad);
    // What was sent before a refused event is stored all the same, and said so: a client
    // that posts the rest again does not post those twice.
    p.flush().and_then(|_| p.sync()).map_err(bad)?;
    let after = p.end_offsets();
    for (part, (b, e)) in before.iter().zip(&after).enumerate() {
        if e > b {
            a.ranges.insert(part as u32, (*b, *e));
            a.appended += e - b;
        }
    }
    match sent {
        Ok(()) => Ok(a),
        Err((status, m)) => Err((
            status,
            format!("{m}; the {} events before it were appended", a.appended),
        )),
    }
}

type Refused = (StatusCode, String);

/// Sends every event of `body` (one JSON array, or JSON Lines).
fn send_all(
    p: &mut Producer,
    body: &[u8],
    a: &mut Appended,
    on_stored: &dyn Fn(&Producer, &mut Appended),
    bad: &dyn Fn(LogError) -> Refused,
) -> Result<(), Refused> {
    let first_nonblank = body.iter().position(|b| !b.is_ascii_whitespace());
    if first_nonblank.is_some_and(|i| body[i] == b'[') {
        let events: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
            (StatusCode::BAD_REQUEST, format!("the body starts with '[' but is not one JSON array: {e}; send one array of events or JSON Lines"))
        })?;
        for (i, ev) in events.iter().enumerate() {
            let line = serde_json::to_vec(ev).expect("a JSON value serialises");
            match p.send_json(&line).map_err(bad)? {
                Sent::Stored => on_stored(p, a),
                Sent::Screened => a.screened.push(i as u64 + 1),
            }
        }
    } else {
        let mut no = 0u64;
        for line in body.split(|b| *b == b'\n') {
            no += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match p.send_json(line).map_err(bad)? {
                Sent::Stored => on_stored(p, a),
                Sent::Screened => a.screened.push(no),
            }
        }
    }
    Ok(())
}
