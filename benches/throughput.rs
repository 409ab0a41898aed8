//! Throughput harness: `cargo bench --bench throughput` (same as `paystream bench`).
//!
//! Generates 1 M events (or `PAYSTREAM_BENCH_EVENTS`), then replays them through each shipped
//! query on 1 and 2 workers, printing events/s and events per CPU-second beside same-run
//! baselines (reading the file; reading and decoding it).

use paystream::generate::{GenConfig, generate};

/// The harness `paystream bench` runs (the binary's; not part of the library).
#[path = "../src/cli/bench/harness.rs"]
#[allow(dead_code)]
mod harness;

fn main() {
    let events: u64 = std::env::var("PAYSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join("paystream-bench");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("bench-{events}.jsonl"));
    if !path.exists() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        generate(
            &GenConfig {
                events,
                ..GenConfig::default()
            },
            &mut w,
        )
        .expect("generate");
    }
    let ms = harness::run(&path, &harness::BenchOptions::new(&[1, 2])).expect("throughput run");
    print!("{}", harness::report(&ms));
}
