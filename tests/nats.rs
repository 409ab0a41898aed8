//! The NATS connector against a real nats-server with JetStream on loopback (started by
//! `scripts/services.sh`): events published to a stream, a job reading it with a NATS source
//! and publishing its results to another stream, the server restarted under it, killed with
//! `kill -9` at random moments and restarted — the results equal those of the embedded log over the same events, and the sink
//! stream holds each result once (the `Nats-Msg-Id` duplicate window drops what a recovery
//! publishes again).

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use crate::util::services::require;
use crate::util::{
    consume_all, finish_equals, kill_rounds, ok, paystream, reference_rows, settlement_select,
};

const URL: &str = "nats://127.0.0.1:4222";

/// A new stream `name` capturing `subjects`, holding `messages` (subject, body) in order, each
/// acknowledged by JetStream; the JetStream context, for the test's later reads.
fn stream_of<'a>(
    rt: &tokio::runtime::Runtime,
    name: &str,
    subjects: &str,
    messages: impl Iterator<Item = (&'a str, &'a str)>,
) -> jetstream::Context {
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(URL).await.unwrap());
        js.create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut acks = Vec::new();
        for (subject, body) in messages {
            acks.push(
                js.publish(subject.to_string(), body.as_bytes().to_vec().into())
                    .await
                    .unwrap(),
            );
            if acks.len() >= 5000 {
                for a in acks.drain(..) {
                    a.await.unwrap();
                }
            }
        }
        for a in acks {
            a.await.unwrap();
        }
        js
    })
}

#[test]
fn nats_source_and_sink_through_kill_9() {
    require("nats", 4222);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (stream, subject) = (format!("PAY_{tag}"), format!("pay.{tag}"));
    let (out_stream, out_subject) = (format!("OUT_{tag}"), format!("out.{tag}"));
    // A second sink of one row per event: far more rows between checkpoints than JetStream
    // lets a client have unacknowledged.
    let (raw_stream, raw_subject) = (format!("RAW_{tag}"), format!("raw.{tag}"));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "100000", "--seed", "53", "-o"])
        .arg(&events));
    let text = std::fs::read_to_string(&events).unwrap();

    let js = stream_of(
        &rt,
        &stream,
        &subject,
        text.lines().map(|l| (subject.as_str(), l)),
    );

    // The reference: the same events in one embedded log partition, in the same order.
    let settlement = settlement_select();
    let mut reference = reference_rows(
        &dir.path().join("reference"),
        &events,
        1,
        &[],
        &[
            ("settlement", &settlement),
            ("raw", "SELECT event_id, amount_minor FROM payments"),
        ],
    );
    let raw_rows = reference.remove(1).len() as u64;
    let want = reference.remove(0);

    let crashed = dir.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let q = crashed.join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'nats', url = '{URL}', stream = '{stream}', subject = '{subject}', max_ack_pending = '500');\n\
             CREATE SINK out WITH (connector = 'nats', url = '{URL}', subject = '{out_subject}', stream = '{out_stream}');\n\
             CREATE SINK raw WITH (connector = 'nats', url = '{URL}', subject = '{raw_subject}', stream = '{raw_stream}');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO out {settlement};\n\
             INSERT INTO raw SELECT event_id, amount_minor FROM payments;\n\
             INSERT INTO settlement {settlement};\n"
        ),
    )
    .unwrap();
    let seed = kill_rounds(&crashed, &q, 4, 300..1500, Some("nats"));
    finish_equals(&crashed, &q, "settlement", &want, seed);

    // The sink stream: every result once.
    let mut bodies: Vec<String> = rt.block_on(async {
        let s = js.get_stream(&out_stream).await.unwrap();
        let consumer = s
            .create_consumer(jetstream::consumer::pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let total = want.len();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while out.len() < total {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => {
                    out.push(String::from_utf8(m.message.payload.to_vec()).unwrap());
                }
                _ => break,
            }
        }
        // Nothing beyond the results.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), messages.next())
                .await
                .is_err(),
            "more messages than results"
        );
        out
    });
    bodies.sort();
    assert_eq!(bodies, want, "the sink stream (seed {seed})");

    // One message per row of the per-event query, through every kill and the restart.
    let raw = rt.block_on(async {
        let mut s = js.get_stream(&raw_stream).await.unwrap();
        s.info().await.unwrap().state.messages
    });
    assert_eq!(
        raw, raw_rows,
        "messages of the per-event sink (seed {seed})"
    );

    // The same rows from the file in one go (no checkpoint until the end): 20 times the
    // client's limit of unacknowledged publishes between two waits.
    let (file_stream, file_subject) = (format!("FILE_{tag}"), format!("file.{tag}"));
    let once = dir.path().join("once");
    std::fs::create_dir_all(&once).unwrap();
    let q = once.join("job.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE SOURCE payments WITH (connector = 'file', path = '{}', format = 'json');\n\
             CREATE SINK raw WITH (connector = 'nats', url = '{URL}', subject = '{file_subject}', stream = '{file_stream}');\n\
             INSERT INTO raw SELECT event_id, amount_minor FROM payments;\n",
            events.display()
        ),
    )
    .unwrap();
    ok(paystream(&once).arg("run").arg(&q).arg("--until-end"));
    let published = rt.block_on(async {
        let mut s = js.get_stream(&file_stream).await.unwrap();
        s.info().await.unwrap().state.messages
    });
    assert_eq!(published, raw_rows, "messages published from the file");
    rt.block_on(async {
        for s in [&stream, &out_stream, &raw_stream, &file_stream] {
            let _ = js.delete_stream(s).await;
        }
    });
}

/// A subject filter over a stream of interleaved subjects: the source's positions skip the
/// other subject's sequences, and a job killed at random moments and restarted takes exactly
/// the filtered events — its results equal the embedded log's over those events alone.
#[test]
fn a_subject_filter_resumes_exactly_across_gaps_in_the_sequence() {
    require("nats", 4222);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tag = format!("{}_{}", std::process::id(), rand::random::<u32>());
    let stream = format!("MIX_{tag}");
    let (wanted, other) = (format!("mix.{tag}.a"), format!("mix.{tag}.b"));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    ok(Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["gen", "--events", "40000", "--seed", "59", "-o"])
        .arg(&events));
    let text = std::fs::read_to_string(&events).unwrap();
    // Every third event to the other subject, the rest to the wanted one.
    let mine: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let js = stream_of(
        &rt,
        &stream,
        &format!("mix.{tag}.*"),
        text.lines().enumerate().map(|(i, l)| {
            (
                if i % 3 == 2 {
                    other.as_str()
                } else {
                    wanted.as_str()
                },
                l,
            )
        }),
    );
    let mine_file = dir.path().join("mine.jsonl");
    std::fs::write(&mine_file, &mine).unwrap();

    let settlement = settlement_select();
    let want = reference_rows(
        &dir.path().join("reference"),
        &mine_file,
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
            "CREATE SOURCE payments WITH (connector = 'nats', url = '{URL}', stream = '{stream}', subject = '{wanted}', max_ack_pending = '300');\n\
             CREATE SINK settlement WITH (connector = 'log', topic = 'settlement');\n\
             INSERT INTO settlement {settlement};\n"
        ),
    )
    .unwrap();
    let seed = kill_rounds(&crashed, &q, 3, 300..1200, None);
    ok(paystream(&crashed).arg("run").arg(&q).arg("--until-end"));
    let got = consume_all(&crashed, "settlement");
    assert_eq!(got.len(), want.len(), "rows through kill -9s (seed {seed})");
    assert!(got == want, "rows differ through kill -9s (seed {seed})");
    rt.block_on(async {
        let _ = js.delete_stream(&stream).await;
    });
}
