//! Deterministic synthetic payment events (`paystream gen`).
//!
//! A source for demos, tests and benchmarks that behaves like a processor's event stream:
//!
//! * **Lifecycle** — an authorization (approved or declined with a decline code) may be followed by
//!   one capture or a void; refunds and chargebacks only follow a capture; a chargeback may be
//!   reversed. Lags are seconds in `fast` mode (tests, demos) and minutes to hours in `realistic`.
//! * **Money** — integer minor units in the merchant's currency (JPY has none, KWD has three);
//!   processing fees on captures, dispute fees on chargebacks.
//! * **Cards** — tokens only; each card is bound to its devices, customer and issuer country.
//! * **Fraud** — card-testing bursts (one card, many small authorizations in seconds) and
//!   enumeration attacks (one merchant and device, many cards, mostly declined).
//! * **Traffic** — a merchant volume spike at a configurable time.
//! * **Delivery** — out-of-order within a bound, delayed duplicate deliveries of the same record,
//!   and (optionally) malformed records of every kind the dead-letter output must catch.
//!
//! The same seed and options always give the same bytes. The stream of events is decided once
//! (`model.rs`) and written in one of the formats `replay` reads ([`generate_as`]): JSON Lines
//! (`json.rs`), CSV (`csv.rs`) or Parquet (`parquet.rs`). The format only spells the records,
//! so replaying any of them gives the same results and the same counts.

mod csv;
mod json;
mod model;
mod parquet;
mod scenarios;

pub use self::scenarios::{
    DECLINE_WAVE_AT_MS, DECLINE_WAVE_MS, DISPUTE_WAVE_AT_MS, NEW_COUNTRY_AT_MS, NEW_COUNTRY_MS,
    Scenarios, TICKET_SHIFT_AT_MS, decline_wave_merchant, dispute_wave_merchant,
    new_country_merchant, ticket_shift_merchant,
};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::model::{Corruption, Event, Followup, Gen, Row};
use crate::decode::Format;

/// How long lifecycle steps take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Seconds: every step happens within a few minutes (tests, demos).
    Fast,
    /// Minutes to hours, as in production.
    Realistic,
}

/// Generator options.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Records to write (events, duplicates and malformed records together): lines of JSON
    /// Lines, lines after the header of CSV, rows of Parquet.
    pub events: u64,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first event, epoch ms.
    pub start: i64,
    /// New authorizations per second of event time.
    pub rate: f64,
    /// Number of merchants.
    pub merchants: u32,
    /// Number of cards.
    pub cards: u32,
    /// Maximum delivery delay (out-of-orderness), ms.
    pub disorder_ms: i64,
    /// Fraction of events delivered twice.
    pub duplicate_rate: f64,
    /// Fraction of lines that are malformed or invalid.
    pub malformed_rate: f64,
    /// Offset from `start` of the merchant volume spike, ms (`None`: no spike).
    pub spike_at_ms: Option<i64>,
    /// Whether card-testing bursts and enumeration attacks are in the stream (`false`: a
    /// clean stream, for checking that a rule raises nothing without its pattern).
    pub attacks: bool,
    /// The library's patterns planted on request ([`Scenarios`]; none by default).
    pub scenarios: Scenarios,
    /// Lifecycle lags.
    pub lifecycle: Lifecycle,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 10_000,
            seed: 1,
            start: 1_793_491_200_000, // 2026-11-01T00:00:00Z
            rate: 1000.0,
            merchants: 200,
            cards: 50_000,
            disorder_ms: 2_000,
            duplicate_rate: 0.005,
            malformed_rate: 0.0,
            spike_at_ms: Some(600_000),
            attacks: true,
            scenarios: Scenarios::default(),
            lifecycle: Lifecycle::Fast,
        }
    }
}

/// What was written (a duplicate may be written before its original, which is then the
/// redelivery as far as dedup is concerned; the totals are the same).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GenStats {
    /// Records written (lines; for CSV not counting the header; rows of Parquet).
    pub lines: u64,
    /// Distinct valid events among them.
    pub events: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Malformed or invalid records.
    pub malformed: u64,
}

/// What a delivered record is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Event,
    Duplicate,
    Malformed,
}

/// A record waiting for its delivery time.
#[derive(Debug, Clone)]
struct Delivery {
    event: Event,
    /// How the record is made invalid, if it is.
    bad: Option<Corruption>,
    kind: Kind,
}

/// One serialisation of the generated stream: each delivered record, in delivery order.
trait RecordWriter {
    /// Writes `row`, or `row` made invalid in the way `bad` names.
    fn record(&mut self, row: &Row, bad: Option<Corruption>) -> io::Result<()>;
    /// Ends the output (a Parquet file's last row group and footer).
    fn finish(&mut self) -> io::Result<()>;
}

/// Writes `cfg.events` lines of JSON Lines events to `out`: [`generate_as`] with
/// [`Format::JsonLines`], for writers that need not be `Send`.
pub fn generate(cfg: &GenConfig, out: &mut dyn Write) -> io::Result<GenStats> {
    run(cfg, &mut json::JsonOut::new(out))
}

/// Writes `cfg.events` records in `format` to `out`: JSON Lines, CSV with a header row, or a
/// Parquet file (which `out` must take whole: its footer is written last). The same `cfg`
/// gives the same events, duplicates and malformed records in every format, in the same order.
pub fn generate_as<W: Write + Send>(
    cfg: &GenConfig,
    format: Format,
    mut out: W,
) -> io::Result<GenStats> {
    match format {
        Format::JsonLines => run(cfg, &mut json::JsonOut::new(&mut out)),
        Format::Csv => run(cfg, &mut csv::CsvOut::new(&mut out)?),
        Format::Parquet => run(cfg, &mut parquet::ParquetOut::new(out)?),
    }
}

/// Generates the stream of `cfg` into `w`.
fn run(cfg: &GenConfig, w: &mut dyn RecordWriter) -> io::Result<GenStats> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(cfg.seed),
        cfg: cfg.clone(),
        next_id: 0,
        next_payment: 0,
    };
    let mut stats = GenStats::default();
    // Lifecycle events waiting for their time: (time, seq) → (parent, followup).
    let mut scheduled: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut scheduled_events: HashMap<u64, (Event, Followup)> = Default::default();
    // Deliveries waiting for their delivery time: (delivery, seq) → what to write. Records are
    // spelled out only when delivered, in the output's format.
    let mut deliveries: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut queued: HashMap<u64, Delivery> = Default::default();
    let mut seq = 0u64;
    let mut now;
    // Mean gap between new authorizations in ms, kept fractional: at more than 1000/s a whole
    // number of ms would round to 0 and time would never advance.
    let gap = 1000.0 / cfg.rate.max(0.001);
    let mut now_f = cfg.start as f64;
    // Attack authorizations waiting for their time: (time, seq) → event.
    let mut attacks: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut attack_events: HashMap<u64, Event> = Default::default();
    let spike_merchant = 7 % cfg.merchants.max(1);
    // Events delivered twice, neither delivery written yet; and those with one written. Both
    // hold only the events in flight (a redelivery is at most 30 s behind).
    let mut paired: HashSet<u64> = HashSet::new();
    let mut half_written: HashSet<u64> = HashSet::new();

    let emit = |e: &Event,
                g: &mut Gen,
                deliveries: &mut BinaryHeap<Reverse<(i64, u64)>>,
                queued: &mut HashMap<u64, Delivery>,
                seq: &mut u64,
                paired: &mut HashSet<u64>| {
        // A late money event reaches the stream (both deliveries of it) long after it happened.
        let late = if g.cfg.scenarios.late_money
            && matches!(e.kind, "capture" | "refund")
            && g.rng.random_bool(0.01)
        {
            scenarios::late_money_delay(g)
        } else {
            0
        };
        let mut d = Delivery {
            event: e.clone(),
            bad: None,
            kind: Kind::Event,
        };
        if g.cfg.malformed_rate > 0.0 && g.rng.random_bool(g.cfg.malformed_rate) {
            // Drawn here, where the generator always drew it, so the seed's stream is unchanged.
            d.bad = Some(Corruption::ALL[g.rng.random_range(0..Corruption::ALL.len())]);
            d.kind = Kind::Malformed;
        } else if g.cfg.duplicate_rate > 0.0 && g.rng.random_bool(g.cfg.duplicate_rate) {
            // A delayed redelivery of the same record, up to 30 s later.
            let at = e.time + late + g.rng.random_range(0..30_000);
            paired.insert(e.id);
            *seq += 1;
            deliveries.push(Reverse((at, *seq)));
            queued.insert(
                *seq,
                Delivery {
                    kind: Kind::Duplicate,
                    ..d.clone()
                },
            );
        }
        let at = e.time + late + g.rng.random_range(0..=g.cfg.disorder_ms.max(0));
        *seq += 1;
        deliveries.push(Reverse((at, *seq)));
        queued.insert(*seq, d);
    };

    while stats.lines < cfg.events {
        // Next new authorization (or attack event).
        now_f += g.rng.random_range(0.0..=gap * 2.0);
        now = now_f as i64;
        let mut fresh = Vec::new();
        while let Some(Reverse((t, s))) = attacks.peek().copied() {
            if t > now {
                break;
            }
            attacks.pop();
            fresh.push(attack_events.remove(&s).expect("scheduled attack"));
        }
        {
            let roll: f64 = g.rng.random();
            if cfg.attacks && roll < 0.0005 {
                // Card-testing burst: one card, many small authorizations within seconds.
                let card = g.rng.random_range(0..cfg.cards.max(1));
                let n = g.rng.random_range(8..20);
                for k in 0..n {
                    let m = g.rng.random_range(0..cfg.merchants.max(1));
                    let step = g.rng.random_range(200..2_000);
                    let e = g.authorization(now + k * step, m, card, true, 0.7);
                    seq += 1;
                    attacks.push(Reverse((e.time, seq)));
                    attack_events.insert(seq, e);
                }
            } else if cfg.attacks && roll < 0.0008 {
                // Enumeration attack: one merchant and device, many cards, mostly declined.
                let m = g.rng.random_range(0..cfg.merchants.max(1));
                let base = g.rng.random_range(0..cfg.cards.max(1));
                let device = g.rng.random_range(0..1_000_000);
                for k in 0..g.rng.random_range(30..80) {
                    let mut e = g.authorization(
                        now + k * 700,
                        m,
                        (base + k as u32) % cfg.cards.max(1),
                        true,
                        0.9,
                    );
                    e.device = device;
                    seq += 1;
                    attacks.push(Reverse((e.time, seq)));
                    attack_events.insert(seq, e);
                }
            } else if cfg.scenarios.small_then_large && roll < 0.0011 {
                for e in scenarios::small_then_large(&mut g, now) {
                    seq += 1;
                    attacks.push(Reverse((e.time, seq)));
                    attack_events.insert(seq, e);
                }
            } else {
                let in_spike = cfg
                    .spike_at_ms
                    .is_some_and(|s| now >= cfg.start + s && now < cfg.start + s + 60_000);
                let m = if in_spike && g.rng.random_bool(0.5) {
                    spike_merchant
                } else {
                    g.rng.random_range(0..cfg.merchants.max(1))
                };
                let card = g.rng.random_range(0..cfg.cards.max(1));
                let decline = scenarios::decline_rate(cfg, m, now, 0.08);
                let mut e = g.authorization(now, m, card, false, decline);
                e.amount = scenarios::ticket(cfg, m, now, e.amount);
                scenarios::new_country(&mut g, &mut e);
                fresh.push(e);
            }
        }
        for e in fresh {
            if e.status == Some("approved") {
                let f = if g.rng.random_bool(0.9) {
                    Some(Followup::Capture)
                } else if g.rng.random_bool(0.5) {
                    Some(Followup::Void)
                } else {
                    None
                };
                if let Some(f) = f {
                    seq += 1;
                    scheduled.push(Reverse((e.time + g.lag(f), seq)));
                    scheduled_events.insert(seq, (e.clone(), f));
                }
            }
            emit(
                &e,
                &mut g,
                &mut deliveries,
                &mut queued,
                &mut seq,
                &mut paired,
            );
        }
        // Lifecycle steps that are due.
        while let Some(Reverse((t, s))) = scheduled.peek().copied() {
            if t > now {
                break;
            }
            scheduled.pop();
            let (parent, f) = scheduled_events.remove(&s).expect("scheduled");
            let e = g.followup(&parent, f, t);
            let next = match f {
                Followup::Capture if g.rng.random_bool(0.06) => Some(Followup::Refund),
                Followup::Capture if g.rng.random_bool(0.006) => Some(Followup::Chargeback),
                Followup::Chargeback if g.rng.random_bool(0.2) => Some(Followup::Reversal),
                Followup::Capture if scenarios::wave_chargeback(&mut g, &e) => {
                    Some(Followup::Chargeback)
                }
                Followup::Chargeback
                    if cfg.scenarios.refund_after_chargeback && g.rng.random_bool(0.5) =>
                {
                    Some(Followup::Refund)
                }
                _ => None,
            };
            if let Some(n) = next {
                seq += 1;
                scheduled.push(Reverse((t + g.lag(n), seq)));
                scheduled_events.insert(seq, (e.clone(), n));
            }
            emit(
                &e,
                &mut g,
                &mut deliveries,
                &mut queued,
                &mut seq,
                &mut paired,
            );
        }
        // Deliver what is due, in delivery order.
        while let Some(Reverse((at, s))) = deliveries.peek().copied() {
            if at > now || stats.lines >= cfg.events {
                break;
            }
            deliveries.pop();
            let d = queued.remove(&s).expect("queued");
            w.record(&Row::new(&d.event, cfg.seed), d.bad)?;
            stats.lines += 1;
            // Counted by what a reader sees, not by how the record was made: the first of an
            // event's two deliveries is the event, the second the duplicate, and a pair cut in
            // half by the end of the output is one event and no duplicate.
            match d.kind {
                Kind::Malformed => stats.malformed += 1,
                Kind::Event | Kind::Duplicate => {
                    if half_written.remove(&d.event.id) {
                        stats.duplicates += 1;
                    } else {
                        if paired.remove(&d.event.id) {
                            half_written.insert(d.event.id);
                        }
                        stats.events += 1;
                    }
                }
            }
        }
    }
    w.finish()?;
    Ok(stats)
}

/// The lines [`generate`] writes for `cfg`, for tests that feed them to the decoder one by one.
#[cfg(test)]
pub(crate) fn generated_lines(cfg: &GenConfig) -> Vec<String> {
    let mut out = Vec::new();
    generate(cfg, &mut out).expect("writing to memory");
    String::from_utf8(out)
        .expect("generated lines are UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_exact_line_count() {
        let cfg = GenConfig {
            events: 2_000,
            malformed_rate: 0.01,
            ..GenConfig::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&cfg, &mut a).unwrap();
        generate(&cfg, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|c| **c == b'\n').count(), 2_000);
        let other = GenConfig { seed: 2, ..cfg };
        let mut c = Vec::new();
        generate(&other, &mut c).unwrap();
        assert_ne!(a, c);
    }

    /// Every format is as deterministic as JSON Lines and writes the same records: the same
    /// counts, and for CSV one line each after the header.
    #[test]
    fn every_format_writes_the_same_records_deterministically() {
        let cfg = GenConfig {
            events: 3_000,
            malformed_rate: 0.02,
            duplicate_rate: 0.02,
            ..GenConfig::default()
        };
        let mut json = Vec::new();
        let want = generate(&cfg, &mut json).unwrap();
        for format in [Format::JsonLines, Format::Csv, Format::Parquet] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            assert_eq!(generate_as(&cfg, format, &mut a).unwrap(), want);
            generate_as(&cfg, format, &mut b).unwrap();
            assert!(a == b, "{format:?} is not deterministic");
            match format {
                Format::JsonLines => assert!(a == json),
                Format::Csv => assert_eq!(a.iter().filter(|c| **c == b'\n').count(), 3_001),
                Format::Parquet => assert!(a.starts_with(b"PAR1") && a.ends_with(b"PAR1")),
            }
        }
        assert!(want.malformed > 0 && want.duplicates > 0, "{want:?}");
    }

    /// The counts are what a reader of the output finds: distinct event ids among the valid
    /// records, and repeats of one already seen. Several lengths, so the end of the output
    /// falls between an event's two deliveries somewhere.
    #[test]
    fn counts_are_what_the_output_holds() {
        for events in [997, 2_000, 4_321] {
            let cfg = GenConfig {
                events,
                malformed_rate: 0.01,
                duplicate_rate: 0.05,
                ..GenConfig::default()
            };
            let lines = generated_lines(&cfg);
            let mut seen = HashSet::new();
            let (mut distinct, mut repeats, mut other) = (0u64, 0u64, 0u64);
            for line in &lines {
                let id = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("event_id")?.as_str().map(str::to_string));
                match id {
                    Some(id) if seen.insert(id.clone()) => distinct += 1,
                    Some(_) => repeats += 1,
                    None => other += 1,
                }
            }
            let stats = generate(&cfg, &mut io::sink()).unwrap();
            assert_eq!(stats.lines, lines.len() as u64);
            assert_eq!(stats.duplicates, repeats, "{events} lines");
            // A malformed record may still carry an event id (a bad amount, say): compare the
            // sum, and the duplicates exactly.
            assert_eq!(
                stats.events + stats.malformed,
                distinct + other,
                "{events} lines"
            );
        }
    }
}
