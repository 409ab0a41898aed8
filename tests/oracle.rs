//! The correctness oracle: when no event is late, a windowed query's streaming output equals
//! DataFusion evaluating the equivalent batch query over the deduplicated events of the whole file.
//!
//! The batch query is derived from the streaming one by replacing the window table function with a
//! subquery that computes `window_start`/`window_end` with date_bin-style integer arithmetic
//! (tumble), a cross join with the window offsets (hop), or LAG/SUM window functions (session).
//! Events come from the generator with random seeds and disorder within the watermark bound;
//! batch sizes and worker counts are random too.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{GroupByExpr, SetExpr, Statement, TableFactor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use paystream::decode::decode_json_lines;
use paystream::generate::{GenConfig, generate};
use paystream::schema::event_schema;
use paystream::sql::{WindowKind, plan_query};
use rand::{Rng, SeedableRng};

use crate::util::{lines_of, replay_randomly, replay_with, repo, sorted};

/// Decodes a JSON Lines file and keeps the first occurrence of each event_id.
pub(crate) fn deduplicated(path: &std::path::Path) -> Vec<RecordBatch> {
    let bytes = std::fs::read(path).unwrap();
    let decoded = decode_json_lines(&bytes, 1, 4096);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for b in decoded.batches {
        let ids = b.batch.column(0).as_string::<i32>();
        let keep: Vec<bool> = (0..b.batch.num_rows())
            .map(|i| seen.insert(ids.value(i).to_string()))
            .collect();
        let mask = datafusion::arrow::array::BooleanArray::from(keep);
        out.push(datafusion::arrow::compute::filter_record_batch(&b.batch, &mask).unwrap());
    }
    out
}

/// The batch equivalent of a streaming query.
pub(crate) fn batch_sql(sql: &str) -> String {
    // UNION ALL: the union of each branch's batch query.
    // (Flink's spellings do not parse as they are: they are no unions.)
    if let Ok(stmts) = Parser::parse_sql(&GenericDialect {}, sql)
        && let Statement::Query(q) = &stmts[0]
        && let SetExpr::SetOperation { left, right, .. } = q.body.as_ref()
    {
        return format!(
            "{} UNION ALL {}",
            batch_sql(&left.to_string()),
            batch_sql(&right.to_string())
        );
    }
    let plan = plan_query(sql).unwrap();
    // Window functions (OVER) mean the same over a table: the query is its own batch query.
    let Some(window) = plan.window() else {
        return sql.to_string();
    };
    let kind = window.kind;
    let sql = paystream::sql::to_risingwave_spelling(sql).unwrap();
    // The stream breaks ties in an ordered aggregate by event id; so does the batch side.
    let sql = sql
        .replace("ORDER BY event_time)", "ORDER BY event_time, event_id)")
        .replace(
            "ORDER BY event_time DESC)",
            "ORDER BY event_time DESC, event_id)",
        );
    let mut stmts = Parser::parse_sql(&GenericDialect {}, &sql).unwrap();
    let Statement::Query(q) = &mut stmts[0] else {
        panic!()
    };
    let SetExpr::Select(top) = q.body.as_mut() else {
        panic!()
    };
    // A query over a windowed query (Top-N per window): the window is the inner query's.
    let sel = if matches!(top.from[0].relation, TableFactor::Derived { .. }) {
        let TableFactor::Derived { subquery, .. } = &mut top.from[0].relation else {
            unreachable!()
        };
        let SetExpr::Select(inner) = subquery.body.as_mut() else {
            panic!()
        };
        inner
    } else {
        top
    };
    let keys: Vec<String> = match &sel.group_by {
        // SELECT DISTINCT groups by its columns (session windows are per key).
        _ if sel.distinct.is_some() => sel
            .projection
            .iter()
            .map(|x| x.to_string())
            .filter(|k| k != "window_start" && k != "window_end")
            .collect(),
        GroupByExpr::Expressions(e, _) => e
            .iter()
            .map(|x| x.to_string())
            .filter(|k| k != "window_start" && k != "window_end")
            .collect(),
        _ => vec![],
    };
    let filter = sel
        .selection
        .as_ref()
        .map_or("TRUE".to_string(), |w| w.to_string());
    let base = "(SELECT *, CAST(event_time AS BIGINT) AS ms FROM payments)";
    let sub = match kind {
        WindowKind::Tumble { size } => format!(
            "SELECT *, to_timestamp_millis(ms - ms % {size}) AS window_start, to_timestamp_millis(ms - ms % {size} + {size}) AS window_end FROM {base} t"
        ),
        WindowKind::Hop { slide, size } => {
            let n = (size + slide - 1) / slide;
            let offsets: Vec<String> = (0..n).map(|i| format!("({i})")).collect();
            format!(
                "SELECT *, to_timestamp_millis(ws) AS window_start, to_timestamp_millis(ws + {size}) AS window_end FROM \
                 (SELECT t.*, ms - ms % {slide} - k.i * {slide} AS ws FROM {base} t CROSS JOIN (VALUES {}) AS k(i)) u \
                 WHERE ws + {size} > ms",
                offsets.join(", ")
            )
        }
        WindowKind::Session { gap } => {
            let part = if keys.is_empty() {
                String::new()
            } else {
                format!("PARTITION BY {}", keys.join(", "))
            };
            let part_sid = if keys.is_empty() {
                "PARTITION BY sid".to_string()
            } else {
                format!("PARTITION BY {}, sid", keys.join(", "))
            };
            format!(
                "SELECT *, to_timestamp_millis(min(ms) OVER ({part_sid})) AS window_start, \
                        to_timestamp_millis(max(ms) OVER ({part_sid}) + {gap}) AS window_end FROM \
                 (SELECT *, sum(new_s) OVER ({part} ORDER BY ms, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM \
                  (SELECT *, CASE WHEN ms - lag(ms) OVER ({part} ORDER BY ms, event_id) < {gap} THEN 0 ELSE 1 END AS new_s FROM \
                   (SELECT *, CAST(event_time AS BIGINT) AS ms FROM payments WHERE {filter}) a) b) c"
            )
        }
    };
    let derived = Parser::new(&GenericDialect {})
        .try_with_sql(&format!("SELECT * FROM ({sub}) AS payments"))
        .unwrap()
        .parse_query()
        .unwrap();
    let SetExpr::Select(dsel) = *derived.body else {
        panic!()
    };
    sel.from[0].relation = dsel.from[0].relation.clone();
    if let TableFactor::Derived { .. } = &sel.from[0].relation {
    } else {
        panic!("expected a derived table");
    }
    stmts[0].to_string()
}

fn oracle(sql: &str, events: &[RecordBatch]) -> Vec<String> {
    batch_rows(&batch_sql(sql), &[("payments", events)])
}

/// The rows DataFusion gives for the batch query `bsql` over payment events in the tables
/// `tables` (name, events), as sorted JSON lines.
fn batch_rows(bsql: &str, tables: &[(&str, &[RecordBatch])]) -> Vec<String> {
    batch_rows_with(bsql, tables, &[])
}

/// [`batch_rows`] with other tables too (name, rows as they are).
pub(crate) fn batch_rows_with(
    bsql: &str,
    tables: &[(&str, &[RecordBatch])],
    extra: &[(&str, RecordBatch)],
) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        // The payment functions mean the same in batch (the anomaly baselines computed there
        // from each frame's values by their definition, the stream's incrementally).
        paystream::functions::register(&ctx);
        // Dictionary columns as plain strings: DataFusion's window functions concatenate a
        // dictionary's batches into Int8 keys and fail past 128 values (a bug of the batch
        // side, which only has to compute the same values).
        let plain = |t: &DataType| match t {
            DataType::Dictionary(_, v) => v.as_ref().clone(),
            t => t.clone(),
        };
        let schema = Arc::new(Schema::new(
            event_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
                .collect::<Vec<_>>(),
        ));
        for (name, events) in tables {
            let events: Vec<RecordBatch> = events
                .iter()
                .map(|b| {
                    let cols = b
                        .columns()
                        .iter()
                        .map(|c| cast(c, &plain(c.data_type())).unwrap())
                        .collect();
                    RecordBatch::try_new(Arc::clone(&schema), cols).unwrap()
                })
                .collect();
            let table = MemTable::try_new(Arc::clone(&schema), vec![events]).unwrap();
            ctx.register_table(*name, Arc::new(table)).unwrap();
        }
        for (name, rows) in extra {
            let table = MemTable::try_new(rows.schema(), vec![vec![rows.clone()]]).unwrap();
            ctx.register_table(*name, Arc::new(table)).unwrap();
        }
        let batches = ctx
            .sql(bsql)
            .await
            .unwrap_or_else(|e| panic!("{bsql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{bsql}: {e}"));
        sorted(lines_of(&batches))
    })
}

const QUERIES: [&str; 32] = [
    // Anomaly baselines: an unbounded frame's EWMA kept incrementally, a bounded one's and the
    // robust z-score computed from the frame's values; nulls (fee_minor) skipped.
    "SELECT event_id, \
       round(ewma_zscore(amount_minor, 0.2, 3) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 6) AS z, \
       round(ewma(amount_minor, 0.3) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 5 PRECEDING AND CURRENT ROW), 6) AS m, \
       round(ewma(fee_minor, 0.5) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 6) AS fee_m, \
       round(ewma_zscore(amount_minor, 0.1, 2) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 8 PRECEDING AND 1 PRECEDING), 6) AS zb, \
       round(mad_zscore(amount_minor, 4) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 6) AS r, \
       round(mad_zscore(fee_minor, 3) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 6 PRECEDING AND CURRENT ROW), 6) AS r2 \
     FROM payments",
    // Top-N per window, and a filter over a windowed query's rows.
    "SELECT * FROM (SELECT merchant_id, window_start, window_end, sum(amount_minor) AS total, \
         ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY sum(amount_minor) DESC, merchant_id) AS rn, \
         RANK() OVER (PARTITION BY window_start, window_end ORDER BY count(*) DESC) AS by_count \
       FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end) \
     WHERE rn <= 3",
    "SELECT card_id, window_end, n FROM (SELECT card_id, window_start, window_end, count(*) AS n \
       FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) GROUP BY card_id, window_start, window_end) \
     WHERE n >= 2",
    // SELECT DISTINCT over the unwindowed stream: each distinct row once, the first time.
    "SELECT DISTINCT merchant_id, currency FROM payments WHERE amount_minor > 100",
    "SELECT DISTINCT card_id, event_type AS kind FROM payments WHERE status = 'declined'",
    // FILTER on window aggregates; a subquery of the whole stream under OVER.
    "SELECT event_id, count(*) FILTER (WHERE status = 'declined') OVER w AS declines, \
       sum(amount_minor) FILTER (WHERE event_type = 'capture') OVER w AS captured, \
       count(DISTINCT merchant_id) FILTER (WHERE amount_minor > 1000) OVER w AS big_merchants \
     FROM (SELECT * FROM payments WHERE currency <> 'JPY') \
     WINDOW w AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)",
    // Per-event window functions (OVER): the feature query. lag breaks ties by event id
    // explicitly, as the stream always does.
    "SELECT event_id, card_id, event_time, amount_minor, \
       count(*) OVER w1h AS auths_1h, sum(amount_minor) OVER w1h AS amount_1h, \
       count(DISTINCT merchant_id) OVER w1h AS merchants_1h, \
       count(*) OVER (PARTITION BY card_id ORDER BY event_time \
                      RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS auths_5s, \
       lag(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time, event_id) AS previous_amount \
     FROM payments WHERE event_type = 'authorization' \
     WINDOW w1h AS (PARTITION BY card_id ORDER BY event_time \
                    RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)",
    // ROWS frames (also ending before the current row), extremes, averages, deviations, lead
    // and row_number.
    "SELECT event_id, merchant_id, \
       avg(amount_minor) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING) AS prev5_avg, \
       max(amount_minor) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS max4, \
       min(card_id) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 7 PRECEDING AND CURRENT ROW) AS min_card, \
       round(stddev(amount_minor) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW), 6) AS sd, \
       lead(amount_minor, 2, -1) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id) AS next2, \
       row_number() OVER (PARTITION BY merchant_id ORDER BY event_time, event_id) AS rn \
     FROM payments WHERE amount_minor > 500",
    // Deduplication: the first event per key.
    "SELECT event_id, payment_id, event_type, amount_minor FROM ( \
       SELECT *, ROW_NUMBER() OVER (PARTITION BY payment_id, event_type ORDER BY event_time, event_id) AS rn \
       FROM payments) WHERE rn = 1",
    // An alert rule: an outer query filters the features; string extremes over a RANGE frame.
    "SELECT * FROM (SELECT event_id, merchant_id, event_time, \
         count(*) OVER w AS n, sum(amount_minor) OVER w AS total, max(card_id) OVER w AS top_card, \
         round(stddev_pop(amount_minor) OVER w, 3) AS sd \
       FROM payments \
       WINDOW w AS (PARTITION BY merchant_id ORDER BY event_time RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW)) \
     WHERE n > 3",
    // One partition (no PARTITION BY), and a frame that ends before the current row.
    "SELECT event_id, count(*) OVER (ORDER BY event_time RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW) AS n1s, \
       sum(fee_minor) OVER (ORDER BY event_time RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND INTERVAL '1' SECOND PRECEDING) AS fees \
     FROM payments WHERE event_type = 'capture'",
    // Cumulative frames (the default with ORDER BY: RANGE from UNBOUNDED PRECEDING, peers in).
    "SELECT event_id, sum(amount_minor) OVER (PARTITION BY currency ORDER BY event_time) AS running, \
       count(DISTINCT card_id) OVER (PARTITION BY currency ORDER BY event_time) AS cards_so_far, \
       min(amount_minor) OVER (PARTITION BY currency ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS lowest \
     FROM payments",
    // lag with an offset and default, on a string, per card.
    "SELECT event_id, lag(merchant_id, 2, 'none') OVER (PARTITION BY card_id ORDER BY event_time, event_id) AS m2, \
       lead(event_type) OVER (PARTITION BY card_id ORDER BY event_time, event_id) AS next_type \
     FROM payments",
    "SELECT merchant_id, window_start, window_end, count(*) AS n, count(DISTINCT card_id) AS cards, \
       min(amount_minor) AS lo, max(amount_minor) AS hi, sum(fee_minor) AS fees, \
       count(*) FILTER (WHERE status = 'declined') AS declined, \
       CASE WHEN count(*) > 3 THEN 'busy' ELSE 'quiet' END AS load \
     FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) \
     WHERE amount_minor > 100 GROUP BY merchant_id, window_start, window_end HAVING count(*) > 1",
    "SELECT currency, window_start, window_end, sum(amount_minor) AS total, count(*) AS n \
     FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) \
     GROUP BY currency, window_start, window_end",
    "SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
     FROM HOP(payments, event_time, INTERVAL '20' SECOND, INTERVAL '30' SECOND) \
     WHERE event_type = 'capture' GROUP BY merchant_id, window_start, window_end \
     HAVING count(*) > 1 AND window_end > window_start + INTERVAL '1' SECOND",
    "SELECT window_start, window_end, count(*) AS n, count(DISTINCT merchant_id) AS merchants \
     FROM TABLE(HOP(TABLE payments, DESCRIPTOR(event_time), INTERVAL '5' SECOND, INTERVAL '15' SECOND)) \
     GROUP BY window_start, window_end",
    "SELECT card_id, window_start, window_end, count(*) AS n, max(amount_minor) AS hi, \
       count(*) FILTER (WHERE event_type = 'capture') AS captures, \
       sum(amount_minor) FILTER (WHERE amount_minor > 5000) AS big \
     FROM SESSION(payments, event_time, INTERVAL '3' SECOND) \
     WHERE event_type IN ('authorization', 'capture') GROUP BY card_id, window_start, window_end",
    "SELECT window_start, window_end, count(*) AS n FROM SESSION(payments, event_time, INTERVAL '40' MILLISECOND) \
     WHERE merchant_id = 'm_0007' GROUP BY window_start, window_end",
    // Every key lives for one event's windows only: the hop operator's key ids are compacted
    // again and again while panes still hold some of them.
    "SELECT event_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total, \
       count(DISTINCT merchant_id) AS merchants \
     FROM HOP(payments, event_time, INTERVAL '2' SECOND, INTERVAL '6' SECOND) \
     GROUP BY event_id, window_start, window_end HAVING event_id <> 'x' OR count(*) > 1",
    // Ordered aggregates (issue 15, part 3): events arrive out of order, so the accumulator
    // compares orderings itself; ties are broken by event_id (the batch side says so).
    "SELECT merchant_id, window_start, window_end, first_value(amount_minor ORDER BY event_time) AS first_amount, \
       last_value(card_id ORDER BY event_time) AS last_card, count(*) AS n \
     FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end",
    "SELECT merchant_id, window_start, window_end, first_value(event_id ORDER BY event_time DESC) AS newest, \
       last_value(amount_minor ORDER BY event_time) AS last_amount \
     FROM HOP(payments, event_time, INTERVAL '20' SECOND, INTERVAL '30' SECOND) GROUP BY merchant_id, window_start, window_end",
    "SELECT card_id, window_start, window_end, first_value(merchant_id ORDER BY event_time) AS first_merchant, \
       last_value(amount_minor ORDER BY event_time) AS last_amount, count(*) AS n \
     FROM SESSION(payments, event_time, INTERVAL '3' SECOND) GROUP BY card_id, window_start, window_end",
    "SELECT merchant_id, window_start, window_end, array_agg(amount_minor ORDER BY event_time) AS amounts, \
       string_agg(card_id, ',' ORDER BY event_time) AS cards, \
       percentile_cont(0.5) WITHIN GROUP (ORDER BY amount_minor) AS median_amount \
     FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end",
    // SELECT DISTINCT over a window: each distinct row once per window.
    "SELECT DISTINCT merchant_id, currency, window_start, window_end \
     FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) WHERE amount_minor > 1000",
    "SELECT DISTINCT card_id, window_start, window_end \
     FROM SESSION(payments, event_time, INTERVAL '2' SECOND) WHERE event_type = 'capture'",
    // Flink's session spelling with PARTITION BY.
    "SELECT card_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
     FROM TABLE(SESSION(TABLE payments PARTITION BY card_id, DESCRIPTOR(event_time), INTERVAL '3' SECOND)) \
     GROUP BY card_id, window_start, window_end",
    // A time bucket grouped by is a tumble (the batch side computes date_trunc / date_bin).
    "SELECT merchant_id, date_trunc('second', event_time) AS second, count(*) AS n, sum(amount_minor) AS total \
     FROM payments WHERE amount_minor > 100 GROUP BY merchant_id, date_trunc('second', event_time) \
     HAVING count(*) > 1",
    "SELECT date_bin(INTERVAL '10' SECOND, event_time) AS bucket, currency, count(*) AS n \
     FROM payments GROUP BY currency, date_bin(INTERVAL '10' SECOND, event_time)",
    // UNION ALL: alert rules into one output; a windowed branch beside plain and session ones.
    "SELECT 'big' AS rule, event_id, amount_minor FROM payments WHERE amount_minor > 5000 \
     UNION ALL SELECT 'capture', event_id, amount_minor FROM payments WHERE event_type = 'capture'",
    "SELECT merchant_id AS k, window_start AS t, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) \
     GROUP BY merchant_id, window_start \
     UNION ALL SELECT card_id, event_time, amount_minor FROM payments WHERE amount_minor > 9000 \
     UNION ALL SELECT card_id, window_end, count(*) FROM SESSION(payments, event_time, INTERVAL '3' SECOND) \
     GROUP BY card_id, window_start, window_end",
    "SELECT merchant_id, window_start, sum(amount_minor) AS total FROM HOP(payments, event_time, INTERVAL '5' SECOND, INTERVAL '15' SECOND) \
     WHERE event_type = 'capture' GROUP BY merchant_id, window_start \
     UNION ALL SELECT merchant_id, window_start, sum(amount_minor) FROM TUMBLE(payments, event_time, INTERVAL '1' MINUTE) \
     GROUP BY merchant_id, window_start",
];

fn shipped(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("queries/{name}.sql"))).unwrap()
}

#[test]
fn streaming_equals_batch_over_random_inputs_batch_sizes_and_workers() {
    let mut queries: Vec<String> = QUERIES.iter().map(|q| q.to_string()).collect();
    for name in ["settlement_per_minute", "card_velocity", "card_sessions"] {
        queries.push(shipped(name));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..8u64 {
        let cfg = GenConfig {
            events: 4_000,
            seed: rng.random(),
            rate: rng.random_range(50.0..400.0),
            merchants: rng.random_range(5..40),
            cards: rng.random_range(20..400),
            disorder_ms: rng.random_range(0..4_000),
            duplicate_rate: 0.02,
            malformed_rate: 0.01,
            ..GenConfig::default()
        };
        let path = dir.path().join(format!("events-{round}.jsonl"));
        let mut f = std::fs::File::create(&path).unwrap();
        let stats = generate(&cfg, &mut f).unwrap();
        let events = deduplicated(&path);
        for sql in &queries {
            let expected = oracle(sql, &events);
            let batch_size = [1, 2, 7, 64, 8192, rng.random_range(1..3000)][rng.random_range(0..6)];
            let workers = rng.random_range(1..=3);
            let plan = plan_query(sql).unwrap();
            let run = replay_with(&plan, &path, |o| {
                o.batch_size = batch_size;
                o.workers = workers;
            });
            let s = run.summary;
            assert_eq!(
                s.read,
                s.accepted + s.duplicates + s.dead_lettered,
                "accounting"
            );
            assert_eq!(s.read, stats.lines);
            assert_eq!(s.late, 0, "disorder is within the watermark bound");
            let got = sorted(run.lines);
            assert!(
                got == expected,
                "round {round} (seed {}, batch {batch_size}, workers {workers}) differs for\n{sql}\n\
                 streaming {} rows, batch {} rows; first difference: {:?}",
                cfg.seed,
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}

/// Unions of two streams (`cards` and `wallets`, both of payment events, from two files of
/// different rates and disorder), each branch over its own stream.
const TWO_STREAM_QUERIES: [&str; 3] = [
    "SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total        FROM TUMBLE(cards, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end      UNION ALL      SELECT merchant_id, window_start, window_end, count(*), sum(amount_minor)        FROM HOP(wallets, event_time, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY merchant_id, window_start, window_end",
    "SELECT event_id, amount_minor, 'card' AS kind FROM cards WHERE amount_minor > 50000      UNION ALL SELECT event_id, amount_minor, 'wallet' FROM wallets WHERE event_type = 'refund'      UNION ALL SELECT card_id, count(*), 'sessions' FROM SESSION(cards, event_time, INTERVAL '3' SECOND) GROUP BY card_id, window_start, window_end",
    "SELECT card_id, count(*) OVER (PARTITION BY card_id ORDER BY event_time          RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS recent FROM wallets      UNION ALL SELECT card_id, count(*) OVER (PARTITION BY card_id ORDER BY event_time          RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM cards",
];

/// Interval joins of two streams (issue 16, part 2), each side its own stream; either may be
/// the FROM one.
const TWO_STREAM_JOINS: [&str; 2] = [
    "SELECT c.event_id, w.event_id AS wallet_event, w.amount_minor \
     FROM cards c JOIN wallets w ON w.merchant_id = c.merchant_id \
      AND w.event_time BETWEEN c.event_time - INTERVAL '300' MILLISECOND AND c.event_time + INTERVAL '200' MILLISECOND \
     WHERE c.amount_minor > 50000",
    "SELECT w.event_id, c.event_id AS card_event FROM wallets w LEFT JOIN cards c \
       ON c.merchant_id = w.merchant_id AND c.currency = w.currency AND c.event_type = 'refund' \
      AND c.event_time BETWEEN w.event_time AND w.event_time + INTERVAL '2' SECOND \
     WHERE w.event_type = 'capture'",
];

/// Queries over the rows of a join of two streams (issue 16: windows over a join of two
/// sources), each with its batch query: for a window, the join and then the window by
/// arithmetic on the pair's event time.
const QUERIES_OVER_TWO_STREAM_JOINS: [(&str, &str); 3] = [
    (
        "WITH pairs AS (SELECT c.merchant_id, c.event_id, c.event_time, w.event_id AS wallet_event, w.amount_minor \
           FROM cards c JOIN wallets w ON w.merchant_id = c.merchant_id \
            AND w.event_time BETWEEN c.event_time - INTERVAL '300' MILLISECOND AND c.event_time + INTERVAL '200' MILLISECOND) \
         SELECT event_id, wallet_event FROM pairs WHERE amount_minor > 20000",
        "WITH pairs AS (SELECT c.merchant_id, c.event_id, c.event_time, w.event_id AS wallet_event, w.amount_minor \
           FROM cards c JOIN wallets w ON w.merchant_id = c.merchant_id \
            AND w.event_time BETWEEN c.event_time - INTERVAL '300' MILLISECOND AND c.event_time + INTERVAL '200' MILLISECOND) \
         SELECT event_id, wallet_event FROM pairs WHERE amount_minor > 20000",
    ),
    (
        "WITH pairs AS (SELECT c.merchant_id, c.event_time, w.amount_minor \
           FROM cards c JOIN wallets w ON w.merchant_id = c.merchant_id \
            AND w.event_time BETWEEN c.event_time - INTERVAL '300' MILLISECOND AND c.event_time + INTERVAL '200' MILLISECOND) \
         SELECT merchant_id, window_start, window_end, count(*) AS n, sum(amount_minor) AS total \
         FROM TUMBLE(pairs, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start, window_end",
        "WITH pairs AS (SELECT c.merchant_id, c.event_time, w.amount_minor \
           FROM cards c JOIN wallets w ON w.merchant_id = c.merchant_id \
            AND w.event_time BETWEEN c.event_time - INTERVAL '300' MILLISECOND AND c.event_time + INTERVAL '200' MILLISECOND) \
         SELECT merchant_id, to_timestamp_millis(ws) AS window_start, to_timestamp_millis(ws + 10000) AS window_end, \
           count(*) AS n, sum(amount_minor) AS total \
         FROM (SELECT *, CAST(event_time AS BIGINT) - CAST(event_time AS BIGINT) % 10000 AS ws FROM pairs) x \
         GROUP BY merchant_id, ws",
    ),
    (
        "WITH j AS (SELECT w.merchant_id, w.event_time AS captured_at, c.event_id AS refund \
           FROM wallets w LEFT JOIN cards c ON c.merchant_id = w.merchant_id AND c.currency = w.currency \
            AND c.event_type = 'refund' AND c.event_time BETWEEN w.event_time AND w.event_time + INTERVAL '2' SECOND \
           WHERE w.event_type = 'capture') \
         SELECT merchant_id, window_start, window_end, count(*) AS captures, count(refund) AS refunds \
         FROM TUMBLE(j, captured_at, INTERVAL '5' SECOND) GROUP BY merchant_id, window_start, window_end",
        "WITH j AS (SELECT w.merchant_id, w.event_time AS captured_at, c.event_id AS refund \
           FROM wallets w LEFT JOIN cards c ON c.merchant_id = w.merchant_id AND c.currency = w.currency \
            AND c.event_type = 'refund' AND c.event_time BETWEEN w.event_time AND w.event_time + INTERVAL '2' SECOND \
           WHERE w.event_type = 'capture') \
         SELECT merchant_id, to_timestamp_millis(ws) AS window_start, to_timestamp_millis(ws + 5000) AS window_end, \
           count(*) AS captures, count(refund) AS refunds \
         FROM (SELECT *, CAST(captured_at AS BIGINT) - CAST(captured_at AS BIGINT) % 5000 AS ws FROM j) x \
         GROUP BY merchant_id, ws",
    ),
];

/// Issue 15, part 2: a union of different streams equals the batch union of each branch's
/// batch query over its own events, over random inputs, batch sizes and worker counts.
#[test]
fn a_union_of_two_streams_equals_the_batch_union_of_its_branches() {
    use paystream::source::{MergedSource, Source};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let dir = tempfile::tempdir().unwrap();
    let streams: Vec<(String, Arc<paystream::schema::EventSchema>)> = ["cards", "wallets"]
        .iter()
        .map(|n| (n.to_string(), paystream::schema::EventSchema::payments()))
        .collect();
    for round in 0..4u64 {
        let mut files = Vec::new();
        for name in ["cards", "wallets"] {
            let cfg = GenConfig {
                events: rng.random_range(500..2_500),
                seed: rng.random(),
                rate: rng.random_range(50.0..300.0),
                merchants: rng.random_range(3..20),
                cards: rng.random_range(20..200),
                disorder_ms: rng.random_range(0..4_000),
                duplicate_rate: 0.02,
                malformed_rate: 0.01,
                ..GenConfig::default()
            };
            let path = dir.path().join(format!("{name}-{round}.jsonl"));
            generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
            files.push(path);
        }
        let (cards, wallets) = (deduplicated(&files[0]), deduplicated(&files[1]));
        let cases = TWO_STREAM_QUERIES
            .iter()
            .chain(&TWO_STREAM_JOINS)
            .map(|sql| (*sql, None))
            .chain(QUERIES_OVER_TWO_STREAM_JOINS.map(|(sql, b)| (sql, Some(b))));
        for (sql, batch) in cases {
            // A join is its own batch query; a union is the union of each branch's batch
            // query, written over `payments`, then pointed at its table.
            let bsql = if let Some(b) = batch {
                b.to_string()
            } else if sql.contains("JOIN") {
                sql.to_string()
            } else {
                sql.split("UNION ALL")
                    .map(|branch| {
                        let table = if branch.contains("cards") {
                            "cards"
                        } else {
                            "wallets"
                        };
                        batch_sql(&branch.replace(table, "payments")).replace("payments", table)
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ")
            };
            let expected = batch_rows(&bsql, &[("cards", &cards), ("wallets", &wallets)]);
            let plan = paystream::sql::plan_query_among(sql, &streams, &Default::default())
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            // A join of the two streams is spread by each stream's own key (a window over its
            // pairs runs on one worker).
            if batch.is_none() && sql.contains("JOIN") {
                assert!(matches!(
                    plan.partitioning(),
                    paystream::sql::Partitioning::ByStreamKeys(_)
                ));
            }
            let parts: Vec<Arc<dyn Source>> = files
                .iter()
                .map(|f| Arc::new(paystream::FileSource::new(f)) as Arc<dyn Source>)
                .collect();
            let batch_size = [1, 7, 64, 8192, rng.random_range(1..3000)][rng.random_range(0..5)];
            let workers = rng.random_range(1..=3);
            let run =
                crate::util::run_source(&plan, Arc::new(MergedSource::new(parts).unwrap()), |o| {
                    o.batch_size = batch_size;
                    o.workers = workers;
                });
            let s = run.summary;
            assert_eq!(s.read, s.accepted + s.duplicates + s.dead_lettered);
            assert_eq!(s.late, 0, "disorder is within the watermark bound");
            let got = sorted(run.lines);
            assert!(!expected.is_empty());
            assert!(
                got == expected,
                "round {round} (batch {batch_size}, workers {workers}) differs for\n{sql}\n\
                 streaming {} rows, batch {} rows; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }
}

/// Interval joins of the stream with itself (issue 16, part 2): the batch query is the same
/// SQL, which DataFusion runs as a join over the whole table.
const JOIN_QUERIES: [&str; 6] = [
    // Reconciliation: authorizations and their captures within a bound, or nulls.
    "SELECT a.payment_id, a.event_time AS authorized_at, c.event_time AS captured_at, \
       a.amount_minor AS authorized_minor, c.amount_minor AS captured_minor \
     FROM payments a LEFT JOIN payments c \
       ON c.payment_id = a.payment_id AND c.event_type = 'capture' \
      AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '3' SECOND \
     WHERE a.event_type = 'authorization'",
    // Inner, the bound written the other way round and strict, a condition over both sides.
    "SELECT a.event_id, c.event_id AS later, c.amount_minor - a.amount_minor AS diff \
     FROM payments a JOIN payments c \
       ON a.card_id = c.card_id AND a.event_time < c.event_time \
      AND a.event_time >= c.event_time - INTERVAL '2' SECOND AND c.amount_minor > a.amount_minor \
     WHERE a.event_type = 'authorization' AND c.event_type = 'authorization'",
    // A bound that does not start at zero, keys of two columns, rows that join themselves.
    "SELECT a.event_id, c.event_id AS other, a.merchant_id \
     FROM payments a JOIN payments c \
       ON c.merchant_id = a.merchant_id AND c.currency = a.currency \
      AND c.event_time BETWEEN a.event_time - INTERVAL '200' MILLISECOND AND a.event_time + INTERVAL '100' MILLISECOND \
     WHERE a.amount_minor > 100000",
    // Left join whose ON also restricts the left rows (they still come out, with nulls).
    "SELECT a.event_id, c.event_id AS refund FROM payments a LEFT JOIN payments c \
       ON c.payment_id = a.payment_id AND a.event_type = 'capture' AND c.event_type = 'refund' \
      AND c.event_time BETWEEN a.event_time + INTERVAL '1' SECOND AND a.event_time + INTERVAL '20' SECOND \
     WHERE a.currency = 'EUR'",
    // Sides named by CTEs over the stream (columns unqualified, and qualified by the stream's
    // alias inside the CTE).
    "WITH auths AS (SELECT * FROM payments WHERE event_type = 'authorization'), \
          caps AS (SELECT p.* FROM payments p WHERE p.event_type = 'capture' AND amount_minor > 500) \
     SELECT a.payment_id, a.event_id, c.event_id AS capture, c.event_time AS captured_at \
     FROM auths a JOIN caps c \
       ON c.payment_id = a.payment_id \
      AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '3' SECOND",
    // Subquery sides of a LEFT JOIN: the left one's WHERE decides which left rows come out at
    // all (a capture not in EUR must not come out with nulls), the right one's (an OR, kept
    // whole) which rows can match.
    "SELECT a.event_id, a.currency, c.event_id AS later, c.event_type AS later_type \
     FROM (SELECT * FROM payments WHERE event_type = 'capture' AND currency = 'EUR') a \
     LEFT JOIN (SELECT * FROM payments WHERE event_type = 'refund' OR amount_minor < 1000) c \
       ON c.payment_id = a.payment_id \
      AND c.event_time BETWEEN a.event_time + INTERVAL '1' SECOND AND a.event_time + INTERVAL '20' SECOND",
];

/// A generated file of `events` events for round `round` in `dir` (random rate, merchants and
/// cards; disorder within the watermark bound; duplicates and malformed lines), and its
/// deduplicated events for the batch side.
pub(crate) fn random_file(
    rng: &mut rand::rngs::StdRng,
    dir: &std::path::Path,
    round: u64,
    events: u64,
) -> (std::path::PathBuf, Vec<RecordBatch>) {
    let cfg = GenConfig {
        events,
        seed: rng.random(),
        rate: rng.random_range(50.0..300.0),
        merchants: rng.random_range(5..40),
        cards: rng.random_range(20..300),
        disorder_ms: rng.random_range(0..4_000),
        duplicate_rate: 0.02,
        malformed_rate: 0.01,
        ..GenConfig::default()
    };
    let path = dir.join(format!("events-{round}.jsonl"));
    generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
    let events = deduplicated(&path);
    (path, events)
}

/// Issue 16, part 2: an interval join equals the batch join over the same events, over random
/// inputs, batch sizes and workers.
#[test]
fn an_interval_join_equals_the_batch_join() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(162);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let (path, events) = random_file(&mut rng, dir.path(), round, 2_000);
        for sql in JOIN_QUERIES {
            let expected = oracle(sql, &events);
            assert!(!expected.is_empty(), "{sql}");
            let (run, how) = replay_randomly(&plan_query(sql).unwrap(), &path, &mut rng);
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

/// Queries reading a CTE that joins streams (`FROM j`): the join and the query over its rows
/// run chained. With the changelog's key columns for a GROUP BY without a window.
const OVER_JOIN_QUERIES: [(&str, Option<&[&str]>); 2] = [
    (
        "WITH auths AS (SELECT * FROM payments WHERE event_type = 'authorization'), \
              caps AS (SELECT * FROM payments WHERE event_type = 'capture'), \
              j AS (SELECT a.merchant_id, a.event_time AS authorized_at, c.amount_minor AS captured_minor \
                    FROM auths a JOIN caps c ON c.payment_id = a.payment_id \
                     AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5' SECOND) \
         SELECT merchant_id, count(*) AS captures, sum(captured_minor) AS total FROM j GROUP BY merchant_id",
        Some(&["merchant_id"]),
    ),
    (
        "WITH j AS (SELECT a.event_id, a.amount_minor, a.event_time, c.event_id AS refund \
                    FROM payments a LEFT JOIN payments c ON c.payment_id = a.payment_id \
                     AND c.event_type = 'refund' \
                     AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '30' SECOND \
                    WHERE a.event_type = 'capture') \
         SELECT event_id, refund FROM j WHERE amount_minor > 5000",
        None,
    ),
];

/// A query over a join's rows equals the same SQL in batch.
#[test]
fn a_query_over_a_join_cte_equals_the_batch_query() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1617);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let (path, events) = random_file(&mut rng, dir.path(), round, 2_000);
        for (sql, key) in OVER_JOIN_QUERIES {
            let canonical = |rows: Vec<String>| -> Vec<String> {
                sorted(
                    rows.iter()
                        .map(|l| {
                            serde_json::from_str::<serde_json::Value>(l)
                                .unwrap()
                                .to_string()
                        })
                        .collect(),
                )
            };
            let expected = canonical(oracle(sql, &events));
            assert!(!expected.is_empty(), "{sql}");
            let (run, how) = replay_randomly(&plan_query(sql).unwrap(), &path, &mut rng);
            let got = match key {
                Some(key) => apply_changelog(&run.lines, key),
                None => canonical(run.lines),
            };
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

/// GROUP BY without a window (a changelog), each with its key columns.
const UPDATING_QUERIES: [(&str, &[&str]); 3] = [
    (
        "SELECT merchant_id, currency, count(*) AS n, sum(amount_minor) AS total, \
           min(amount_minor) AS smallest, count(DISTINCT card_id) AS cards \
         FROM payments WHERE event_type <> 'refund' GROUP BY merchant_id, currency",
        &["merchant_id", "currency"],
    ),
    // HAVING on a spread that grows: a key shown is deleted again.
    (
        "SELECT card_id, merchant_id, count(*) FILTER (WHERE status = 'declined') AS declines, \
           max(event_time) AS latest, min(amount_minor) AS smallest \
         FROM payments GROUP BY card_id, merchant_id \
         HAVING max(amount_minor) - min(amount_minor) < 50000",
        &["card_id", "merchant_id"],
    ),
    (
        "SELECT count(*) AS n, sum(amount_minor) AS total FROM payments",
        &[],
    ),
];

/// The table a changelog leaves: per key (the columns `key`), its latest row without
/// `op`, deleted keys dropped. Also checks the changelog's grammar per key: an insert first
/// (and after each delete), updates and deletes only of a key shown.
pub(crate) fn apply_changelog(lines: &[String], key: &[&str]) -> Vec<String> {
    let mut table = std::collections::BTreeMap::new();
    for l in lines {
        let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
        let op = row.remove("op").unwrap();
        let k: Vec<String> = key.iter().map(|c| row[*c].to_string()).collect();
        let shown = table.contains_key(&k);
        match op.as_str().unwrap() {
            "insert" => assert!(!shown, "insert of a key shown: {l}"),
            "update" | "delete" => assert!(shown, "change of a key not shown: {l}"),
            o => panic!("op {o}"),
        }
        if op == "delete" {
            table.remove(&k);
        } else {
            table.insert(k, serde_json::Value::Object(row).to_string());
        }
    }
    sorted(table.into_values().collect())
}

/// `SET state_ttl` ends a key's state a TTL after its latest event, whether the watermark or
/// the key's next event gets there first: the changelog of a GROUP BY without a window, applied,
/// and the rows of OVER (`lag`, `row_number`) are the same however the events are batched and
/// spread over workers (before, a batch's events were counted together before the watermark
/// step that ended their key's state, so larger batches merged events a TTL apart).
#[test]
fn state_ttl_results_do_not_depend_on_batching() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1616);
    let dir = tempfile::tempdir().unwrap();
    let updating = plan_query(
        "SELECT card_id, count(*) AS n, sum(amount_minor) AS total FROM payments GROUP BY card_id",
    )
    .unwrap()
    .with_state_ttl(1_000);
    let over = plan_query(
        "SELECT event_id, lag(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time) AS prev, \
           row_number() OVER (PARTITION BY card_id ORDER BY event_time) AS rn FROM payments",
    )
    .unwrap()
    .with_state_ttl(1_000);
    for round in 0..3u64 {
        let (path, _) = random_file(&mut rng, dir.path(), round, 3_000);
        let one_by_one = |plan: &paystream::sql::StreamPlan| {
            replay_with(plan, &path, |o| {
                o.batch_size = 1;
                o.workers = 1;
            })
        };
        let reference = one_by_one(&updating);
        let table = apply_changelog(&reference.lines, &["card_id"]);
        // States ended, by the watermark and by a later event of their key.
        assert!(
            reference
                .lines
                .iter()
                .any(|l| l.contains("\"op\":\"delete\""))
        );
        let rows = sorted(one_by_one(&over).lines);
        let restarts = rows.iter().filter(|l| l.contains("\"rn\":1}")).count();
        assert!(
            restarts > 0 && restarts < rows.len(),
            "{restarts} of {}",
            rows.len()
        );
        for _ in 0..3 {
            let (run, how) = replay_randomly(&updating, &path, &mut rng);
            assert!(
                apply_changelog(&run.lines, &["card_id"]) == table,
                "round {round} ({how}): the changelog applied differs"
            );
            let (run, how) = replay_randomly(&over, &path, &mut rng);
            let got = sorted(run.lines);
            assert!(
                got == rows,
                "round {round} ({how}): OVER rows differ; first: {:?}",
                got.iter().zip(&rows).find(|(a, b)| a != b)
            );
        }
    }
}

/// Issue 16, part 3: a GROUP BY without a window emits a changelog that, applied in order,
/// is the batch GROUP BY over the same events — over random inputs, batch sizes and workers.
#[test]
fn an_updating_aggregate_applied_is_the_batch_group_by() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let dir = tempfile::tempdir().unwrap();
    let mut deletes = 0;
    for round in 0..4u64 {
        let cfg = GenConfig {
            events: 3_000,
            seed: rng.random(),
            rate: rng.random_range(50.0..400.0),
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
        for (sql, key) in UPDATING_QUERIES {
            // Rows as JSON objects written with sorted keys, as `apply_changelog` writes them.
            let expected = sorted(
                oracle(sql, &events)
                    .iter()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .unwrap()
                            .to_string()
                    })
                    .collect(),
            );
            assert!(!expected.is_empty(), "{sql}");
            let batch_size = [1, 7, 64, 8192, rng.random_range(1..3000)][rng.random_range(0..5)];
            let workers = rng.random_range(1..=3);
            let run = replay_with(&plan_query(sql).unwrap(), &path, |o| {
                o.batch_size = batch_size;
                o.workers = workers;
            });
            assert_eq!(run.summary.late, 0);
            let got = apply_changelog(&run.lines, key);
            assert!(
                got == expected,
                "round {round} (batch {batch_size}, workers {workers}) differs for\n{sql}\n\
                 streaming {} keys, batch {}; first difference: {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
            // Small batches change keys more than once: updates, not only inserts.
            if batch_size <= 64 && !key.is_empty() {
                assert!(run.lines.iter().any(|l| l.contains("\"op\":\"update\"")));
            }
            deletes += run
                .lines
                .iter()
                .filter(|l| l.contains("\"op\":\"delete\""))
                .count();
        }
    }
    // Keys that stopped passing HAVING were deleted.
    assert!(deletes > 0);
}

#[test]
fn oracle_is_not_vacuous() {
    // The shipped queries produce rows on generated data, so equality above means something.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.jsonl");
    let cfg = GenConfig {
        events: 3_000,
        rate: 200.0,
        cards: 100,
        ..GenConfig::default()
    };
    generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
    let events = deduplicated(&path);
    for name in ["settlement_per_minute", "card_velocity", "card_sessions"] {
        assert!(
            !oracle(&shipped(name), &events).is_empty(),
            "{name} produced no rows"
        );
    }
}
