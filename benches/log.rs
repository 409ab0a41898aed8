//! Criterion: the embedded log — producing 100 k generated events into 8 partitions (keyed by
//! `card_id`, fsync left to the OS) and consuming them back — beside plain buffered file I/O of
//! the same bytes. `paystream bench --suite log` measures the same at 1 M events.

use std::io::{BufRead, BufReader, BufWriter, Write};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use paystream::generate::{GenConfig, generate};
use paystream::log::{FsyncPolicy, Log, Producer, StartAt, TopicConfig, TopicConsumer};

const EVENTS: u64 = 100_000;

fn config() -> TopicConfig {
    TopicConfig {
        partitions: 8,
        ..TopicConfig::default()
    }
}

fn produce(log: &Log, bytes: &[u8]) {
    let mut p = Producer::new(
        log.writer("payments", FsyncPolicy::Never).unwrap(),
        Some("card_id"),
    );
    p.send_json_lines(bytes, 1, &mut |_| {}).unwrap();
    p.finish().unwrap();
}

fn bench_log(c: &mut Criterion) {
    let mut bytes = Vec::new();
    generate(
        &GenConfig {
            events: EVENTS,
            ..GenConfig::default()
        },
        &mut bytes,
    )
    .unwrap();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(20);
    g.bench_function("baseline_buffered_write", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let f = std::fs::File::create(dir.path().join("plain")).unwrap();
                let mut w = BufWriter::with_capacity(1 << 20, f);
                w.write_all(&bytes).unwrap();
                w.flush().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("produce_8_partitions", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                Log::new(dir.path())
                    .create_topic("payments", &config())
                    .unwrap();
                dir
            },
            |dir| {
                produce(&Log::new(dir.path()), &bytes);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(dir.path());
    log.create_topic("payments", &config()).unwrap();
    produce(&log, &bytes);
    std::fs::write(dir.path().join("plain"), &bytes).unwrap();
    g.bench_function("baseline_buffered_read_lines", |b| {
        b.iter(|| {
            let f = std::fs::File::open(dir.path().join("plain")).unwrap();
            let mut r = BufReader::with_capacity(1 << 20, f);
            let (mut line, mut n) = (Vec::new(), 0u64);
            while {
                line.clear();
                r.read_until(b'\n', &mut line).unwrap() > 0
            } {
                n += 1;
            }
            n
        })
    });
    g.bench_function("consume_8_partitions", |b| {
        b.iter(|| {
            let mut c = TopicConsumer::open(&log, "payments", &StartAt::Earliest).unwrap();
            let mut n = 0u64;
            while c.poll(|_, r| n += r.value.len() as u64).unwrap() > 0 {}
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
