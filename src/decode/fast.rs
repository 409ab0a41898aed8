//! The fast path: one pass from a JSON line to a [`ValidRow`].
//!
//! The general route — parse every value into a [`RawRow`](super::RawRow), then judge each
//! slot in [`validate`](super::validate) — reads each value twice and builds a row of tagged
//! values only to drop it; it was seven eighths of the engine's instructions. [`FastPath::row`]
//! reads a line once, checking each value as it meets it, in whatever shape the producer wrote
//! it: any key order, whitespace, optional fields absent or `null`, fields outside the format
//! (skipped, screened for card numbers), the time as RFC 3339 or epoch milliseconds. It gives
//! up (`None`) at the first thing it does not expect — an escape, a value of the wrong type,
//! anything invalid — and the caller then takes the general route, which also names the reason
//! a bad line is rejected. So this path only ever accepts, and what it accepts the general
//! route finds valid with the same values (`tests` hold it to that over generated, reshaped and
//! mutated lines).

use super::MAX_AMOUNT;
use super::card::contains_card_number;
use super::currency::is_iso4217;
use super::json::{KEY_PATTERNS, find_special};
use super::row::{
    MAX_EVENT_TIME, ValidRow, is_country_code, is_event_id, is_mcc, screened_eagerly,
};
use crate::schema::{EVENT_TYPES, FIELD_NAMES, FieldId, NUM_FIELDS, STATUSES};
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

/// The fast path's memory between the lines of one chunk: the minute of the last
/// `event_time` (events arrive roughly in time order, so most share the previous event's minute
/// and only seconds and milliseconds are left to read). It does not change what is accepted,
/// only how fast. (Keys are found by [`key_field`] without memory: an order learned from
/// earlier lines made a producer that shuffles its keys 1.4× as costly as one that does not.)
#[derive(Default)]
pub(super) struct FastPath {
    /// `YYYY-MM-DDThh:mm` of the last event time, as read by [`load16`] (0: none yet).
    minute: u128,
    /// Epoch milliseconds at the start of `minute`.
    minute_ms: i64,
}

/// What [`FastPath::row`] took: where the object ends and how many fields outside the event
/// format it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Taken {
    /// Length of the object, from `{` to `}` inclusive.
    pub len: usize,
    /// Fields outside the event format, accepted and ignored.
    pub unknown: u32,
}

impl FastPath {
    /// Reads the object that starts `text` into `row` if it is a valid event, in any key order,
    /// with or without whitespace (newlines aside), optional fields absent or `null`, unknown
    /// fields of any value, the time as RFC 3339 or epoch milliseconds; `None` otherwise.
    /// It declines escapes, values of the wrong type and anything invalid: the line may still
    /// be valid, and the general route decides and names the reason (`row` then holds nothing
    /// of use). The row is the caller's so that it is filled in place rather than moved out
    /// (two copies of its 300 bytes per line).
    ///
    /// What follows the object is the caller's to check: the reader passes the rest of a
    /// chunk, so it finds where a line ends without a separate search for the newline. The
    /// object never spans a newline: every byte up to its closing brace was checked to be part
    /// of a key, a string without control characters, a number, a literal, punctuation, a
    /// space, a tab or a carriage return.
    #[inline(always)]
    pub(super) fn row<'a>(&mut self, text: &'a str, row: &mut ValidRow<'a>) -> Option<Taken> {
        let (b, line) = (text.as_bytes(), text);
        if b.first() != Some(&b'{') {
            return None;
        }
        row.strs = [None; NUM_FIELDS];
        row.fee_minor = None;
        let mut time: Option<&str> = None;
        let mut time_ms = None;
        let mut amount = None;
        // Fields met so far: a repeated one is declined (the general route rejects it).
        let mut seen = 0u32;
        let mut unknown = 0;
        let mut i = 1;
        loop {
            let at = ws(b, i);
            if b.get(at) != Some(&b'"') {
                return None;
            }
            let word = load16(b, at + 1);
            let (field, colon) = match key_field(word) {
                Some((f, skip)) => (Some(f), at + skip),
                // Whitespace before the colon, an escape, or a name outside the format.
                None => {
                    let end = find_special(b, at + 1);
                    if b.get(end) != Some(&b'"') {
                        return None;
                    }
                    let key = &b[at + 1..end];
                    let colon = ws(b, end + 1);
                    if b.get(colon) != Some(&b':') {
                        return None;
                    }
                    let f = field_named(key, word);
                    // The general route screens an unknown name like a value.
                    if f.is_none() && contains_card_number(key) {
                        return None;
                    }
                    (f, colon)
                }
            };
            let at = ws(b, colon + 1);
            i = match field {
                None => {
                    unknown += 1;
                    skip_value(b, at, 0)?
                }
                Some(f) => {
                    if seen & (1 << f) != 0 {
                        return None;
                    }
                    seen |= 1 << f;
                    let field = FieldId::ALL[f];
                    match b.get(at) {
                        Some(b'"') => {
                            let end = find_special(b, at + 1);
                            if b.get(end) != Some(&b'"') {
                                return None;
                            }
                            // SAFETY: `at` and `end` index ASCII quotes of `line`: char
                            // boundaries.
                            let s = unsafe { line.get_unchecked(at + 1..end) };
                            match field {
                                FieldId::EventTime => time = Some(s),
                                FieldId::AmountMinor | FieldId::FeeMinor => return None,
                                _ => row.strs[f] = Some(s),
                            }
                            end + 1
                        }
                        Some(b'0'..=b'9') => {
                            let (v, end) = minor_units(b, at)?;
                            match field {
                                FieldId::AmountMinor => amount = Some(v),
                                FieldId::FeeMinor => row.fee_minor = Some(v),
                                FieldId::EventTime => time_ms = Some(v),
                                _ => return None,
                            }
                            end
                        }
                        // `null` is an absent optional field.
                        Some(b'n') if !field.required() && b[at..].starts_with(b"null") => at + 4,
                        _ => return None,
                    }
                }
            };
            let at = ws(b, i);
            match b.get(at) {
                Some(b',') => i = at + 1,
                Some(b'}') => {
                    i = at;
                    break;
                }
                _ => return None,
            }
        }
        row.amount_minor = amount?;
        row.event_time = match (time, time_ms) {
            (Some(t), None) => self.event_time(t)?,
            (None, Some(ms)) if ms <= MAX_EVENT_TIME => ms,
            _ => return None,
        };
        check(row)?;
        Some(Taken {
            len: i + 1,
            unknown,
        })
    }

    /// `event_time` as RFC 3339 in epoch milliseconds, within the accepted range. A time
    /// spelled `YYYY-MM-DDThh:mm:ss.mmmZ` in the minute of the previous one is read from its
    /// seconds and milliseconds alone (events arrive roughly in time order).
    #[inline(always)]
    pub(super) fn event_time(&mut self, time: &str) -> Option<i64> {
        let t = time.as_bytes();
        let shaped =
            t.len() == 24 && t[10] == b'T' && t[16] == b':' && t[19] == b'.' && t[23] == b'Z';
        let in_minute = || {
            if !shaped {
                return None;
            }
            let digit = |k: usize| t[k].wrapping_sub(b'0') as i64;
            let (s1, s0) = (digit(17), digit(18));
            let (m2, m1, m0) = (digit(20), digit(21), digit(22));
            // Each is 0..=9 exactly when its byte is a digit (others wrap to large values).
            (s1 <= 5 && s0 <= 9 && m2 <= 9 && m1 <= 9 && m0 <= 9)
                .then_some((s1 * 10 + s0) * 1000 + m2 * 100 + m1 * 10 + m0)
        };
        let minute = if shaped { load16(t, 0) } else { 0 };
        if shaped
            && minute == self.minute
            && let Some(ms) = in_minute()
        {
            return Some(self.minute_ms + ms);
        }
        let ms = parse_rfc3339_millis(time).filter(|ms| (0..=MAX_EVENT_TIME).contains(ms))?;
        // The full parse checked every digit; remember where this minute starts.
        if let Some(in_minute) = in_minute() {
            self.minute = minute;
            self.minute_ms = ms - in_minute;
        }
        Some(ms)
    }
}

/// The field each pair of a key's first and eighth bytes (low five bits each) can only be:
/// for every name but `mcc` the eighth byte is part of the name, its closing quote or the
/// colon, and no two names share the pair.
const BY_BYTES_0_7: [u8; 1024] = {
    let mut out = [u8::MAX; 1024];
    let mut f = 0;
    while f < NUM_FIELDS {
        let (pat, _, skip) = KEY_PATTERNS[f];
        // The name, its quote and its colon reach the eighth byte.
        if skip - 1 > 7 {
            let slot = &mut out[bytes_0_7(pat)];
            assert!(
                *slot == u8::MAX,
                "no two names share their first and eighth bytes"
            );
            *slot = f as u8;
        }
        f += 1;
    }
    out
};

/// The index into [`BY_BYTES_0_7`] of the key whose bytes after its opening quote are `word`.
#[inline(always)]
const fn bytes_0_7(word: u128) -> usize {
    (word as usize & 31) | ((word >> 56) as usize & 31) << 5
}

/// The field whose name, closing quote and colon start `word` (the bytes after a key's
/// opening quote), with the offset of that colon from the opening quote; `None` when there is
/// whitespace before the colon, an escape in the name, or a name outside the format. The
/// only candidate the name's first and eighth bytes allow, confirmed by one masked compare —
/// whatever order a producer writes its keys in, and no search for the key's end: a name, its
/// quote and the colon fit in the 16 bytes already loaded. `mcc`, too short to reach the
/// eighth byte, is found among the names with its first letter.
#[inline(always)]
fn key_field(word: u128) -> Option<(usize, usize)> {
    let f = BY_BYTES_0_7[bytes_0_7(word)];
    if let Some(&(pat, mask, skip)) = KEY_PATTERNS.get(f as usize)
        && word & mask == pat
    {
        return Some((f as usize, skip - 1));
    }
    by_first_byte(word)
}

/// The fields whose names start with each lower-case letter (every field name does), at most
/// four, `u8::MAX` after the last.
const BY_FIRST_BYTE: [[u8; 4]; 26] = {
    let mut out = [[u8::MAX; 4]; 26];
    let mut f = 0;
    while f < NUM_FIELDS {
        let first = FIELD_NAMES[f].as_bytes()[0];
        assert!(
            first.is_ascii_lowercase(),
            "field names start with a letter"
        );
        let slot = &mut out[(first - b'a') as usize];
        let mut k = 0;
        while slot[k] != u8::MAX {
            k += 1;
        }
        slot[k] = f as u8;
        f += 1;
    }
    out
};

/// The field whose name, closing quote and colon start `word` (the bytes after a key's
/// opening quote), with the offset of that colon from the opening quote: the candidates its
/// first byte allows, each confirmed by one masked compare: the second chance of
/// [`key_field`] (for `mcc`, whose name ends before the eighth byte), which costs no search for
/// the key's end either: a name, its quote and the colon fit in the 16 bytes already loaded.
#[inline(always)]
fn by_first_byte(word: u128) -> Option<(usize, usize)> {
    let first = (word as u8).wrapping_sub(b'a');
    let candidates = BY_FIRST_BYTE.get(first as usize)?;
    candidates
        .iter()
        .take_while(|&&f| f != u8::MAX)
        .find_map(|&f| {
            let (pat, mask, skip) = KEY_PATTERNS[f as usize];
            (word & mask == pat).then_some((f as usize, skip - 1))
        })
}

/// The field named `key`, whose bytes (with what follows them) are `word`: the candidate its
/// length and first bytes allow, confirmed by one masked compare of the name and its closing
/// quote (a `memcmp` call cost more than the rest of the lookup).
#[inline(always)]
fn field_named(key: &[u8], word: u128) -> Option<usize> {
    let f = FieldId::candidate(key)? as usize;
    let (pat, mask, _) = KEY_PATTERNS[f];
    // The pattern's mask covers the name, its closing quote and the colon; drop the colon.
    let name_mask = mask >> 8;
    (word & name_mask == pat & name_mask).then_some(f)
}

/// [`skip_ws`] for the fast path's own tokens: one compare when, as in compact JSON, there is
/// nothing to skip.
#[inline(always)]
pub(super) fn ws(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(&c) if c > b' ' => i,
        _ => skip_ws(b, i),
    }
}

/// The index of the first byte at or after `i` that is not a space, tab or carriage return.
/// A newline is not skipped: it ends the line (the general route judges a line that has one
/// inside an object).
#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the value of an unknown field at `b[i]` ends, validated as the general route
/// validates it and screened as it screens it (every string and key, and numbers inside an
/// object or array); `None` for a card number, an escape, a newline or anything invalid,
/// which the general route then judges.
pub(super) fn skip_value(b: &[u8], i: usize, depth: u32) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let end = find_special(b, i + 1);
            (b.get(end) == Some(&b'"') && !contains_card_number(&b[i + 1..end])).then_some(end + 1)
        }
        b'-' | b'0'..=b'9' => {
            let end = skip_number(b, i)?;
            (depth == 0 || !contains_card_number(&b[i..end])).then_some(end)
        }
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        open @ (b'{' | b'[') => {
            if depth > 64 {
                return None;
            }
            let close = if open == b'{' { b'}' } else { b']' };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if open == b'{' {
                    if b.get(j) != Some(&b'"') {
                        return None;
                    }
                    let end = find_special(b, j + 1);
                    if b.get(end) != Some(&b'"') || contains_card_number(&b[j + 1..end]) {
                        return None;
                    }
                    j = skip_ws(b, end + 1);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, skip_value(b, j, depth + 1)?);
                match b.get(j) {
                    Some(b',') => j = skip_ws(b, j + 1),
                    Some(&c) if c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// Where the JSON number at `b[i]` ends (the JSON grammar: no leading zero, no `+`, digits on
/// both sides of a point). The grammar of `json::Cursor::number` without its value: reusing
/// that parse (which reads a fraction's value through `str::parse`) cost an event with three
/// unknown fields 360 more instructions (591 → 627 M per 100 k, callgrind).
pub(super) fn skip_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i),
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        i = digits(i + 1);
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        i = digits(i);
    }
    Some(i)
}

/// Where `word` ends if it is at `b[i]`.
pub(super) fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

/// The validation of [`validate`](super::validate), for the values the fast path read (also
/// the CSV fast path's, [`super::csv::fast_record`]).
#[inline(always)]
pub(super) fn check(row: &mut ValidRow<'_>) -> Option<()> {
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
        // An authorization without a status is approved (docs/EVENTS.md).
        None if EVENT_TYPES[event_type] == "authorization" => {
            row.strs[FieldId::Status as usize] = Some(STATUSES[0]);
            Some(0)
        }
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
fn whole_line<'a>(fast: &mut FastPath, line: &'a str) -> Option<(ValidRow<'a>, Taken)> {
    let mut row = ValidRow::empty();
    let taken = fast.row(line, &mut row)?;
    (taken.len == line.len()).then_some((row, taken))
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::Value;

    use super::super::json::{KeyOrder, parse_object};
    use super::super::row::{RawRow, validate};
    use super::*;
    use crate::generate::{GenConfig, generated_lines};

    /// What the general route makes of a valid line: the row (as its debug text: it borrows
    /// the parsed row), its unknown fields and its payload hash.
    #[derive(Debug, PartialEq)]
    struct Verdict {
        row: String,
        unknown: u32,
        hash: u64,
    }

    fn general(line: &str) -> Option<Verdict> {
        let mut raw = RawRow::default();
        parse_object(line, &mut raw, &mut KeyOrder::default()).ok()?;
        let v = validate(&raw).ok()?;
        Some(Verdict {
            row: format!("{v:?}"),
            unknown: raw.unknown_fields,
            hash: v.payload_hash(),
        })
    }

    /// Asserts that whatever the fast path (`fast`, with the time it kept from earlier lines)
    /// takes, the general route finds valid, with the same row, unknown field count and
    /// payload hash; returns whether the fast path took the line and whether the
    /// general route found it valid.
    fn agrees(fast: &mut FastPath, line: &str) -> (bool, bool) {
        let taken = whole_line(fast, line);
        match (taken, general(line)) {
            (Some((row, t)), Some(g)) => {
                let fast = Verdict {
                    row: format!("{row:?}"),
                    unknown: t.unknown,
                    hash: row.payload_hash(),
                };
                assert_eq!(fast, g, "{line}");
                (true, true)
            }
            (Some(_), None) => panic!("the fast path takes an invalid line: {line}"),
            (None, g) => (false, g.is_some()),
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
        for l in &all {
            assert_eq!(agrees(&mut fast, l), (true, true), "{l}");
        }
    }

    /// The shapes other producers write: keys in another or varying order, whitespace,
    /// optional fields absent or `null`, fields outside the format (nested too), the time as
    /// epoch milliseconds or with an offset.
    fn reshape(line: &str, rng: &mut impl Rng) -> String {
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
            return line.to_string();
        };
        let mut fields: Vec<(String, Value)> = o.into_iter().collect();
        if rng.random_bool(0.3) {
            fields.retain(|(k, _)| k != "status");
        }
        for k in ["fee_minor", "decline_code"] {
            if rng.random_bool(0.2) && !fields.iter().any(|(f, _)| f == k) {
                fields.push((k.into(), Value::Null));
            }
        }
        if rng.random_bool(0.2)
            && let Some((_, t)) = fields.iter_mut().find(|(k, _)| k == "event_time")
            && let Some(ms) = t.as_str().and_then(crate::time::parse_rfc3339_millis)
        {
            *t = if rng.random_bool(0.5) {
                Value::from(ms)
            } else {
                Value::from(t.as_str().unwrap_or_default().replace('Z', "+00:00"))
            };
        }
        for k in 0..rng.random_range(0..4) {
            let v: Value = match rng.random_range(0..6) {
                0 => "trace-1".into(),
                1 => 12.5e3.into(),
                2 => serde_json::json!({"a": [1, 2, {"b": null}], "c": "d"}),
                3 => Value::Bool(true),
                4 => Value::Null,
                _ => serde_json::json!([]),
            };
            // Names outside the format, some sharing a field name's first bytes (and the
            // bytes the key lookup reads), which must not be taken for that field.
            let name = if rng.random_bool(0.5) {
                ["mcc_code", "event", "card_idx", "event_idx"][k].to_string()
            } else {
                format!("x_{k}")
            };
            fields.push((name, v));
        }
        match rng.random_range(0..3) {
            0 => fields.shuffle(rng),
            1 => fields.reverse(),
            _ => {}
        }
        let (comma, colon) = if rng.random_bool(0.5) {
            (", ", ": ")
        } else {
            (",", ":")
        };
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}{colon}{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(comma))
    }

    #[test]
    fn takes_every_common_shape_with_the_general_routes_row_and_hash() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let all = generated_lines(&GenConfig {
            events: 5_000,
            seed: 12,
            ..GenConfig::default()
        });
        let mut fast = FastPath::default();
        let mut reshaped = 0;
        for l in &all {
            let line = reshape(l, &mut rng);
            reshaped += usize::from(line != *l);
            assert_eq!(agrees(&mut fast, &line), (true, true), "{line}");
        }
        assert!(reshaped > 4_000, "{reshaped} lines reshaped");
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
    fn takes_only_valid_lines_among_mutations() {
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
                if agrees(&mut fast, &mutate(line, &mut rng)).0 {
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
        assert!(whole_line(&mut fast, line).is_some());
        for (from, to, takes) in [
            ("\"capture\"", "\"authorization\"", true), // defaulted status
            ("00.000Z", "00Z", true),                   // another time shape
            ("\"c\",", "\"c\", ", true),                // whitespace
            ("\"m\"", "\"m\",\"x\":{\"y\":[1,null]}", true), // an unknown field
            ("00.000Z", "60.000Z", false),              // no leap seconds, in a remembered minute
            ("00.000Z", "0x.000Z", false),              // not a digit, in a remembered minute
            ("00.000Z", "00.00/Z", false),              // not a digit either
            ("T00:00", "T24:00", false),                // out of range
            (":5,", ":05,", false),                     // leading zero
            (":5,", ":-5,", false),                     // a sign
            (":5,", ":5.0,", false),                    // a fraction
            (":0}", ":1000000000000001}", false),       // above 10^15
            ("\"EUR\"", "\"EUX\"", false),              // not ISO 4217
            ("\"m\"", "\"m\\u0041\"", false),           // an escape
            ("\"p\"", "\"4111 1111 1111 1111\"", false), // a card number
            ("\"m\"", "\"m\",\"x\":[\"4111111111111111\"]", false), // one in an unknown field
            ("\"m\"", "\"m\",\"4111111111111111\":1", false), // or name
            ("\"m\"", "\"m\",\"card_id\":\"c\"", false), // a repeated field
            ("\"c\",", "\"c\",\n", false),              // a newline
            ("\"EUR\"", "null", false),                 // a required field null
        ] {
            assert!(line.contains(from), "{from}");
            let changed = line.replacen(from, to, 1);
            assert_eq!(
                whole_line(&mut fast, &changed).is_some(),
                takes,
                "{changed}"
            );
            agrees(&mut fast, &changed);
        }
    }
}
