//! The fast path for canonical lines: one pass from a JSON line to a [`ValidRow`].
//!
//! Most lines a producer writes are already in the canonical form of `canonical.rs`: compact,
//! fields in schema order, no escapes, `event_time` as `YYYY-MM-DDThh:mm:ss.mmmZ`. For them the
//! general route — parse every value into a [`RawRow`](super::RawRow), then judge each slot in
//! [`validate`](super::validate) — read each value twice and built a row of tagged values only
//! to drop it; decoding was seven eighths of the engine's instructions. [`canonical_row`] reads
//! such a line once, checking each value as it meets it, and gives up (`None`) at the first
//! thing it does not expect. The caller then takes the general route, which also names the
//! reason a bad line is rejected. So this path only ever accepts, and it accepts exactly the
//! lines the general route finds valid *and* canonical (`tests` hold it to that over generated
//! and mutated lines); the payload hash of such a line is the hash of the line itself.

use super::MAX_AMOUNT;
use super::card::contains_card_number;
use super::currency::is_iso4217;
use super::json::{KEY_PATTERNS, find_special};
use super::row::{EVENT_ID_BYTES, MAX_EVENT_TIME, ValidRow};
use crate::schema::{EVENT_TYPES, FieldId, NUM_FIELDS, STATUSES};
use crate::time::parse_rfc3339_millis;

/// Fields whose string values the general route checks for card numbers as it parses them
/// (the others are codes and times, which a valid value cannot hide one in).
const CARD_CHECKED: [FieldId; 7] = [
    FieldId::EventId,
    FieldId::PaymentId,
    FieldId::MerchantId,
    FieldId::CardId,
    FieldId::DeviceId,
    FieldId::CustomerId,
    FieldId::DeclineCode,
];

/// The row of `line` if it is a valid event written in canonical form; `None` otherwise (the
/// line may still be valid: the general route decides).
pub(super) fn canonical_row(line: &str) -> Option<ValidRow<'_>> {
    let b = line.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut strs: [Option<&str>; NUM_FIELDS] = [None; NUM_FIELDS];
    let mut time: Option<&str> = None;
    let (mut amount, mut fee) = (None, None);
    // Keys come in schema order, so the next one is `next` or a later field.
    let mut next = 0;
    let mut i = 1;
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let f = key_at(b, i + 1, next)?;
        i += KEY_PATTERNS[f].2;
        next = f + 1;
        let field = FieldId::ALL[f];
        if matches!(field, FieldId::AmountMinor | FieldId::FeeMinor) {
            let (v, end) = minor_units(b, i)?;
            if field == FieldId::AmountMinor {
                amount = Some(v);
            } else {
                fee = Some(v);
            }
            i = end;
        } else {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let end = find_special(b, i + 1);
            if b.get(end) != Some(&b'"') {
                return None;
            }
            // SAFETY: `i` and `end` index ASCII quotes of `line`: char boundaries.
            let s = unsafe { line.get_unchecked(i + 1..end) };
            if field == FieldId::EventTime {
                time = Some(s);
            } else {
                strs[f] = Some(s);
            }
            i = end + 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') if i + 1 == b.len() => break,
            _ => return None,
        }
    }
    check(strs, time?, amount?, fee)
}

/// The validation of [`validate`](super::validate), for the values of a canonical line.
fn check<'a>(
    mut strs: [Option<&'a str>; NUM_FIELDS],
    time: &str,
    amount_minor: i64,
    fee_minor: Option<i64>,
) -> Option<ValidRow<'a>> {
    for f in CARD_CHECKED {
        if strs[f as usize].is_some_and(|s| contains_card_number(s.as_bytes())) {
            return None;
        }
    }
    let event_id = strs[FieldId::EventId as usize]?;
    if event_id.is_empty()
        || event_id.len() > 128
        || !event_id.bytes().all(|b| EVENT_ID_BYTES[b as usize])
    {
        return None;
    }
    let event_type = strs[FieldId::EventType as usize]?;
    let event_type = EVENT_TYPES.iter().position(|t| *t == event_type)?;
    for f in [FieldId::PaymentId, FieldId::MerchantId, FieldId::CardId] {
        if strs[f as usize]?.is_empty() {
            return None;
        }
    }
    if !is_iso4217(strs[FieldId::Currency as usize]?) {
        return None;
    }
    for f in [FieldId::CardCountry, FieldId::IpCountry] {
        if strs[f as usize]
            .is_some_and(|c| !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())))
        {
            return None;
        }
    }
    if strs[FieldId::Mcc as usize]
        .is_some_and(|m| !(m.len() == 4 && m.bytes().all(|b| b.is_ascii_digit())))
    {
        return None;
    }
    let status = match strs[FieldId::Status as usize] {
        // An authorization without a status is approved, but its canonical form spells that out.
        None if EVENT_TYPES[event_type] == "authorization" => return None,
        None => None,
        Some(s) => Some(STATUSES.iter().position(|t| *t == s)? as i8),
    };
    // The canonical shape; any other spelling of a time is for the general route.
    let t = time.as_bytes();
    if !(t.len() == 24 && t[10] == b'T' && t[19] == b'.' && t[23] == b'Z') {
        return None;
    }
    let event_time = parse_rfc3339_millis(time).filter(|ms| (0..=MAX_EVENT_TIME).contains(ms))?;
    strs[FieldId::EventTime as usize] = None;
    Some(ValidRow::new(
        strs,
        event_type as i8,
        status,
        event_time,
        amount_minor,
        fee_minor,
    ))
}

/// The field whose key (after its opening quote, with closing quote and colon) starts at
/// `b[at]`, among fields `from..`.
#[inline(always)]
fn key_at(b: &[u8], at: usize, from: usize) -> Option<usize> {
    let word = load16(b, at);
    (from..NUM_FIELDS).find(|&f| {
        let (pat, mask, _) = KEY_PATTERNS[f];
        word & mask == pat
    })
}

/// The 16 bytes at `b[at..]` as a little-endian integer, zero past the end of `b`.
#[inline(always)]
fn load16(b: &[u8], at: usize) -> u128 {
    match b.get(at..at + 16) {
        Some(w) => u128::from_le_bytes(w.try_into().expect("16 bytes")),
        None => {
            let mut w = [0u8; 16];
            let rest = b.get(at..).unwrap_or_default();
            w[..rest.len()].copy_from_slice(rest);
            u128::from_le_bytes(w)
        }
    }
}

/// A JSON integer of at most 18 digits at `b[i]` (no sign: amounts are never negative), with
/// where it ends; `None` for anything else or a value above [`MAX_AMOUNT`].
#[inline(always)]
fn minor_units(b: &[u8], i: usize) -> Option<(i64, usize)> {
    match b.get(i)? {
        // JSON allows no leading zero: a digit after it fails the separator check.
        b'0' => return Some((0, i + 1)),
        b'1'..=b'9' => {}
        _ => return None,
    }
    let mut v: i64 = 0;
    let mut j = i;
    while let Some(&c) = b.get(j) {
        if !c.is_ascii_digit() {
            break;
        }
        if j - i == 18 {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
        j += 1;
    }
    (v <= MAX_AMOUNT).then_some((v, j))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::super::json::{KeyOrder, parse_object};
    use super::super::row::{RawRow, validate};
    use super::*;
    use crate::generate::{GenConfig, generate};

    /// The general route's verdict: the valid row (as its debug text: it borrows the parsed
    /// row), and whether the line is its canonical form.
    fn general(line: &str) -> Option<(String, bool)> {
        let mut raw = RawRow::default();
        parse_object(line, &mut raw, &mut KeyOrder::default()).ok()?;
        let v = validate(&raw).ok()?;
        Some((format!("{v:?}"), v.is_canonical_line(&raw)))
    }

    fn lines(cfg: GenConfig) -> Vec<String> {
        let mut out = Vec::new();
        generate(&cfg, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Asserts that the fast path accepts `line` exactly when the general route finds it valid
    /// and canonical, with the same row; returns whether it accepted.
    fn agrees(line: &str) -> bool {
        let fast = canonical_row(line);
        match (fast, general(line)) {
            (Some(f), Some((g, true))) => {
                assert_eq!(format!("{f:?}"), g, "rows differ for {line}");
                true
            }
            (None, Some((_, false)) | None) => false,
            (f, g) => panic!(
                "fast path {} but the general route says {}: {line}",
                if f.is_some() { "accepts" } else { "declines" },
                match g {
                    Some((_, true)) => "valid and canonical",
                    Some((_, false)) => "valid, not canonical",
                    None => "invalid",
                }
            ),
        }
    }

    #[test]
    fn takes_every_generated_line() {
        let all = lines(GenConfig {
            events: 20_000,
            seed: 11,
            ..GenConfig::default()
        });
        let taken = all.iter().filter(|l| agrees(l)).count();
        assert_eq!(taken, all.len(), "generated lines are canonical and valid");
    }

    /// Characters that change a line's meaning or form when put in the wrong place.
    const NOISE: &[&str] = &[
        "\"",
        "\\",
        ",",
        ":",
        "{",
        "}",
        " ",
        "-",
        ".",
        "e",
        "0",
        "7",
        "A",
        "a",
        "Z",
        "T",
        "é",
        "null",
        "\\u0041",
        "4111111111111111",
        "\t",
    ];

    fn mutate(line: &str, rng: &mut impl Rng) -> String {
        let mut s = line.to_string();
        for _ in 0..rng.random_range(1..=2) {
            let at = rng.random_range(0..=s.len());
            if !s.is_char_boundary(at) {
                continue;
            }
            match rng.random_range(0..4) {
                0 => s.insert_str(at, NOISE[rng.random_range(0..NOISE.len())]),
                1 => {
                    let end = (at + rng.random_range(1..4)).min(s.len());
                    if s.is_char_boundary(end) {
                        s.replace_range(at..end, "");
                    }
                }
                2 => {
                    let end = (at + 1).min(s.len());
                    if s.is_char_boundary(end) {
                        s.replace_range(at..end, NOISE[rng.random_range(0..NOISE.len())]);
                    }
                }
                _ => {
                    // Drop or repeat a whole field.
                    let fields: Vec<&str> = s.trim_matches(['{', '}']).split(',').collect();
                    let k = rng.random_range(0..fields.len());
                    let mut kept: Vec<&str> = fields.clone();
                    if rng.random_bool(0.5) {
                        kept.remove(k);
                    } else {
                        kept.insert(rng.random_range(0..=kept.len()), fields[k]);
                    }
                    s = format!("{{{}}}", kept.join(","));
                }
            }
        }
        s
    }

    #[test]
    fn accepts_exactly_the_valid_canonical_lines_among_mutations() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let base = lines(GenConfig {
            events: 3_000,
            seed: 3,
            malformed_rate: 0.05,
            ..GenConfig::default()
        });
        let (mut taken, mut declined) = (0, 0);
        for line in &base {
            for _ in 0..10 {
                if agrees(&mutate(line, &mut rng)) {
                    taken += 1;
                } else {
                    declined += 1;
                }
            }
        }
        // Both outcomes must occur, or the test checked nothing.
        assert!(
            taken > 1_000 && declined > 10_000,
            "{taken} taken, {declined} declined"
        );
    }

    #[test]
    fn declines_what_only_the_general_route_may_judge() {
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR","fee_minor":0}"#;
        assert!(canonical_row(line).is_some());
        for (from, to) in [
            ("\"capture\"", "\"authorization\""), // defaulted status
            ("00.000Z", "00Z"),                   // another time shape
            (":5,", ":05,"),                      // leading zero
            (":5,", ":-5,"),                      // a sign
            (":5,", ":5.0,"),                     // a fraction
            (":0}", ":1000000000000001}"),        // above 10^15
            ("\"EUR\"", "\"EUX\""),               // not ISO 4217
            ("\"m\"", "\"m\\u0041\""),            // an escape
            ("\"c\",", "\"c\", "),                // whitespace
            ("\"p\"", "\"4111 1111 1111 1111\""), // a card number
        ] {
            assert!(line.contains(from));
            let changed = line.replacen(from, to, 1);
            assert!(canonical_row(&changed).is_none(), "{changed}");
            agrees(&changed);
        }
    }
}
