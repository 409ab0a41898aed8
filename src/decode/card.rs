//! Card-number detection and redaction.
//!
//! Card data must never reach state, logs or errors. A card number (PAN) here is a run of 13–19
//! digits that passes the Luhn check, where the digits may be grouped by any separator a person
//! or a system puts between groups ([`is_separator`]: spaces of every Unicode kind, including
//! no-break, narrow and thin spaces; dashes and hyphens of every kind; dots; slashes; invisible
//! joiners), up to [`MAX_GAP`] of them in a row and in any mix, and the digits may be ASCII or
//! another script's decimal digits (fullwidth `４５３９`, Arabic-Indic, …).
//!
//! * [`contains_card_number`] checks one decoded value (a string field's text, or bytes).
//! * [`record_contains_card_number`] checks a whole record as received: its bytes, and for JSON
//!   text also every string literal decoded (`"\u0034539…"` is a card number once unescaped).
//! * [`redact`] masks every card number in a record as received the same way, so a dead letter's
//!   `raw`, a detail or a log line never holds one.

/// How many separator characters may stand between two digits of one card number (`" - "`).
pub const MAX_GAP: usize = 3;

/// Whether `s` contains a card-number-like digit run.
#[inline]
pub fn contains_card_number(s: &[u8]) -> bool {
    may_hold_card(s) && has_card_run(s)
}

/// Whether a record as received (a JSON line, a CSV record, a log record's value) holds a card
/// number: in its bytes, or — when it has JSON escapes — in any of its string literals decoded.
pub fn record_contains_card_number(raw: &[u8]) -> bool {
    if contains_card_number(raw) {
        return true;
    }
    if memchr::memchr(b'\\', raw).is_none() {
        return false;
    }
    let mut found = false;
    for_each_json_string(raw, |_, _, decoded| {
        found |= contains_card_number(decoded.as_bytes());
    });
    found
}

/// Whether `s` may hold a card number. One needs 13 digits in one run of digits and separators,
/// and every byte of such a run is an ASCII digit, `-`, `.`, `/`, a byte up to `' '` (spaces and
/// the ASCII whitespace) or a byte of a multi-byte UTF-8 character (other scripts' digits,
/// Unicode spaces and dashes), so a value without 13 such bytes in a row cannot; values up to 32
/// bytes (every id here) are told with a few SSE2 compares instead of a scan.
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
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8,
            _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let mut buf = [0u8; 32];
        buf[..n].copy_from_slice(s);
        let mask = |at: usize| -> u32 {
            // SAFETY: SSE2 is baseline on x86_64; the load reads `buf[at..at + 16]`.
            unsafe {
                let x = _mm_loadu_si128(buf.as_ptr().add(at).cast::<__m128i>());
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
                // Bytes >= 0x80 (multi-byte characters) are the sign bits `movemask` reads.
                _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(digit_or_mark, space), x)) as u32
            }
        };
        // Bit k: byte k may belong to a card number. Then keep bits that start a run of 2, 4,
        // 8 and finally 13 such bytes. The zero padding past `n` counts as "may" (it is below
        // ' '), so only bits below `n` are kept first.
        let m = (mask(0) | mask(16) << 16) & (u32::MAX >> (32 - n));
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
    // Fast reject in one pass: a card number needs 13 digits, and each is an ASCII digit or a
    // multi-byte character (the digit count is one vectorised pass; most ids and codes end here).
    if s.len() < 13
        || s.iter()
            .filter(|&&b| b.is_ascii_digit() || b >= 0x80)
            .count()
            < 13
    {
        return false;
    }
    let mut found = false;
    for_each_run(s, |_, _| found = true);
    found
}

/// The character at `s[j]` (decoded from UTF-8) and its length in bytes; `None` for a byte that
/// does not start a well-formed sequence.
#[inline]
fn char_at(s: &[u8], j: usize) -> Option<(u32, usize)> {
    let b0 = *s.get(j)?;
    if b0 < 0x80 {
        return Some((b0 as u32, 1));
    }
    let (len, init) = match b0 {
        0xC2..=0xDF => (2, b0 & 0x1F),
        0xE0..=0xEF => (3, b0 & 0x0F),
        0xF0..=0xF4 => (4, b0 & 0x07),
        _ => return None,
    };
    let mut c = init as u32;
    for &t in s.get(j + 1..j + len)? {
        if t & 0xC0 != 0x80 {
            return None;
        }
        c = c << 6 | (t & 0x3F) as u32;
    }
    Some((c, len))
}

/// The first code point of each block of ten decimal digits (Unicode `Nd`) other than ASCII
/// that a card number may be written in: Arabic-Indic, Extended Arabic-Indic, Devanagari,
/// Bengali, …, Thai, Lao, Tibetan, Myanmar, Khmer, Mongolian, fullwidth, and the five sets of
/// mathematical digits.
const DIGIT_ZEROS: [u32; 25] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x17E0, 0x1810, 0xFF10, 0x1D7CE, 0x1D7D8, 0x1D7E2,
    0x1D7EC, 0x1D7F6,
];

/// The value of a decimal digit character, ASCII or of another script.
#[inline]
fn digit_value(c: u32) -> Option<u8> {
    if (0x30..=0x39).contains(&c) {
        return Some((c - 0x30) as u8);
    }
    if c < 0x660 {
        return None;
    }
    DIGIT_ZEROS
        .iter()
        .find(|&&z| (z..z + 10).contains(&c))
        .map(|z| (c - z) as u8)
}

/// Whether `c` is a character people or systems put between the digit groups of a card number:
/// any Unicode white space (space, tab, no-break space U+00A0, narrow no-break space U+202F,
/// thin, figure and the other typographic spaces, ideographic space, line breaks), ASCII and
/// Unicode dashes, hyphens and minus signs (including the soft hyphen), dots and middle dots,
/// slashes, and invisible separators (zero-width space and joiners, word joiner, BOM).
#[inline]
pub fn is_separator(c: u32) -> bool {
    match c {
        0x2D..=0x2F => true,        // - . /
        0x09..=0x0D | 0x20 => true, // ASCII white space
        0..=0x7F => false,
        _ => {
            let Some(ch) = char::from_u32(c) else {
                return false;
            };
            ch.is_whitespace()
                || matches!(
                    c,
                    0x00AD // soft hyphen
                    | 0x00B7 // middle dot
                    | 0x058A | 0x05BE | 0x1400 | 0x1806 // Armenian, Hebrew, Canadian, Mongolian
                    | 0x180E // Mongolian vowel separator
                    | 0x200B..=0x200D // zero-width space, non-joiner, joiner
                    | 0x2010..=0x2015 // hyphen, non-breaking hyphen, figure/en/em dash, bar
                    | 0x2022 | 0x2024 | 0x2027 // bullet, one dot leader, hyphenation point
                    | 0x2043 | 0x2044 // hyphen bullet, fraction slash
                    | 0x2060 // word joiner
                    | 0x2212 | 0x2215 | 0x2219 | 0x22C5 // minus, division slash, bullet/dot ops
                    | 0x2E17 | 0x2E1A | 0x2E3A | 0x2E3B | 0x2E40 // more dashes
                    | 0x3002 | 0x301C | 0x3030 | 0x30A0 | 0x30FB // CJK stops, dashes, dot
                    | 0xFE31 | 0xFE32 | 0xFE52 | 0xFE58 | 0xFE63 // small/vertical forms
                    | 0xFEFF // zero-width no-break space (BOM)
                    | 0xFF0D | 0xFF0E | 0xFF0F // fullwidth hyphen-minus, full stop, solidus
                    | 0xFF61 | 0xFF65 // halfwidth ideographic full stop, katakana middle dot
                )
        }
    }
}

/// Calls `f(start, end)` (byte offsets) for each maximal run of digits with up to [`MAX_GAP`]
/// separators ([`is_separator`]) between two digits that holds a card number: some span of its
/// digit groups (digits written without a separator between them), taken whole, has 13–19
/// digits that pass the Luhn check. So a card number followed by an expiry date
/// (`4111 1111 1111 1111 12/27`) is found, and one group of more than 19 digits is not a card.
fn for_each_run(s: &[u8], mut f: impl FnMut(usize, usize)) {
    let digit_at = |j: usize| -> Option<(u8, usize)> {
        let (c, len) = char_at(s, j)?;
        Some((digit_value(c)?, len))
    };
    let mut digits: Vec<u8> = Vec::new();
    // Where each group starts in `digits`.
    let mut groups: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if digit_at(i).is_none() {
            i += 1;
            continue;
        }
        let start = i;
        digits.clear();
        groups.clear();
        groups.push(0);
        let mut j = i;
        let mut end = j;
        loop {
            if let Some((d, len)) = digit_at(j) {
                digits.push(d);
                j += len;
                end = j;
                continue;
            }
            // Up to MAX_GAP separators, then a digit, continue the run with a new group.
            let mut k = j;
            let mut gap = 0;
            while gap < MAX_GAP {
                match char_at(s, k) {
                    Some((c, len)) if is_separator(c) => {
                        k += len;
                        gap += 1;
                    }
                    _ => break,
                }
            }
            if gap > 0 && digit_at(k).is_some() {
                groups.push(digits.len());
                j = k;
            } else {
                break;
            }
        }
        if digits.len() >= 13 && holds_card(&digits, &groups) {
            f(start, end);
        }
        i = end;
    }
}

/// Whether some span of whole groups (`groups`: where each starts in `digits`) has 13–19
/// digits passing the Luhn check.
fn holds_card(digits: &[u8], groups: &[usize]) -> bool {
    for (g, &from) in groups.iter().enumerate() {
        for h in g..groups.len() {
            let to = groups.get(h + 1).copied().unwrap_or(digits.len());
            let n = to - from;
            if n > 19 {
                break;
            }
            if n >= 13 && luhn(&digits[from..to]) {
                return true;
            }
        }
    }
    false
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

/// `value` with the digits of each card number in it masked by `*`, all but the last four
/// (separators are kept, so the shape stays readable).
pub fn redact_value(value: &str) -> String {
    let s = value.as_bytes();
    let mut runs = Vec::new();
    for_each_run(s, |start, end| runs.push((start, end)));
    if runs.is_empty() {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut at = 0;
    for (start, end) in runs {
        out.push_str(&value[at..start]);
        let run = &value[start..end];
        let total = run
            .chars()
            .filter(|c| digit_value(*c as u32).is_some())
            .count();
        let mut seen = 0;
        for c in run.chars() {
            if digit_value(c as u32).is_some() {
                seen += 1;
                if seen <= total - 4 {
                    out.push('*');
                    continue;
                }
            }
            out.push(c);
        }
        at = end;
    }
    out.push_str(&value[at..]);
    out
}

/// Redacts a record as received (a JSON line, a CSV record, a log record's value, a detail):
/// every card number in its text is masked ([`redact_value`]), and when it holds JSON escapes,
/// every JSON string literal that decodes to text holding a card number is replaced as a whole
/// by the masked decoded text, written as a JSON string, so the record stays well-formed.
pub fn redact(raw: &str) -> String {
    let raw = if raw.contains('\\') {
        let mut spans = Vec::new();
        for_each_json_string(raw.as_bytes(), |start, end, decoded| {
            if contains_card_number(decoded.as_bytes()) {
                let mut lit = Vec::with_capacity(end - start);
                crate::sink::write_json_str(&mut lit, &redact_value(decoded));
                spans.push((start, end, String::from_utf8(lit).expect("JSON is UTF-8")));
            }
        });
        let mut out = String::with_capacity(raw.len());
        let mut at = 0;
        for (start, end, lit) in spans {
            out.push_str(&raw[at..start]);
            out.push_str(&lit);
            at = end;
        }
        out.push_str(&raw[at..]);
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    redact_value(&raw)
}

/// [`redact`] for bytes that may not be UTF-8 (invalid sequences become U+FFFD).
pub fn redact_bytes(raw: &[u8]) -> String {
    redact(&String::from_utf8_lossy(raw))
}

/// Calls `f(start, end, decoded)` for each JSON string literal in `b` that holds an escape:
/// `b[start..end]` is the literal with its quotes. Literals are found by scanning for quotes
/// outside strings, so text that is not JSON yields some quoted spans or none; a literal with
/// a malformed escape is decoded as far as it goes (every escape that decodes is decoded, the
/// rest kept as written), so whatever a lenient reader could make of it is checked.
fn for_each_json_string(b: &[u8], mut f: impl FnMut(usize, usize, &str)) {
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &b[i..]) {
        let start = i + q;
        let mut j = start + 1;
        let mut escaped = false;
        while j < b.len() && b[j] != b'"' {
            if b[j] == b'\\' {
                escaped = true;
                j += 1;
            }
            j += 1;
        }
        let end = (j + 1).min(b.len());
        if escaped {
            let inner = &b[start + 1..j.min(b.len())];
            f(start, end, &unescape_lenient(inner));
        }
        i = end;
        if i >= b.len() {
            break;
        }
    }
}

/// Decodes JSON string escapes in `b` (no quotes), keeping any escape that does not decode as
/// written; lone surrogates become U+FFFD.
fn unescape_lenient(b: &[u8]) -> String {
    let hex4 = |at: usize| -> Option<u32> {
        let h = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u32::from_str_radix(h, 16).ok()
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let simple = match b.get(i + 1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(8),
            Some(b'f') => Some(12),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        if b.get(i + 1) == Some(&b'u')
            && let Some(hi) = hex4(i + 2)
        {
            let mut len = 6;
            let c = if (0xD800..0xDC00).contains(&hi)
                && b.get(i + 6) == Some(&b'\\')
                && b.get(i + 7) == Some(&b'u')
                && let Some(lo) = hex4(i + 8)
                && (0xDC00..0xE000).contains(&lo)
            {
                len = 12;
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            } else {
                hi
            };
            let ch = char::from_u32(c).unwrap_or('\u{FFFD}');
            let mut tmp = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            i += len;
            continue;
        }
        out.push(b'\\');
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// The pre-check never rules out what the full check finds, over text mixing digits
    /// (ASCII and fullwidth) with separators of every kind, ASCII and multi-byte.
    #[test]
    fn card_precheck_is_necessary_for_unicode_separators() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let tokens = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "4539", "1488", " ", "-", ".", "/",
            "\t", "\u{a0}", "\u{202f}", "\u{2009}", "\u{2007}", "\u{2013}", "\u{200b}", "\u{ff0d}",
            "\u{ff14}", "\u{ff15}", "\u{0664}", "x", "_", "é",
        ];
        let mut found = 0;
        for _ in 0..200_000 {
            let n = rng.random_range(0..24);
            let s: String = (0..n)
                .map(|_| tokens[rng.random_range(0..tokens.len())])
                .collect();
            if has_card_run(s.as_bytes()) {
                found += 1;
                assert!(may_hold_card(s.as_bytes()), "{s:?}");
            }
        }
        assert!(found > 100, "{found}");
    }

    /// Every separator a person or a system puts between digit groups, and any mix of them.
    #[test]
    fn separators_of_every_kind_are_detected() {
        let groups = ["4539", "1488", "0343", "6467"];
        for sep in [
            " ", ".", "-", "/", "\t", "\u{a0}", "\u{202f}", "\u{2009}", "\u{2007}", "\u{2002}",
            "\u{2003}", "\u{205f}", "\u{3000}", "\u{2010}", "\u{2011}", "\u{2012}", "\u{2013}",
            "\u{2014}", "\u{2212}", "\u{ff0d}", "\u{00ad}", "\u{200b}", "\u{2060}", "\u{feff}",
            "\u{00b7}", "\u{2044}", " - ", " / ", ". ",
        ] {
            let card = groups.join(sep);
            assert!(contains_card_number(card.as_bytes()), "{card:?}");
            let line = format!(r#"{{"card_id":"{card}","n":1}}"#);
            let r = redact(&line);
            assert!(!contains_card_number(r.as_bytes()), "{r:?}");
            assert!(r.contains("6467") && !r.contains("4539"), "{r:?}");
        }
        for card in [
            "4539.1488\u{a0}0343-6467",
            "4539 \u{2013} 1488/0343.6467",
            "４５３９ １４８８ ０３４３ ６４６７",
            "٤٥٣٩١٤٨٨٠٣٤٣٦٤٦٧",
            "4539148803436467 12/27",
            "exp 12/27 4539-1488-0343-6467",
        ] {
            assert!(contains_card_number(card.as_bytes()), "{card:?}");
            assert!(!contains_card_number(redact(card).as_bytes()), "{card:?}");
        }
        for not_card in [
            "4539.1488.0343.6468",             // fails the Luhn check
            "4539    1488 0343 6467",          // four separators in a row split it
            "4539148803436467453914880343646", // one group of 31 digits
            "2026-11-01T00:00:00.000Z",
            "192.168.100.200",
        ] {
            assert!(!contains_card_number(not_card.as_bytes()), "{not_card:?}");
        }
    }

    /// A card number hidden behind JSON escapes is found and redacted as decoded text; the
    /// record stays JSON.
    #[test]
    fn escaped_card_numbers_are_found_and_redacted() {
        for raw in [
            r#"{"card_id":"\u0034539148803436467","x":1}"#,
            r#"{"card_id":"4539\u00a01488\u00a00343\u00a06467"}"#,
            r#"{"card_id":"\u0034\u0035\u0033\u0039148803436467"}"#,
            r#"{"\u0034539148803436467":"x"}"#,
            r#"{"card_id":"4539\/1488\/0343\/6467"}"#,
        ] {
            assert!(record_contains_card_number(raw.as_bytes()), "{raw}");
            let r = redact(raw);
            let v: serde_json::Value = serde_json::from_str(&r).expect("still JSON");
            assert!(
                !record_contains_card_number(v.to_string().as_bytes()),
                "{r}"
            );
            assert!(!record_contains_card_number(r.as_bytes()), "{r}");
        }
        assert!(!record_contains_card_number(
            br#"{"card_id":"\u0063ard_1","t":"2026-11-01"}"#
        ));
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
