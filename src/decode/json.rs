//! JSON Lines → [`RawRow`]: a scanner specialised for flat event objects.
//!
//! A general JSON parser builds a tree we would throw away; this one walks the line once, borrows
//! every string that has no escapes, and hands each known field straight to its slot. It is still
//! a full JSON validator for what it accepts: a line that is not exactly one JSON object (bad
//! escapes, control characters, trailing bytes, truncation) is rejected as `malformed`.

use std::borrow::Cow;

use super::reject::RejectReason;
use super::row::{Invalid, RawRow, RawValue};
use crate::schema::FieldId;

/// Index of the first byte at or after `i` that is `"`, `\\` or a control character (< 0x20),
/// or `b.len()`. Eight bytes at a time: for each byte class, `(x - 0x01…01·c) & !x & 0x80…80`
/// flags the bytes equal to (or below) `c`; the lowest flag is always exact.
#[inline]
fn find_special(b: &[u8], mut i: usize) -> usize {
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
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
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

    /// Parses a string starting at `"`; borrows when it holds no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Invalid> {
        self.i += 1; // opening quote
        let start = self.i;
        self.i = find_special(self.b, self.i);
        match self.b.get(self.i) {
            None => return Err(malformed("truncated: unterminated string")),
            Some(b'"') => {
                let s = &self.s[start..self.i];
                self.i += 1;
                return Ok(Cow::Borrowed(s));
            }
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
                _ => RawValue::Float,
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
    fn value(
        &mut self,
        row: &mut RawRow<'a>,
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
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", RawValue::Bool),
            Some(b'f') => self.literal(b"false", RawValue::Bool),
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
                    return Ok(RawValue::Compound);
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
                            return Ok(RawValue::Compound);
                        }
                        _ => return Err(malformed(self.unexpected("',' or a closing bracket"))),
                    }
                }
            }
            _ => Err(malformed(self.unexpected("a JSON value"))),
        }
    }
}

/// Parses one line holding one JSON object into `row`.
///
/// `line` must already be valid UTF-8 (checked once per line by the caller).
pub(super) fn parse_object<'a>(line: &'a str, row: &mut RawRow<'a>) -> Result<(), Invalid> {
    let mut c = Cursor {
        b: line.as_bytes(),
        s: line,
        i: 0,
    };
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
            let key = c.string()?;
            c.expect(b':', "':'")?;
            match FieldId::from_name(key.as_bytes()) {
                Some(f) => {
                    let v = c.value(row, f.name(), 0)?;
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
        parse_object(line, &mut r).map(|_| r)
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
        assert_eq!(r.values[FieldId::Mcc as usize], Some(RawValue::Float));
        assert_eq!(r.unknown_fields, 1);
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
    fn big_integers_are_not_ints() {
        let r = parse(r#"{"amount_minor":123456789012345678901}"#).unwrap();
        assert_eq!(
            r.values[FieldId::AmountMinor as usize],
            Some(RawValue::Float)
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
