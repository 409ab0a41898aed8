//! The dashboard in real headless Chromium, driven over the DevTools protocol: it loads
//! without console errors, shows a running query's rows within seconds of events being posted,
//! and shows a bad query's error; a screenshot is left in `target/tmp/dashboard.png`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{Served, request};
use crate::websocket::WebSocket;

/// Installs Debian package `package` when `command` is missing (the test set-up's one-time
/// install; cached by the machine afterwards).
pub(crate) fn ensure_tool(command: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !root {
            c.arg("apt-get");
        }
        let s = c
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            s.is_ok_and(|s| s.success()),
            "apt-get {args:?} failed: install {package}"
        );
    };
    apt(&["update", "-qq"]);
    apt(&["install", "-y", "-qq", package]);
}

/// Installs Python module `module` from PyPI when it is missing (a client library a test drives).
pub(crate) fn ensure_python_module(module: &str) {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let s = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                module,
            ])
            .status();
        assert!(s.is_ok_and(|s| s.success()), "pip install {module} failed");
    }
}

/// A headless Chromium and one page of it, spoken to over a WebSocket.
struct Browser {
    child: Child,
    ws: WebSocket,
    next_id: u64,
    /// Events received while waiting for answers.
    events: Vec<serde_json::Value>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        ensure_tool("chromium", "chromium");
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ])
            .args(["--remote-debugging-port=0", "--window-size=1400,1000"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let devtools = loop {
            let line = lines
                .next()
                .expect("chromium printed its DevTools address")
                .unwrap();
            if let Some(url) = line.split("DevTools listening on ws://").nth(1) {
                break url
                    .split('/')
                    .next()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let targets: serde_json::Value =
            serde_json::from_str(&request(devtools, "GET", "/json", None, None).1).unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let path = page["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .split(&devtools.to_string())
            .nth(1)
            .unwrap()
            .to_string();
        let ws = WebSocket::connect(devtools, &path, &[]);
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, serde_json::json!({}));
        }
        b
    }

    fn send(&mut self, text: &str) {
        self.ws.send(text);
    }

    fn receive(&mut self) -> String {
        self.ws
            .receive()
            .expect("chromium closed the DevTools connection")
    }

    /// Calls DevTools method `method`; its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&serde_json::json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let m: serde_json::Value = serde_json::from_str(&self.receive()).unwrap();
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {m}");
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// Evaluates `js` in the page (awaiting a promise); its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits until `js` evaluates to true, up to 30 s.
    fn until(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(js) != serde_json::Value::Bool(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Console errors and uncaught exceptions so far (a failed request's own network log line
    /// is the browser's, not the page's).
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Runtime.consoleAPICalled" && e["params"]["type"] == "error")
                    || (e["method"] == "Log.entryAdded"
                        && e["params"]["entry"]["level"] == "error"
                        && e["params"]["entry"]["source"] != "network")
            })
            .map(|e| e.to_string())
            .collect()
    }
}

/// Standard base64, for the screenshot.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (value(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_dashboard_shows_live_rows_and_a_bad_querys_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = "page-token";
    let s = Served::start(&dir.path().join("data"), &["--token", t]);
    assert_eq!(
        s.post(
            "/api/topics",
            Some(t),
            r#"{"name": "payments", "partitions": 2}"#
        )
        .0,
        201
    );
    let q = serde_json::json!({"name": "settlement", "sql": "SELECT merchant_id, currency, window_start, window_end, count(*) AS captures, sum(amount_minor) AS captured_minor FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) WHERE event_type = 'capture' GROUP BY merchant_id, currency, window_start, window_end"});
    assert_eq!(s.post("/api/queries", Some(t), &q.to_string()).0, 201);

    let mut b = Browser::start();
    b.call(
        "Page.navigate",
        serde_json::json!({"url": format!("http://{}/?token={t}", s.http)}),
    );
    b.until("the running query", "document.querySelector('#queries')?.textContent.includes('settlement') && document.querySelector('#queries').textContent.includes('running')");
    b.eval("document.querySelector('#queries button') && [...document.querySelectorAll('#queries button')].find(x => /results/i.test(x.textContent))?.click(), true");
    let events = std::fs::read_to_string(crate::util::repo("data/sample_events.jsonl")).unwrap();
    let (code, body) = s.post("/api/topics/payments/events", Some(t), &events);
    assert_eq!(code, 200, "{body}");
    b.until(
        "result rows",
        "document.querySelectorAll('#results tbody tr').length > 0",
    );
    // The chart of the windowed rows (redrawn at most once a second).
    b.until("the chart", "!!document.querySelector('#chart svg')");
    let shown = b.eval("document.querySelector('#results').textContent");
    assert!(
        shown.as_str().unwrap().contains("UTC") || shown.as_str().unwrap().contains(':'),
        "{shown}"
    );

    // An updating query: the live table shows the latest row of each key, not every change.
    let q = serde_json::json!({"name": "per_merchant", "sql": "SELECT merchant_id, count(*) AS payments FROM payments GROUP BY merchant_id"});
    assert_eq!(s.post("/api/queries", Some(t), &q.to_string()).0, 201);
    b.until(
        "the updating query",
        "!!document.querySelector('#queries tr[data-name=per_merchant] button[data-act=results]')",
    );
    b.eval("document.querySelector('#queries tr[data-name=per_merchant] button[data-act=results]').click(), true");
    // The same events again, as new ones just after the last: every merchant's count changes.
    let valid: Vec<(serde_json::Value, i64)> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event_id"].is_string())
        .filter_map(|e| {
            let at = paystream::time::parse_rfc3339_millis(e["event_time"].as_str()?)?;
            Some((e, at))
        })
        .collect();
    let first = valid.iter().map(|(_, at)| *at).min().unwrap();
    let last = valid.iter().map(|(_, at)| *at).max().unwrap();
    let later: String = valid
        .into_iter()
        .map(|(mut e, at)| {
            e["event_time"] = paystream::time::rfc3339(at + (last - first) + 10_000).into();
            e["event_id"] = format!("{}_again", e["event_id"].as_str().unwrap()).into();
            e.to_string() + "\n"
        })
        .collect();
    let (code, body) = s.post("/api/topics/payments/events", Some(t), &later);
    assert_eq!(code, 200, "{body}");
    b.until(
        "the merchants' changed counts",
        "(() => { const m = document.querySelector('#res-count').textContent.match(/^([\\d,]+) keys.* ([\\d,]+) changes/); return !!m && +m[2].replace(/,/g, '') > +m[1].replace(/,/g, '') && document.querySelectorAll('#results tbody tr').length > 1; })()",
    );
    // Rows received exceed the merchants, yet each merchant shows once.
    let merchants = b.eval(
        "[...document.querySelectorAll('#results tbody tr')].map(r => r.cells[0].textContent)",
    );
    let merchants: Vec<&str> = merchants
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = merchants.iter().collect();
    assert_eq!(distinct.len(), merchants.len(), "{merchants:?}");
    let count = b.eval("document.querySelector('#res-count').textContent");
    let count = count.as_str().unwrap();
    let changes: u64 = count
        .split(" · ")
        .find_map(|p| p.strip_suffix(" changes received"))
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("{count}"));
    assert!(changes > merchants.len() as u64, "{count}");

    b.eval("document.querySelector('#q-name').value = 'broken'; document.querySelector('#q-sql').value = 'SELECT merchant_id,\\n  nosuch(amount_minor)\\nFROM payments'; document.querySelector('#submit-btn').click(); true");
    b.until(
        "the bad query's error",
        "document.querySelector('#submit-msg').textContent.includes('nosuch')",
    );
    let msg = b.eval("document.querySelector('#submit-msg').textContent");
    assert!(msg.as_str().unwrap().contains("line 2"), "{msg}");

    let shot = b.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, png).unwrap();
    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
