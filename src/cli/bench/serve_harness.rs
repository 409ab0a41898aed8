//! The serve measurements (`paystream bench --suite serve`): a real server on loopback, driven
//! by real HTTP clients in the same process.
//!
//! - **ingest**: 8 clients post the input in 2,000-line bodies to an 8-partition topic, each
//!   body durable (fsynced) before its answer; events per wall and per CPU second (the CPU of
//!   the whole process: server and clients).
//! - **latency**: events posted at 10,000 per second with the wall clock as their event time,
//!   a 100 ms tumbling window over them, one SSE subscriber. For each window the client knows
//!   when the watermark passed its end: the watermark is the least over the partitions of the
//!   latest event time each holds, minus the delay, and every answer says which partitions its
//!   events went to. The latency is from sending the post that moved the watermark past the
//!   window's end to the window's row arriving at the subscriber.
//! - **fan-out**: 200 SSE subscribers on one windowed query at 10,000 events per second, plus
//!   one that never reads. Every reading subscriber must receive every row of the result table
//!   (checked against a count computed by the client from what it posted); the stalled one is
//!   dropped with a message and holds nobody back. The process's peak memory is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::harness::{Measurement, cpu_seconds};
use super::http::{Conn, Events, stalled};
use paystream::server::{ServeConfig, Server};

/// Concurrent ingest clients and lines per body.
const INGEST_CLIENTS: usize = 8;
const INGEST_BODY_LINES: usize = 2_000;
/// Partitions of every bench topic.
const PARTITIONS: u32 = 8;
/// Events per second of the latency and fan-out phases, and how long each posts.
const RATE: u64 = 10_000;
const LATENCY_PHASE: Duration = Duration::from_secs(20);
/// Long enough that the stalled subscriber falls [`paystream::sink::table::SUBSCRIBER_BACKLOG`]
/// rows behind even after the kernel's socket buffers (up to 4 MiB by default on Linux) took
/// what they could: about 2,000 rows a second.
const FAN_OUT_PHASE: Duration = Duration::from_secs(40);
/// The watermark delay of the latency and fan-out queries.
const DELAY_MS: i64 = 1_000;
/// Reading subscribers of the fan-out phase.
const SUBSCRIBERS: usize = 200;

/// What the serve suite measured: table lines, and lines of their own.
pub(crate) struct Report {
    pub(crate) measurements: Vec<Measurement>,
    pub(crate) lines: Vec<String>,
}

/// Runs the three measurements over a server in a fresh directory (removed afterwards).
pub(crate) fn run(input: &Path) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir()
        .join("paystream-bench")
        .join(format!("serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _cleanup = RemoveDir(dir.clone());
    let lines = read_lines(input)?;
    ensure!(!lines.is_empty(), "{} holds no events", input.display());

    let server_rt = crate::cli::serve_cmd::runtime()?;
    let server = server_rt.block_on(async {
        let mut config = ServeConfig::new(&dir);
        config.http = SocketAddr::from(([127, 0, 0, 1], 0));
        config.pg = None;
        Server::bind(config).await
    })?;
    let addr = server.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server_rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = clients.block_on(async move {
        let mut out = Report {
            measurements: Vec::new(),
            lines: Vec::new(),
        };
        eprintln!("serve: ingest over HTTP ({INGEST_CLIENTS} clients) ...");
        out.measurements.push(ingest(addr, &lines).await?);
        let templates = templates(&lines);
        drop(lines);
        ensure!(
            !templates.is_empty(),
            "no line of the input is a JSON object with an event_time to post"
        );
        eprintln!(
            "serve: latency from a post to its window's row over SSE ({RATE} events/s, {}s) ...",
            LATENCY_PHASE.as_secs()
        );
        out.lines.push(latency(addr, &templates).await?);
        eprintln!(
            "serve: {SUBSCRIBERS} SSE subscribers and a stalled one ({RATE} events/s, {}s) ...",
            FAN_OUT_PHASE.as_secs()
        );
        out.lines.extend(fan_out(addr, &templates).await?);
        anyhow::Ok(out)
    });
    let _ = stop.send(());
    server_rt
        .block_on(serving)
        .context("the server's task failed")??;
    result
}

/// The input's lines (at most 1 M: the ingest measurement needs no more).
fn read_lines(input: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .take(1_000_000)
        .map(<[u8]>::to_vec)
        .collect())
}

async fn post_json(c: &mut Conn, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, answer) = c.request("POST", path, body.to_string().as_bytes()).await?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    ensure!(
        (200..300).contains(&status),
        "POST {path}: status {status}: {answer}"
    );
    Ok(answer)
}

async fn create_topic(addr: SocketAddr, name: &str) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr).await?;
    post_json(
        &mut c,
        "/api/topics",
        &json!({"name": name, "partitions": PARTITIONS}),
    )
    .await?;
    Ok(())
}

/// Posts every line in bodies of [`INGEST_BODY_LINES`] from [`INGEST_CLIENTS`] connections.
async fn ingest(addr: SocketAddr, lines: &[Vec<u8>]) -> anyhow::Result<Measurement> {
    create_topic(addr, "ingest").await?;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        lines
            .chunks(INGEST_BODY_LINES)
            .map(|c| {
                let mut b = Vec::with_capacity(c.iter().map(|l| l.len() + 1).sum());
                for l in c {
                    b.extend_from_slice(l);
                    b.push(b'\n');
                }
                b
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let mut tasks = Vec::new();
    for _ in 0..INGEST_CLIENTS {
        let (bodies, next, stored) = (Arc::clone(&bodies), Arc::clone(&next), Arc::clone(&stored));
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let (status, answer) = c.request("POST", "/api/topics/ingest/events", body).await?;
                let answer: Value = serde_json::from_slice(&answer)?;
                ensure!(status == 200, "ingest: status {status}: {answer}");
                let n = answer["appended"].as_u64().unwrap_or(0)
                    + answer["screened"].as_u64().unwrap_or(0);
                stored.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (c0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall * 2.0,
    };
    let events = stored.load(Ordering::Relaxed);
    ensure!(
        events == lines.len() as u64,
        "ingest: {} lines posted, {events} appended or screened",
        lines.len()
    );
    Ok(Measurement {
        name: format!("serve: ingest, {INGEST_CLIENTS} HTTP clients x {INGEST_BODY_LINES} lines"),
        workers: INGEST_CLIENTS,
        events,
        wall,
        cpu,
    })
}

/// The input's events as objects to post again and again with new ids and times.
fn templates(lines: &[Vec<u8>]) -> Vec<serde_json::Map<String, Value>> {
    lines
        .iter()
        .take(20_000)
        .filter_map(|l| match serde_json::from_slice::<Value>(l) {
            Ok(Value::Object(m)) if m.contains_key("event_time") => Some(m),
            _ => None,
        })
        .collect()
}

/// Posts events at [`RATE`] for `phase` to `topic`, every event of a post timed at the post's
/// wall clock; `on_post` is told each post's send instant, event time, merchants and answer.
/// Ends with a post [`DELAY_MS`] + 1 s later on every partition, which closes every window.
async fn post_paced(
    addr: SocketAddr,
    topic: &str,
    templates: &[serde_json::Map<String, Value>],
    phase: Duration,
    mut on_post: impl FnMut(Instant, i64, &[String], &Value),
) -> anyhow::Result<u64> {
    let mut c = Conn::connect(addr).await?;
    let path = format!("/api/topics/{topic}/events");
    let run = format!("{:x}", paystream::log::producer_now_ms());
    let t0 = Instant::now();
    let (mut sent, mut last_ms) = (0u64, 0i64);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut closing = false;
    loop {
        tick.tick().await;
        let elapsed = t0.elapsed();
        let (n, at) = if elapsed >= phase {
            if closing {
                break;
            }
            closing = true;
            // Enough events that every partition gets some.
            (400, last_ms + DELAY_MS + 1_000)
        } else {
            let due = (RATE as f64 * elapsed.as_secs_f64()) as u64;
            (due - sent, paystream::log::producer_now_ms().max(last_ms))
        };
        if n == 0 {
            continue;
        }
        let time = paystream::time::rfc3339(at);
        let mut body = Vec::with_capacity(n as usize * 400);
        let mut merchants = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut e = templates[((sent + i) % templates.len() as u64) as usize].clone();
            e.insert(
                "event_id".into(),
                json!(format!("bench-{run}-{}", sent + i)),
            );
            e.insert("event_time".into(), json!(time));
            merchants.push(
                e.get("merchant_id")
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            );
            serde_json::to_writer(&mut body, &e)?;
            body.push(b'\n');
        }
        let sent_at = Instant::now();
        let (status, answer) = c.request("POST", &path, &body).await?;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        ensure!(status == 200, "POST {path}: status {status}: {answer}");
        if !closing {
            sent += n;
        }
        last_ms = at;
        on_post(sent_at, at, if closing { &[] } else { &merchants }, &answer);
    }
    Ok(sent)
}

/// Submits query `name` (a query file's text) and waits until it runs.
async fn submit(addr: SocketAddr, name: &str, sql: &str) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr).await?;
    post_json(&mut c, "/api/queries", &json!({"name": name, "sql": sql})).await?;
    Ok(())
}

async fn stop_query(addr: SocketAddr, name: &str) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr).await?;
    let (status, body) = c
        .request("DELETE", &format!("/api/queries/{name}"), b"")
        .await?;
    ensure!(
        status == 200,
        "DELETE {name}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// A windowed count over `topic` into a result table named after the query.
fn windowed_query(topic: &str, window: &str, by_merchant: bool) -> String {
    let (key, group) = if by_merchant {
        ("merchant_id, ", "merchant_id, ")
    } else {
        ("", "")
    };
    format!(
        "SET watermark_delay = '{DELAY_MS}ms';\n\
         CREATE SOURCE events WITH (connector = 'log', topic = '{topic}');\n\
         CREATE SINK {topic} WITH (connector = 'table');\n\
         INSERT INTO {topic}\n\
         SELECT {key}window_end, count(*) AS events\n\
         FROM TUMBLE(events, event_time, INTERVAL '{window}')\n\
         GROUP BY {group}window_start, window_end;\n"
    )
}

/// The partitions a post's answer says its events went to.
fn partitions_of(answer: &Value) -> Vec<u32> {
    answer["offsets"]
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// Tracks the watermark the posts implied: the least over the partitions of their latest event
/// time, minus the delay.
struct Watermark {
    latest: BTreeMap<u32, i64>,
}

impl Watermark {
    fn new() -> Self {
        Watermark {
            latest: BTreeMap::new(),
        }
    }

    /// Notes a post; the watermark after it, once every partition has had events.
    fn post(&mut self, at: i64, answer: &Value) -> Option<i64> {
        for p in partitions_of(answer) {
            self.latest.insert(p, at);
        }
        (self.latest.len() == PARTITIONS as usize)
            .then(|| self.latest.values().min().copied().unwrap_or(i64::MIN) - DELAY_MS)
    }
}

const WINDOW_MS: i64 = 100;

async fn latency(
    addr: SocketAddr,
    templates: &[serde_json::Map<String, Value>],
) -> anyhow::Result<String> {
    create_topic(addr, "latency").await?;
    submit(
        addr,
        "latency",
        &windowed_query("latency", "100 MILLISECOND", false),
    )
    .await?;
    let mut events = Events::open(addr, "/api/queries/latency/results").await?;
    // When each window's first row arrived.
    let seen: Arc<std::sync::Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    let reader = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while let Some(e) = events.next().await? {
                let at = Instant::now();
                if e.event.is_some() {
                    bail!("the latency subscriber was sent {:?}: {}", e.event, e.data);
                }
                let row: Value = serde_json::from_str(&e.data)?;
                let end = row["window_end"]
                    .as_str()
                    .and_then(paystream::time::parse_rfc3339_millis)
                    .with_context(|| format!("a row without a window_end: {row}"))?;
                seen.lock().expect("seen lock").entry(end).or_insert(at);
            }
            anyhow::Ok(())
        }
    });
    // When the watermark passed each window end (first post that moved it past).
    let mut passed: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut wm = Watermark::new();
    let mut last_passed = i64::MIN;
    let mut windows_with_events = BTreeSet::new();
    let mut first_window = None;
    post_paced(
        addr,
        "latency",
        templates,
        LATENCY_PHASE,
        |sent_at, at, merchants, answer| {
            if !merchants.is_empty() {
                windows_with_events.insert(at.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS);
            }
            if let Some(w) = wm.post(at, answer) {
                let from = first_window.get_or_insert(w.div_euclid(WINDOW_MS) * WINDOW_MS);
                let mut end = (last_passed.max(*from) / WINDOW_MS + 1) * WINDOW_MS;
                while end <= w {
                    passed.insert(end, sent_at);
                    end += WINDOW_MS;
                }
                last_passed = last_passed.max(w);
            }
        },
    )
    .await?;
    // The closing post ends every window: wait for their rows (a few seconds at most).
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(5) && !reader.is_finished() {
        let arrived = {
            let seen = seen.lock().expect("seen lock");
            windows_with_events
                .iter()
                .filter(|w| passed.contains_key(w))
                .all(|w| seen.contains_key(w))
        };
        if arrived {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if reader.is_finished() {
        reader.await??;
        bail!("latency: the result stream ended early");
    }
    reader.abort();
    stop_query(addr, "latency").await?;
    let seen = std::mem::take(&mut *seen.lock().expect("seen lock"));
    let mut ms: Vec<f64> = Vec::new();
    let mut missing = 0;
    for w in &windows_with_events {
        let Some(pass) = passed.get(w) else { continue };
        match seen.get(w) {
            Some(got) => ms.push(got.saturating_duration_since(*pass).as_secs_f64() * 1e3),
            None => missing += 1,
        }
    }
    ensure!(
        !ms.is_empty(),
        "latency: no window's row reached the subscriber"
    );
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok(format!(
        "serve: post -> window row over SSE after the watermark passed, {RATE} events/s, {} windows of {WINDOW_MS} ms: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
        ms.len(),
        q(0.5),
        q(0.99),
        ms[ms.len() - 1],
        if missing > 0 {
            format!("; {missing} windows never arrived")
        } else {
            String::new()
        }
    ))
}

async fn fan_out(
    addr: SocketAddr,
    templates: &[serde_json::Map<String, Value>],
) -> anyhow::Result<Vec<String>> {
    create_topic(addr, "fanout").await?;
    submit(
        addr,
        "fanout",
        &windowed_query("fanout", "100 MILLISECOND", true),
    )
    .await?;
    let path = "/api/queries/fanout/results";
    let mut readers = Vec::new();
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..SUBSCRIBERS).map(|_| AtomicU64::new(0)).collect());
    for i in 0..SUBSCRIBERS {
        let mut events = Events::open(addr, path).await?;
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            while let Some(e) = events.next().await? {
                if let Some(what) = e.event {
                    bail!("subscriber {i} was sent `{what}`: {}", e.data);
                }
                received[i].fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let mut stuck = stalled(addr, path).await?;
    // Resident memory before and at most during the phase, sampled.
    let before = memory();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = Arc::clone(&peak);
        async move {
            loop {
                peak.fetch_max(memory(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Rows the table must get: one per merchant and window the posts held.
    let mut expected = BTreeSet::new();
    post_paced(
        addr,
        "fanout",
        templates,
        FAN_OUT_PHASE,
        |_, at, merchants, _| {
            let end = at.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
            for m in merchants {
                expected.insert((end, m.clone()));
            }
        },
    )
    .await?;
    let expected = expected.len() as u64;
    // The table's own count is what every subscriber must have received.
    let mut table = 0;
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = Conn::connect(addr).await?;
        let rows = post_json(
            &mut c,
            "/api/sql",
            &json!({"sql": "SELECT count(*) AS n FROM fanout"}),
        )
        .await?;
        let n = rows[0]["n"].as_u64().unwrap_or(0);
        let done = received.iter().all(|r| r.load(Ordering::Relaxed) >= n);
        if n == table && n >= expected && done {
            break;
        }
        table = n;
    }
    // What the stalled subscriber was sent, read now: its rows, then the server's message.
    let mut stuck_text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut stuck_text)).await;
    let stuck_text = String::from_utf8_lossy(&stuck_text);
    let dropped = stuck_text.contains("event: dropped");
    for r in readers {
        if r.is_finished() {
            r.await??;
        } else {
            r.abort();
        }
    }
    stop_query(addr, "fanout").await?;
    let counts: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    let short = counts.iter().filter(|c| **c != table).count();
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let all = short == 0 && table == expected;
    let mut lines = vec![format!(
        "serve: {SUBSCRIBERS} SSE subscribers, {RATE} events/s for {}s: the table has {table} rows ({expected} computed from the posts); {}; resident memory {before} MiB before the phase, at most {} MiB more during it",
        FAN_OUT_PHASE.as_secs(),
        if short == 0 {
            "every subscriber got every row".to_string()
        } else {
            format!(
                "{short} subscribers got another count (least {}, most {})",
                counts.iter().min().unwrap_or(&0),
                counts.iter().max().unwrap_or(&0)
            )
        },
        peak.saturating_sub(before),
    )];
    lines.push(format!(
        "serve: a subscriber that never reads: {}",
        if dropped {
            "dropped with a message, the others unaffected"
        } else {
            "not dropped (its socket buffers held every row)"
        }
    ));
    ensure!(all, "{}", lines[0]);
    Ok(lines)
}

/// The process's resident memory, MiB.
fn memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    kib("VmRSS:")
}

/// Removes the bench's directory when dropped.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
