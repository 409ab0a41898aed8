//! The Kafka connector against a real Kafka-protocol broker on loopback (started by
//! `scripts/services.sh`): events produced into a topic, a job reading it with a Kafka source
//! and writing a Kafka sink, killed with `kill -9` at random moments and restarted — the source
//! is exactly-once (its offsets live in the checkpoints), the sink at-least-once with nothing
//! lost or wrong, and the group's committed offsets reach the topic's end; the broker restarting
//! under the running job loses nothing either.

use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::util::services::require;
use crate::util::{finish_equals, kill_rounds, ok, reference_rows, settlement_select};

const BROKER: &str = "127.0.0.1:9092";
const TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", BROKER);
    c
}

/// Creates `topic` with `partitions` and appends `lines` to it, line `i` to partition
/// `i % partitions` (as `paystream produce --key none` spreads them over the embedded log).
fn produce(topic: &str, partitions: i32, lines: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = config().create().unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let created = futures::executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: BaseProducer = config().set("linger.ms", "20").create().unwrap();
    for (i, line) in lines.iter().enumerate() {
        let mut record = BaseRecord::<(), str>::to(topic)
            .payload(*line)
            .partition(i as i32 % partitions);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT).unwrap();
}

/// Every record of `topic` from its start to its current end: (key, value).
fn read_topic(topic: &str) -> Vec<(Option<String>, String)> {
    let c: BaseConsumer = config()
        .set("group.id", "paystream-test-reader")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), TIMEOUT).unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        ends.push(c.fetch_watermarks(topic, p, TIMEOUT).unwrap().1);
    }
    c.assign(&tpl).unwrap();
    let mut next = vec![0i64; n as usize];
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while next.iter().zip(&ends).any(|(a, b)| a < b) {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} took too long"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            next[m.partition() as usize] = m.offset() + 1;
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn kafka_source_is_exactly_once_and_the_sink_loses_nothing_through_kill_9() {
    require("kafka", 9092);
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (source_topic, sink_topic, group) = (
        format!("payments_{tag}"),
        format!("settlement_{tag}"),
        format!("risk_{tag}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "200000", "--seed", "41", "-o"])
        .arg(&events));
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    produce(&source_topic, 3, &lines);

    // The reference: the same records, spread the same way over an embedded log topic.
    let settlement = settlement_select();
    let want = reference_rows(
        &dir.path().join("reference"),
        &events,
        3,
        &["--key", "none"],
        &[("settlement", &settlement)],
    )
    .remove(0);

    // The job over Kafka, killed at random moments, then run to the end.
    let crashed = dir.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let q = crashed.join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'kafka', bootstrap_servers = '{BROKER}', \
               topic = '{source_topic}', group_id = '{group}', format = 'json');\n\
             CREATE SINK out WITH (connector = 'kafka', topic = '{sink_topic}', key = 'merchant_id', \
               partitions = '2', properties.linger.ms = '10');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO out {settlement};\n\
             INSERT INTO settlement {settlement};\n"
        ),
    )
    .unwrap();
    let seed = kill_rounds(&crashed, &q, 4, 500..2500, Some("kafka"));
    // Exactly once from the Kafka source: the log sink holds what the log source gave.
    finish_equals(&crashed, &q, "settlement", &want, seed);

    // At least once into the Kafka sink: every row, nothing else, keyed by merchant.
    let records = read_topic(&sink_topic);
    let mut values: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(
        values, want,
        "the Kafka sink's distinct records (seed {seed})"
    );
    for (key, value) in records.iter().take(100) {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(key.as_deref(), v["merchant_id"].as_str(), "{value}");
    }

    // The group's committed offsets reached the topic's end.
    let c: BaseConsumer = config().set("group.id", &group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&source_topic, p);
    }
    let committed = c.committed_offsets(tpl, TIMEOUT).unwrap();
    for p in 0..3 {
        let end = c.fetch_watermarks(&source_topic, p, TIMEOUT).unwrap().1;
        assert_eq!(
            committed.find_partition(&source_topic, p).unwrap().offset(),
            Offset::Offset(end),
            "partition {p}"
        );
    }
}

/// Metadata columns (`METADATA FROM 'key' | 'partition' | 'offset' | 'timestamp' | 'headers' |
/// 'header.<name>' | 'topic'`) hold what the broker kept beside each record, whatever the
/// payload says; a producer's retry (same payload at another offset, with another timestamp)
/// is still a duplicate, and metadata that is no text is dead-lettered with its reason.
#[test]
fn kafka_metadata_columns_hold_each_records_key_partition_offset_time_and_headers() {
    use rdkafka::message::{Header, OwnedHeaders};
    require("kafka", 9092);
    // The `topic` column holds the name, which is screened like any text: no 13-digit run (a
    // millisecond time passes Luhn's check one time in ten, and would be refused as a card).
    let topic = format!(
        "meta_{}_{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let admin: AdminClient<DefaultClientContext> = config().create().unwrap();
    let new = NewTopic::new(&topic, 2, TopicReplication::Fixed(1));
    let created = futures::executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    // (payload, key, headers, partition, timestamp) of each record, in the order sent.
    type Sent = (
        String,
        Option<Vec<u8>>,
        Vec<(String, Option<String>)>,
        i32,
        i64,
    );
    let base = 1_790_000_000_000i64;
    let mut sent: Vec<Sent> = Vec::new();
    for i in 0..400i64 {
        // The payload's own `k` and `off` members are not the metadata columns' values.
        let payload = format!(r#"{{"id":"e{i}","amount_minor":{i},"k":"payload","off":-1}}"#);
        let key = (i % 3 != 0).then(|| format!("m{}", i % 7).into_bytes());
        let headers = match i % 4 {
            0 => vec![],
            1 => vec![("trace".to_string(), Some(format!("t{i}")))],
            2 => vec![
                ("trace".to_string(), Some("first".to_string())),
                ("x-other".to_string(), Some("o\"q".to_string())),
                ("trace".to_string(), Some(format!("t{i}"))),
            ],
            _ => vec![("trace".to_string(), None)],
        };
        sent.push((payload, key, headers, (i % 2) as i32, base + i * 1000));
    }
    // A producer's retries: the same payloads again, later, on the same partition (the
    // original comes first there, so it is the one kept).
    for i in [10usize, 11, 12] {
        let (payload, key, _, p, _) = sent[i].clone();
        sent.push((payload, key, vec![], p, base + 500_000 + i as i64));
    }
    // A key that is no text, and a card number in a header: dead letters.
    sent.push((
        r#"{"id":"bad-key","amount_minor":1}"#.into(),
        Some(vec![0xff, 0xfe]),
        vec![],
        0,
        base + 600_000,
    ));
    sent.push((
        r#"{"id":"card","amount_minor":1}"#.into(),
        None,
        vec![("trace".into(), Some("4111111111111111".into()))],
        1,
        base + 600_001,
    ));
    // Idempotent: each partition's records keep the order sent, so their offsets are known.
    let producer: BaseProducer = config()
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (payload, key, headers, p, ts) in &sent {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        let mut record = BaseRecord::<[u8], str>::to(&topic)
            .payload(payload.as_str())
            .partition(*p)
            .timestamp(*ts)
            .headers(h);
        if let Some(k) = key {
            record = record.key(k.as_slice());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE p (\n  id VARCHAR NOT NULL,\n  amount_minor BIGINT,\n  k VARCHAR METADATA FROM 'key',\n  part INT METADATA FROM 'partition',\n  off BIGINT METADATA FROM 'offset' VIRTUAL,\n  ts TIMESTAMP METADATA FROM 'timestamp',\n  hs VARCHAR METADATA FROM 'headers',\n  trace VARCHAR METADATA FROM 'header.trace',\n  topic VARCHAR METADATA,\n  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND\n) WITH (connector = 'kafka', bootstrap_servers = '{BROKER}', topic = '{topic}', dedup_key = 'id');\n\
             CREATE SINK out WITH (connector = 'log', topic = 'out');\n\
             CREATE SINK per_minute WITH (connector = 'log', topic = 'per_minute');\n\
             INSERT INTO out SELECT id, amount_minor, k, part, off, ts, hs, trace, topic FROM p;\n\
             INSERT INTO per_minute SELECT window_start, count(*) AS n, sum(amount_minor) AS total \
               FROM TUMBLE(p, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;\n"
        ),
    )
    .unwrap();
    let run = crate::util::paystream(dir.path())
        .arg("run")
        .arg(&q)
        .arg("--until-end")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "read={} accepted=400 duplicates=3 dead_lettered=2",
            sent.len()
        )),
        "{said}"
    );
    assert!(!said.contains("4111111111111111"), "{said}");

    // The expected row of each first delivery, from what was sent.
    let mut offsets = [0i64; 2];
    let mut want = Vec::new();
    for (payload, key, headers, p, ts) in &sent {
        let offset = offsets[*p as usize];
        offsets[*p as usize] += 1;
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        if offset >= 200 || id == "bad-key" || id == "card" {
            continue; // a retry or a dead letter
        }
        let mut all = serde_json::Map::new();
        for (k, v) in headers {
            all.insert(
                k.clone(),
                v.clone().map_or(serde_json::Value::Null, Into::into),
            );
        }
        let trace = headers
            .iter()
            .rev()
            .find(|(k, _)| k == "trace")
            .and_then(|(_, v)| v.clone());
        let mut t = Vec::new();
        paystream::time::format_rfc3339_millis(*ts, &mut t);
        want.push(serde_json::json!({
            "id": id,
            "amount_minor": v["amount_minor"],
            "k": key.as_ref().map(|k| String::from_utf8(k.clone()).unwrap()),
            "part": p,
            "off": offset,
            "ts": String::from_utf8(t).unwrap(),
            "hs": serde_json::Value::Object(all).to_string(),
            "trace": trace,
            "topic": topic,
        }));
    }
    assert_eq!(want.len(), 400);
    let mut got: Vec<serde_json::Value> = crate::util::consume_all(dir.path(), "out")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_string();
    got.sort_by_key(id);
    want.sort_by_key(id);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }

    // The record timestamp is the event time windows read: per-minute counts and sums of the
    // accepted records, from the timestamps they were sent with.
    let mut minutes = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for w in &want {
        let id = w["id"].as_str().unwrap();
        let i: i64 = id[1..].parse().unwrap();
        let ts = base + i * 1000;
        let m = minutes.entry(ts - ts.rem_euclid(60_000)).or_default();
        m.0 += 1;
        m.1 += w["amount_minor"].as_i64().unwrap();
    }
    let want_minutes: Vec<serde_json::Value> = minutes
        .iter()
        .map(|(start, (n, total))| {
            let mut t = Vec::new();
            paystream::time::format_rfc3339_millis(*start, &mut t);
            serde_json::json!({"window_start": String::from_utf8(t).unwrap(), "n": n, "total": total})
        })
        .collect();
    let mut got_minutes: Vec<serde_json::Value> =
        crate::util::consume_all(dir.path(), "per_minute")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    got_minutes.sort_by_key(|v| v["window_start"].as_str().unwrap().to_string());
    assert_eq!(got_minutes, want_minutes);
}

/// A file's records carry no broker metadata: `replay` (and `replay --into`) of a query whose
/// source declares METADATA columns is refused naming the column, before anything is read.
#[test]
fn replay_refuses_metadata_columns_a_file_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(&events, "{\"id\":\"e1\",\"ts\":1}\n").unwrap();
    let q = dir.path().join("q.sql");
    std::fs::write(
        &q,
        "CREATE SOURCE p (id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, off BIGINT METADATA FROM 'offset', WATERMARK FOR ts AS ts)\n  WITH (connector = 'kafka', topic = 't', dedup_key = 'id');\nSELECT id, off FROM p;\n",
    )
    .unwrap();
    for extra in [&[][..], &["--into", "t"][..]] {
        let o = crate::util::paystream(&dir.path().join("data"))
            .arg("replay")
            .arg(&events)
            .arg("--query")
            .arg(&q)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}");
        assert!(
            err.contains("column `off` reads METADATA FROM 'offset'")
                && err.contains("a file's record does not"),
            "{extra:?}: {err}"
        );
    }
}
