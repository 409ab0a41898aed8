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
