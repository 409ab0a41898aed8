//! Card-number detection and redaction.
//!
//! Card data must never reach state, logs or errors: a string field holding 13–19 digits that
//! pass the Luhn check (optionally grouped by single spaces or dashes, as people type them) is
//! treated as a leaked card number. The record is dead-lettered and its raw text redacted.

/// Whether `s` contains a card-number-like digit run.
pub fn contains_card_number(s: &[u8]) -> bool {
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
    use super::*;

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
