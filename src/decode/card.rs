//! Card-number detection and redaction.
//!
//! Card data must never reach state, logs or errors: a string field holding 13–19 digits that
//! pass the Luhn check (optionally grouped by single spaces or dashes, as people type them) is
//! treated as a leaked card number. The record is dead-lettered and its raw text redacted.

/// Whether `s` contains a card-number-like digit run.
#[inline]
pub fn contains_card_number(s: &[u8]) -> bool {
    may_hold_card(s) && has_card_run(s)
}

/// Whether `s` may hold a card number. One needs 13 digits in one run of digits, spaces and
/// dashes ([`has_card_run`]), so a value without 13 such bytes in a row cannot; values
/// up to 32 bytes (every id here) are told with two SSE2 compares instead of a count of digits.
#[inline(always)]
fn may_hold_card(s: &[u8]) -> bool {
    let n = s.len();
    if n < 13 {
        return false;
    }
    if n > 32 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8,
            _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let mut buf = [0u8; 32];
        buf[..n].copy_from_slice(s);
        let mask = |at: usize| -> u32 {
            // SAFETY: SSE2 is baseline on x86_64; the load reads `buf[at..at + 16]`.
            unsafe {
                let x = _mm_loadu_si128(buf.as_ptr().add(at).cast::<__m128i>());
                // '0' <= x <= '9' as unsigned bytes.
                let digit = _mm_and_si128(
                    _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(b'0' as i8)), x),
                    _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(b'9' as i8)), x),
                );
                let space = _mm_cmpeq_epi8(x, _mm_set1_epi8(b' ' as i8));
                let dash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'-' as i8));
                _mm_movemask_epi8(_mm_or_si128(digit, _mm_or_si128(space, dash))) as u32
            }
        };
        // Bit k: byte k is a digit, space or dash. Then keep bits that start a run of 2, 4,
        // 8 and finally 13 such bytes.
        let m = mask(0) | mask(16) << 16;
        let m = m & m >> 1;
        let m = m & m >> 2;
        let m = m & m >> 4;
        m & m >> 5 != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    true
}

/// The full check behind [`contains_card_number`], without the SSE2 pre-check.
fn has_card_run(s: &[u8]) -> bool {
    // Fast reject in one pass: a card number needs 13 digits in one run of digits, spaces and
    // dashes (an RFC 3339 timestamp's longest such run is its 10-character date).
    if s.len() < 13 || s.iter().filter(|b| b.is_ascii_digit()).count() < 13 {
        // The digit count is one vectorised pass; most ids and codes end here.
        return false;
    }
    let (mut run, mut digits_in_run, mut best) = (0usize, 0usize, 0usize);
    for &b in s {
        if b.is_ascii_digit() {
            run += 1;
            digits_in_run += 1;
        } else if (b == b' ' || b == b'-') && run > 0 {
            run += 1;
        } else {
            best = best.max(digits_in_run);
            run = 0;
            digits_in_run = 0;
        }
    }
    if best.max(digits_in_run) < 13 {
        return false;
    }
    let mut found = false;
    for_each_run(s, |_, _| found = true);
    found
}

/// Replaces every digit of each card-number-like run in `raw` with `*`, keeping the last four.
pub fn redact(raw: &str) -> String {
    let mut bytes = raw.as_bytes().to_vec();
    let mut runs = Vec::new();
    for_each_run(raw.as_bytes(), |start, end| runs.push((start, end)));
    for (start, end) in runs {
        let total = bytes[start..end]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count();
        let mut seen = 0;
        for b in &mut bytes[start..end] {
            if b.is_ascii_digit() {
                seen += 1;
                if seen <= total - 4 {
                    *b = b'*';
                }
            }
        }
    }
    String::from_utf8(bytes).expect("only ASCII digits were replaced")
}

/// Calls `f(start, end)` for each maximal run of digits (single ' ' or '-' allowed between
/// digits) holding 13–19 digits that pass the Luhn check.
fn for_each_run(s: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < s.len() {
        if !s[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = [0u8; 19];
        let mut n = 0usize;
        let mut j = i;
        while j < s.len() {
            let c = s[j];
            if c.is_ascii_digit() {
                if n < digits.len() {
                    digits[n] = c - b'0';
                }
                n += 1;
                end = j + 1;
                j += 1;
            } else if (c == b' ' || c == b'-') && j + 1 < s.len() && s[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&n) && luhn(&digits[..n]) {
            f(start, end);
        }
        i = end.max(i + 1);
    }
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        let mut v = d as u32;
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The card pre-check never rules out what the full check finds.
    #[test]
    fn card_precheck_is_necessary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let alphabet = b"0123456789 -x_";
        let mut found = 0;
        for _ in 0..200_000 {
            let n = rng.random_range(0..40);
            let s: Vec<u8> = (0..n)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if has_card_run(&s) {
                found += 1;
                assert!(may_hold_card(&s), "{}", String::from_utf8_lossy(&s));
            }
        }
        assert!(found > 100, "{found}");
        assert!(!may_hold_card(b"evt_1_00000003") && !may_hold_card(b"card_0123456789x"));
        assert!(may_hold_card(b"id 4111-1111-1111-1111"));
    }

    #[test]
    fn detects_and_redacts() {
        assert!(contains_card_number(b"4111111111111111"));
        assert!(contains_card_number(b"card 4111 1111 1111 1111 used"));
        assert!(contains_card_number(b"5500-0000-0000-0004"));
        assert!(!contains_card_number(b"4111111111111112"));
        assert!(!contains_card_number(b"tok_4111111"));
        assert!(!contains_card_number(b"41111111111111111111111"));
        let r = redact(r#"{"card_id":"4111111111111111","x":1}"#);
        assert_eq!(r, r#"{"card_id":"************1111","x":1}"#);
        assert!(!contains_card_number(r.as_bytes()));
    }
}
