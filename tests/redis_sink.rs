//! The Redis sink against a real server on loopback (started by `scripts/services.sh`): a
//! stream gets every result row, one field per column; keys hold each key's latest row, the
//! same JSON the embedded log's sink writes.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::services::require;
use crate::util::{consume_all, ok, paystream};

const URL: &str = "redis://127.0.0.1:6379";

/// The entries of `stream`, each as its field → value map.
fn entries(c: &mut redis::Connection, stream: &str) -> Vec<BTreeMap<String, String>> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    };
    let all: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    let redis::Value::Array(all) = all else {
        panic!("XRANGE: {all:?}")
    };
    all.iter()
        .map(|e| {
            let redis::Value::Array(e) = e else {
                panic!("entry {e:?}")
            };
            let redis::Value::Array(fields) = &e[1] else {
                panic!("fields {e:?}")
            };
            fields
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect()
        })
        .collect()
}

#[test]
fn a_redis_stream_gets_every_row_and_keys_their_latest() {
    require("redis", 6379);
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "50000", "--seed", "47", "-o"])
        .arg(&events));
    let data = dir.path().join("data");
    ok(paystream(&data).args(["topic", "create", "payments", "--partitions", "2"]));
    ok(paystream(&data).args(["produce", "payments"]).arg(&events));
    let per_minute = "SELECT merchant_id, currency, window_start, count(*) AS n, sum(amount_minor) AS amount_minor \
        FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, currency, window_start";
    let latest = "SELECT merchant_id, window_start, count(*) AS n \
        FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start";
    let q = data.join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json');\n\
             CREATE SINK feed WITH (connector = 'redis', url = '{URL}', stream = 'feed_{tag}');\n\
             CREATE SINK latest WITH (connector = 'redis', url = '{URL}', key_prefix = 'latest_{tag}:', key = 'merchant_id');\n\
             CREATE SINK feed_log WITH (connector = 'log', topic = 'feed_log');\n\
             CREATE SINK latest_log WITH (connector = 'log', topic = 'latest_log');\n\
             INSERT INTO feed {per_minute};\nINSERT INTO feed_log {per_minute};\n\
             INSERT INTO latest {latest};\nINSERT INTO latest_log {latest};\n"
        ),
    )
    .unwrap();
    ok(paystream(&data).arg("run").arg(&q).arg("--until-end"));
    let mut c = redis::Client::open(URL).unwrap().get_connection().unwrap();

    // The stream: one entry per row, each column a field (text as it is, numbers as JSON).
    let want = consume_all(&data, "feed_log");
    assert!(!want.is_empty());
    let mut got: Vec<String> = entries(&mut c, &format!("feed_{tag}"))
        .into_iter()
        .map(|e| {
            format!(
                "{{\"merchant_id\":\"{}\",\"currency\":\"{}\",\"window_start\":\"{}\",\"n\":{},\"amount_minor\":{}}}",
                e["merchant_id"], e["currency"], e["window_start"], e["n"], e["amount_minor"]
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "the stream's entries");

    // The keys: each merchant's row of its latest minute.
    let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in consume_all(&data, "latest_log") {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let (m, w) = (
            v["merchant_id"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
        );
        if last.get(&m).is_none_or(|(lw, _)| *lw < w) {
            last.insert(m, (w, line));
        }
    }
    assert!(last.len() > 10);
    for (merchant, (_, line)) in &last {
        let stored: String = redis::cmd("GET")
            .arg(format!("latest_{tag}:{merchant}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(&stored, line, "merchant {merchant}");
    }
}
