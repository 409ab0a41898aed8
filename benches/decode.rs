//! Criterion: JSON Lines → Arrow decode (validation included), events per second on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream::decode::decode_json_lines;
use paystream::generate::{GenConfig, generate};

fn bench_decode(c: &mut Criterion) {
    let mut bytes = Vec::new();
    generate(
        &GenConfig {
            events: 100_000,
            ..GenConfig::default()
        },
        &mut bytes,
    )
    .unwrap();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("json_lines_100k", |b| {
        b.iter(|| std::hint::black_box(decode_json_lines(&bytes, 1, 8192)).records)
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
