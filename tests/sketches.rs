//! Approximate aggregates over windows (issue 18): `approx_distinct` (HyperLogLog) and
//! `approx_percentile_cont` / `approx_median` (t-digest), whose states a HOP window merges from
//! its panes. Their stated bounds, checked against exact computations of the same windows:
//!
//! * `approx_distinct` over a HOP window equals the batch `approx_distinct` over the window's
//!   events (merging sketches loses nothing), and is within 2 % (+1) of `count(DISTINCT)` —
//!   about 2.5 standard errors of its 2^14-register HyperLogLog (1.04 / 128 = 0.81 %);
//! * `approx_percentile_cont(x, q)` and `approx_median(x)` lie between the window's values of
//!   rank ⌊(q − 0.02)·n⌋ and ⌈(q + 0.02)·n⌉ (a rank error of at most 2 % of the window's count).

use std::collections::BTreeMap;

use datafusion::arrow::array::AsArray;
use paystream::generate::{GenConfig, generate};
use paystream::sql::plan_query;
use rand::SeedableRng;

use crate::oracle::{batch_sql, deduplicated};
use crate::util::replay_randomly;

const STREAM: &str = "SELECT merchant_id, window_start, approx_distinct(card_id) AS approx_cards, \
    count(DISTINCT card_id) AS cards, approx_percentile_cont(amount_minor, 0.9) AS p90, \
    approx_median(amount_minor) AS p50 \
    FROM HOP(payments, event_time, INTERVAL '10' SECOND, INTERVAL '60' SECOND) \
    GROUP BY merchant_id, window_start, window_end";

const BATCH: &str = "SELECT merchant_id, window_start, approx_distinct(card_id) AS approx_cards \
    FROM HOP(payments, event_time, INTERVAL '10' SECOND, INTERVAL '60' SECOND) \
    GROUP BY merchant_id, window_start, window_end";

#[test]
fn sketches_over_hop_windows_keep_their_stated_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let cfg = GenConfig {
        events: 30_000,
        seed: 18,
        rate: 400.0,
        merchants: 4,
        cards: 20_000,
        disorder_ms: 2_000,
        ..GenConfig::default()
    };
    generate(&cfg, &mut std::fs::File::create(&path).unwrap()).unwrap();
    let plan = plan_query(STREAM).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let (run, how) = replay_randomly(&plan, &path, &mut rng);

    // The batch side: each window's sketch over all its events (DataFusion), and its values
    // (collected here, each event into the six 60 s windows that hold it).
    let events = deduplicated(&path);
    let mut values: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for b in &events {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let (merchants, times, amounts) =
            (col("merchant_id"), col("event_time"), col("amount_minor"));
        let merchants = datafusion::arrow::compute::cast(
            &merchants,
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let merchants = merchants.as_string::<i32>();
        let times = times.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        let amounts = amounts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let t = times.value(i);
            let last = t.div_euclid(10_000) * 10_000;
            for k in 0..6 {
                values
                    .entry((merchants.value(i).to_string(), last - k * 10_000))
                    .or_default()
                    .push(amounts.value(i) as f64);
            }
        }
    }
    let mut batch: BTreeMap<(String, String), (u64, Vec<f64>)> = BTreeMap::new();
    for line in crate::oracle::batch_rows_with(&batch_sql(BATCH), &[("payments", &events)], &[]) {
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        let merchant = r["merchant_id"].as_str().unwrap().to_string();
        let start = r["window_start"].as_str().unwrap().to_string();
        let ms = paystream::time::parse_rfc3339_millis(&start).unwrap();
        let mut amounts = values.remove(&(merchant.clone(), ms)).unwrap_or_default();
        amounts.sort_by(f64::total_cmp);
        batch.insert(
            (merchant, start),
            (r["approx_cards"].as_u64().unwrap(), amounts),
        );
    }
    let mut checked = 0;
    let mut worst_distinct: f64 = 0.0;
    for line in &run.lines {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            r["merchant_id"].as_str().unwrap().to_string(),
            r["window_start"].as_str().unwrap().to_string(),
        );
        let (approx_batch, amounts) = batch
            .get(&key)
            .unwrap_or_else(|| panic!("({how}) no batch window {key:?}"));
        let approx = r["approx_cards"].as_u64().unwrap();
        let exact = r["cards"].as_u64().unwrap();
        assert_eq!(approx, *approx_batch, "({how}) merged panes differ: {line}");
        let err = approx.abs_diff(exact) as f64;
        worst_distinct = worst_distinct.max(err / exact.max(1) as f64);
        assert!(err <= 0.02 * exact as f64 + 1.0, "({how}) {line}");
        let n = amounts.len() as f64;
        for (q, col) in [(0.9, "p90"), (0.5, "p50")] {
            let v = r[col].as_f64().unwrap();
            let lo = amounts[(((q - 0.02) * n).floor() as usize).min(amounts.len() - 1)];
            let hi =
                amounts[((((q + 0.02) * n).ceil() as usize).max(1) - 1).min(amounts.len() - 1)];
            assert!(
                (lo..=hi).contains(&v),
                "({how}) {col} {v} outside [{lo}, {hi}] of {n} values: {line}"
            );
        }
        checked += 1;
    }
    assert!(checked > 30, "{checked} windows");
    // Big enough windows that the sketches are approximate at all.
    assert!(
        batch.values().any(|(_, a)| a.len() > 1_000),
        "windows too small to test a sketch"
    );
    eprintln!("{checked} windows; worst approx_distinct error {worst_distinct:.4}");
}
