//! `paystream serve` against a real server process on loopback: the HTTP API, SSE, batch SQL,
//! `psql` over the Postgres wire protocol, the token, body limits, restarts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ok, paystream, repo};
use crate::websocket::WebSocket;

/// A server process; killed when dropped.
pub(crate) struct Served {
    child: Child,
    pub(crate) http: SocketAddr,
    pg: Option<u16>,
}

impl Served {
    /// Starts `serve` over `data` on free ports with `args`, waiting until it is ready.
    pub(crate) fn start(data: &Path, args: &[&str]) -> Served {
        let mut child = paystream(data)
            .args(["serve", "--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
            .args(["--checkpoint-interval", "500ms", "--workers", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut http, mut pg) = (None, None);
        while http.is_none() || pg.is_none() {
            let line = lines.next().expect("serve printed its addresses").unwrap();
            if let Some(rest) = line.split("dashboard http://").nth(1) {
                http = Some(rest.split('/').next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.split(" -p ").nth(1) {
                pg = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let s = Served {
            child,
            http: http.unwrap(),
            pg,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.get("/healthz", None).0 != 200 {
            assert!(Instant::now() < deadline, "serve never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        request(self.http, method, path, token, body)
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.request("GET", path, token, None)
    }

    pub(crate) fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        self.request("POST", path, token, Some(body.as_bytes()))
    }

    /// `DELETE /api/queries/{name}`, which must succeed: the query's state after it.
    fn delete_query(&self, name: &str, token: &str) -> String {
        let (code, body) =
            self.request("DELETE", &format!("/api/queries/{name}"), Some(token), None);
        assert_eq!(code, 200, "{body}");
        json(&body)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// SIGTERM, then waits: every query takes its final checkpoint.
    fn stop(mut self) {
        // SAFETY: plain kill(2) of our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body (its `Content-Length`
/// bytes when the answer says, else up to the close: a server may keep the connection open
/// despite `Connection: close`, as Chromium's DevTools endpoint does).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or_default();
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let mut length = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
        out.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    match length {
        Some(n) => {
            let mut b = vec![0; n];
            let _ = r.read_exact(&mut b);
            out.extend_from_slice(&b);
        }
        None => {
            let _ = r.read_to_end(&mut out);
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `psql` on `port` as user paystream with `password`, running `sql` (unaligned, tuples only).
fn psql(port: u16, password: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "paystream", "-d", "paystream", "-At", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Reads an SSE stream in a thread; the `data:` lines so far.
fn subscribe(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let seen = std::sync::Arc::clone(&rows);
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(d) = line
                .strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
            {
                seen.lock().unwrap().push(d.to_string());
            }
        }
    });
    rows
}

/// Waits for `f` to hold, up to a minute.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const QUERY: &str = "SELECT merchant_id, currency, window_start, window_end, count(*) AS payments, sum(amount_minor) AS amount_minor\nFROM TUMBLE(payments, event_time, INTERVAL '1' SECOND)\nGROUP BY merchant_id, currency, window_start, window_end";

/// Generated events and three valid events a minute after the last, which close every window
/// before them (posted round-robin, one reaches each partition); their time.
fn events(dir: &Path) -> (PathBuf, Vec<String>, String) {
    let path = dir.join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args([
            "gen",
            "--events",
            "3000",
            "--seed",
            "7",
            "--rate",
            "100",
            "--malformed",
            "0.01",
            "-o",
        ])
        .arg(&path));
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut last: serde_json::Value = lines
        .iter()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["event_id"].is_string() && v["event_type"] == "authorization")
        })
        .unwrap();
    let latest = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| paystream::time::parse_rfc3339_millis(v["event_time"].as_str()?))
        .max()
        .unwrap();
    let closing = paystream::time::rfc3339(latest + 60_000);
    last["event_time"] = closing.clone().into();
    for i in 0..3 {
        last["event_id"] = format!("evt_closing_{i}").into();
        last["payment_id"] = format!("pay_closing_{i}").into();
        lines.push(last.to_string());
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines, closing)
}

/// Result rows as sorted JSON texts, without the closing event's window.
fn rows(values: impl IntoIterator<Item = serde_json::Value>, closing: &str) -> Vec<String> {
    let mut out: Vec<String> = values
        .into_iter()
        .filter(|v| v["window_end"].as_str().unwrap_or("~") <= closing)
        .map(|v| {
            let m: BTreeMap<String, serde_json::Value> = serde_json::from_value(v).unwrap();
            serde_json::to_string(&m).unwrap()
        })
        .collect();
    out.sort();
    out
}

/// Submit, ingest in three parts with a server restart between, read the live result table by
/// SSE, `/api/sql` and `psql`: the rows equal `replay` of the same query over the same events,
/// each once (exactly-once across the restart); bad SQL is refused with its position and
/// starts nothing; the token guards the API and not the page, the health check or metrics.
#[test]
fn a_served_query_equals_its_replay_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (file, lines, closing) = events(dir.path());
    let query = dir.path().join("q.sql");
    std::fs::write(&query, QUERY).unwrap();
    let replayed = ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("replay")
        .arg(&file)
        .arg("--query")
        .arg(&query));
    let expected = rows(replayed.lines().map(json), &closing);
    assert!(expected.len() > 100, "{}", expected.len());

    let t = "s3cret-token";
    let s = Served::start(&data, &["--token", t]);
    assert_eq!(s.get("/api/queries", None).0, 401);
    assert_eq!(s.get("/api/queries", Some("wrong")).0, 401);
    assert_eq!(s.get("/", None).0, 200);
    assert_eq!(s.get("/metrics", None).0, 200);
    assert_eq!(
        s.post(
            "/api/topics",
            Some(t),
            r#"{"name": "payments", "partitions": 3}"#
        )
        .0,
        201
    );
    assert_eq!(
        s.post("/api/topics", Some(t), r#"{"name": "payments"}"#).0,
        409
    );

    let bad = serde_json::json!({"name": "bad", "sql": "SELECT merchant_id,\n  nosuch(amount_minor) AS x\nFROM payments"});
    let (code, body) = s.post("/api/queries", Some(t), &bad.to_string());
    assert_eq!(code, 400, "{body}");
    let refusal = json(&body);
    assert_eq!(refusal["line"], 2, "{body}");
    assert!(
        refusal["error"].as_str().unwrap().contains("nosuch"),
        "{body}"
    );
    assert_eq!(
        json(&s.get("/api/queries", Some(t)).1),
        serde_json::json!([])
    );

    let submit = serde_json::json!({"name": "per_second", "sql": QUERY});
    let (code, body) = s.post("/api/queries", Some(t), &submit.to_string());
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body)["state"], "running");
    assert_eq!(s.post("/api/queries", Some(t), &submit.to_string()).0, 409);
    let live = subscribe(s.http, "/api/queries/per_second/results", t);

    // A third of the events, then a restart, then the rest.
    let third = lines.len() / 3;
    let post = |s: &Served, part: &[String]| {
        let body = part.join("\n") + "\n";
        let (code, body) = s.post("/api/topics/payments/events?key=none", Some(t), &body);
        assert_eq!(code, 200, "{body}");
        let a = json(&body);
        (
            a["appended"].as_u64().unwrap() + a["screened"].as_u64().unwrap(),
            a["appended"].as_u64().unwrap(),
        )
    };
    let (posted, appended) = post(&s, &lines[..third]);
    assert_eq!(posted, third as u64);
    eventually("live rows", || !live.lock().unwrap().is_empty());
    let first = json(&live.lock().unwrap()[0]);
    assert!(
        first["merchant_id"].is_string() && first["window_end"].is_string(),
        "{first}"
    );
    eventually("a checkpoint", || {
        let q = json(&s.get("/api/queries/per_second", Some(t)).1);
        q["metrics"]["last_checkpoint"]["id"].as_u64().unwrap_or(0) > 1
    });
    let count = |s: &Served| {
        json(
            &s.post(
                "/api/sql",
                Some(t),
                r#"{"sql": "SELECT count(*) AS n FROM per_second"}"#,
            )
            .1,
        )[0]["n"]
            .as_u64()
            .unwrap()
    };
    // Every event of the first third read, its rows out: the count no longer moves.
    eventually("the first third read", || {
        let q = json(&s.get("/api/queries/per_second", Some(t)).1);
        q["metrics"]["events_in"].as_u64() == Some(appended)
    });
    let before_restart = count(&s);
    assert!(before_restart > 0);
    s.stop();

    // Ready means the result table is read back: the first request after it sees every row.
    let s = Served::start(&data, &["--token", t]);
    assert_eq!(count(&s), before_restart);
    let q = json(&s.get("/api/queries/per_second", Some(t)).1);
    assert_eq!(q["state"], "running", "{q}");
    // Two more readers of the rows from here on: only committed ones, the retained ones first;
    // and a WebSocket.
    let committed = subscribe(
        s.http,
        "/api/queries/per_second/results?committed=true&from=earliest",
        t,
    );
    let ws_rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let bearer = format!("Authorization: Bearer {t}");
        let mut ws = WebSocket::connect(s.http, "/api/queries/per_second/ws", &[&bearer]);
        let rows = std::sync::Arc::clone(&ws_rows);
        std::thread::spawn(move || {
            while let Some(m) = ws.receive() {
                rows.lock().unwrap().push(m);
            }
        });
    }
    assert_eq!(post(&s, &lines[third..]).0, (lines.len() - third) as u64);
    let sql = |s: &Served, q: &str| {
        json(
            &s.post(
                "/api/sql",
                Some(t),
                &serde_json::json!({ "sql": q }).to_string(),
            )
            .1,
        )
    };
    let mut seen = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen[0]["n"].as_u64().unwrap_or(0) < expected.len() as u64 {
        let q = s.get("/api/queries/per_second", Some(t)).1;
        if Instant::now() > deadline {
            let got = rows(
                sql(&s, "SELECT * FROM per_second")
                    .as_array()
                    .unwrap()
                    .clone(),
                &closing,
            );
            let missing: Vec<_> = expected.iter().filter(|r| !got.contains(r)).collect();
            let extra: Vec<_> = got.iter().filter(|r| !expected.contains(r)).collect();
            panic!(
                "{} of {} windows: missing {missing:?}, extra {extra:?}; {q}",
                seen[0]["n"],
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        seen = sql(
            &s,
            &format!("SELECT count(*) AS n FROM per_second WHERE window_end <= '{closing}'"),
        );
    }
    let table = sql(&s, "SELECT * FROM per_second");
    assert_eq!(rows(table.as_array().unwrap().clone(), &closing), expected);

    // The WebSocket got every row emitted since it connected; the committed stream, once their
    // checkpoints committed them, every row of the table (the retained ones first).
    let total = table.as_array().unwrap().len();
    eventually("the WebSocket's rows", || {
        ws_rows.lock().unwrap().len() >= total - before_restart as usize
    });
    eventually("the committed rows", || {
        committed.lock().unwrap().len() >= total
    });
    std::thread::sleep(Duration::from_millis(1500));
    let all = rows(table.as_array().unwrap().clone(), "~");
    let got =
        |v: &std::sync::Mutex<Vec<String>>| rows(v.lock().unwrap().iter().map(|r| json(r)), "~");
    assert_eq!(got(&committed), all);
    let since = got(&ws_rows);
    assert_eq!(since.len(), total - before_restart as usize);
    assert!(since.iter().all(|r| all.contains(r)));

    // psql reads the same table; the token is the password.
    crate::dashboard::ensure_tool("psql", "postgresql-client");
    let out = psql(
        s.pg.unwrap(),
        t,
        &format!("SELECT count(*) FROM per_second WHERE window_end <= '{closing}'"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected.len().to_string()
    );
    let refused = psql(s.pg.unwrap(), "wrong", "SELECT 1");
    assert!(!refused.status.success());

    // The extended query protocol with parameters, as drivers and Grafana use it: pg8000, a
    // pure-Python driver, binds every parameter.
    crate::dashboard::ensure_python_module("pg8000");
    let script = format!(
        "import pg8000.native as p\nc = p.Connection(user='paystream', password='{t}', host='127.0.0.1', port={}, database='paystream')\nprint(c.run(\"SELECT count(*) FROM per_second WHERE window_end <= CAST(:closing AS TIMESTAMP) AND payments >= :n\", closing='{closing}', n=1)[0][0])\n",
        s.pg.unwrap()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected.len().to_string()
    );
    for write in [
        "COPY (SELECT 1) TO '/tmp/paystream-copy.csv'",
        "EXPLAIN ANALYZE SELECT 1",
        "DROP TABLE per_second",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let out = psql(s.pg.unwrap(), t, write);
        assert!(!out.status.success(), "{write} ran");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not allowed"),
            "{write}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An order-dependent function is refused as a plain aggregate here too.
    let out = psql(
        s.pg.unwrap(),
        t,
        "SELECT ewma(x, 0.5) FROM (VALUES (1.0), (2.0)) AS v(x)",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("window function"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The settings drivers send are answered (kept per connection, or ignored).
    for set in [
        "SET application_name = 'grafana'",
        "SET standard_conforming_strings = on",
        "SET TIME ZONE 'UTC'",
    ] {
        let out = psql(s.pg.unwrap(), t, set);
        assert!(
            out.status.success(),
            "{set}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let metrics = s.get("/metrics", None).1;
    assert!(
        metrics.contains("paystream_events_in_total{query=\"per_second\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("paystream_http_requests_total{"),
        "{metrics}"
    );

    // A stopped query's table is still there after a restart.
    assert_eq!(s.delete_query("per_second", t), "stopped");
    s.stop();
    let s = Served::start(&data, &["--token", t]);
    assert_eq!(
        json(&s.get("/api/queries/per_second", Some(t)).1)["state"],
        "stopped"
    );
    let table = sql(&s, "SELECT * FROM per_second");
    assert_eq!(rows(table.as_array().unwrap().clone(), &closing), expected);
    s.stop();
}

/// Limits and mistakes: a body over `--max-body` is 413, a request without the token 401
/// before its body is read, unknown names 404; a savepoint, a stop and a forget; eight clients
/// posting at once lose nothing.
#[test]
fn serve_refuses_what_it_should_and_serves_clients_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = "tok";
    let s = Served::start(&data, &["--token", t, "--max-body", "256KiB"]);
    assert_eq!(
        s.post(
            "/api/topics",
            Some(t),
            r#"{"name": "payments", "partitions": 2}"#
        )
        .0,
        201
    );
    let big = "x".repeat(300 * 1024);
    assert_eq!(s.post("/api/topics/payments/events", Some(t), &big).0, 413);
    // Headers announcing 100 MB and no body: answered at once, not after reading it.
    let mut c = TcpStream::connect(s.http).unwrap();
    write!(c, "POST /api/topics/payments/events HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\n\r\n", s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    for path in [
        "/api/queries/nope",
        "/api/topics/nope",
        "/api/queries/nope/results",
    ] {
        assert_eq!(s.get(path, Some(t)).0, 404, "{path}");
    }
    assert_eq!(
        s.request("DELETE", "/api/queries/nope", Some(t), None).0,
        404
    );
    assert_eq!(s.post("/api/queries/nope/savepoint", Some(t), "").0, 404);
    assert_eq!(s.post("/api/topics/nope/events", Some(t), "{}").0, 404);
    // An order-dependent function is a window function in batch SQL too.
    let (code, body) = s.post(
        "/api/sql",
        Some(t),
        r#"{"sql": "SELECT ewma(x, 0.5) AS e FROM (VALUES (1.0), (2.0)) AS v(x)"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("window function"), "{body}");
    // A submitted query writes files only in the server's files directory.
    let outside = dir.path().join("outside.jsonl");
    let file_query = |path: &Path| {
        serde_json::json!({"name": "to_file", "sql": format!(
            "CREATE SOURCE p WITH (connector = 'log', topic = 'payments');\nCREATE SINK out WITH (connector = 'file',\n  path = '{}');\nINSERT INTO out SELECT event_id FROM p;",
            path.display()
        )})
        .to_string()
    };
    let (code, body) = s.post("/api/queries", Some(t), &file_query(&outside));
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        (json(&body)["line"].as_u64(), json(&body)["column"].as_u64()),
        (Some(3), Some(10)),
        "{body}"
    );
    assert!(!outside.exists());
    let inside = data.canonicalize().unwrap().join("files/out.jsonl");
    let (code, body) = s.post("/api/queries", Some(t), &file_query(&inside));
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        s.request("DELETE", "/api/queries/to_file", Some(t), None).0,
        200
    );
    // A page elsewhere cannot drive the API, token or not.
    let mut c = TcpStream::connect(s.http).unwrap();
    write!(c, "GET /api/queries HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n", s.http).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    let sql = serde_json::json!({"name": "per_card", "sql": "SELECT card_id, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY card_id, window_start, window_end"});
    assert_eq!(s.post("/api/queries", Some(t), &sql.to_string()).0, 201);
    // A table sink's retention, in event time: only the last minute's windows stay.
    let file = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json', event_time = 'event_time');\nCREATE SINK dead_letters WITH (connector = 'log', topic = 'recent.dlq');\nCREATE SINK recent WITH (connector = 'table', retain = '1 minute');\nINSERT INTO recent SELECT merchant_id, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end;";
    let (code, body) = s.post(
        "/api/queries",
        Some(t),
        &serde_json::json!({"name": "recent", "sql": file}).to_string(),
    );
    assert_eq!(code, 201, "{body}");
    let events: Vec<String> = std::fs::read_to_string(repo("data/sample_events.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let chunks: Vec<String> = events
        .chunks(events.len().div_ceil(8))
        .map(|c| c.join("\n"))
        .collect();
    let http = s.http;
    let total: u64 = std::thread::scope(|scope| {
        let posts: Vec<_> = chunks
            .iter()
            .map(|c| {
                scope.spawn(move || {
                    let (code, body) = request(
                        http,
                        "POST",
                        "/api/topics/payments/events",
                        Some(t),
                        Some(c.as_bytes()),
                    );
                    assert_eq!(code, 200, "{body}");
                    let a = json(&body);
                    a["appended"].as_u64().unwrap() + a["screened"].as_u64().unwrap()
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).sum()
    });
    let nonblank = events.iter().filter(|l| !l.trim().is_empty()).count() as u64;
    assert_eq!(total, nonblank);
    let topic = json(&s.get("/api/topics/payments", Some(t)).1);
    let stored = topic["records"].as_u64().unwrap();
    eventually("every event read", || {
        json(&s.get("/api/queries/per_card", Some(t)).1)["metrics"]["events_in"].as_u64()
            == Some(stored)
    });
    let sql = |q: &str| {
        json(
            &s.post(
                "/api/sql",
                Some(t),
                &serde_json::json!({ "sql": q }).to_string(),
            )
            .1,
        )
    };
    eventually("recent windows", || {
        sql("SELECT count(*) AS n FROM recent")[0]["n"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let span = sql(
        "SELECT CAST(to_unixtime(max(window_end)) - to_unixtime(min(window_end)) AS BIGINT) AS s, count(*) AS n FROM recent",
    );
    assert!(span[0]["s"].as_i64().is_some_and(|s| s <= 60), "{span}");
    let (code, body) = s.post("/api/queries/per_card/savepoint", Some(t), "");
    assert_eq!(code, 200, "{body}");
    assert!(
        json(&body)["savepoint"]
            .as_str()
            .unwrap()
            .starts_with("per_card-"),
        "{body}"
    );
    assert_eq!(s.delete_query("per_card", t), "stopped");
    assert_eq!(s.delete_query("per_card", t), "deleted");
    assert_eq!(s.get("/api/queries/per_card", Some(t)).0, 404);
    let doc = json(&s.get("/api/openapi.json", Some(t)).1);
    assert!(doc["paths"]["/api/queries"].is_object());
}
