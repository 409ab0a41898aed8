//! The card-number screen at the log's door: no topic may ever hold a card number (PCI DSS keeps
//! a PAN out of every store, and a topic keeps records for its whole retention).
//!
//! Every JSON record offered to [`super::Producer::send_json`] passes here. A record that holds a
//! card number is **refused** (not stored; the caller counts and reports it), never rewritten:
//! a redacted copy in the topic would later decode as a valid event with a bogus card, where a
//! replay of the same file dead-letters it as `card_number`.
//!
//! What counts is the decoder's rule, applied to the record's bytes and to its JSON strings
//! decoded (escapes such as `\u0034` resolved): a 13–19 digit, Luhn-valid run anywhere — in a
//! value, a key, a number however written, a field given twice — except the values of the
//! fields whose meaning is known and whose value is in range: `event_time` as epoch
//! milliseconds and the money fields `amount_minor` and `fee_minor` (0 ≤ n ≤ 10^15), which are
//! timestamps and amounts, not card numbers, and numbers in any field that are epoch times or
//! have a fraction (`exempt_number_spans`). Those values are masked out before the check; the
//! decision is never made on a parsed copy of the record, whose duplicate keys, keys and
//! re-printed numbers could differ from the bytes stored.
//!
//! Cost: one pass of [`record_contains_card_number`] over the line; only a line with a hit is
//! looked at again with its known fields masked.

use crate::decode::record_contains_card_number;

/// Largest money value the event format accepts (`amount_minor`, `fee_minor`).
const MAX_MONEY: u64 = 1_000_000_000_000_000;
/// Latest event time the format accepts, epoch milliseconds (9999-12-31T23:59:59.999Z).
const MAX_EVENT_TIME: u64 = 253_402_300_799_999;
/// The fields exempt when they hold an integer in range, with that range's top.
const KNOWN: [(&[u8], u64); 3] = [
    (b"\"event_time\"", MAX_EVENT_TIME),
    (b"\"amount_minor\"", MAX_MONEY),
    (b"\"fee_minor\"", MAX_MONEY),
];

/// Whether the JSON record `line` holds a card number (see the module documentation).
pub(crate) fn holds_card_number(line: &[u8]) -> bool {
    if !may_hold_card_run(line) && memchr::memchr(b'\\', line).is_none() {
        return false;
    }
    if !record_contains_card_number(line) {
        return false;
    }
    let mut masked = None;
    for (name, max) in KNOWN {
        if let Some((s, e)) = int_value_span(line, name)
            && std::str::from_utf8(&line[s..e])
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|v| v <= max)
        {
            // Not a digit and not a separator: nothing can join across the mask.
            masked.get_or_insert_with(|| line.to_vec())[s..e].fill(b'x');
        }
    }
    for (s, e) in exempt_number_spans(line) {
        masked.get_or_insert_with(|| line.to_vec())[s..e].fill(b'x');
    }
    masked.is_none_or(|m| record_contains_card_number(&m))
}

/// The JSON number tokens (outside strings) of `line` no card number can be: epoch-millisecond
/// times — exactly 13 digits starting with 1, 2 or 3 (2001-09-09 to 2065-01-24); no card scheme
/// issues a 13-digit number outside Visa's range 4, so such a value is a time in any field (a
/// declared source's `ts`, which the log cannot know by name), and one in ten of them passes
/// the Luhn check — and numbers with a fraction whose value is not a whole one from 10^12 (a
/// DOUBLE's `0.8474337369372327`, whose 16 digits pass the check one time in ten, which the
/// declared decoder accepted and the log then refused as a bug).
fn exempt_number_spans(line: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < line.len() {
        let c = line[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'0'..=b'9' => {
                let start = i;
                let digits = |mut i: usize| {
                    while i < line.len() && line[i].is_ascii_digit() {
                        i += 1;
                    }
                    i
                };
                i = digits(i);
                let int_end = i;
                // A fraction or exponent, as JSON writes them.
                let mut fractional = false;
                if line.get(i) == Some(&b'.') && line.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i = digits(i + 1);
                    fractional = true;
                }
                if matches!(line.get(i), Some(b'e' | b'E')) {
                    let mut j = i + 1;
                    if matches!(line.get(j), Some(b'+' | b'-')) {
                        j += 1;
                    }
                    if line.get(j).is_some_and(u8::is_ascii_digit) {
                        i = digits(j);
                        fractional = true;
                    }
                }
                // A whole JSON value: a member's or an element's, nothing glued to it (`411
                // 1111111111111` is one card number with a space, not a time).
                let signed = start > 0 && line[start - 1] == b'-';
                let from = start - usize::from(signed);
                let before = line[..from]
                    .iter()
                    .rev()
                    .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
                let after = line[i..]
                    .iter()
                    .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
                let whole_value = matches!(before, Some(b':' | b',' | b'['))
                    && matches!(after, Some(b',' | b'}' | b']'));
                let epoch_millis = !fractional
                    && !signed
                    && int_end - start == 13
                    && matches!(line[start], b'1'..=b'3');
                // A number with a fraction (a DOUBLE's `0.8474337369372327`) is a card number
                // only when its value is whole and from 10^12, as the declared decoder judges a
                // DOUBLE: its digits after the point are no card's.
                let fraction = fractional
                    && std::str::from_utf8(&line[from..i])
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .is_some_and(|f| f.fract() != 0.0 || f.abs() < 1e12);
                if whole_value && (epoch_millis || fraction) {
                    out.push((from, i));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether `line` has 13 bytes in a row that could belong to a card number: ASCII digits, the
/// ASCII separators (`-`, `.`, `/`, space and the bytes below it) and any byte of a multi-byte
/// character (other scripts' digits, Unicode spaces and dashes) — the byte class of the
/// decoder's SSE2 pre-check, for any length. A card number needs 13 digits in one such run, so
/// a line without one cannot hold it; a payment event's longest run is its 10-byte date.
///
/// 64 bytes at a time: a bit mask of the class, runs of 13 found with four shift-ands, and the
/// run reaching a block's end carried into the next. A byte-at-a-time loop cost ~5,000
/// instructions on a 330-byte line, more than the rest of `produce`'s work per record.
fn may_hold_card_run(line: &[u8]) -> bool {
    let mut carry = 0;
    let mut blocks = line.chunks_exact(64);
    for b in &mut blocks {
        if run_of_13(class_mask(b.try_into().expect("64 bytes")), &mut carry) {
            return true;
        }
    }
    let rest = blocks.remainder();
    if rest.is_empty() {
        return false;
    }
    // Padding with a byte outside the class ends any run at the line's end.
    let mut last = [b'x'; 64];
    last[..rest.len()].copy_from_slice(rest);
    run_of_13(class_mask(&last), &mut carry)
}

/// Whether the block mask `m` (bit k: byte k is in the class) holds a run of 13 set bits, counting
/// the `carry` set bits that ended the previous block; updates `carry` for the next block.
fn run_of_13(m: u64, carry: &mut u32) -> bool {
    if *carry + m.trailing_ones() >= 13 {
        return true;
    }
    // Bit k survives when bits k..k+1, then k..k+3, k..k+7 and k..k+12 are all set.
    let mut x = m & (m >> 1);
    x &= x >> 2;
    x &= x >> 4;
    x &= x >> 5;
    if x != 0 {
        return true;
    }
    *carry = if m == u64::MAX {
        *carry + 64
    } else {
        m.leading_ones()
    };
    false
}

/// Bit k set when byte k of the block is in the card-number byte class.
#[cfg(target_arch = "x86_64")]
fn class_mask(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };
    let mask16 = |at: usize| -> u64 {
        // SAFETY: SSE2 is baseline on x86_64; the load reads `block[at..at + 16]`, in bounds.
        unsafe {
            let x = _mm_loadu_si128(block.as_ptr().add(at).cast::<__m128i>());
            // '-' <= x <= '9' as unsigned bytes: `-`, `.`, `/` and the digits.
            let digit_or_mark = _mm_cmpeq_epi8(
                _mm_min_epu8(
                    _mm_max_epu8(x, _mm_set1_epi8(b'-' as i8)),
                    _mm_set1_epi8(b'9' as i8),
                ),
                x,
            );
            // x <= ' ': space, tab and the other ASCII whitespace (and controls).
            let space = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(b' ' as i8)), x);
            // Bytes >= 0x80 are the sign bits `movemask` reads.
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(digit_or_mark, space), x)) as u16 as u64
        }
    };
    mask16(0) | mask16(16) << 16 | mask16(32) << 32 | mask16(48) << 48
}

#[cfg(not(target_arch = "x86_64"))]
fn class_mask(block: &[u8; 64]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (k, b)| m | (u64::from(in_class(*b)) << k))
}

/// The card-number byte class, one byte at a time.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn in_class(b: u8) -> bool {
    b.is_ascii_digit() || b <= b' ' || b >= 0x80 || matches!(b, b'-' | b'.' | b'/')
}

/// The byte range of the first `"name": <integer>` value in `line` (digits only, followed by a
/// delimiter), or `None`.
fn int_value_span(line: &[u8], name: &[u8]) -> Option<(usize, usize)> {
    let at = memchr::memmem::find(line, name)?;
    let mut p = at + name.len();
    let skip_ws = |p: &mut usize| {
        while line.get(*p).is_some_and(u8::is_ascii_whitespace) {
            *p += 1;
        }
    };
    skip_ws(&mut p);
    if line.get(p) != Some(&b':') {
        return None;
    }
    p += 1;
    skip_ws(&mut p);
    let start = p;
    while line.get(p).is_some_and(u8::is_ascii_digit) {
        p += 1;
    }
    let delimited = matches!(
        line.get(p),
        None | Some(b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n')
    );
    (p > start && delimited).then_some((start, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::contains_card_number;

    /// The run pre-check never rules out a line the full check flags.
    /// The block-at-a-time pre-check answers as a byte-at-a-time scan does, at every length and
    /// across block boundaries.
    #[test]
    fn the_block_precheck_equals_a_byte_scan() {
        use rand::{Rng, SeedableRng};
        let scan = |line: &[u8]| {
            let mut run = 0;
            line.iter().any(|b| {
                run = if in_class(*b) { run + 1 } else { 0 };
                run >= 13
            })
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let bytes = [
            b'1', b'9', b' ', b'-', b'/', 0x00, 0xc2, 0xff, b'x', b'"', b':', b'a',
        ];
        let (mut yes, mut no) = (0, 0);
        for _ in 0..50_000 {
            let n = rng.random_range(0..300);
            // Mostly class bytes, so runs of every length occur, straddling 64-byte blocks.
            let line: Vec<u8> = (0..n)
                .map(|_| match rng.random_range(0..16) {
                    0 => bytes[8 + rng.random_range(0..4)],
                    _ => bytes[rng.random_range(0..8)],
                })
                .collect();
            let want = scan(&line);
            assert_eq!(may_hold_card_run(&line), want, "{line:?}");
            if want { yes += 1 } else { no += 1 }
        }
        assert!(yes > 1000 && no > 1000, "{yes} {no}");
        // A run of exactly 13 ending a block, and one of 12: the carry decides.
        for (at, len, want) in [
            (51, 13, true),
            (52, 12, false),
            (60, 13, true),
            (0, 64, true),
        ] {
            let mut line = vec![b'x'; 140];
            line[at..at + len].fill(b'7');
            assert_eq!(may_hold_card_run(&line), want, "{at} {len}");
        }
    }

    #[test]
    fn the_run_precheck_is_necessary() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let pieces: [&str; 12] = [
            "4", "5", "3", "9", "1", " ", "-", ".", "/", "\u{a0}", "\u{ff14}", "x",
        ];
        let mut flagged = 0;
        for _ in 0..100_000 {
            let n = rng.random_range(0..40);
            let s: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            if contains_card_number(s.as_bytes()) {
                flagged += 1;
                assert!(may_hold_card_run(s.as_bytes()), "{s:?}");
            }
        }
        assert!(flagged > 100, "{flagged}");
    }

    #[test]
    fn refuses_card_numbers_in_every_spelling_and_keeps_timestamps_and_amounts() {
        let held = [
            r#"{"card_id":"4539148803436467"}"#,
            r#"{"card_id":"4539 1488 0343 6467"}"#,
            r#"{"card_id":"\u0034539148803436467"}"#,
            r#"{"card_id":"45391488\u00303436467"}"#,
            r#"{"amount_minor":4539148803436467}"#,
            r#"{"extra":{"pan":[4539148803436467]}}"#,
            r#"{"event_time":4539148803436467}"#,
            r#"not json 4539148803436467"#,
            // A field given twice, a key, a number written as a float, a masked field's twin.
            r#"{"card_id":"4539148803436467","card_id":"c1"}"#,
            r#"{"4539148803436467":1}"#,
            r#"{"x":4539148803436467.0}"#,
            r#"{"amount_minor":5,"amount_minor":4539148803436467}"#,
            r#"{"amount_minor":4539148803436467.0}"#,
            // 13 digits in a string, a Visa-range 13-digit number, a longer one.
            r#"{"ts":"1700000000004"}"#,
            r#"{"ts":4222222222222}"#,
            r#"{"ts":17000000000043}"#,
            r#"{"pan":411 1111111111111}"#,
            r#"{"pan":"x", "n": 411 1111111111111}"#,
            // A fraction's digits in a string are text, screened as text; a whole value with
            // a point is a number of 16 digits.
            r#"{"score":"0.4539148803436467"}"#,
            r#"{"score":4539148803436467.0}"#,
            r#"{"score":4.539148803436467e15}"#,
        ];
        for line in held {
            assert!(holds_card_number(line.as_bytes()), "{line}");
        }
        // 1700000000004 and 100000000000009 pass the Luhn check: a timestamp and an amount.
        let clean = [
            r#"{"event_time":1700000000004,"amount_minor":100000000000009}"#,
            // An epoch-ms time in any field (a declared source's), not a 13-digit Visa.
            r#"{"ts":1700000000004,"nested":{"at":[1700000000004]}}"#,
            r#"{"ts" : 1700000000004 , "at": [ 1700000000004 ]}"#,
            r#"{"fee_minor":100000000000009,"note":"caf\u00e9"}"#,
            r#"{"card_id":"card_4539148"}"#,
            // A DOUBLE's fraction digits (Luhn-valid as a run) are no card number, as the
            // declared decoder judges them.
            r#"{"order_id":"o0","score":0.4539148803436467,"gift":false}"#,
            r#"{"score":-0.4539148803436467}"#,
            r#"{"score":[0.4539148803436467, 1.5e-7]}"#,
        ];
        assert!(contains_card_number(b"1700000000004"));
        assert!(contains_card_number(b"100000000000009"));
        for line in clean {
            assert!(!holds_card_number(line.as_bytes()), "{line}");
        }
    }
}
