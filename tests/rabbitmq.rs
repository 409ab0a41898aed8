//! The RabbitMQ connector against a real server on loopback (started by
//! `scripts/services.sh`): events published to a queue, a job consuming it and publishing its
//! results to another queue, killed with `kill -9` at random moments and restarted — nothing
//! is acknowledged before its checkpoint, so the results equal those of the embedded log over
//! the same events; the sink queue holds every result (repeats carry the same message id); the
//! source queue ends empty.

use std::process::Command;

use futures::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::util::services::require;
use crate::util::{
    consume_all, finish_equals, kill_rounds, ok, paystream, reference_rows, settlement_select,
};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[test]
fn rabbitmq_source_and_sink_through_kill_9() {
    require("rabbitmq", 5672);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (source_queue, sink_queue) = (format!("payments_{tag}"), format!("settlement_{tag}"));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "100000", "--seed", "43", "-o"])
        .arg(&events));
    let text = std::fs::read_to_string(&events).unwrap();

    // The events, published persistent with confirms.
    let conn = rt
        .block_on(Connection::connect(URL, ConnectionProperties::default()))
        .unwrap();
    let channel = rt.block_on(conn.create_channel()).unwrap();
    rt.block_on(async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channel
            .queue_declare(
                source_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for line in text.lines() {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        source_queue.as_str().into(),
                        BasicPublishOptions::default(),
                        line.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap(),
            );
        }
        for c in futures::stream::iter(confirms)
            .then(|c| c)
            .collect::<Vec<_>>()
            .await
        {
            c.unwrap();
        }
    });

    // The reference: the same events in one embedded log partition, in the same order.
    let settlement = settlement_select();
    let want = reference_rows(
        &dir.path().join("reference"),
        &events,
        1,
        &[],
        &[("settlement", &settlement)],
    )
    .remove(0);

    let crashed = dir.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let q = crashed.join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'rabbitmq', url = '{URL}', queue = '{source_queue}', prefetch = '5000');\n\
             CREATE SINK out WITH (connector = 'rabbitmq', url = '{URL}', queue = '{sink_queue}');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO out {settlement};\n\
             INSERT INTO settlement {settlement};\n"
        ),
    )
    .unwrap();
    let seed = kill_rounds(&crashed, &q, 4, 300..1500, Some("rabbitmq"));
    finish_equals(&crashed, &q, "settlement", &want, seed);

    // The sink queue: every result, nothing else; a repeat has its first's message id. (A new
    // connection: the server restarted since the first.)
    let conn = rt
        .block_on(Connection::connect(URL, ConnectionProperties::default()))
        .unwrap();
    let channel = rt.block_on(conn.create_channel()).unwrap();
    let (bodies, ids) = rt.block_on(async {
        let (mut bodies, mut ids) = (Vec::new(), Vec::new());
        while let Some(m) = channel
            .basic_get(sink_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            bodies.push(String::from_utf8(m.delivery.data.clone()).unwrap());
            ids.push(
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap(),
            );
        }
        (bodies, ids)
    });
    let mut pairs: Vec<(String, String)> = bodies.into_iter().zip(ids).collect();
    pairs.sort();
    pairs.dedup();
    let distinct: Vec<String> = pairs.iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(
        distinct, want,
        "the sink queue's distinct messages (seed {seed})"
    );
    // Every message of the source queue was acknowledged.
    let left = rt.block_on(async {
        channel
            .queue_declare(
                source_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    });
    assert_eq!(left, 0, "messages left unacknowledged in the source queue");
}

/// Issue 19: a routing key from the row's columns (`settlement.{currency}`) through a topic
/// exchange: a queue bound to one currency's key gets that currency's rows, one bound to the
/// pattern gets every row — the rows of the same query into the embedded log.
#[test]
fn a_routing_key_from_columns_routes_each_row_by_its_values() {
    require("rabbitmq", 5672);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tag = format!("{}_{}", std::process::id(), rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "20000", "--seed", "47", "-o"])
        .arg(&events));
    let (usd, all) = (format!("usd_{tag}"), format!("all_{tag}"));
    let conn = rt
        .block_on(Connection::connect(URL, ConnectionProperties::default()))
        .unwrap();
    let channel = rt.block_on(conn.create_channel()).unwrap();
    rt.block_on(async {
        for (queue, key) in [
            (&usd, format!("set.{tag}.USD")),
            (&all, format!("set.{tag}.*")),
        ] {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            channel
                .queue_bind(
                    queue.as_str().into(),
                    "amq.topic".into(),
                    key.as_str().into(),
                    lapin::options::QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
    });
    let data = dir.path().join("data");
    let q = dir.path().join("job.sql");
    let settlement = settlement_select();
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'file', path = '{}', format = 'json');\n\
             CREATE SINK by_currency WITH (connector = 'rabbitmq', exchange = 'amq.topic', routing_key = 'set.{tag}.{{currency}}');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO by_currency {settlement};\n\
             INSERT INTO settlement {settlement};\n",
            events.display()
        ),
    )
    .unwrap();
    ok(paystream(&data).arg("run").arg(&q).arg("--until-end"));
    let want = consume_all(&data, "settlement");
    let want_usd: Vec<String> = want
        .iter()
        .filter(|l| l.contains("\"currency\":\"USD\""))
        .cloned()
        .collect();
    assert!(!want_usd.is_empty() && want_usd.len() < want.len());
    let read = |queue: &str| -> Vec<String> {
        let mut out = Vec::new();
        rt.block_on(async {
            while let Some(m) = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
            }
        });
        out.sort();
        out
    };
    assert_eq!(read(&usd), want_usd, "the USD queue");
    assert_eq!(read(&all), want, "the queue bound to every currency");

    // A column the query does not return is refused, naming the columns it does.
    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        format!(
            "CREATE SOURCE payments WITH (connector = 'file', path = '{}', format = 'json');\n\
             CREATE SINK by_currency WITH (connector = 'rabbitmq', exchange = 'amq.topic', routing_key = 'set.{tag}.{{curency}}');\n\
             INSERT INTO by_currency {settlement};\n",
            events.display()
        ),
    )
    .unwrap();
    let out = paystream(&data)
        .arg("run")
        .arg(&bad)
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("names column `curency`") && err.contains("currency"),
        "{err}"
    );
}
