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
//! * **Delivery** — out-of-order within a bound, delayed duplicate deliveries of the same bytes,
//!   and (optionally) malformed lines of every kind the dead-letter output must catch.
//!
//! The same seed and options always give the same bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::time::format_rfc3339_millis;

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
    /// Lines to write (events, duplicates and malformed lines together).
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
            lifecycle: Lifecycle::Fast,
        }
    }
}

/// What was written (a duplicate may be written before its original, which is then the
/// redelivery as far as dedup is concerned; the totals are the same).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GenStats {
    /// Lines written.
    pub lines: u64,
    /// Distinct valid events among them.
    pub events: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Malformed or invalid lines.
    pub malformed: u64,
}

const CURRENCIES: [(&str, u32); 8] = [
    ("USD", 50),
    ("EUR", 25),
    ("GBP", 10),
    ("JPY", 5),
    ("CAD", 4),
    ("AUD", 3),
    ("KWD", 2),
    ("CHF", 1),
];
const COUNTRIES: [&str; 10] = ["US", "DE", "GB", "FR", "JP", "CA", "AU", "KW", "CH", "NL"];
const MCCS: [&str; 8] = [
    "5411", "5812", "5999", "4111", "5732", "7011", "5691", "4814",
];
const DECLINES: [&str; 6] = [
    "insufficient_funds",
    "do_not_honor",
    "incorrect_cvc",
    "expired_card",
    "card_velocity_exceeded",
    "invalid_account",
];

#[derive(Debug, Clone)]
struct Event {
    id: u64,
    kind: &'static str,
    time: i64,
    payment: u64,
    merchant: u32,
    card: u32,
    amount: i64,
    status: Option<&'static str>,
    decline: Option<&'static str>,
    fee: Option<i64>,
    device: u32,
    ip_country: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Event,
    Duplicate,
    Malformed,
}

#[derive(Debug, Clone, Copy)]
enum Followup {
    Capture,
    Void,
    Refund,
    Chargeback,
    Reversal,
}

struct Gen {
    cfg: GenConfig,
    rng: StdRng,
    next_id: u64,
    next_payment: u64,
}

/// The currency a merchant settles in: fixed per merchant, weighted by [`CURRENCIES`].
fn merchant_currency(m: u32) -> &'static str {
    let h = (m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let mut pick = (h % 100) as u32;
    for (c, w) in CURRENCIES {
        if pick < w {
            return c;
        }
        pick -= w;
    }
    "USD"
}

impl Gen {
    fn card_country(&self, card: u32) -> &'static str {
        COUNTRIES[(card as usize * 7) % COUNTRIES.len()]
    }

    fn amount(&mut self, currency: &str, small: bool) -> i64 {
        let major: f64 = if small {
            self.rng.random_range(0.5..2.0)
        } else {
            // Log-normal-ish basket sizes: mostly tens, sometimes thousands.
            (self.rng.random_range(1.0f64..9.0)).exp()
        };
        let scale = match currency {
            "JPY" => 150.0,
            "KWD" => 0.3 * 1000.0,
            _ => 100.0,
        };
        ((major * scale).round() as i64).max(1)
    }

    fn lag(&mut self, f: Followup) -> i64 {
        let (fast, slow) = match f {
            Followup::Capture => ((1_000, 30_000), (60_000, 7_200_000)),
            Followup::Void => ((1_000, 20_000), (60_000, 3_600_000)),
            Followup::Refund => ((10_000, 120_000), (3_600_000, 86_400_000)),
            Followup::Chargeback => ((30_000, 300_000), (86_400_000, 604_800_000)),
            Followup::Reversal => ((30_000, 240_000), (86_400_000, 604_800_000)),
        };
        let (lo, hi) = match self.cfg.lifecycle {
            Lifecycle::Fast => fast,
            Lifecycle::Realistic => slow,
        };
        self.rng.random_range(lo..hi)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn authorization(
        &mut self,
        time: i64,
        merchant: u32,
        card: u32,
        small: bool,
        decline_rate: f64,
    ) -> Event {
        self.next_payment += 1;
        let currency = merchant_currency(merchant);
        let declined = self.rng.random_bool(decline_rate);
        let amount = self.amount(currency, small);
        let device = card * 2 + self.rng.random_range(0..2);
        let ip_country = if self.rng.random_bool(0.03) {
            COUNTRIES[self.rng.random_range(0..COUNTRIES.len())]
        } else {
            self.card_country(card)
        };
        Event {
            id: self.id(),
            kind: "authorization",
            time,
            payment: self.next_payment,
            merchant,
            card,
            amount,
            status: Some(if declined { "declined" } else { "approved" }),
            decline: declined.then(|| DECLINES[self.rng.random_range(0..DECLINES.len())]),
            fee: None,
            device,
            ip_country,
        }
    }

    fn followup(&mut self, parent: &Event, f: Followup, time: i64) -> Event {
        let (kind, amount, fee) = match f {
            Followup::Capture => (
                "capture",
                parent.amount,
                Some(parent.amount * 29 / 1000 + 30),
            ),
            Followup::Void => ("void", parent.amount, None),
            Followup::Refund => {
                let partial = self.rng.random_bool(0.3);
                let a = if partial {
                    (parent.amount / 2).max(1)
                } else {
                    parent.amount
                };
                ("refund", a, None)
            }
            Followup::Chargeback => ("chargeback", parent.amount, Some(1500)),
            Followup::Reversal => ("chargeback_reversal", parent.amount, None),
        };
        Event {
            id: self.id(),
            kind,
            time,
            amount,
            fee,
            status: None,
            decline: None,
            ..parent.clone()
        }
    }
}

fn write_event(out: &mut Vec<u8>, e: &Event, seed: u64) {
    let mcc = MCCS[e.merchant as usize % MCCS.len()];
    out.extend_from_slice(
        format!(
            "{{\"event_id\":\"evt_{seed}_{:08}\",\"event_type\":\"{}\",\"event_time\":\"",
            e.id, e.kind
        )
        .as_bytes(),
    );
    format_rfc3339_millis(e.time, out);
    out.extend_from_slice(
        format!(
            "\",\"payment_id\":\"pay_{:08}\",\"merchant_id\":\"m_{:04}\",\"card_id\":\"card_{:06}\",\"amount_minor\":{},\"currency\":\"{}\",\"card_country\":\"{}\",\"ip_country\":\"{}\",\"mcc\":\"{}\",\"device_id\":\"dev_{:07}\",\"customer_id\":\"cus_{:06}\"",
            e.payment,
            e.merchant,
            e.card,
            e.amount,
            merchant_currency(e.merchant),
            COUNTRIES[(e.card as usize * 7) % COUNTRIES.len()],
            e.ip_country,
            mcc,
            e.device,
            e.card,
        )
        .as_bytes(),
    );
    if let Some(s) = e.status {
        out.extend_from_slice(format!(",\"status\":\"{s}\"").as_bytes());
    }
    if let Some(d) = e.decline {
        out.extend_from_slice(format!(",\"decline_code\":\"{d}\"").as_bytes());
    }
    if let Some(f) = e.fee {
        out.extend_from_slice(format!(",\"fee_minor\":{f}").as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// Turns a valid line into one of the invalid kinds the dead-letter output must catch.
fn corrupt(line: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let s = String::from_utf8_lossy(line).trim_end().to_string();
    let bad = match rng.random_range(0..9) {
        0 => s[..s.len() / 2].to_string(),
        1 => s
            .replacen("\"amount_minor\":", "\"amount_minor\":\"", 1)
            .replacen(",\"currency\"", "\",\"currency\"", 1),
        2 => s.replacen("\"amount_minor\":", "\"amount_minor\":-", 1),
        3 => {
            let i = s.find("\"currency\":\"").map_or(0, |i| i + 12);
            format!("{}ZZZ{}", &s[..i], &s[i + 3..])
        }
        4 => s.replacen("\"merchant_id\"", "\"merchant\"", 1),
        5 => s.replacen("\"card_id\":\"card_", "\"card_id\":\"4111111111111111_", 1),
        6 => s.replacen(",\"currency\"", ".5,\"currency\"", 1),
        7 => s.replacen("\"event_time\":\"2", "\"event_time\":\"x2", 1),
        _ => "this is not json".to_string(),
    };
    let mut v = bad.into_bytes();
    v.push(b'\n');
    v
}

/// Writes `cfg.events` lines of JSON Lines events to `out`.
pub fn generate(cfg: &GenConfig, out: &mut dyn Write) -> io::Result<GenStats> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(cfg.seed),
        cfg: cfg.clone(),
        next_id: 0,
        next_payment: 0,
    };
    let mut stats = GenStats::default();
    // Lifecycle events waiting for their time: (time, seq) → (parent, followup).
    let mut scheduled: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut scheduled_events: std::collections::HashMap<u64, (Event, Followup)> =
        Default::default();
    // Deliveries waiting for their delivery time: (delivery, seq) → bytes.
    let mut deliveries: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut delivery_bytes: std::collections::HashMap<u64, (Vec<u8>, Kind)> = Default::default();
    let mut seq = 0u64;
    let mut now;
    // Mean gap between new authorizations in ms, kept fractional: at more than 1000/s a whole
    // number of ms would round to 0 and time would never advance.
    let gap = 1000.0 / cfg.rate.max(0.001);
    let mut now_f = cfg.start as f64;
    let mut buf = Vec::with_capacity(512);
    // Attack authorizations waiting for their time: (time, seq) → event.
    let mut attacks: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut attack_events: std::collections::HashMap<u64, Event> = Default::default();
    let spike_merchant = 7 % cfg.merchants.max(1);

    let mut emit = |e: &Event,
                    g: &mut Gen,
                    deliveries: &mut BinaryHeap<Reverse<(i64, u64)>>,
                    delivery_bytes: &mut std::collections::HashMap<u64, (Vec<u8>, Kind)>,
                    seq: &mut u64| {
        buf.clear();
        write_event(&mut buf, e, g.cfg.seed);
        let mut line = buf.clone();
        let mut kind = Kind::Event;
        if g.cfg.malformed_rate > 0.0 && g.rng.random_bool(g.cfg.malformed_rate) {
            line = corrupt(&line, &mut g.rng);
            kind = Kind::Malformed;
        } else if g.cfg.duplicate_rate > 0.0 && g.rng.random_bool(g.cfg.duplicate_rate) {
            // A delayed redelivery of the same bytes, up to 30 s later.
            let at = e.time + g.rng.random_range(0..30_000);
            *seq += 1;
            deliveries.push(Reverse((at, *seq)));
            delivery_bytes.insert(*seq, (line.clone(), Kind::Duplicate));
        }
        let at = e.time + g.rng.random_range(0..=g.cfg.disorder_ms.max(0));
        *seq += 1;
        deliveries.push(Reverse((at, *seq)));
        delivery_bytes.insert(*seq, (line, kind));
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
            if roll < 0.0005 {
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
            } else if roll < 0.0008 {
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
                fresh.push(g.authorization(now, m, card, false, 0.08));
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
            emit(&e, &mut g, &mut deliveries, &mut delivery_bytes, &mut seq);
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
                _ => None,
            };
            if let Some(n) = next {
                seq += 1;
                scheduled.push(Reverse((t + g.lag(n), seq)));
                scheduled_events.insert(seq, (e.clone(), n));
            }
            emit(&e, &mut g, &mut deliveries, &mut delivery_bytes, &mut seq);
        }
        // Deliver what is due, in delivery order.
        while let Some(Reverse((at, s))) = deliveries.peek().copied() {
            if at > now || stats.lines >= cfg.events {
                break;
            }
            deliveries.pop();
            let (line, kind) = delivery_bytes.remove(&s).expect("queued");
            out.write_all(&line)?;
            stats.lines += 1;
            match kind {
                Kind::Event => stats.events += 1,
                Kind::Duplicate => stats.duplicates += 1,
                Kind::Malformed => stats.malformed += 1,
            }
        }
    }
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
}
