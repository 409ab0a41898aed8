//! Criterion: windowed aggregation over already-decoded, deduplicated batches — the operator
//! alone, without reading or decoding — for each shipped query, events per second on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream::decode::decode_json_lines;
use paystream::engine::Router;
use paystream::generate::{GenConfig, generate};
use paystream::operators::{Dedup, EventBatch, OperatorOutput, Watermark, build_operator};
use paystream::plan_query;
use paystream::sql::SHIPPED_QUERIES;

fn batches(n: u64) -> Vec<(EventBatch, i64)> {
    let mut bytes = Vec::new();
    generate(
        &GenConfig {
            events: n,
            ..GenConfig::default()
        },
        &mut bytes,
    )
    .unwrap();
    let decoded = decode_json_lines(&bytes, 1, 8192);
    let mut router = Router::new(Dedup::new(3_600_000), Watermark::new(5_000, 300_000));
    decoded
        .batches
        .iter()
        .filter_map(|b| {
            let mut rejects = Vec::new();
            router
                .accept(0, b, |_| String::new(), &mut rejects)
                .unwrap()
                .map(|e| (e, router.watermark.current()))
        })
        .collect()
}

fn bench_windows(c: &mut Criterion) {
    let n = 200_000;
    let input = batches(n);
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    for (name, sql) in SHIPPED_QUERIES {
        let plan = plan_query(sql).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut op = build_operator(&plan).unwrap();
                let mut out = OperatorOutput::default();
                for (ev, wm) in &input {
                    op.process(ev, &mut out).unwrap();
                    op.advance_watermark(*wm, &mut out).unwrap();
                }
                op.finish(&mut out).unwrap();
                out.results.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_windows);
criterion_main!(benches);
