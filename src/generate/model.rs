//! What the generator makes, before any format: events, their field values, and the ways a
//! record is made invalid.
//!
//! The event stream is decided here once, by the seed; JSON Lines, CSV and Parquet are only
//! three spellings of it ([`super::json`], [`super::csv`], [`super::parquet`]), so a replay of any
//! of them sees the same events in the same order.

use rand::Rng;
use rand::rngs::StdRng;

use super::{GenConfig, Lifecycle};
use crate::schema::FieldId;

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
pub(super) const COUNTRIES: [&str; 10] =
    ["US", "DE", "GB", "FR", "JP", "CA", "AU", "KW", "CH", "NL"];
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

/// One generated event, compact: ids are numbers until a format writes them ([`Row`]).
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) id: u64,
    pub(super) kind: &'static str,
    pub(super) time: i64,
    pub(super) payment: u64,
    pub(super) merchant: u32,
    pub(super) card: u32,
    pub(super) amount: i64,
    pub(super) status: Option<&'static str>,
    pub(super) decline: Option<&'static str>,
    pub(super) fee: Option<i64>,
    pub(super) device: u32,
    pub(super) ip_country: &'static str,
}

/// A lifecycle step that follows an earlier event of the same payment.
#[derive(Debug, Clone, Copy)]
pub(super) enum Followup {
    Capture,
    Void,
    Refund,
    Chargeback,
    Reversal,
}

/// How a delivered record is made invalid (`--malformed`). The generator draws one per
/// malformed record; each format spells it as closely as its types allow, so the same records
/// are dead-lettered whatever the format (the reason may differ where a format cannot hold the
/// JSON mistake: see [`super::parquet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Corruption {
    /// The record cut off halfway.
    Truncated,
    /// `amount_minor` written as text (a JSON string; in CSV, with its currency after it).
    AmountAsText,
    /// A negative `amount_minor`.
    NegativeAmount,
    /// `currency` `ZZZ`.
    UnknownCurrency,
    /// No `merchant_id` (in JSON the key is misspelled).
    MissingMerchant,
    /// A card number in `card_id`.
    CardNumber,
    /// `amount_minor` with a fraction.
    FractionalAmount,
    /// An `event_time` that is no time.
    BadTime,
    /// Something that is no event at all.
    NotAnEvent,
}

impl Corruption {
    /// In the order the generator has always drawn them, so a seed gives the bytes it gave
    /// before formats existed.
    pub(super) const ALL: [Corruption; 9] = [
        Corruption::Truncated,
        Corruption::AmountAsText,
        Corruption::NegativeAmount,
        Corruption::UnknownCurrency,
        Corruption::MissingMerchant,
        Corruption::CardNumber,
        Corruption::FractionalAmount,
        Corruption::BadTime,
        Corruption::NotAnEvent,
    ];
}

/// The card number every format plants in `card_id` for [`Corruption::CardNumber`] (a Visa
/// test number: passes the Luhn check, belongs to no one).
pub(super) const TEST_CARD_NUMBER: &str = "4111111111111111";

/// The generator's state: options, the one random stream everything draws from, id counters.
pub(super) struct Gen {
    pub(super) cfg: GenConfig,
    pub(super) rng: StdRng,
    pub(super) next_id: u64,
    pub(super) next_payment: u64,
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

/// The issuer country of a card: fixed per card.
fn card_country(card: u32) -> &'static str {
    COUNTRIES[(card as usize * 7) % COUNTRIES.len()]
}

impl Gen {
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

    pub(super) fn lag(&mut self, f: Followup) -> i64 {
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

    pub(super) fn authorization(
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
            card_country(card)
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

    pub(super) fn followup(&mut self, parent: &Event, f: Followup, time: i64) -> Event {
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

/// One field's value as every format must carry it; each writer spells it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cell<'a> {
    /// Text (ids, codes).
    Str(&'a str),
    /// An integer amount in minor units.
    Int(i64),
    /// An event time, epoch milliseconds.
    Time(i64),
    /// An optional field the event does not have (absent in JSON, an empty CSV cell, a Parquet
    /// null).
    Absent,
}

/// An event's field values with its ids spelled out: the single source of every format's
/// output, so the formats cannot drift apart.
#[derive(Debug, Clone)]
pub(super) struct Row {
    event_id: String,
    event_type: &'static str,
    event_time: i64,
    payment_id: String,
    merchant_id: String,
    card_id: String,
    amount_minor: i64,
    currency: &'static str,
    card_country: &'static str,
    ip_country: &'static str,
    mcc: &'static str,
    device_id: String,
    customer_id: String,
    status: Option<&'static str>,
    decline_code: Option<&'static str>,
    fee_minor: Option<i64>,
}

/// A seed as an event id writes it: in decimal, in groups of six digits joined by `x` from
/// 13 digits on. A seed of 13 to 20 digits written whole is a digit run the card-number screen
/// must take for a card one time in ten (the Luhn check), and then every event of the file
/// was dead-lettered as `card_number`; seeds below 10^12 are written as they always were.
fn seed_text(seed: u64) -> String {
    let digits = seed.to_string();
    if digits.len() < 13 {
        return digits;
    }
    digits
        .as_bytes()
        .chunks(6)
        .map(|c| std::str::from_utf8(c).expect("ASCII digits"))
        .collect::<Vec<_>>()
        .join("x")
}

impl Row {
    /// The row of `e`; `seed` is part of every event id, so files generated with different
    /// seeds can be replayed together without colliding ids.
    pub(super) fn new(e: &Event, seed: u64) -> Row {
        Row {
            event_id: format!("evt_{}_{:08}", seed_text(seed), e.id),
            event_type: e.kind,
            event_time: e.time,
            payment_id: format!("pay_{:08}", e.payment),
            merchant_id: format!("m_{:04}", e.merchant),
            card_id: format!("card_{:06}", e.card),
            amount_minor: e.amount,
            currency: merchant_currency(e.merchant),
            card_country: card_country(e.card),
            ip_country: e.ip_country,
            mcc: MCCS[e.merchant as usize % MCCS.len()],
            device_id: format!("dev_{:07}", e.device),
            customer_id: format!("cus_{:06}", e.card),
            status: e.status,
            decline_code: e.decline,
            fee_minor: e.fee,
        }
    }

    /// The value of field `f`.
    pub(super) fn cell(&self, f: FieldId) -> Cell<'_> {
        let opt = |v: Option<&'static str>| v.map_or(Cell::Absent, Cell::Str);
        match f {
            FieldId::EventId => Cell::Str(&self.event_id),
            FieldId::EventType => Cell::Str(self.event_type),
            FieldId::EventTime => Cell::Time(self.event_time),
            FieldId::PaymentId => Cell::Str(&self.payment_id),
            FieldId::MerchantId => Cell::Str(&self.merchant_id),
            FieldId::CardId => Cell::Str(&self.card_id),
            FieldId::AmountMinor => Cell::Int(self.amount_minor),
            FieldId::Currency => Cell::Str(self.currency),
            FieldId::CardCountry => Cell::Str(self.card_country),
            FieldId::IpCountry => Cell::Str(self.ip_country),
            FieldId::Mcc => Cell::Str(self.mcc),
            FieldId::DeviceId => Cell::Str(&self.device_id),
            FieldId::CustomerId => Cell::Str(&self.customer_id),
            FieldId::Status => opt(self.status),
            FieldId::DeclineCode => opt(self.decline_code),
            FieldId::FeeMinor => self.fee_minor.map_or(Cell::Absent, Cell::Int),
        }
    }

    /// `card_id` with a card number in place of its `card` prefix ([`Corruption::CardNumber`]),
    /// as the JSON corruption has always spelled it.
    pub(super) fn card_id_with_card_number(&self) -> String {
        self.card_id.replacen("card", TEST_CARD_NUMBER, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::seed_text;

    #[test]
    fn no_seed_writes_a_card_number_into_the_event_ids() {
        assert_eq!(seed_text(42), "42");
        assert_eq!(seed_text(999_999_999_999), "999999999999");
        assert_eq!(seed_text(4_111_111_111_111_111), "411111x111111x1111");
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let id = format!("evt_{}_{:08}", seed_text(rng.random()), 3);
            assert!(!crate::decode::contains_card_number(id.as_bytes()), "{id}");
        }
    }
}
