//! Operator state: snapshot to bytes mid-stream, restore into a fresh operator, carry on — the
//! output must equal an uninterrupted run. And a replay resumed from a source position reads
//! exactly the rest of the file.

use paystream::decode::decode_json_lines;
use paystream::engine::Router;
use paystream::operators::{Dedup, EventBatch, OperatorOutput, Watermark, build_operator};
use paystream::plan_query;

use crate::util::{lines_of, replay, repo, sorted};

/// The sample's accepted events, in arrival order, with the watermark after each batch.
fn event_batches(batch_size: usize) -> Vec<(EventBatch, i64)> {
    let bytes = std::fs::read(repo("data/sample_events.jsonl")).unwrap();
    let decoded = decode_json_lines(&bytes, 1, batch_size);
    let mut router = Router::new(Dedup::new(3_600_000), Watermark::new(5_000, 300_000));
    let mut out = Vec::new();
    for b in &decoded.batches {
        let mut rejects = Vec::new();
        if let Some(ev) = router
            .accept(0, b, |_| String::new(), &mut rejects)
            .unwrap()
        {
            out.push((ev, router.watermark.current()));
        }
    }
    out
}

fn run(sql: &str, batches: &[(EventBatch, i64)], snapshot_at: Option<usize>) -> Vec<String> {
    run_plan(&plan_query(sql).unwrap(), sql, batches, snapshot_at)
}

fn run_plan(
    plan: &paystream::sql::StreamPlan,
    sql: &str,
    batches: &[(EventBatch, i64)],
    snapshot_at: Option<usize>,
) -> Vec<String> {
    let plan = plan.clone();
    let mut op = build_operator(&plan).unwrap();
    let mut out = OperatorOutput::default();
    for (i, (ev, wm)) in batches.iter().enumerate() {
        if Some(i) == snapshot_at {
            let bytes = op.snapshot().unwrap();
            // The snapshot must not disturb the running operator either: keep going with a
            // restored copy, and check the original still snapshots identically.
            let mut restored = build_operator(&plan).unwrap();
            restored.restore(&bytes).unwrap();
            assert_eq!(
                restored.snapshot().unwrap().len(),
                bytes.len(),
                "restore is faithful"
            );
            op = restored;
        }
        op.process(ev, &mut out).unwrap();
        op.advance_watermark(*wm, &mut out).unwrap();
    }
    op.finish(&mut out).unwrap();
    assert!(out.late.is_empty());
    check_result_times(sql, &out);
    let batches: Vec<_> = out.results.into_iter().map(|r| r.batch).collect();
    sorted(lines_of(&batches))
}

/// Every result row carries the event time it stands for: its window's end for an aggregate,
/// its event's time for a per-event result (checked where the query projects that column).
fn check_result_times(sql: &str, out: &OperatorOutput) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    for r in &out.results {
        let schema = r.batch.schema();
        let name = if sql.contains("GROUP BY") {
            "window_end"
        } else {
            "event_time"
        };
        let Ok(col) = schema.index_of(name) else {
            continue;
        };
        let want = r
            .batch
            .column(col)
            .as_primitive::<TimestampMillisecondType>();
        for i in 0..r.batch.num_rows() {
            assert_eq!(
                r.times.get(i),
                want.value(i),
                "row {i} of a result of\n{sql}"
            );
        }
    }
}

#[test]
fn results_carry_their_window_end_or_event_time() {
    let batches = event_batches(97);
    for sql in [
        "SELECT window_end, card_id, count(*) AS n FROM SESSION(payments, event_time, INTERVAL '200' MILLISECOND) GROUP BY window_end, card_id HAVING count(*) > 1",
        "SELECT window_end, merchant_id, count(*) FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY window_end, merchant_id HAVING count(*) > 2",
        "SELECT window_end, count(*) FROM HOP(payments, event_time, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY window_end",
        "SELECT event_id, event_time, amount_minor FROM payments WHERE amount_minor > 5000",
        "SELECT event_time, window_end FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) WHERE amount_minor > 100",
        "SELECT event_time, lead(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time) AS next FROM payments",
    ] {
        assert!(!run(sql, &batches, None).is_empty(), "{sql}");
    }
}

/// Dense windows keep each live key's latest window with events, and the next window to close.
#[test]
fn dense_windows_round_trip_their_live_keys() {
    let batches = event_batches(97);
    for sql in [
        "SELECT card_id, window_start, count(*) AS n, sum(amount_minor) AS total FROM TUMBLE(payments, event_time, INTERVAL '1' SECOND) GROUP BY card_id, window_start, window_end",
        "SELECT window_start, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '200' MILLISECOND) WHERE amount_minor > 9000 GROUP BY window_start, window_end",
    ] {
        let plan = plan_query(sql)
            .unwrap()
            .with_dense_windows()
            .unwrap()
            .with_state_ttl(3_000);
        let uninterrupted = run_plan(&plan, sql, &batches, None);
        assert!(uninterrupted.iter().any(|l| l.contains("\"n\":0")), "{sql}");
        for at in [1, batches.len() / 3, batches.len() / 2, batches.len() - 1] {
            assert_eq!(
                run_plan(&plan, sql, &batches, Some(at)),
                uninterrupted,
                "{sql} resumed at batch {at}"
            );
        }
    }
}

#[test]
fn every_windowed_operator_round_trips_its_state() {
    let batches = event_batches(97);
    let queries = [
        std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap(),
        std::fs::read_to_string(repo("queries/card_velocity.sql")).unwrap(),
        std::fs::read_to_string(repo("queries/card_sessions.sql")).unwrap(),
        "SELECT window_start, count(*), count(DISTINCT card_id), max(amount_minor) FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY window_start".into(),
        "SELECT window_start, window_end, count(*) FROM SESSION(payments, event_time, INTERVAL '200' MILLISECOND) GROUP BY window_start, window_end".into(),
        // Keys that die quickly: a hop snapshot after its key ids were compacted.
        "SELECT event_id, window_start, window_end, count(*), count(DISTINCT merchant_id) FROM HOP(payments, event_time, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY event_id, window_start, window_end".into(),
        // Ordered aggregates keep their ordering values in their state.
        "SELECT merchant_id, window_start, first_value(amount_minor ORDER BY event_time), last_value(card_id ORDER BY event_time) FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start".into(),
        "SELECT window_start, window_end, first_value(amount_minor ORDER BY event_time) FROM HOP(payments, event_time, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY window_start, window_end".into(),
        "SELECT card_id, window_start, window_end, last_value(amount_minor ORDER BY event_time) FROM SESSION(payments, event_time, INTERVAL '2' SECOND) GROUP BY card_id, window_start, window_end".into(),
        // Window functions (OVER): buffered rows, histories, frames and their accumulators,
        // rows waiting for lead.
        "SELECT event_id, event_time, count(*) OVER w AS n, sum(amount_minor) OVER w AS total, count(DISTINCT merchant_id) OVER w AS merchants, \
           max(amount_minor) OVER w AS hi, lag(amount_minor) OVER (PARTITION BY card_id ORDER BY event_time, event_id) AS prev \
         FROM payments WINDOW w AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30' SECOND PRECEDING AND CURRENT ROW)".into(),
        "SELECT event_id, event_time, lead(amount_minor, 2) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id) AS next2, \
           row_number() OVER (PARTITION BY merchant_id ORDER BY event_time, event_id) AS rn, \
           avg(amount_minor) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN 4 PRECEDING AND 1 PRECEDING) AS prev_avg, \
           stddev(amount_minor) OVER (PARTITION BY merchant_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sd, \
           min(card_id) OVER (PARTITION BY merchant_id ORDER BY event_time) AS lowest_card \
         FROM payments".into(),
        // Anomaly baselines: an incremental EWMA (baseline and newest value), a bounded frame's
        // values, mad_zscore's newest values.
        "SELECT event_id, event_time, \
           ewma_zscore(amount_minor, 0.2, 2) OVER (PARTITION BY card_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS z, \
           ewma(amount_minor, 0.4) OVER (PARTITION BY card_id ORDER BY event_time, event_id ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS m, \
           mad_zscore(amount_minor, 3) OVER (PARTITION BY card_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS r \
         FROM payments".into(),
        // Window functions over a windowed query's rows: both operators' state.
        "WITH per_window AS (SELECT merchant_id, window_start, window_end, count(*) AS n FROM TUMBLE(payments, event_time, INTERVAL '2' SECOND) GROUP BY merchant_id, window_start, window_end) \
         SELECT merchant_id, window_start, n, ewma_zscore(n, 0.3, 2) OVER (PARTITION BY merchant_id ORDER BY window_start ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS z, \
           lag(n) OVER (PARTITION BY merchant_id ORDER BY window_start) AS previous FROM per_window".into(),
        // No function reads a column: the history keeps times alone.
        "SELECT event_id, event_time, count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '20' SECOND PRECEDING AND CURRENT ROW) AS n FROM payments".into(),
        "SELECT * FROM (SELECT event_id, event_time, row_number() OVER (PARTITION BY payment_id, event_type ORDER BY event_time, event_id) AS rn FROM payments) WHERE rn = 1".into(),
        // UNION ALL: every branch's state.
        "SELECT card_id AS k, window_start, count(*) AS n FROM SESSION(payments, event_time, INTERVAL '2' SECOND) GROUP BY card_id, window_start, window_end \
         UNION ALL SELECT merchant_id, window_start, count(*) FROM TUMBLE(payments, event_time, INTERVAL '10' SECOND) GROUP BY merchant_id, window_start \
         UNION ALL SELECT event_id, event_time, amount_minor FROM payments WHERE amount_minor > 9000".into(),
        // GROUP BY without a window: every key's running state, what it last showed and what
        // changed since, as a changelog.
        "SELECT merchant_id, currency, count(*) AS n, sum(amount_minor) AS total, count(DISTINCT card_id) AS cards, \
           max(amount_minor) AS hi FROM payments GROUP BY merchant_id, currency HAVING min(amount_minor) > 50".into(),
        // An interval join: both sides' kept rows, and which left rows matched.
        "SELECT a.event_id, c.event_id AS later FROM payments a LEFT JOIN payments c \
           ON c.card_id = a.card_id AND c.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '2' SECOND \
           AND c.event_id <> a.event_id".into(),
        // A row pattern: pending events, each partition's rows from its undecided first one.
        "SELECT * FROM payments MATCH_RECOGNIZE (PARTITION BY merchant_id ORDER BY event_time \
           MEASURES FIRST(A.event_id) AS a_id, COUNT(B.*) AS bs, LAST(B.amount_minor) AS last_b \
           AFTER MATCH SKIP TO NEXT ROW PATTERN (A B+ C?) WITHIN INTERVAL '3' SECOND \
           DEFINE A AS amount_minor > 5000, B AS B.amount_minor < A.amount_minor, C AS C.amount_minor > 2 * FIRST(A.amount_minor))".into(),
    ];
    for sql in &queries {
        let uninterrupted = run(sql, &batches, None);
        assert!(!uninterrupted.is_empty());
        for at in [1, batches.len() / 3, batches.len() / 2, batches.len() - 1] {
            let resumed = run(sql, &batches, Some(at));
            let missing: Vec<_> = uninterrupted
                .iter()
                .filter(|l| !resumed.contains(l))
                .take(3)
                .collect();
            let extra: Vec<_> = resumed
                .iter()
                .filter(|l| !uninterrupted.contains(l))
                .take(3)
                .collect();
            assert!(
                resumed == uninterrupted,
                "snapshot at batch {at} of\n{sql}\n{} vs {} rows; missing {missing:?}; extra {extra:?}",
                resumed.len(),
                uninterrupted.len()
            );
        }
    }
}

#[test]
fn a_corrupt_snapshot_is_refused() {
    let plan =
        plan_query(&std::fs::read_to_string(repo("queries/card_velocity.sql")).unwrap()).unwrap();
    let mut op = build_operator(&plan).unwrap();
    let mut out = OperatorOutput::default();
    for (ev, _) in event_batches(500).iter().take(3) {
        op.process(ev, &mut out).unwrap();
    }
    let mut bytes = op.snapshot().unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let err = build_operator(&plan)
        .unwrap()
        .restore(&bytes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
    // State of another query's operator is refused too.
    let other =
        plan_query(&std::fs::read_to_string(repo("queries/settlement_per_minute.sql")).unwrap())
            .unwrap();
    let good = op.snapshot().unwrap();
    assert!(build_operator(&other).unwrap().restore(&good).is_err());
}

#[test]
fn a_replay_resumes_from_a_source_position() {
    let input = repo("data/sample_events.jsonl");
    let bytes = std::fs::read(&input).unwrap();
    let skip = 1234;
    let offset = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(skip - 1)
        .map(|(i, _)| i as u64 + 1)
        .unwrap();
    let sql = "SELECT event_id FROM payments";
    let all = replay(sql, &input, |_| {});
    let rest = replay(sql, &input, |o| {
        o.start = paystream::SourcePosition {
            offset,
            line: skip as u64 + 1,
        };
    });
    assert_eq!(rest.summary.read, all.summary.read - skip as u64);
    // Dead letters keep their true line numbers after a resume.
    let tail_dead: Vec<_> = all
        .dead_letters
        .iter()
        .filter(|d| d["line"].as_u64().unwrap() > skip as u64)
        .collect();
    assert_eq!(rest.dead_letters.iter().collect::<Vec<_>>(), tail_dead);
}

/// Saved state cannot be restored over a source with no positions (a file is read whole): the
/// run is refused rather than reading the whole file again on top of the restored counts.
#[test]
fn state_is_not_restored_over_a_file_source() {
    use std::sync::Arc;

    use paystream::engine::{OnStop, RunSpec};
    use paystream::sink::NullSink;
    use paystream::{FileSource, plan_query};

    let input = crate::util::repo("data/sample_events.jsonl");
    let plan = plan_query("SELECT event_id FROM payments").unwrap();
    let run = |restore| {
        let mut spec =
            RunSpec::single(Arc::new(FileSource::new(&input)), &plan, Box::new(NullSink));
        spec.options.workers = 1;
        spec.on_stop = OnStop::Snapshot;
        spec.restore = restore;
        paystream::engine::run(spec, Arc::default(), Arc::default())
    };
    let state = run(None).unwrap().state.expect("a snapshot at the end");
    let e = run(Some(state)).unwrap_err().to_string();
    assert!(e.contains("cannot be restored"), "{e}");
}
