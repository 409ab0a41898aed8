//! The payload hash dedup compares: a stable 64-bit hash of an event's validated values.
//!
//! A redelivery must hash like the original even when another producer wrote it — other key
//! order, whitespace, escapes, unknown fields, `+00:00` instead of `Z`, epoch milliseconds,
//! a defaulted `status` left out, another file format — so the hash reads the values, field
//! by field in schema order, never the bytes as they arrived. It used to be XXH3 of the event's
//! canonical JSON, hashed as read when a line was already canonical; every other spelling then
//! had its canonical JSON written out first, which made an event with one unknown field cost
//! 2.5 times the decoding of a canonical one. Hashing the values costs every spelling the same.
//!
//! Hashes are kept in checkpoints (dedup state), so the function is fixed here rather than
//! borrowed from a crate whose output may change: a wyhash-style folded multiply digests each
//! present field's index, length and bytes, and the digests are folded: the strings in schema
//! order, then the time and the amounts. It is not a cryptographic hash: a producer set on it
//! could make two payloads collide, which would turn a conflicting reuse of an `event_id` into
//! a plain duplicate. Dedup's
//! `PAYLOAD_HASH_VERSION` names it.

use super::row::ValidRow;
use crate::schema::FieldId;

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// The high and low halves of the 128-bit product, folded: wyhash's mixing step.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The eight bytes at `b[at..]`, little-endian.
///
/// # Safety
/// `at + 8 <= b.len()`.
#[inline(always)]
unsafe fn read8(b: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= b.len());
    // SAFETY: the caller keeps the read within `b`.
    u64::from_le(unsafe { b.as_ptr().add(at).cast::<u64>().read_unaligned() })
}

/// The four bytes at `b[at..]`, little-endian.
///
/// # Safety
/// `at + 4 <= b.len()`.
#[inline(always)]
unsafe fn read4(b: &[u8], at: usize) -> u64 {
    debug_assert!(at + 4 <= b.len());
    // SAFETY: the caller keeps the read within `b`.
    u64::from(u32::from_le(unsafe {
        b.as_ptr().add(at).cast::<u32>().read_unaligned()
    }))
}

/// The digest of a value of field `tag` (its index and the value's length): up to 16 bytes
/// are read as two overlapping words, as wyhash reads short inputs; longer values are folded
/// in 16 at a time first. The length in `tag` keeps the overlapping reads unambiguous.
#[inline(always)]
fn digest_bytes(tag: u64, b: &[u8]) -> u64 {
    let n = b.len();
    let mut h = P2;
    // SAFETY: each arm reads within the `n` bytes of `b`.
    let (lo, hi) = unsafe {
        match n {
            0 => (0, 0),
            1..=3 => (
                u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]),
                0,
            ),
            4..=7 => (read4(b, 0), read4(b, n - 4)),
            8..=16 => (read8(b, 0), read8(b, n - 8)),
            _ => {
                let mut at = 0;
                while n - at > 16 {
                    h = fold(read8(b, at) ^ P0 ^ h, read8(b, at + 8) ^ P1);
                    at += 16;
                }
                (read8(b, n - 16), read8(b, n - 8))
            }
        }
    };
    fold(lo ^ P0 ^ h, hi ^ P1 ^ tag)
}

/// The digest of an integer value of field `tag`.
#[inline(always)]
fn digest_int(tag: u64, v: i64) -> u64 {
    fold(v as u64 ^ P0, P1 ^ tag)
}

/// Adds a field's digest to the running hash. The digest is computed without the running
/// hash, so no value can be chosen to cancel what earlier fields contributed.
#[inline(always)]
fn combine(h: u64, digest: u64) -> u64 {
    fold(h ^ P0, digest ^ P1)
}

/// The tag of field `f` holding a value of `len` bytes.
#[inline(always)]
fn tag(f: FieldId, len: usize) -> u64 {
    (len as u64) << 8 | f as u64
}

/// The payload hash of a declared schema's event, built column by column (in schema order, a
/// null column adding nothing) with the same digests as the payment event's.
#[derive(Debug, Clone, Copy)]
pub(super) struct PayloadHasher(u64);

impl PayloadHasher {
    pub(super) fn new() -> Self {
        PayloadHasher(P2)
    }

    /// Adds string or bytes value `b` of column `column`.
    #[inline]
    pub(super) fn bytes(&mut self, column: usize, b: &[u8]) {
        self.0 = combine(
            self.0,
            digest_bytes((b.len() as u64) << 8 | column as u64, b),
        );
    }

    /// Adds an integer value (or a float's or a boolean's bits) of column `column`.
    #[inline]
    pub(super) fn int(&mut self, column: usize, v: i64) {
        self.0 = combine(self.0, digest_int(8 << 8 | column as u64, v));
    }

    pub(super) fn finish(self) -> u64 {
        fold(self.0 ^ P0, P2)
    }
}

impl ValidRow<'_> {
    /// A stable 64-bit hash of the event's values, used by dedup to tell a redelivery (same
    /// hash) from a conflicting reuse of an `event_id` (different hash). Every spelling and
    /// format of one event hashes alike: the strings as decoded (escapes resolved, the
    /// `status` an authorization defaults to included), the time as epoch milliseconds, the
    /// amounts as integers; an absent field adds nothing, and each present one adds its index.
    pub fn payload_hash(&self) -> u64 {
        let mut h = P2;
        // The strings in schema order; `strs` never holds the time or the amounts, whose slots
        // stay empty. One pass over the slots, not a match per field: this runs per event.
        debug_assert!(
            [FieldId::EventTime, FieldId::AmountMinor, FieldId::FeeMinor]
                .iter()
                .all(|f| self.strs[*f as usize].is_none())
        );
        for (f, s) in self.strs.iter().enumerate() {
            if let Some(s) = s {
                h = combine(
                    h,
                    digest_bytes((s.len() as u64) << 8 | f as u64, s.as_bytes()),
                );
            }
        }
        h = combine(h, digest_int(tag(FieldId::EventTime, 8), self.event_time));
        h = combine(
            h,
            digest_int(tag(FieldId::AmountMinor, 8), self.amount_minor),
        );
        if let Some(v) = self.fee_minor {
            h = combine(h, digest_int(tag(FieldId::FeeMinor, 8), v));
        }
        fold(h ^ P0, P2)
    }
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::Value;

    use super::super::json::{KeyOrder, parse_object};
    use super::super::row::RawRow;
    use super::super::row::validate;
    use crate::generate::{GenConfig, generated_lines};
    use crate::schema::FIELD_NAMES;

    /// The payload hash of `line` through the general route, if it is valid.
    fn hash(line: &str) -> Option<u64> {
        let mut raw = RawRow::default();
        parse_object(line, &mut raw, &mut KeyOrder::default()).ok()?;
        Some(validate(&raw).ok()?.payload_hash())
    }

    /// Stored state holds these hashes: the function must not change without a new
    /// `PAYLOAD_HASH_VERSION` in dedup.
    const PINNED: u64 = 1_606_261_204_124_892_970;
    const PINNED_AUTHORIZATION: u64 = 10_307_147_259_380_045_052;

    #[test]
    fn hash_is_pinned() {
        let line = r#"{"event_id":"e1","event_type":"capture","event_time":"2026-11-01T00:00:00.000Z","payment_id":"p","merchant_id":"m","card_id":"c","amount_minor":5,"currency":"EUR","fee_minor":0,"decline_code":"a long decline code past sixteen bytes"}"#;
        assert_eq!(hash(line), Some(PINNED));
        // An authorization whose status is defaulted, ids of 8 to 16 bytes, an empty string.
        let line = r#"{"event_id":"evt_000001","event_type":"authorization","event_time":"2026-11-01T00:00:00.016Z","payment_id":"pay_00000001","merchant_id":"m_0001","card_id":"card_000001","amount_minor":1999,"currency":"JPY","device_id":""}"#;
        assert_eq!(hash(line), Some(PINNED_AUTHORIZATION));
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
    /// unknown fields — each kind at random.
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
    fn every_spelling_of_an_event_hashes_alike() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for line in events(2_000, 22) {
            let want = hash(&line).unwrap();
            for _ in 0..5 {
                let other = respell(&line, &mut rng);
                let got = hash(&other).unwrap_or_else(|| panic!("{other}"));
                assert_eq!(got, want, "{line}\n{other}");
                // And through the whole decoder, whichever route takes the line (a newline
                // is whitespace to JSON but ends a line of JSON Lines).
                if !other.contains('\n') {
                    let decoded = crate::decode::decode_json_lines(other.as_bytes(), 1, 16);
                    assert_eq!(decoded.batches[0].payload_hashes, [want], "{other}");
                }
            }
        }
    }

    #[test]
    fn a_changed_value_changes_the_hash() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for line in events(1_000, 23) {
            let want = hash(&line).unwrap();
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
            let got = hash(&other).unwrap();
            assert_ne!(got, want, "{line}\n{other}");
        }
    }
}
