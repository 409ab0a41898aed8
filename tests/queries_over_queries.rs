//! Windows over a windowed query's results (issue 15, part 2): `WITH per_minute AS (… TUMBLE
//! …) SELECT … FROM TUMBLE(per_minute, window_start, INTERVAL '1' HOUR) …`, tested against
//! DataFusion evaluating the same two steps in batch over the deduplicated events (random
//! disorder within the watermark bound, batch sizes and worker counts).

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use paystream::generate::{GenConfig, generate};
use paystream::schema::event_schema;
use paystream::sql::plan_query;
use rand::{Rng, SeedableRng};

use crate::oracle::{batch_sql, deduplicated};
use crate::util::{lines_of, replay_randomly, sorted};

/// A chained query: the CTE (a windowed query over `payments`), the bound the outer window
/// follows, the outer window's size (ms), the CTE's columns other than its bounds, and the
/// outer query's SELECT list and the rest of it (after FROM).
struct Case {
    inner: &'static str,
    bound: &'static str,
    size: i64,
    /// The outer window's slide, when it is a HOP.
    slide: Option<i64>,
    columns: &'static str,
    select: &'static str,
    rest: &'static str,
}

const CASES: [Case; 7] = [
    // Issue 16: a window over an interval join's pairs, timed by the capture.
    Case {
        inner: "SELECT a.merchant_id, c.event_time AS captured_at, c.amount_minor AS captured_minor \
                FROM payments a JOIN payments c \
                  ON c.payment_id = a.payment_id AND c.event_type = 'capture' \
                 AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE \
                WHERE a.event_type = 'authorization'",
        bound: "captured_at",
        size: 20_000,
        slide: None,
        columns: "merchant_id, captured_minor",
        select: "merchant_id, window_start, window_end, count(*) AS captured, sum(captured_minor) AS total",
        rest: "GROUP BY merchant_id, window_start, window_end",
    },
    // A left join's rows, unmatched ones with nulls, timed by the left side: authorizations
    // per window and how many were captured within 5 s.
    Case {
        inner: "SELECT a.currency, a.event_time AS authorized_at, c.event_id AS capture \
                FROM payments a LEFT JOIN payments c \
                  ON c.payment_id = a.payment_id AND c.event_type = 'capture' \
                 AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5' SECOND \
                WHERE a.event_type = 'authorization'",
        bound: "authorized_at",
        size: 30_000,
        slide: Some(10_000),
        columns: "currency, capture",
        select: "currency, window_start, window_end, count(*) AS auths, count(capture) AS captured",
        rest: "GROUP BY currency, window_start, window_end",
    },
    // An outer HOP, in Flink's spelling.
    Case {
        inner: "SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total \
                FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(event_time), INTERVAL '10' SECOND)) \
                GROUP BY merchant_id, window_start, window_end",
        bound: "window_end",
        size: 30_000,
        slide: Some(10_000),
        columns: "merchant_id, total",
        select: "merchant_id, window_start, window_end, max(total) AS top, count(*) AS windows",
        rest: "GROUP BY merchant_id, window_start, window_end",
    },
    Case {
        inner: "SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total, count(*) AS n \
                FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) \
                WHERE event_type = 'capture' GROUP BY merchant_id, window_start, window_end",
        bound: "window_start",
        size: 30_000,
        slide: None,
        columns: "merchant_id, total, n",
        select: "merchant_id, window_start, window_end, max(total) AS busiest, sum(n) AS captures, count(*) AS windows",
        rest: "GROUP BY merchant_id, window_start, window_end",
    },
    Case {
        inner: "SELECT currency, window_start, window_end, count(*) AS n \
                FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) \
                GROUP BY currency, window_start, window_end",
        bound: "window_end",
        size: 60_000,
        slide: None,
        columns: "currency, n",
        select: "currency, window_start, window_end, max(n) AS peak, min(n) AS low",
        rest: "GROUP BY currency, window_start, window_end HAVING count(*) > 1",
    },
    Case {
        inner: "SELECT card_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS spent \
                FROM SESSION(payments, event_time, INTERVAL '3' SECOND) GROUP BY card_id, window_start, window_end",
        bound: "window_end",
        size: 20_000,
        slide: None,
        columns: "card_id, n, spent",
        select: "window_start, window_end, count(*) AS sessions, max(n) AS longest, sum(spent) AS spent",
        rest: "GROUP BY window_start, window_end",
    },
    // A filter over the outer window's rows: each inner row once, with the outer bounds.
    Case {
        inner: "SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total \
                FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end",
        bound: "window_start",
        size: 60_000,
        slide: None,
        columns: "merchant_id, total",
        select: "merchant_id, window_start, total",
        rest: "WHERE total > 20000",
    },
];

fn streaming(c: &Case) -> String {
    let window = match c.slide {
        None => format!(
            "TUMBLE(per_window, {}, INTERVAL '{}' SECOND)",
            c.bound,
            c.size / 1000
        ),
        Some(slide) => format!(
            "TABLE(HOP(TABLE per_window, DESCRIPTOR({}), INTERVAL '{}' SECOND, INTERVAL '{}' SECOND))",
            c.bound,
            slide / 1000,
            c.size / 1000
        ),
    };
    format!(
        "WITH per_window AS ({})\nSELECT {} FROM {window} {}",
        c.inner, c.select, c.rest
    )
}

fn batch(c: &Case) -> String {
    let size = c.size;
    if let Some(slide) = c.slide {
        let offsets: Vec<String> = (0..(size + slide - 1) / slide)
            .map(|i| format!("({i})"))
            .collect();
        return format!(
            "WITH per_window AS ({}) SELECT {} FROM (SELECT {}, to_timestamp_millis(ws) AS window_start, \
             to_timestamp_millis(ws + {size}) AS window_end FROM \
             (SELECT x.*, ms - ms % {slide} - k.i * {slide} AS ws FROM \
              (SELECT *, CAST({} AS BIGINT) AS ms FROM per_window) x CROSS JOIN (VALUES {}) AS k(i)) u \
             WHERE ws + {size} > ms) AS per_window {}",
            batch_sql(c.inner),
            c.select,
            c.columns,
            c.bound,
            offsets.join(", "),
            c.rest
        );
    }
    format!(
        "WITH per_window AS ({}) SELECT {} FROM (SELECT {}, to_timestamp_millis(ms - ms % {size}) AS window_start, \
         to_timestamp_millis(ms - ms % {size} + {size}) AS window_end \
         FROM (SELECT *, CAST({} AS BIGINT) AS ms FROM per_window) x) AS per_window {}",
        batch_sql(c.inner),
        c.select,
        c.columns,
        c.bound,
        c.rest
    )
}

fn run_batch(sql: &str, events: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        paystream::functions::register(&ctx);
        let table = MemTable::try_new(event_schema(), vec![events.to_vec()]).unwrap();
        ctx.register_table("payments", Arc::new(table)).unwrap();
        let b = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap();
        sorted(lines_of(&b))
    })
}

/// 4,000 generated events of a random shape (rate, merchants, cards, disorder within the
/// bound), with duplicates and malformed lines, in `dir`.
fn random_events(rng: &mut impl Rng, dir: &std::path::Path, round: u64) -> std::path::PathBuf {
    let cfg = GenConfig {
        events: 4_000,
        seed: rng.random(),
        rate: rng.random_range(20.0..80.0),
        merchants: rng.random_range(3..12),
        cards: rng.random_range(20..200),
        disorder_ms: rng.random_range(0..4_000),
        duplicate_rate: 0.02,
        malformed_rate: 0.01,
        ..GenConfig::default()
    };
    let path = dir.join(format!("events-{round}.jsonl"));
    generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
    path
}

#[test]
fn a_window_over_a_windowed_query_equals_the_two_steps_in_batch() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1515);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let path = random_events(&mut rng, dir.path(), round);
        let events = deduplicated(&path);
        for c in &CASES {
            let sql = streaming(c);
            let expected = run_batch(&batch(c), &events);
            assert!(!expected.is_empty(), "{sql}\n{}", batch(c));
            let plan = plan_query(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let (run, how) = replay_randomly(&plan, &path, &mut rng);
            let got = sorted(run.lines);
            assert!(
                got == expected,
                "round {round} ({how}):\n{sql}\nstreaming {} rows, batch {}; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}

/// Window functions (OVER) over a windowed query's rows, ordered by a window bound — the
/// anomaly baselines of issue 18 over per-window series, `lag`, a bounded ROWS frame, a RANGE
/// frame over a HOP's ends — equal the same SQL over the windowed query's batch rows.
#[test]
fn window_functions_over_a_windowed_query_equal_the_batch_query() {
    let cases = [
        (
            "SELECT merchant_id, window_start, window_end, count(*) AS attempts, sum(amount_minor) AS total \
             FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end",
            "SELECT merchant_id, window_start, window_end, attempts, \
             round(ewma_zscore(attempts, 0.3, 3) OVER w, 6) AS z, round(ewma(total, 0.2) OVER w, 6) AS m, \
             round(mad_zscore(attempts, 4) OVER w, 6) AS r, lag(attempts) OVER w AS previous, \
             avg(attempts) OVER (PARTITION BY merchant_id ORDER BY window_start ROWS BETWEEN 3 PRECEDING AND 1 PRECEDING) AS base \
             FROM per_window \
             WINDOW w AS (PARTITION BY merchant_id ORDER BY window_start ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        ),
        (
            "SELECT currency, window_start, window_end, count(*) AS n \
             FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) GROUP BY currency, window_start, window_end",
            "SELECT currency, window_end, n, count(*) OVER (PARTITION BY currency ORDER BY window_end RANGE BETWEEN INTERVAL '30' SECOND PRECEDING AND CURRENT ROW) AS windows_30s, \
             round(ewma_zscore(n, 0.5, 2) OVER (PARTITION BY currency ORDER BY window_end ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 6) AS z \
             FROM per_window",
        ),
        // An alert rule: the outer query filters the scores of a subquery.
        (
            "SELECT merchant_id, window_start, window_end, count(*) AS attempts \
             FROM TUMBLE(payments, event_time, INTERVAL '5' SECOND) GROUP BY merchant_id, window_start, window_end",
            "SELECT * FROM (SELECT merchant_id, window_start, attempts, \
               round(ewma_zscore(attempts, 0.3, 2) OVER (PARTITION BY merchant_id ORDER BY window_start), 6) AS z \
             FROM per_window) WHERE z > 0.5 OR z < -0.5",
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1818);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let path = random_events(&mut rng, dir.path(), round);
        let events = deduplicated(&path);
        for (inner, outer) in &cases {
            let sql = format!("WITH per_window AS ({inner})\n{outer}");
            let bsql = format!("WITH per_window AS ({}) {outer}", batch_sql(inner));
            let expected = run_batch(&bsql, &events);
            assert!(expected.len() > 10, "{bsql}");
            let plan = plan_query(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let (run, how) = replay_randomly(&plan, &path, &mut rng);
            let got = sorted(run.lines);
            assert!(
                got == expected,
                "round {round} ({how}):\n{sql}\nstreaming {} rows, batch {}; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}

#[test]
fn what_a_window_over_a_query_cannot_follow_is_refused_where_it_is_written() {
    for (sql, needle) in [
        // Window functions over a windowed CTE: one CTE; a session ordered by its end.
        (
            "WITH a AS (SELECT merchant_id, window_start, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end),\n b AS (SELECT * FROM a)\nSELECT lag(n) OVER (PARTITION BY merchant_id ORDER BY window_end) AS p FROM a",
            "line 2, column 2: window functions over `a` take one CTE",
        ),
        (
            "WITH s AS (SELECT card_id, window_start, window_end, count(*) AS n FROM SESSION(payments, event_time, INTERVAL '3' SECOND) GROUP BY card_id, window_start, window_end)\nSELECT lag(n) OVER (PARTITION BY card_id ORDER BY s.window_start) AS p FROM s",
            "ORDER BY window_end",
        ),
        (
            "WITH s AS (SELECT card_id, window_start, window_end, count(*) AS n FROM SESSION(payments, event_time, INTERVAL '3' SECOND) GROUP BY card_id, window_start, window_end)\nSELECT window_start, count(*) FROM TUMBLE(s, window_start, INTERVAL '1' MINUTE) GROUP BY window_start, window_end",
            "line 2, column 46: a session's start says nothing of when it closes",
        ),
        (
            "WITH m AS (SELECT merchant_id, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end)\nSELECT window_start, max(n) FROM TUMBLE(m, window_start, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "line 2, column 44: `m` has no column window_start",
        ),
        (
            "WITH m AS (SELECT merchant_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end)\nSELECT window_start, max(n) FROM TUMBLE(m, n, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "line 2, column 44: `n` is not a time column of `m`",
        ),
        (
            "WITH f AS (SELECT card_id, event_time FROM payments WHERE amount_minor > 10)\nSELECT window_start, count(*) FROM TUMBLE(f, event_time, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "`event_time` is not a time column of `f`",
        ),
        (
            "WITH m AS (SELECT merchant_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end)\nSELECT window_start, max(nope) FROM TUMBLE(m, window_start, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "line 2",
        ),
    ] {
        let e = plan_query(sql).unwrap_err().to_string();
        assert!(e.contains(needle), "{sql}\n{e}");
    }
    for (sql, needle) in [
        (
            "WITH m AS (SELECT merchant_id, window_start AS window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end)\nSELECT window_start, max(n) FROM TUMBLE(m, window_end, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "line 1, column 32: `m`'s window_end must be its window's own window_end",
        ),
        (
            "WITH m AS ((SELECT merchant_id, window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) GROUP BY merchant_id, window_start, window_end))\nSELECT window_start, max(n) FROM TUMBLE(m, window_start, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "without extra parentheses",
        ),
        (
            "WITH Payments AS (SELECT * FROM payments WHERE amount_minor > 5) SELECT event_id FROM payments",
            "is defined twice (or is the stream's name)",
        ),
        // A window over a LEFT JOIN timed by the right side, which is null when unmatched.
        (
            "WITH j AS (SELECT a.merchant_id, c.event_time AS captured_at FROM payments a LEFT JOIN payments c ON c.payment_id = a.payment_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE)\nSELECT window_start, count(*) FROM TUMBLE(j, captured_at, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "line 2, column 46: `captured_at` can be null in `j`",
        ),
        (
            "WITH j AS (SELECT a.merchant_id, c.event_time AS captured_at FROM payments a JOIN payments c ON c.payment_id = a.payment_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE)\nSELECT window_start, count(*) FROM TUMBLE(j, merchant_id, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "`merchant_id` is not an event time of a side of `j`'s join",
        ),
        // A computed time could trail the watermark by more than the join's bound.
        (
            "WITH j AS (SELECT a.merchant_id, a.event_time - INTERVAL '5' MINUTE AS t FROM payments a JOIN payments c ON c.payment_id = a.payment_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE)\nSELECT window_start, count(*) FROM TUMBLE(j, t, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
            "`t` is not an event time of a side of `j`'s join",
        ),
        // A query over a join's rows orders them by one of their event times: none selected.
        (
            "WITH j AS (SELECT a.merchant_id, c.amount_minor FROM payments a JOIN payments c ON c.payment_id = a.payment_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '1' MINUTE)\nSELECT merchant_id, count(*) FROM j GROUP BY merchant_id",
            "line 2, column 35: a query over `j` orders its rows by an event time of theirs",
        ),
    ] {
        let e = plan_query(sql).unwrap_err().to_string();
        assert!(e.contains(needle), "{sql}\n{e}");
    }
    // Names fold to lower case as SQL folds them; text before the bound may be any script.
    let folded = plan_query(
        "WITH Per_Minute AS (SELECT merchant_id, window_start, window_end, count(*) AS n -- Umsätze je Minute, 每分钟的交易额每分钟的交易额每分钟的交易额每分钟的交易额\n  FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) WHERE currency <> '€' GROUP BY merchant_id, window_start, window_end)\nSELECT window_start, max(n) FROM TUMBLE(per_minute, WINDOW_START, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
    );
    assert!(folded.is_ok(), "{:?}", folded.err());
    // A CTE read as a table is the subquery it names.
    let plain = plan_query(
        "WITH big AS (SELECT * FROM payments WHERE amount_minor > 10000)\nSELECT event_id, merchant_id FROM big WHERE currency = 'EUR'",
    );
    assert!(plain.is_ok(), "{:?}", plain.err());
}
