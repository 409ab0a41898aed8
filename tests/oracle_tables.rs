//! The oracle for joins with reference tables: the stream joined to a generated table of
//! versioned merchants and a blocklist equals DataFusion's batch join over the same events,
//! where the version valid at an event's time is picked by a window function (the latest
//! `valid_from` at or before the event), over random event files, batch sizes and workers.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use paystream::generate::{GenConfig, generate};
use paystream::table::{ReferenceTable, TableDecl, TableSource};
use rand::{Rng, SeedableRng};

use crate::oracle::{apply_changelog, batch_rows_with, deduplicated};
use crate::util::{replay_randomly, replay_with, sorted};

/// The version of `merchants` valid at each event's time, for the batch side.
const VERSIONS: &str = "WITH v AS (SELECT p.event_id, m.risk_tier, m.review_minor, \
     row_number() OVER (PARTITION BY p.event_id ORDER BY m.valid_from DESC) AS rn \
   FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id AND m.valid_from <= p.event_time) ";

/// (streaming query, batch query) pairs.
fn queries() -> Vec<(&'static str, String)> {
    vec![
        (
            "SELECT p.event_id, p.amount_minor, m.risk_tier, m.review_minor FROM payments p \
             JOIN merchants FOR SYSTEM_TIME AS OF p.event_time m ON m.merchant_id = p.merchant_id \
             WHERE p.amount_minor > 1000",
            format!(
                "{VERSIONS} SELECT p.event_id, p.amount_minor, v.risk_tier, v.review_minor FROM payments p \
                 JOIN v ON v.event_id = p.event_id AND v.rn = 1 WHERE p.amount_minor > 1000"
            ),
        ),
        (
            "SELECT p.event_id, m.risk_tier, b.reason FROM payments p \
             LEFT JOIN merchants FOR SYSTEM_TIME AS OF p.event_time m \
               ON m.merchant_id = p.merchant_id AND m.review_minor < p.amount_minor \
             LEFT JOIN blocked_cards b ON b.card_id = p.card_id",
            format!(
                "{VERSIONS} SELECT p.event_id, v.risk_tier, b.reason FROM payments p \
                 LEFT JOIN v ON v.event_id = p.event_id AND v.rn = 1 AND v.review_minor < p.amount_minor \
                 LEFT JOIN blocked_cards b ON b.card_id = p.card_id"
            ),
        ),
        (
            "SELECT m.risk_tier, window_start, window_end, count(*) AS n, sum(p.amount_minor) AS total \
             FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) p \
             JOIN merchants FOR SYSTEM_TIME AS OF p.event_time m ON m.merchant_id = p.merchant_id \
             WHERE p.event_type <> 'refund' \
             GROUP BY m.risk_tier, window_start, window_end",
            format!(
                "{VERSIONS} SELECT v.risk_tier, to_timestamp_millis(ms - ms % 10000) AS window_start, \
                   to_timestamp_millis(ms - ms % 10000 + 10000) AS window_end, count(*) AS n, \
                   sum(p.amount_minor) AS total \
                 FROM (SELECT *, CAST(event_time AS BIGINT) AS ms FROM payments) p \
                 JOIN v ON v.event_id = p.event_id AND v.rn = 1 WHERE p.event_type <> 'refund' \
                 GROUP BY 1, 2, 3"
            ),
        ),
        // Keyed by the stream's own column: spread over the workers.
        (
            "SELECT p.merchant_id, window_start, window_end, count(*) AS n, max(m.review_minor) AS review \
             FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) p \
             JOIN merchants FOR SYSTEM_TIME AS OF p.event_time m ON m.merchant_id = p.merchant_id \
             WHERE m.risk_tier <> 'low' \
             GROUP BY p.merchant_id, window_start, window_end",
            format!(
                "{VERSIONS} SELECT p.merchant_id, to_timestamp_millis(ws) AS window_start, \
                   to_timestamp_millis(ws + 15000) AS window_end, count(*) AS n, max(v.review_minor) AS review \
                 FROM (SELECT t.*, ms - ms % 5000 - k.i * 5000 AS ws FROM \
                   (SELECT *, CAST(event_time AS BIGINT) AS ms FROM payments) t CROSS JOIN (VALUES (0), (1), (2)) AS k(i)) p \
                 JOIN v ON v.event_id = p.event_id AND v.rn = 1 \
                 WHERE ws + 15000 > ms AND v.risk_tier <> 'low' \
                 GROUP BY 1, 2, 3"
            ),
        ),
        (
            "SELECT event_id, card_id FROM payments WHERE card_id IN (SELECT card_id FROM blocked_cards WHERE reason <> 'test')",
            "SELECT event_id, card_id FROM payments WHERE card_id IN (SELECT card_id FROM blocked_cards WHERE reason <> 'test')".into(),
        ),
        (
            "SELECT p.event_id FROM payments p WHERE p.card_id NOT IN (SELECT card_id FROM blocked_cards) \
             AND NOT EXISTS (SELECT 1 FROM merchants m WHERE m.merchant_id = p.merchant_id AND m.risk_tier = 'high')",
            "SELECT p.event_id FROM payments p WHERE p.card_id NOT IN (SELECT card_id FROM blocked_cards) \
             AND NOT EXISTS (SELECT 1 FROM (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY merchant_id ORDER BY valid_from DESC) AS rn FROM merchants) WHERE rn = 1) m \
               WHERE m.merchant_id = p.merchant_id AND m.risk_tier = 'high')"
                .into(),
        ),
    ]
}

/// A running aggregate over a lookup join (the current contents: each merchant's latest
/// version), and its batch query.
const UPDATING: (&str, &str) = (
    "SELECT m.risk_tier, count(*) AS n, sum(p.amount_minor) AS total \
     FROM payments p JOIN merchants m ON m.merchant_id = p.merchant_id GROUP BY m.risk_tier",
    "SELECT m.risk_tier, count(*) AS n, sum(p.amount_minor) AS total FROM payments p \
     JOIN (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY merchant_id ORDER BY valid_from DESC) AS rn FROM merchants) WHERE rn = 1) m \
       ON m.merchant_id = p.merchant_id GROUP BY m.risk_tier",
);

fn table(
    dir: &std::path::Path,
    name: &str,
    columns: &str,
    key: bool,
    text: String,
) -> Arc<ReferenceTable> {
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, text).unwrap();
    let q = paystream::sql::query_file::parse_replay_query(&format!(
        "CREATE TABLE {name} ({columns}) WITH (connector = 'file', path = '{}');\nSELECT 1",
        path.display()
    ))
    .unwrap();
    let decl: TableDecl = q.tables.into_iter().next().unwrap();
    assert_eq!(decl.primary_key.is_empty(), !key);
    assert!(matches!(decl.source, TableSource::File { .. }));
    ReferenceTable::new(decl)
}

#[test]
fn joins_with_reference_tables_equal_the_batch_join() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1616);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let cfg = GenConfig {
            events: 2_000,
            seed: rng.random(),
            rate: rng.random_range(50.0..300.0),
            merchants: rng.random_range(5..40),
            cards: rng.random_range(20..300),
            disorder_ms: rng.random_range(0..4_000),
            duplicate_rate: 0.02,
            malformed_rate: 0.01,
            ..GenConfig::default()
        };
        let path = dir.path().join(format!("events-{round}.jsonl"));
        generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
        let events = deduplicated(&path);
        // The merchants and cards the events name, and their time range.
        let (mut merchants, mut cards) = (BTreeSet::new(), BTreeSet::new());
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for b in &events {
            let m = b.column_by_name("merchant_id").unwrap().as_string::<i32>();
            let c = b.column_by_name("card_id").unwrap().as_string::<i32>();
            let t = b
                .column_by_name("event_time")
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
            for i in 0..b.num_rows() {
                merchants.insert(m.value(i).to_string());
                cards.insert(c.value(i).to_string());
                first = first.min(t.value(i));
                last = last.max(t.value(i));
            }
        }
        // Some merchants unknown; the others with one to three versions at distinct times,
        // the first sometimes after their first events.
        let mut csv = String::from("merchant_id,risk_tier,review_minor,valid_from\n");
        for m in &merchants {
            if rng.random_bool(0.15) {
                continue;
            }
            let mut starts = BTreeSet::new();
            for _ in 0..rng.random_range(1..=3) {
                starts.insert(rng.random_range(first - 5_000..=last));
            }
            let mut starts: Vec<i64> = starts.into_iter().collect();
            // Rows out of time order: the version is by valid_from, not by row.
            if rng.random_bool(0.5) {
                starts.reverse();
            }
            for s in starts {
                let tier = ["low", "medium", "high"][rng.random_range(0..3)];
                let time = paystream::time::rfc3339(s);
                csv.push_str(&format!(
                    "{m},{tier},{},{time}\n",
                    rng.random_range(100..200_000)
                ));
            }
        }
        let merchants_table = table(
            dir.path(),
            &format!("merchants{round}"),
            "merchant_id VARCHAR PRIMARY KEY, risk_tier VARCHAR, review_minor BIGINT, valid_from TIMESTAMP",
            true,
            csv,
        );
        let mut csv = String::from("card_id,reason\n");
        for c in &cards {
            if rng.random_bool(0.1) {
                csv.push_str(&format!(
                    "{c},{}\n",
                    ["stolen", "fraud", "test"][rng.random_range(0..3)]
                ));
            }
        }
        let blocked = table(
            dir.path(),
            &format!("blocked{round}"),
            "card_id VARCHAR PRIMARY KEY, reason VARCHAR",
            true,
            csv,
        );
        let extra = [
            ("merchants", merchants_table.snapshot().unwrap().all.clone()),
            ("blocked_cards", blocked.snapshot().unwrap().all.clone()),
        ];
        // The streaming queries name the tables as the batch ones do.
        let rename = |t: &Arc<ReferenceTable>, name: &str| {
            let mut d = t.decl().clone();
            d.name = name.to_string();
            ReferenceTable::new(d)
        };
        let tables = vec![
            rename(&merchants_table, "merchants"),
            rename(&blocked, "blocked_cards"),
        ];
        let streams = [("payments".to_string(), paystream::EventSchema::payments())];
        let plan_of = |sql: &str| {
            paystream::sql::plan_query_over(sql, &streams, &tables, &Default::default())
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        // A key of the stream's columns spreads the events; one of a table's cannot.
        let spread = |sql: &str| {
            matches!(
                plan_of(sql).partitioning(),
                paystream::sql::Partitioning::ByKeys { .. }
            )
        };
        assert!(spread(queries()[3].0));
        assert!(!spread(queries()[2].0));
        for (sql, bsql) in queries() {
            let expected = batch_rows_with(&bsql, &[("payments", &events)], &extra);
            assert!(!expected.is_empty(), "{sql}");
            let (run, how) = replay_randomly(&plan_of(sql), &path, &mut rng);
            let got = sorted(run.lines);
            assert!(
                got == expected,
                "round {round} ({how}) differs for\n{sql}\n\
                 streaming {} rows, batch {}; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
        let (sql, bsql) = UPDATING;
        // Rows as JSON objects written with sorted keys, as `apply_changelog` writes them.
        let expected = sorted(
            batch_rows_with(bsql, &[("payments", &events)], &extra)
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .unwrap()
                        .to_string()
                })
                .collect(),
        );
        let run = replay_with(&plan_of(sql), &path, |o| {
            o.workers = rng.random_range(1..=3);
            o.batch_size = rng.random_range(1..500);
        });
        assert_eq!(
            apply_changelog(&run.lines, &["risk_tier"]),
            expected,
            "{sql}"
        );
    }
}

/// The sides of window joins: (left, right) windowed aggregates; the join's ON and SELECT.
const WINDOW_JOINS: [(&str, &str, &str, &str); 2] = [
    (
        "SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
         FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) WHERE event_type = 'authorization' \
         GROUP BY merchant_id, window_start, window_end",
        "SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
         FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) WHERE event_type = 'capture' \
         GROUP BY merchant_id, window_start, window_end",
        "LEFT JOIN",
        "ON c.merchant_id = a.merchant_id AND c.window_start = a.window_start",
    ),
    (
        "SELECT card_id, window_start, window_end, count(*) AS n, max(amount_minor) AS total \
         FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) \
         GROUP BY card_id, window_start, window_end",
        "SELECT card_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
         FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) WHERE status = 'declined' \
         GROUP BY card_id, window_start, window_end",
        "JOIN",
        "ON c.card_id = a.card_id AND c.window_end = a.window_end AND c.n * 2 <= a.n",
    ),
];

/// A window join's rows equal DataFusion's join of the two sides' batch results.
#[test]
fn window_joins_equal_the_batch_join_of_their_sides() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1617);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let cfg = GenConfig {
            events: 3_000,
            seed: rng.random(),
            rate: rng.random_range(50.0..300.0),
            merchants: rng.random_range(5..40),
            cards: rng.random_range(20..200),
            disorder_ms: rng.random_range(0..4_000),
            duplicate_rate: 0.02,
            malformed_rate: 0.01,
            ..GenConfig::default()
        };
        let path = dir.path().join(format!("events-{round}.jsonl"));
        generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
        let events = deduplicated(&path);
        for (left, right, join, on) in WINDOW_JOINS {
            let select = "SELECT a.*, c.n AS other_n, c.total AS other_total";
            let sql = format!("{select} FROM ({left}) a {join} ({right}) c {on}");
            let bsql = format!(
                "{select} FROM ({}) a {join} ({}) c {on}",
                crate::oracle::batch_sql(left),
                crate::oracle::batch_sql(right)
            );
            let expected = batch_rows_with(&bsql, &[("payments", &events)], &[]);
            assert!(!expected.is_empty(), "{sql}");
            let plan = paystream::plan_query(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let (run, how) = replay_randomly(&plan, &path, &mut rng);
            let got = sorted(run.lines);
            assert!(
                got == expected,
                "round {round} ({how}) differs for\n{sql}\n\
                 streaming {} rows, batch {}; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}
