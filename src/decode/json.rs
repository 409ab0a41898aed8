//! JSON Lines → [`RawRow`]: a scanner specialised for flat event objects.
//!
//! A general JSON parser builds a tree we would throw away; this one walks the line once, borrows
//! every string that has no escapes, and hands each known field straight to its slot. It is still
//! a full JSON validator for what it accepts: a line that is not exactly one JSON object (bad
//! escapes, control characters, trailing bytes, truncation) is rejected as `malformed`.

use std::borrow::Cow;

use super::declared::DeclaredRow;
use super::reject::RejectReason;
use super::row::{Invalid, RawRow, RawValue, Screen};
use crate::schema::{FIELD_NAMES, FieldId, NUM_FIELDS};

/// Index of the first byte at or after `i` that is `"`, `\\` or a control character (< 0x20),
/// or `b.len()`. Sixteen bytes at a time with SSE2 (part of every x86-64 CPU); the last partial
/// block is the buffer's final sixteen bytes, shifted past what was already scanned (the closing
/// strings of a line ended there, and a byte loop over them was 7 % of parsing).
#[inline(always)]
pub(super) fn find_special(b: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut i = i;
        while i + 16 <= b.len() {
            let mask = special_mask(b, i);
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i < b.len() && b.len() >= 16 {
            let base = b.len() - 16;
            let mask = special_mask(b, base) >> (i - base);
            return if mask != 0 {
                i + mask.trailing_zeros() as usize
            } else {
                b.len()
            };
        }
        find_special_swar(b, i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    find_special_swar(b, i)
}

/// Bit `k` set when `b[at + k]` is `"`, `\\` or a control character, for `k` in `0..16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_mask(b: &[u8], at: usize) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    assert!(at + 16 <= b.len());
    // SAFETY: SSE2 is baseline on x86_64, and the unaligned load reads `b[at..at + 16]`, in
    // bounds by the assertion (which the callers' loop conditions let the compiler drop).
    unsafe {
        let x = _mm_loadu_si128(b.as_ptr().add(at).cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // x < 0x20 (unsigned) exactly when max(x, 0x1f) == 0x1f.
        let ctl = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), ctl)) as u32
    }
}

/// [`find_special`] eight bytes at a time: for each byte class, `(x - 0x01…01·c) & !x & 0x80…80`
/// flags the bytes equal to (or below) `c`; the lowest flag is always exact.
#[inline(always)]
fn find_special_swar(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let q = x ^ (LO * b'"' as u64);
        let s = x ^ (LO * b'\\' as u64);
        let hits = (q.wrapping_sub(LO) & !q)
            | (s.wrapping_sub(LO) & !s)
            | (x.wrapping_sub(LO * 0x20) & !x);
        let hits = hits & HI;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\') && b[i] >= 0x20 {
        i += 1;
    }
    i
}

struct Cursor<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

fn malformed(msg: impl Into<String>) -> Invalid {
    (RejectReason::Malformed, msg.into())
}

impl<'a> Cursor<'a> {
    /// Skips whitespace. Compact JSON has none, so the common case is one comparison: every
    /// JSON whitespace byte is at most b' ', every structural byte above it.
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                return;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), Invalid> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(malformed(self.unexpected(what)))
        }
    }

    fn unexpected(&self, what: &str) -> String {
        match self.peek() {
            None => format!("truncated: expected {what} at end of line"),
            Some(c) => format!(
                "expected {what} at byte {}, found {:?}",
                self.i + 1,
                c as char
            ),
        }
    }

    /// Parses a string starting at `"`; borrows when it holds no escapes. The common case (no
    /// escape) is inlined into the callers; escapes take the out-of-line path.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, Invalid> {
        self.i += 1; // opening quote
        let start = self.i;
        self.i = find_special(self.b, self.i);
        if self.b.get(self.i) == Some(&b'"') {
            // SAFETY: `start` follows an ASCII `"` and `self.i` is at one, so both are char
            // boundaries of `self.s` (checked slicing spent a compare per end on it).
            let s = unsafe { self.s.get_unchecked(start..self.i) };
            self.i += 1;
            return Ok(Cow::Borrowed(s));
        }
        self.string_slow(start)
    }

    /// The rest of a string whose scan from `start` stopped at a byte other than `"`.
    #[cold]
    #[inline(never)]
    fn string_slow(&mut self, start: usize) -> Result<Cow<'a, str>, Invalid> {
        match self.b.get(self.i) {
            None => return Err(malformed("truncated: unterminated string")),
            Some(b'\\') => {}
            Some(_) => {
                return Err(malformed(format!(
                    "control character in string at byte {}",
                    self.i + 1
                )));
            }
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return Err(malformed("truncated: unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let esc = *self
                        .b
                        .get(self.i + 1)
                        .ok_or_else(|| malformed("truncated: unterminated escape"))?;
                    self.i += 2;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i) != Some(&b'\\')
                                    || self.b.get(self.i + 1) != Some(&b'u')
                                {
                                    return Err(malformed("unpaired surrogate in \\u escape"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(malformed("invalid surrogate pair"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(ch)
                                    .ok_or_else(|| malformed("invalid \\u escape"))?,
                            );
                        }
                        _ => return Err(malformed(format!("invalid escape \\{}", esc as char))),
                    }
                }
                Some(c) if *c < 0x20 => {
                    return Err(malformed(format!(
                        "control character in string at byte {}",
                        self.i + 1
                    )));
                }
                Some(_) => {
                    // Copy the run up to the next quote or backslash in one go.
                    let run_start = self.i;
                    while self.i < self.b.len() && !matches!(self.b[self.i], b'"' | b'\\') {
                        if self.b[self.i] < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(&self.s[run_start..self.i]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Invalid> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| malformed("truncated \\u escape"))?;
        let mut v = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| malformed("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// Parses a JSON number per the JSON grammar.
    fn number(&mut self) -> Result<RawValue<'a>, Invalid> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            _ => return Err(malformed(self.unexpected("a digit"))),
        }
        let int_end = self.i;
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(malformed(self.unexpected("a digit after '.'")));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integral = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(malformed(self.unexpected("an exponent digit")));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if !integral || int_end - int_start > 18 {
            // Fractions, exponents and integers beyond i64's safe digits are not money.
            return Ok(match self.s[start..self.i].parse::<i64>() {
                Ok(v) if integral => RawValue::Int(v),
                _ => RawValue::Float(self.s[start..self.i].parse().unwrap_or(f64::NAN)),
            });
        }
        let mut v: i64 = 0;
        for &c in &self.b[int_start..int_end] {
            v = v * 10 + (c - b'0') as i64;
        }
        Ok(RawValue::Int(if int_start > start { -v } else { v }))
    }

    fn literal(&mut self, word: &[u8], v: RawValue<'a>) -> Result<RawValue<'a>, Invalid> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(malformed(self.unexpected("a JSON value")))
        }
    }

    /// Parses any value; nested objects and arrays are validated and skipped.
    fn value<S: Screen>(
        &mut self,
        row: &mut S,
        field: &str,
        depth: u32,
    ) -> Result<RawValue<'a>, Invalid> {
        self.ws();
        match self.peek() {
            Some(b'"') => {
                let s = self.string()?;
                row.note_string(field, &s);
                Ok(RawValue::Str(s))
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                let v = self.number()?;
                // A number inside an object or array is screened like its text would be in
                // a Parquet list or struct column (a top-level number is a number).
                if depth > 0 {
                    row.note_string(field, &self.s[start..self.i]);
                }
                Ok(v)
            }
            Some(b't') => self.literal(b"true", RawValue::Bool(true)),
            Some(b'f') => self.literal(b"false", RawValue::Bool(false)),
            Some(b'n') => self.literal(b"null", RawValue::Null),
            Some(open @ (b'{' | b'[')) => {
                if depth > 64 {
                    return Err(malformed("nesting deeper than 64 levels"));
                }
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(RawValue::Compound("an object or array"));
                }
                loop {
                    if open == b'{' {
                        self.ws();
                        if self.peek() != Some(b'"') {
                            return Err(malformed(self.unexpected("a field name")));
                        }
                        let key = self.string()?;
                        row.note_string(field, &key);
                        self.expect(b':', "':'")?;
                    }
                    self.value(row, field, depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {
                            self.i += 1;
                            return Ok(RawValue::Compound("an object or array"));
                        }
                        _ => return Err(malformed(self.unexpected("',' or a closing bracket"))),
                    }
                }
            }
            _ => Err(malformed(self.unexpected("a JSON value"))),
        }
    }
}

/// `name":` of each field (after the key's opening quote) as a little-endian pattern over 16
/// bytes, the mask of its bytes, and how far a match moves the cursor: one compare checks the
/// key, its closing quote and the colon of compact JSON.
pub(super) const KEY_PATTERNS: [(u128, u128, usize); NUM_FIELDS] = {
    let mut out = [(0u128, 0u128, 0usize); NUM_FIELDS];
    let mut f = 0;
    while f < NUM_FIELDS {
        let b = FIELD_NAMES[f].as_bytes();
        assert!(
            b.len() + 2 <= 16,
            "field names fit a 16-byte compare with their closing quote and colon"
        );
        let (mut pat, mut mask, mut k) = (0u128, 0u128, 0);
        while k < b.len() {
            pat |= (b[k] as u128) << (8 * k);
            mask |= 0xff << (8 * k);
            k += 1;
        }
        pat |= (b'"' as u128) << (8 * k) | (b':' as u128) << (8 * (k + 1));
        mask |= 0xffff << (8 * k);
        out[f] = (pat, mask, b.len() + 3);
        f += 1;
    }
    out
};

/// Field order learned from the lines seen so far: events from one producer list their fields in
/// the same order, so the key after field `f` is most likely the one that followed it last time.
/// A right guess is confirmed by one 16-byte compare instead of scanning and looking up the key;
/// a wrong one costs that compare and takes the general path.
#[derive(Debug, Clone)]
pub(super) struct KeyOrder {
    /// `next[0]`: the first key; `next[f + 1]`: the key after field `f`; `u8::MAX` when unknown.
    next: [u8; NUM_FIELDS + 1],
}

impl Default for KeyOrder {
    fn default() -> Self {
        KeyOrder {
            next: [u8::MAX; NUM_FIELDS + 1],
        }
    }
}

impl KeyOrder {
    /// The predicted field after `prev` if the key at `b[i]` (its opening quote) is that field,
    /// directly followed by `:`; with how many bytes the key and colon take.
    #[inline(always)]
    fn confirm(&self, prev: usize, b: &[u8], i: usize) -> Option<(FieldId, usize)> {
        let f = *self.next.get(prev)? as usize;
        let (pat, mask, skip) = *KEY_PATTERNS.get(f)?;
        let bytes: [u8; 16] = b.get(i + 1..i + 17)?.try_into().ok()?;
        (u128::from_le_bytes(bytes) & mask == pat).then(|| (FieldId::ALL[f], skip))
    }
}

/// `name":` as a 16-byte little-endian pattern and mask, and the bytes a match spans from the
/// key's opening quote; `None` for a name too long for one compare (over 14 bytes), and for
/// one a JSON key spells otherwise than its bytes (a quote, a backslash or a control
/// character must be escaped), which the general lookup compares decoded.
pub(super) fn key_pattern(name: &str) -> Option<(u128, u128, usize)> {
    let b = name.as_bytes();
    if b.len() + 2 > 16 || b.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
        return None;
    }
    let (mut pat, mut mask) = (0u128, 0u128);
    for (k, c) in b.iter().enumerate() {
        pat |= (*c as u128) << (8 * k);
        mask |= 0xff << (8 * k);
    }
    let k = b.len();
    pat |= (b'"' as u128) << (8 * k) | (b':' as u128) << (8 * (k + 1));
    mask |= 0xffff << (8 * k);
    Some((pat, mask, b.len() + 3))
}

/// A declared schema's keys for [`parse_declared`]: each column's [`key_pattern`], found from
/// the 16 bytes after a key's opening quote by two of those bytes — positions chosen when the
/// table is built so that they lie inside every pattern and split the names into the smallest
/// buckets — and confirmed by one masked compare of name, quote and colon per candidate.
/// Whatever order a producer writes its keys in, no search for the key's end and no hash:
/// an order learned from earlier lines made shuffled keys 1.5× as costly as ordered ones, and
/// a hash of the name (found by its closing quote) was two fifths of the parser's cycles.
/// Names over 14 bytes, whitespace before the colon and escapes take the general lookup.
#[derive(Debug, Clone)]
pub(super) struct DeclaredKeys {
    /// The byte positions (after the opening quote) whose low five bits index `buckets`.
    at: (u32, u32),
    /// Each bucket's range of `slots`.
    buckets: Box<[(u16, u16)]>,
    /// The patterns, bucket by bucket.
    slots: Vec<KeySlot>,
}

/// A column's `name":` pattern in [`DeclaredKeys`]' table.
#[derive(Debug, Clone, Copy)]
struct KeySlot {
    pattern: u128,
    mask: u128,
    /// The column's index.
    column: u32,
    /// The bytes from the opening quote to past the colon.
    skip: u32,
}

/// Buckets of [`DeclaredKeys`]: five bits of each of two bytes.
const BUCKETS: usize = 1 << 10;

/// The bucket of the 16 bytes `word` by its bytes at `at`.
#[inline(always)]
fn bucket(word: u128, at: (u32, u32)) -> usize {
    ((word >> (8 * at.0)) as usize & 31) | ((word >> (8 * at.1)) as usize & 31) << 5
}

impl DeclaredKeys {
    /// The table of the columns `(index, name)`.
    pub(super) fn new<'n>(names: impl Iterator<Item = (usize, &'n str)>) -> Self {
        let patterns: Vec<KeySlot> = names
            .filter_map(|(c, n)| {
                key_pattern(n).map(|(pattern, mask, skip)| KeySlot {
                    pattern,
                    mask,
                    column: c as u32,
                    skip: skip as u32,
                })
            })
            .collect();
        // Positions inside every pattern (name, quote, colon: `skip - 1` bytes): the pair
        // whose largest bucket is smallest, then whose buckets are most even.
        let inside = patterns.iter().map(|p| p.skip - 1).min().unwrap_or(2);
        let mut best = ((0, 1), (usize::MAX, usize::MAX));
        for p in 0..inside {
            for q in p + 1..inside {
                let mut count = vec![0usize; BUCKETS];
                for s in &patterns {
                    count[bucket(s.pattern, (p, q))] += 1;
                }
                let score = (
                    count.iter().copied().max().unwrap_or(0),
                    count.iter().map(|c| c * c).sum(),
                );
                if score < best.1 {
                    best = ((p, q), score);
                }
            }
        }
        let at = best.0;
        let mut slots = patterns;
        // Columns beyond what a bucket's `u16` range reaches take the general lookup.
        slots.truncate(u16::MAX as usize);
        slots.sort_by_key(|s| bucket(s.pattern, at));
        let mut buckets = vec![(0u16, 0u16); BUCKETS].into_boxed_slice();
        for (i, s) in slots.iter().enumerate() {
            let b = &mut buckets[bucket(s.pattern, at)];
            if b.1 == 0 {
                b.0 = i as u16;
            }
            b.1 = i as u16 + 1;
        }
        DeclaredKeys { at, buckets, slots }
    }

    /// The column whose name, closing quote and colon follow the opening quote at `b[i]`,
    /// with the bytes they span from that quote.
    #[inline(always)]
    pub(super) fn find(&self, b: &[u8], i: usize) -> Option<(usize, usize)> {
        let word = match b.get(i + 1..i + 17) {
            Some(w) => u128::from_le_bytes(w.try_into().expect("16 bytes")),
            // Near the end of the line: zeros past it, which no quote or colon of a pattern
            // matches.
            None => {
                let mut w = [0u8; 16];
                let rest = b.get(i + 1..).unwrap_or_default();
                w[..rest.len()].copy_from_slice(rest);
                u128::from_le_bytes(w)
            }
        };
        let (from, to) = self.buckets[bucket(word, self.at)];
        self.slots
            .get(from as usize..to as usize)?
            .iter()
            .find(|s| word & s.mask == s.pattern)
            .map(|s| (s.column as usize, s.skip as usize))
    }
}

/// Parses one line holding one JSON object of a declared schema's events into `row`: a member
/// whose key `column` finds fills that column's slot; any other is skipped, screened and
/// counted. Values are not judged here (the declared decoder checks them against the column
/// types), except that a member given twice is refused.
pub(super) fn parse_declared<'a>(
    line: &'a str,
    column: impl Fn(&str) -> Option<usize>,
    keys: &DeclaredKeys,
    row: &mut DeclaredRow<'a>,
) -> Result<(), Invalid> {
    let mut c = Cursor {
        b: line.as_bytes(),
        s: line,
        i: 0,
    };
    if line.starts_with(super::csv::BOM) {
        c.i = super::csv::BOM.len();
    }
    c.ws();
    if c.peek() != Some(b'{') {
        return Err(malformed(c.unexpected("a JSON object '{'")));
    }
    c.i += 1;
    c.ws();
    if c.peek() == Some(b'}') {
        c.i += 1;
    } else {
        loop {
            c.ws();
            if c.peek() != Some(b'"') {
                return Err(malformed(c.unexpected("a field name")));
            }
            let (found, key) = match keys.find(c.b, c.i) {
                Some((k, skip)) => {
                    c.i += skip;
                    (Some(k), Cow::Borrowed(""))
                }
                None => {
                    let key = c.string()?;
                    c.expect(b':', "':'")?;
                    (column(&key), key)
                }
            };
            c.ws();
            match found {
                Some(k) => {
                    let v = match c.peek() {
                        Some(b'"') => RawValue::Str(c.string()?),
                        Some(b'-' | b'0'..=b'9') => c.number()?,
                        _ => {
                            let name = row.names[k].clone();
                            c.value(row, &name, 0)?
                        }
                    };
                    let slot = &mut row.values[k];
                    if slot.is_some() {
                        return Err((
                            RejectReason::InvalidValue,
                            format!("field `{}` appears more than once", row.names[k]),
                        ));
                    }
                    *slot = Some(v);
                }
                None => {
                    row.note_string("(field name)", &key);
                    c.value(row, &key, 0)?;
                    row.unknown_fields += 1;
                }
            }
            c.ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b'}') => {
                    c.i += 1;
                    break;
                }
                _ => return Err(malformed(c.unexpected("',' or '}'"))),
            }
        }
    }
    c.ws();
    if c.i != c.b.len() {
        return Err(malformed(format!(
            "unexpected bytes after the object at byte {}",
            c.i + 1
        )));
    }
    Ok(())
}

/// Parses one line holding one JSON object into `row`.
///
/// `line` must already be valid UTF-8 (checked by the caller). `order` carries the key order
/// between lines of one input; any value (even a fresh one) gives the same result.
pub(super) fn parse_object<'a>(
    line: &'a str,
    row: &mut RawRow<'a>,
    order: &mut KeyOrder,
) -> Result<(), Invalid> {
    let mut c = Cursor {
        b: line.as_bytes(),
        s: line,
        i: 0,
    };
    // A byte-order mark (the start of a file some tool wrote, or of one concatenated to
    // another) is skipped.
    if line.starts_with(super::csv::BOM) {
        c.i = super::csv::BOM.len();
    }
    c.ws();
    if c.peek() != Some(b'{') {
        return Err(malformed(c.unexpected("a JSON object '{'")));
    }
    c.i += 1;
    c.ws();
    // The field before the next key, as an index into `order.next`.
    let mut prev = 0;
    if c.peek() == Some(b'}') {
        c.i += 1;
    } else {
        loop {
            c.ws();
            if c.peek() != Some(b'"') {
                return Err(malformed(c.unexpected("a field name")));
            }
            let (field, key) = match order.confirm(prev, c.b, c.i) {
                Some((f, skip)) => {
                    c.i += skip;
                    (Some(f), Cow::Borrowed(""))
                }
                None => {
                    let key = c.string()?;
                    c.expect(b':', "':'")?;
                    (FieldId::from_name(key.as_bytes()), key)
                }
            };
            match field {
                Some(f) => {
                    order.next[prev] = f as u8;
                    prev = f as usize + 1;
                    c.ws();
                    let v = match c.peek() {
                        Some(b'"') => {
                            let s = c.string()?;
                            // Codes are checked by `validate` only when they are invalid (a
                            // valid one cannot hold a card number), times and amounts never.
                            row.note_field(f, &s);
                            RawValue::Str(s)
                        }
                        Some(b'-' | b'0'..=b'9') => c.number()?,
                        _ => c.value(row, f.name(), 0)?,
                    };
                    let slot = &mut row.values[f as usize];
                    if slot.is_some() {
                        return Err((
                            RejectReason::InvalidValue,
                            format!("field `{}` appears more than once", f.name()),
                        ));
                    }
                    *slot = Some(v);
                }
                None => {
                    row.note_string("(field name)", &key);
                    c.value(row, &key, 0)?;
                    row.unknown_fields += 1;
                }
            }
            c.ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b'}') => {
                    c.i += 1;
                    break;
                }
                _ => return Err(malformed(c.unexpected("',' or '}'"))),
            }
        }
    }
    c.ws();
    if c.i != c.b.len() {
        return Err(malformed(format!(
            "unexpected bytes after the object at byte {}",
            c.i + 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<RawRow<'_>, Invalid> {
        let mut r = RawRow::default();
        parse_object(line, &mut r, &mut KeyOrder::default()).map(|_| r)
    }

    #[test]
    fn parses_fields_and_types() {
        let r = parse(
            r#"{"event_id":"e\u00e91","amount_minor":12, "fee_minor":-3,"x":{"a":[1,2,{"b":null}]},"status":null,"mcc":1.5e3}"#,
        )
        .unwrap();
        assert_eq!(
            r.values[FieldId::EventId as usize],
            Some(RawValue::Str("eé1".into()))
        );
        assert_eq!(
            r.values[FieldId::AmountMinor as usize],
            Some(RawValue::Int(12))
        );
        assert_eq!(
            r.values[FieldId::FeeMinor as usize],
            Some(RawValue::Int(-3))
        );
        assert_eq!(r.values[FieldId::Status as usize], Some(RawValue::Null));
        assert_eq!(
            r.values[FieldId::Mcc as usize],
            Some(RawValue::Float(1500.0))
        );
        assert_eq!(r.unknown_fields, 1);
    }

    #[test]
    fn declared_keys_find_each_name_and_nothing_else() {
        use rand::seq::IndexedRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let letters = ["a", "b", "_", "c", "é", "1"];
        for round in 0..300 {
            // Names that share prefixes and lengths, from one byte to past the 14 a pattern holds.
            let mut names: Vec<String> = (0..rng.random_range(1..40))
                .map(|_| {
                    let n = rng.random_range(1..17);
                    (0..n).map(|_| *letters.choose(&mut rng).unwrap()).collect()
                })
                .collect();
            names.sort();
            names.dedup();
            let keys = DeclaredKeys::new(names.iter().enumerate().map(|(i, n)| (i, n.as_str())));
            for probe in 0..200 {
                let name: String = if probe % 2 == 0 {
                    names.choose(&mut rng).unwrap().clone()
                } else {
                    let n = rng.random_range(0..17);
                    (0..n).map(|_| *letters.choose(&mut rng).unwrap()).collect()
                };
                let spacing = *[":", " :"].choose(&mut rng).unwrap();
                let line = format!(r#"{{"{name}"{spacing}1, "x": 2}}"#);
                let want = names
                    .iter()
                    .position(|n| *n == name)
                    .filter(|_| spacing == ":" && key_pattern(&name).is_some());
                let got = keys.find(line.as_bytes(), 1);
                assert_eq!(
                    got.map(|g| g.0),
                    want,
                    "round {round}: {name:?} in {names:?}"
                );
                if let Some((_, skip)) = got {
                    assert_eq!(&line.as_bytes()[1 + skip..2 + skip], b"1");
                }
            }
        }
    }

    #[test]
    fn find_special_matches_a_byte_loop() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let b: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => b'"',
                    1 => b'\\',
                    2 => rng.random_range(0..0x20),
                    3 => rng.random_range(0x80..=0xff),
                    _ => rng.random_range(0x20..0x7f),
                })
                .collect();
            let start = rng.random_range(0..=len);
            let slow = (start..len)
                .find(|&i| matches!(b[i], b'"' | b'\\') || b[i] < 0x20)
                .unwrap_or(len);
            assert_eq!(find_special(&b, start), slow, "{b:?} from {start}");
        }
    }

    #[test]
    fn learned_key_order_never_changes_a_result() {
        // Lines with shuffled, repeated, unknown and near-miss keys (`event_idx`, `mcc"` prefix of
        // nothing): one shared `KeyOrder` must parse every line exactly like a fresh one.
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let fields = [
            r#""event_id":"e1""#,
            r#""event_type":"capture""#,
            r#""event_time":"2026-11-01T00:00:00Z""#,
            r#""amount_minor":5"#,
            r#""currency":"EUR""#,
            r#""mcc":"1234""#,
            r#""event_idx":"x""#,
            r#""fee_minor":null"#,
            r#""card_id":"c"1""#,
            r#""amount_minor":7"#,
        ];
        let mut shared = KeyOrder::default();
        for _ in 0..5_000 {
            let mut picked: Vec<&str> = fields.to_vec();
            picked.shuffle(&mut rng);
            picked.truncate(rng.random_range(0..=fields.len()));
            let line = format!("{{{}}}", picked.join(","));
            let mut a = RawRow::default();
            let mut b = RawRow::default();
            let ra = parse_object(&line, &mut a, &mut shared);
            let rb = parse_object(&line, &mut b, &mut KeyOrder::default());
            assert_eq!(ra, rb, "{line}");
            assert_eq!(a.values, b.values, "{line}");
            assert_eq!(a.unknown_fields, b.unknown_fields, "{line}");
        }
    }

    #[test]
    fn big_integers_are_not_ints() {
        let r = parse(r#"{"amount_minor":123456789012345678901}"#).unwrap();
        assert_eq!(
            r.values[FieldId::AmountMinor as usize],
            Some(RawValue::Float(123456789012345678901.0))
        );
        let r = parse(r#"{"amount_minor":1000000000000000000}"#).unwrap();
        assert_eq!(
            r.values[FieldId::AmountMinor as usize],
            Some(RawValue::Int(1_000_000_000_000_000_000))
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":"x\q"}"#,
            "{\"a\":\"x\ty\"}",
            r#"{"a":1} x"#,
            r#"{"a":tru}"#,
            r#"{"a":-}"#,
            r#"{a:1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn duplicate_known_fields_are_rejected() {
        let e = parse(r#"{"amount_minor":1,"amount_minor":2}"#).unwrap_err();
        assert_eq!(e.0, RejectReason::InvalidValue);
    }

    #[test]
    fn agrees_with_serde_json_on_validity() {
        // Random mutations of a valid line: whatever serde_json rejects as JSON, we reject too,
        // and when both accept, the known string fields are equal.
        use rand::{Rng, SeedableRng};
        let base =
            r#"{"event_id":"e-1","card_id":"c\"1","amount_minor":125,"x":[1,{"y":"z"}],"n":null}"#;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"{}[]\":,\\ 0123456789.-eEtrufalsn";
        for _ in 0..20_000 {
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[i] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            let Ok(line) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let ours = parse(line);
            let theirs: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_str(line);
            match (&ours, &theirs) {
                (Ok(r), Ok(m)) => {
                    if let Some(serde_json::Value::String(s)) = m.get("card_id") {
                        assert_eq!(
                            r.values[FieldId::CardId as usize],
                            Some(RawValue::Str(s.clone().into())),
                            "{line}"
                        );
                    }
                }
                (Err(_), Err(_)) => {}
                (Err(e), Ok(_)) => {
                    // We additionally reject duplicate known fields.
                    assert_eq!(e.0, RejectReason::InvalidValue, "{line}: {e:?}");
                }
                (Ok(_), Err(e)) => {
                    // serde_json rejects duplicate keys in a map only via its own rules; anything
                    // else it rejects must be rejected by us too.
                    panic!("accepted invalid JSON {line:?}: serde_json says {e}");
                }
            }
        }
    }
}
