//! The canonical form of an event and the payload hash dedup compares.
//!
//! A redelivery must hash like the original even when a different producer wrote it (other key
//! order, whitespace, escapes, `+00:00` instead of `Z`), so the hash is taken over one canonical
//! JSON spelling of the event. Writing that spelling out for every event cost about a tenth of
//! decoding; most lines already *are* canonical, and the parser notices it for free, so those
//! are hashed as they stand.

use super::row::{RawRow, RawValue, ValidRow};
use crate::schema::FieldId;
use crate::sink::write_json_str;
use crate::time::format_rfc3339_millis;

/// The payload hash of canonical JSON bytes: XXH3-64 (seed 0), the same function whether the
/// bytes are a line as read or the canonical form written out. Computed by `twox-hash`, which
/// picks AVX2 at run time where the CPU has it (a line is hashed 32 bytes per step instead of
/// 16); the value is XXH3's either way, so stored state keeps its meaning.
#[inline]
pub(super) fn canonical_hash(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

impl ValidRow<'_> {
    /// A stable 64-bit hash of the event, used by dedup to tell a redelivery (same hash) from a
    /// conflicting reuse of an `event_id` (different hash): XXH3 of the event's canonical JSON
    /// ([`ValidRow::canonical_json`]), so the same event hashes the same from any format, key
    /// order or spelling. `line` is the JSON line the row was parsed from, if any: when it is
    /// already canonical ([`ValidRow::is_canonical_line`], the common case) it is hashed as it
    /// is instead of being written out again.
    pub fn payload_hash(
        &self,
        raw: &RawRow<'_>,
        line: Option<&[u8]>,
        scratch: &mut Vec<u8>,
    ) -> u64 {
        if let Some(line) = line
            && self.is_canonical_line(raw)
        {
            return canonical_hash(line);
        }
        scratch.clear();
        self.canonical_json(scratch);
        canonical_hash(scratch)
    }

    /// Writes the event's canonical JSON: the fields it has in schema order, no whitespace,
    /// strings escaped minimally, integers in decimal, `event_time` as RFC 3339 UTC with
    /// milliseconds, and the `status` an authorization defaults to spelled out.
    pub fn canonical_json(&self, out: &mut Vec<u8>) {
        let mut sep = b'{';
        for f in FieldId::ALL {
            let field = |out: &mut Vec<u8>, sep: &mut u8| {
                out.push(*sep);
                *sep = b',';
                out.push(b'"');
                out.extend_from_slice(f.name().as_bytes());
                out.extend_from_slice(b"\":");
            };
            match f {
                FieldId::EventTime => {
                    field(out, &mut sep);
                    out.push(b'"');
                    format_rfc3339_millis(self.event_time, out);
                    out.push(b'"');
                }
                FieldId::AmountMinor => {
                    field(out, &mut sep);
                    out.extend_from_slice(itoa::Buffer::new().format(self.amount_minor).as_bytes());
                }
                FieldId::FeeMinor => {
                    if let Some(v) = self.fee_minor {
                        field(out, &mut sep);
                        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
                    }
                }
                _ => {
                    if let Some(v) = self.strs[f as usize] {
                        field(out, &mut sep);
                        write_json_str(out, v);
                    }
                }
            }
        }
        out.push(b'}');
    }

    /// Whether the JSON line this row was parsed from is byte for byte the row's
    /// [`canonical_json`](ValidRow::canonical_json).
    ///
    /// With canonical syntax ([`RawRow::canonical_syntax`]) the line lists the fields it has, in
    /// schema order, each key and string value spelled as in the canonical form and integers in
    /// plain decimal. Two values can still differ: an `event_time` that is epoch milliseconds or
    /// RFC 3339 in another shape, and a `status` the line left out but an authorization defaults
    /// to. Both are checked here.
    pub fn is_canonical_line(&self, raw: &RawRow<'_>) -> bool {
        if !raw.canonical_syntax {
            return false;
        }
        if self.strs[FieldId::Status as usize].is_some()
            && raw.values[FieldId::Status as usize].is_none()
        {
            return false;
        }
        // The shape `YYYY-MM-DDThh:mm:ss.mmmZ`: with the digits and ranges the parser checked,
        // such a string is exactly how the event time formats.
        matches!(
            &raw.values[FieldId::EventTime as usize],
            Some(RawValue::Str(t))
                if t.len() == 24
                    && t.as_bytes()[10] == b'T'
                    && t.as_bytes()[19] == b'.'
                    && t.as_bytes()[23] == b'Z'
        )
    }
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::Value;

    use super::super::json::{KeyOrder, parse_object};
    use super::super::row::validate;
    use super::*;
    use crate::generate::{GenConfig, generated_lines};
    use crate::schema::FIELD_NAMES;

    /// The hash through the fast path when `line` allows it, the written-out canonical JSON, and
    /// whether the fast path was taken.
    fn hash(line: &str) -> Option<(u64, Vec<u8>, bool)> {
        let mut raw = RawRow::default();
        parse_object(line, &mut raw, &mut KeyOrder::default()).ok()?;
        let v = validate(&raw).ok()?;
        let mut canonical = Vec::new();
        v.canonical_json(&mut canonical);
        let fast = v.is_canonical_line(&raw);
        let h = v.payload_hash(&raw, Some(line.as_bytes()), &mut Vec::new());
        assert_eq!(
            h,
            xxhash_rust::xxh3::xxh3_64(&canonical),
            "the fast path must hash exactly the canonical JSON: {line}"
        );
        if fast {
            assert_eq!(
                line.as_bytes(),
                &canonical[..],
                "taken as canonical but is not"
            );
        }
        Some((h, canonical, fast))
    }

    /// The hash is XXH3-64 as `xxhash-rust` computes it (which earlier state was saved with),
    /// for every length: short inputs and long ones, whole stripes and partial.
    #[test]
    fn hash_is_xxh3() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for len in (0..1100).chain([4096, 10_000]) {
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert_eq!(
                canonical_hash(&bytes),
                xxhash_rust::xxh3::xxh3_64(&bytes),
                "{len}"
            );
        }
    }

    fn events(n: u64, seed: u64) -> Vec<String> {
        generated_lines(&GenConfig {
            events: n,
            seed,
            ..GenConfig::default()
        })
    }

    /// Writes `s` as a JSON string, escaping a random choice of its characters needlessly when
    /// `needless` is set.
    fn escaped(s: &str, needless: bool, rng: &mut impl Rng) -> String {
        let mut out = String::from("\"");
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                '/' if needless && rng.random_bool(0.5) => out.push_str("\\/"),
                c if needless && (c as u32) < 0x10000 && rng.random_bool(0.1) => {
                    out.push_str(&format!("\\u{:04X}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Another spelling of the same event: keys shuffled, whitespace, needless escapes, another
    /// time zone spelling or epoch milliseconds, a defaulted status left out, explicit nulls and
    /// unknown fields — each kind at random, so that some respellings are canonical again.
    fn respell(line: &str, rng: &mut impl Rng) -> String {
        let mut kind = || rng.random_bool(0.3);
        let (shuffle, spaces, escapes, time, no_status, nulls, extra) =
            (kind(), kind(), kind(), kind(), kind(), kind(), kind());
        let Value::Object(map) = serde_json::from_str::<Value>(line).unwrap() else {
            panic!("generated lines are objects")
        };
        let mut fields: Vec<(String, Value)> = map.into_iter().collect();
        if shuffle {
            fields.shuffle(rng);
        } else {
            fields.sort_by_key(|(k, _)| FIELD_NAMES.iter().position(|n| n == k));
        }
        let authorization = fields
            .iter()
            .any(|(k, v)| k == "event_type" && v == "authorization");
        if authorization && no_status {
            fields.retain(|(k, v)| !(k == "status" && v == "approved"));
        }
        for optional in ["fee_minor", "mcc", "decline_code"] {
            if nulls && !fields.iter().any(|(k, _)| k == optional) {
                fields.push((optional.into(), Value::Null));
            }
        }
        if extra {
            fields.push(("x_extra".into(), serde_json::json!({"a": [1, "b"]})));
        }
        let ws = |rng: &mut dyn rand::RngCore| -> &'static str {
            match rng.random_range(0..if spaces { 8 } else { 1 }) {
                1 => " ",
                2 => "\t",
                3 => "  \r\n ",
                _ => "",
            }
        };
        let mut out = String::from(ws(rng));
        out.push('{');
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(ws(rng));
            out.push_str(&escaped(k, escapes, rng));
            out.push_str(ws(rng));
            out.push(':');
            out.push_str(ws(rng));
            let value = match (k.as_str(), v) {
                ("event_time", Value::String(t)) if time => {
                    let ms = crate::time::parse_rfc3339_millis(t).unwrap();
                    match rng.random_range(0..4) {
                        0 => ms.to_string(),
                        1 => format!("\"{}+00:00\"", &t[..t.len() - 1]),
                        2 => format!("\"{}z\"", &t[..t.len() - 1].replace('T', "t")),
                        _ => escaped(t, true, rng),
                    }
                }
                (_, Value::String(s)) => escaped(s, escapes, rng),
                (_, other) => other.to_string(),
            };
            out.push_str(&value);
            out.push_str(ws(rng));
        }
        out.push('}');
        out.push_str(ws(rng));
        out
    }

    #[test]
    fn generated_lines_are_canonical_and_hashed_as_written() {
        let lines = events(3_000, 21);
        let mut fast = 0;
        for line in &lines {
            let (_, canonical, was_fast) = hash(line).expect("generated events are valid");
            assert_eq!(line.as_bytes(), &canonical[..], "{line}");
            fast += usize::from(was_fast);
        }
        assert_eq!(
            fast,
            lines.len(),
            "every generated line takes the fast path"
        );
    }

    #[test]
    fn every_spelling_of_an_event_hashes_alike() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut fast, mut slow) = (0, 0);
        for line in events(2_000, 22) {
            let (want, _, _) = hash(&line).unwrap();
            for _ in 0..5 {
                let other = respell(&line, &mut rng);
                let (got, _, was_fast) = hash(&other).unwrap_or_else(|| panic!("{other}"));
                assert_eq!(got, want, "{line}\n{other}");
                if was_fast {
                    fast += 1;
                } else {
                    slow += 1;
                }
            }
        }
        // Both paths were exercised by the respellings.
        assert!(fast > 100 && slow > 100, "fast {fast}, slow {slow}");
    }

    #[test]
    fn a_changed_value_changes_the_hash() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for line in events(1_000, 23) {
            let (want, _, _) = hash(&line).unwrap();
            let Value::Object(mut map) = serde_json::from_str::<Value>(&line).unwrap() else {
                unreachable!()
            };
            match rng.random_range(0..3) {
                0 => {
                    let a = map["amount_minor"].as_i64().unwrap();
                    map.insert("amount_minor".into(), (a + 1).into());
                }
                1 => {
                    let m = map["merchant_id"].as_str().unwrap().to_string();
                    map.insert("merchant_id".into(), format!("{m}x").into());
                }
                _ => {
                    let had = map.remove("customer_id").is_some();
                    if !had {
                        map.insert("customer_id".into(), "cus_new".into());
                    }
                }
            }
            let other = serde_json::to_string(&Value::Object(map)).unwrap();
            let (got, _, _) = hash(&other).unwrap();
            assert_ne!(got, want, "{line}\n{other}");
        }
    }
}
