//! `SET dense_windows = 'true'` (issue 18): a TUMBLE aggregate gives every key it has seen a row
//! for each window — the aggregates of no rows where the key was quiet — from its first window
//! with events up to the stream's last, until the key has been quiet for the state TTL. The
//! streaming rows equal that rule computed here from the deduplicated events, over random
//! files, batch sizes and workers; the same series read by an OVER (a query over windowed
//! results) sees the quiet windows as rows.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use paystream::sql::{PlanKind, plan_query};
use paystream::time::parse_rfc3339_millis;
use rand::SeedableRng;
use serde_json::Value;

use crate::oracle::random_file;
use crate::util::replay_randomly;

const SIZE: i64 = 2_000;
const TTL: i64 = 6_000;

/// (card, window start) → (events, sum of amounts) over the authorizations.
type Windows = BTreeMap<(String, i64), (i64, i64)>;

fn per_window(batches: &[datafusion::arrow::array::RecordBatch]) -> Windows {
    let mut out = Windows::new();
    for b in batches {
        let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
        let merchant = col("card_id");
        let merchant = merchant.as_string::<i32>();
        let et = datafusion::arrow::compute::cast(
            &col("event_type"),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let et = et.as_string::<i32>();
        let time = col("event_time");
        let time = time.as_primitive::<TimestampMillisecondType>();
        let amount = col("amount_minor");
        let amount = amount.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if et.is_null(i) || et.value(i) != "authorization" {
                continue;
            }
            let t = time.value(i);
            let e = out
                .entry((merchant.value(i).to_string(), t - t.rem_euclid(SIZE)))
                .or_default();
            e.0 += 1;
            e.1 += amount.value(i);
        }
    }
    out
}

/// The dense rule: each card's windows from its first with events to the stream's last,
/// where some window with its events is at most TTL before; quiet ones with (0, None).
fn dense(w: &Windows) -> Vec<(String, i64, i64, Option<i64>)> {
    let last = w.keys().map(|(_, s)| *s).max().unwrap();
    let mut by_key: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for (m, s) in w.keys() {
        by_key.entry(m).or_default().insert(*s);
    }
    let mut out = Vec::new();
    for (m, starts) in by_key {
        let mut s = *starts.first().unwrap();
        while s <= last {
            let alive = starts.range(..=s).next_back().is_some_and(|w| s - w <= TTL);
            if alive {
                match w.get(&(m.to_string(), s)) {
                    Some((n, total)) => out.push((m.to_string(), s, *n, Some(*total))),
                    None => out.push((m.to_string(), s, 0, None)),
                }
            }
            s += SIZE;
        }
    }
    out.sort();
    out
}

/// Equal rows, or the sizes and the first difference.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        if let Some(i) = at {
            for j in i.saturating_sub(4)..(i + 2).min(got.len()) {
                eprintln!("{j}: {:?} | {:?}", got[j], want[j]);
            }
        }
        panic!(
            "{what}: streaming {} rows, batch {}; first difference at {at:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            at.map(|i| &got[i]),
            at.map(|i| &want[i]),
        );
    }
    if std::env::var("DENSE_DEBUG").is_ok() {
        eprintln!("{what}: ok");
    }
}

fn ms(v: &Value) -> i64 {
    parse_rfc3339_millis(v.as_str().unwrap()).unwrap()
}

#[test]
fn dense_windows_fill_each_keys_quiet_windows_until_its_ttl() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(18_05);
    let dir = tempfile::tempdir().unwrap();
    let windowed = "SELECT card_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
                    FROM TUMBLE(payments, event_time, INTERVAL '2' SECOND) \
                    WHERE event_type = 'authorization' GROUP BY card_id, window_start, window_end";
    let chained = format!(
        "WITH per AS ({windowed}) SELECT card_id, window_start, n, \
           lag(n) OVER (PARTITION BY card_id ORDER BY window_start) AS previous FROM per"
    );
    for round in 0..4u64 {
        let (path, batches) = random_file(&mut rng, dir.path(), round, 3_000);
        let want = dense(&per_window(&batches));
        assert!(
            want.iter().any(|r| r.2 == 0),
            "round {round}: the file has quiet windows"
        );
        let plan = plan_query(windowed)
            .unwrap()
            .with_dense_windows()
            .unwrap()
            .with_state_ttl(TTL);
        let (run, how) = replay_randomly(&plan, &path, &mut rng);
        let mut got: Vec<(String, i64, i64, Option<i64>)> = run
            .lines
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                assert_eq!(ms(&v["window_end"]) - ms(&v["window_start"]), SIZE);
                (
                    v["card_id"].as_str().unwrap().to_string(),
                    ms(&v["window_start"]),
                    v["n"].as_i64().unwrap(),
                    v["total"].as_i64(),
                )
            })
            .collect();
        got.sort();
        assert_same(&got, &want, &format!("round {round} ({how})"));

        // Over the dense series, OVER sees each quiet window as a row of its own.
        // The TTL for the windowed query's keys only: the OVER keeps its keys (the source's
        // dedup TTL), so each row's `previous` is the row before it in the key's series.
        let mut plan = plan_query(&chained).unwrap().with_dense_windows().unwrap();
        let PlanKind::Chain(c) = &mut plan.kind else {
            panic!("a query over windowed results is chained")
        };
        c.inner = c.inner.clone().with_state_ttl(TTL);
        let (run, how) = replay_randomly(&plan, &path, &mut rng);
        let mut got: Vec<(String, i64, i64, Option<i64>)> = run
            .lines
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["card_id"].as_str().unwrap().to_string(),
                    ms(&v["window_start"]),
                    v["n"].as_i64().unwrap(),
                    v["previous"].as_i64(),
                )
            })
            .collect();
        got.sort();
        let mut previous = Vec::new();
        for (i, (m, s, n, _)) in want.iter().enumerate() {
            let prev = match i.checked_sub(1).map(|j| &want[j]) {
                Some((pm, _, pn, _)) if pm == m => Some(*pn),
                _ => None,
            };
            previous.push((m.clone(), *s, *n, prev));
        }
        assert_same(&got, &previous, &format!("round {round} ({how}), chained"));
    }
}

/// Without keys and HOP / SESSION / no window: what the setting means, or why it is refused.
#[test]
fn dense_windows_are_refused_where_there_is_no_tumble() {
    for (sql, says) in [
        (
            "SELECT window_start, count(*) FROM HOP(payments, event_time, INTERVAL '1' SECOND, INTERVAL '2' SECOND) GROUP BY window_start, window_end",
            "HOP and SESSION windows are not filled",
        ),
        ("SELECT event_id FROM payments", "this query has none"),
    ] {
        let e = plan_query(sql).unwrap().with_dense_windows().unwrap_err();
        assert!(e.contains(says), "{sql}: {e}");
    }
}

/// The setting as a query file spells it: `paystream replay` fills the quiet windows, and says
/// what is wrong with a value that is neither true nor false.
#[test]
fn replay_takes_dense_windows_from_the_query_file() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let line = |id: &str, card: &str, t: &str| {
        format!(
            r#"{{"event_id":"{id}","event_type":"authorization","event_time":"2026-11-01T00:00:{t}Z","payment_id":"p{id}","merchant_id":"m1","card_id":"{card}","amount_minor":100,"currency":"EUR"}}"#
        )
    };
    std::fs::write(
        &events,
        [
            line("1", "c1", "00"),
            line("2", "c2", "01"),
            line("3", "c2", "31"),
        ]
        .join("\n"),
    )
    .unwrap();
    let query = dir.path().join("q.sql");
    let sql = "SET dense_windows = 'true';\nSET state_ttl = '15s';\n\
               SELECT card_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) \
               GROUP BY card_id, window_start, window_end;";
    std::fs::write(&query, sql).unwrap();
    let replay = || {
        crate::util::paystream(dir.path())
            .args([
                "replay",
                events.to_str().unwrap(),
                "--query",
                query.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut rows: Vec<String> = ok(replay())
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["card_id"].as_str().unwrap(),
                &v["window_start"].as_str().unwrap()[17..19],
                v["n"]
            )
        })
        .collect();
    rows.sort();
    // Quiet windows at most 15 s after a key's last window with events: 10 s, not 20 s.
    assert_eq!(
        rows,
        ["c1 00 1", "c1 10 0", "c2 00 1", "c2 10 0", "c2 30 1"]
    );

    // The issue's spelling, unquoted, is the same setting.
    std::fs::write(&query, sql.replace("'true'", "true")).unwrap();
    assert_eq!(ok(replay()).lines().count(), rows.len());

    std::fs::write(&query, sql.replace("'true'", "'yes'")).unwrap();
    let out = replay();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SET dense_windows = 'yes': it is 'true'"),
        "{err}"
    );
}

/// After `finish` (a run to the end of its input), a resumed run may get events of windows
/// already emitted that are not late by its watermark: such a window comes out again with its
/// own groups only — no quiet key is emitted twice — and later windows fill, for its keys too.
#[test]
fn a_window_emitted_at_finish_gets_its_own_groups_again_after_a_resume() {
    use paystream::operators::{EventBatch, OperatorOutput, build_operator};
    let line = |id: &str, card: &str, s: u32| {
        format!(
            r#"{{"event_id":"{id}","event_type":"authorization","event_time":"2026-11-01T00:00:{s:02}Z","payment_id":"p{id}","merchant_id":"m1","card_id":"{card}","amount_minor":100,"currency":"EUR"}}"#
        )
    };
    let batch = |lines: &[String], watermark: i64| {
        let d = paystream::decode::decode_json_lines(lines.join("\n").as_bytes(), 1, 1024);
        let b = d.batches[0].batch.clone();
        let n = b.num_rows();
        EventBatch::all(b, (0..n as u64).collect(), vec![watermark; n])
    };
    let sql = "SELECT card_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY card_id, window_start, window_end";
    let plan = plan_query(sql)
        .unwrap()
        .with_dense_windows()
        .unwrap()
        .with_state_ttl(60_000);
    let rows = |out: &OperatorOutput| -> Vec<String> {
        let mut v: Vec<String> = crate::util::lines_of(
            &out.results
                .iter()
                .map(|r| r.batch.clone())
                .collect::<Vec<_>>(),
        )
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["card_id"].as_str().unwrap(),
                &v["window_start"].as_str().unwrap()[17..19],
                v["n"]
            )
        })
        .collect();
        v.sort();
        v
    };
    let mut op = build_operator(&plan).unwrap();
    let mut out = OperatorOutput::default();
    op.process(
        &batch(&[line("1", "a", 1), line("2", "b", 25)], i64::MIN),
        &mut out,
    )
    .unwrap();
    op.finish(&mut out).unwrap();
    assert_eq!(rows(&out), ["a 00 1", "a 10 0", "a 20 0", "b 20 1"]);
    let saved = op.snapshot().unwrap();
    let mut op = build_operator(&plan).unwrap();
    op.restore(&saved).unwrap();
    let mut out = OperatorOutput::default();
    // The resumed run's watermark (19 s) lets an event of the emitted window [10, 20) in.
    let wm = paystream::time::parse_rfc3339_millis("2026-11-01T00:00:19Z").unwrap();
    op.process(
        &batch(&[line("3", "c", 15), line("4", "b", 41)], wm),
        &mut out,
    )
    .unwrap();
    op.finish(&mut out).unwrap();
    assert_eq!(
        rows(&out),
        [
            "a 30 0", "a 40 0", "b 30 0", "b 40 1", "c 10 1", "c 30 0", "c 40 0"
        ],
        "[10, 20) again with c alone; the later windows filled, c's too"
    );
}

/// In a `run` file, `SET dense_windows` fills the queries that can take it and leaves the
/// others as they are; a file none of whose queries can is refused, saying why.
#[test]
fn a_run_file_fills_the_queries_that_can_be_filled() {
    let head = "CREATE SOURCE payments WITH (connector = 'log', topic = 'payments', format = 'json', event_time = 'event_time');\n\
                CREATE SINK a WITH (connector = 'log', topic = 'a');\n\
                CREATE SINK b WITH (connector = 'log', topic = 'b');\n\
                SET dense_windows = 'true';\n";
    let windowed = "INSERT INTO a SELECT card_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY card_id, window_start, window_end;\n";
    let plain = "INSERT INTO b SELECT event_id FROM payments WHERE amount_minor > 100;\n";
    let both = format!("{head}{windowed}{plain}");
    let job = paystream::job::Job::prepare("both", "both.sql", &both);
    assert!(job.is_ok(), "{job:?}");
    let only_plain = format!("{head}{plain}");
    let e = paystream::job::Job::prepare("plain", "plain.sql", &only_plain).unwrap_err();
    assert!(
        e.to_string()
            .contains("SET dense_windows fills the quiet windows"),
        "{e}"
    );
}
