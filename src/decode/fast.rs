//! The fast path for canonical lines: one pass from a JSON line to a [`ValidRow`].
//!
//! Most lines a producer writes are already in the canonical form of `canonical.rs`: compact,
//! fields in schema order, no escapes, `event_time` as `YYYY-MM-DDThh:mm:ss.mmmZ`. For them the
//! general route — parse every value into a [`RawRow`](super::RawRow), then judge each slot in
//! [`validate`](super::validate) — read each value twice and built a row of tagged values only
//! to drop it; decoding was seven eighths of the engine's instructions. [`FastPath::row`] reads
//! such a line once, checking each value as it meets it, and gives up (`None`) at the first
//! thing it does not expect. The caller then takes the general route, which also names the
//! reason a bad line is rejected. So this path only ever accepts, and it accepts exactly the
//! lines the general route finds valid *and* canonical (`tests` hold it to that over generated
//! and mutated lines); the payload hash of such a line is the hash of the line itself.

use super::MAX_AMOUNT;
use super::card::contains_card_number;
use super::currency::is_iso4217;
use super::json::{KEY_PATTERNS, find_special};
use super::row::{
    MAX_EVENT_TIME, ValidRow, is_country_code, is_event_id, is_mcc, screened_eagerly,
};
use crate::schema::{EVENT_TYPES, FieldId, NUM_FIELDS, STATUSES};
use crate::time::parse_rfc3339_millis;

/// String fields the general route checks for card numbers as it parses them
/// ([`screened_eagerly`]): all but the codes, which a valid value cannot hide one in, and the
/// time and amounts, which are never screened.
const CARD_CHECKED: [FieldId; 7] = {
    let mut out = [FieldId::EventId; 7];
    let (mut i, mut n) = (0, 0);
    while i < NUM_FIELDS {
        let f = FieldId::ALL[i];
        if screened_eagerly(f) {
            out[n] = f;
            n += 1;
        }
        i += 1;
    }
    assert!(
        n == out.len(),
        "seven string fields are checked as they are parsed"
    );
    out
};

/// The fast path's memory between the lines of one chunk: which key followed which (lines
/// from one producer list their fields alike, so the key after a field is usually the one that
/// followed it last time), and the minute of the last `event_time` (events arrive roughly in
/// time order, so most share the previous event's minute and only seconds and milliseconds
/// are left to read). Neither changes what is accepted, only how fast.
pub(super) struct FastPath {
    /// `after[0]`: the first key; `after[f + 1]`: the key after field `f`.
    after: [u8; NUM_FIELDS + 1],
    /// `YYYY-MM-DDThh:mm` of the last event time, as read by [`load16`] (0: none yet).
    minute: u128,
    /// Epoch milliseconds at the start of `minute`.
    minute_ms: i64,
}

impl Default for FastPath {
    fn default() -> Self {
        // Until learned, the key after field `f` is guessed to be the next one in the schema.
        let mut after = [0; NUM_FIELDS + 1];
        for (k, a) in after.iter_mut().enumerate() {
            *a = k as u8;
        }
        FastPath {
            after,
            minute: 0,
            minute_ms: 0,
        }
    }
}

impl FastPath {
    /// Reads the object that starts `text` into `row` and returns the object's length if it is
    /// a valid event written in canonical form; `None` otherwise (the line may still be valid:
    /// the general route decides, and `row` holds nothing of use). The row is the caller's so
    /// that it is filled in place rather than moved out (two copies of its 300 bytes per line).
    /// What follows the object is the caller's to check: the reader passes the rest of a chunk,
    /// so it finds where a line ends without a separate search for the newline. The object
    /// never spans a newline: every byte up to its closing brace was checked to be part of a
    /// key, a string without control characters, a digit, `,` or `:`.
    #[inline(always)]
    pub(super) fn row<'a>(&mut self, text: &'a str, row: &mut ValidRow<'a>) -> Option<usize> {
        let (b, line) = (text.as_bytes(), text);
        if b.first() != Some(&b'{') {
            return None;
        }
        row.strs = [None; NUM_FIELDS];
        row.fee_minor = None;
        let mut time: Option<&str> = None;
        let mut amount = None;
        // Keys come in schema order, so the next one is `next` or a later field.
        let mut next = 0;
        let mut i = 1;
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (f, skip) = self.key_at(b, i + 1, next)?;
            i += skip;
            next = f + 1;
            let field = FieldId::ALL[f];
            if matches!(field, FieldId::AmountMinor | FieldId::FeeMinor) {
                let (v, end) = minor_units(b, i)?;
                if field == FieldId::AmountMinor {
                    amount = Some(v);
                } else {
                    row.fee_minor = Some(v);
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
                    row.strs[f] = Some(s);
                }
                i = end + 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => break,
                _ => return None,
            }
        }
        row.amount_minor = amount?;
        row.event_time = self.event_time(time?)?;
        check(row)?;
        Some(i + 1)
    }

    /// The field whose key (after its opening quote, with closing quote and colon) starts at
    /// `b[at]`, among fields `from..` (first the one that followed the previous field last
    /// time), with the number of bytes the key, its closing quote and the colon take.
    #[inline(always)]
    fn key_at(&mut self, b: &[u8], at: usize, from: usize) -> Option<(usize, usize)> {
        let word = load16(b, at);
        // `after[from]` is only ever set to a field at or after `from`.
        let guess = self.after[from] as usize;
        if let Some(&(pat, mask, skip)) = KEY_PATTERNS.get(guess)
            && word & mask == pat
        {
            return Some((guess, skip));
        }
        let f = (from..NUM_FIELDS).find(|&f| {
            let (pat, mask, _) = KEY_PATTERNS[f];
            word & mask == pat
        })?;
        self.after[from] = f as u8;
        Some((f, KEY_PATTERNS[f].2))
    }

    /// A canonical `event_time` (`YYYY-MM-DDThh:mm:ss.mmmZ`) in epoch milliseconds, within
    /// the accepted range; `None` for any other spelling, which the general route judges.
    #[inline(always)]
    fn event_time(&mut self, time: &str) -> Option<i64> {
        let t = time.as_bytes();
        if !(t.len() == 24 && t[10] == b'T' && t[16] == b':' && t[19] == b'.' && t[23] == b'Z') {
            return None;
        }
        let digit = |k: usize| t[k].wrapping_sub(b'0') as i64;
        let in_minute = || {
            let (s1, s0) = (digit(17), digit(18));
            let (m2, m1, m0) = (digit(20), digit(21), digit(22));
            // Each is 0..=9 exactly when its byte is a digit (others wrap to large values).
            (s1 <= 5 && s0 <= 9 && m2 <= 9 && m1 <= 9 && m0 <= 9)
                .then_some((s1 * 10 + s0) * 1000 + m2 * 100 + m1 * 10 + m0)
        };
        let minute = load16(t, 0);
        if minute == self.minute {
            return Some(self.minute_ms + in_minute()?);
        }
        let ms = parse_rfc3339_millis(time).filter(|ms| (0..=MAX_EVENT_TIME).contains(ms))?;
        // The full parse checked every digit; remember where this minute starts.
        self.minute = minute;
        self.minute_ms = ms - in_minute()?;
        Some(ms)
    }
}

/// The validation of [`validate`](super::validate), for the values of a canonical line.
#[inline(always)]
fn check(row: &mut ValidRow<'_>) -> Option<()> {
    let strs = &row.strs;
    for f in CARD_CHECKED {
        if strs[f as usize].is_some_and(|s| contains_card_number(s.as_bytes())) {
            return None;
        }
    }
    if !is_event_id(strs[FieldId::EventId as usize]?) {
        return None;
    }
    let event_type = code(
        strs[FieldId::EventType as usize]?,
        &EVENT_TYPES,
        &EVENT_TYPE_WORDS,
    )?;
    for f in [FieldId::PaymentId, FieldId::MerchantId, FieldId::CardId] {
        if strs[f as usize]?.is_empty() {
            return None;
        }
    }
    if !is_iso4217(strs[FieldId::Currency as usize]?) {
        return None;
    }
    for f in [FieldId::CardCountry, FieldId::IpCountry] {
        if strs[f as usize].is_some_and(|c| !is_country_code(c)) {
            return None;
        }
    }
    if strs[FieldId::Mcc as usize].is_some_and(|m| !is_mcc(m)) {
        return None;
    }
    row.status = match strs[FieldId::Status as usize] {
        // An authorization without a status is approved, but its canonical form spells that out.
        None if EVENT_TYPES[event_type] == "authorization" => return None,
        None => None,
        Some(s) => Some(code(s, &STATUSES, &STATUS_WORDS)? as i8),
    };
    row.event_type = event_type as i8;
    Some(())
}

/// `s` as a little-endian integer when it is at most 16 bytes long, zero-padded (no valid
/// string holds a NUL byte unescaped, so the padding is unambiguous).
const fn word_of(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() > 16 {
        return None;
    }
    let mut w = 0u128;
    let mut k = 0;
    while k < b.len() {
        w |= (b[k] as u128) << (8 * k);
        k += 1;
    }
    Some(w)
}

/// [`word_of`] of each name; `u128::MAX` (not a UTF-8 byte pattern) for longer ones.
const fn words<const N: usize>(names: &[&str; N]) -> [u128; N] {
    let mut out = [u128::MAX; N];
    let mut i = 0;
    while i < N {
        if let Some(w) = word_of(names[i]) {
            out[i] = w;
        }
        i += 1;
    }
    out
}

const EVENT_TYPE_WORDS: [u128; EVENT_TYPES.len()] = words(&EVENT_TYPES);
const STATUS_WORDS: [u128; STATUSES.len()] = words(&STATUSES);

/// The index of `s` in `names` (whose [`words`] are `words`): one integer compare per name
/// instead of a length check and a `memcmp` call.
#[inline(always)]
fn code<const N: usize>(s: &str, names: &[&str; N], words: &[u128; N]) -> Option<usize> {
    match short_word(s.as_bytes()) {
        Some(w) => words.iter().position(|x| *x == w),
        None => names.iter().position(|n| *n == s),
    }
}

/// [`word_of`] at run time: a few overlapping loads instead of a byte loop.
#[inline(always)]
fn short_word(s: &[u8]) -> Option<u128> {
    let n = s.len();
    let p = s.as_ptr();
    // SAFETY: each read lies within `s` (its length is checked by the arm).
    let w = unsafe {
        match n {
            8..=16 => {
                let lo = p.cast::<u64>().read_unaligned() as u128;
                let hi = p.add(n - 8).cast::<u64>().read_unaligned() as u128;
                lo | hi << (8 * (n - 8))
            }
            4..=7 => {
                let lo = p.cast::<u32>().read_unaligned() as u128;
                let hi = p.add(n - 4).cast::<u32>().read_unaligned() as u128;
                lo | hi << (8 * (n - 4))
            }
            0..=3 => s.iter().rev().fold(0u128, |w, b| w << 8 | *b as u128),
            _ => return None,
        }
    };
    Some(w)
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

/// [`FastPath::row`] of a whole line: the object must end the line.
#[cfg(test)]
fn canonical_line<'a>(fast: &mut FastPath, line: &'a str) -> Option<ValidRow<'a>> {
    let mut row = ValidRow::empty();
    (fast.row(line, &mut row)? == line.len()).then_some(row)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::super::json::{KeyOrder, parse_object};
    use super::super::row::{RawRow, validate};
    use super::*;
    use crate::generate::{GenConfig, generated_lines};

    /// The general route's verdict: the valid row (as its debug text: it borrows the parsed
    /// row), and whether the line is its canonical form.
    fn general(line: &str) -> Option<(String, bool)> {
        let mut raw = RawRow::default();
        parse_object(line, &mut raw, &mut KeyOrder::default()).ok()?;
        let v = validate(&raw).ok()?;
        Some((format!("{v:?}"), v.is_canonical_line(&raw)))
    }

    /// Asserts that the fast path (`fast`, with what it learned from earlier lines) accepts
    /// `line` exactly when the general route finds it valid and canonical, with the same row;
    /// returns whether it accepted.
    fn agrees(fast: &mut FastPath, line: &str) -> bool {
        let fast = canonical_line(fast, line);
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
        let all = generated_lines(&GenConfig {
            events: 20_000,
            seed: 11,
            ..GenConfig::default()
        });
        let mut fast = FastPath::default();
        let taken = all.iter().filter(|l| agrees(&mut fast, l)).count();
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
        let base = generated_lines(&GenConfig {
            events: 3_000,
            seed: 3,
            malformed_rate: 0.05,
            ..GenConfig::default()
        });
        let (mut taken, mut declined) = (0, 0);
        let mut fast = FastPath::default();
        for line in &base {
            for _ in 0..10 {
                if agrees(&mut fast, &mutate(line, &mut rng)) {
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
    fn short_words_and_codes() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcdefg",
            "abcdefgh",
            "abcdefghijklmnop",
        ] {
            assert_eq!(short_word(s.as_bytes()), word_of(s), "{s}");
        }
        assert_eq!(short_word(b"abcdefghijklmnopq"), None);
        for (i, t) in EVENT_TYPES.iter().enumerate() {
            assert_eq!(code(t, &EVENT_TYPES, &EVENT_TYPE_WORDS), Some(i));
            assert_eq!(code(&t[1..], &EVENT_TYPES, &EVENT_TYPE_WORDS), None);
        }
        assert_eq!(code("declined", &STATUSES, &STATUS_WORDS), Some(1));
        assert_eq!(code("Declined", &STATUSES, &STATUS_WORDS), None);
    }

    #[test]
    fn declines_what_only_the_general_route_may_judge() {
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR","fee_minor":0}"#;
        let mut fast = FastPath::default();
        assert!(canonical_line(&mut fast, line).is_some());
        for (from, to) in [
            ("\"capture\"", "\"authorization\""), // defaulted status
            ("00.000Z", "00Z"),                   // another time shape
            ("00.000Z", "60.000Z"),               // no leap seconds, in a remembered minute
            ("00.000Z", "0x.000Z"),               // not a digit, in a remembered minute
            ("00.000Z", "00.00/Z"),               // not a digit either
            ("T00:00", "T24:00"),                 // a minute not yet seen, out of range
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
            assert!(canonical_line(&mut fast, &changed).is_none(), "{changed}");
            agrees(&mut fast, &changed);
        }
    }
}
