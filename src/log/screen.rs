//! The card-number screen at the log's door: no topic may ever hold a card number (PCI DSS keeps
//! a PAN out of every store, and a topic keeps records for its whole retention).
//!
//! Every JSON record offered to [`super::Producer::send_json`] passes here. A record that holds a
//! card number is **refused** (not stored; the caller counts and reports it), never rewritten:
//! a redacted copy in the topic would later decode as a valid event with a bogus card, where a
//! replay of the same file dead-letters it as `card_number`.
//!
//! What counts is the same as the decoder's rule, applied to the *decoded* text: a 13–19 digit,
//! Luhn-valid run in any string value (escapes such as `\u0034` resolved first) or in a number,
//! except the fields whose meaning is known and whose value is in range — `event_time` as epoch
//! milliseconds and the money fields `amount_minor` and `fee_minor` (0 ≤ n ≤ 10^15) — which are
//! timestamps and amounts, not card numbers. A line that is not JSON is screened on its bytes.
//!
//! Cost: one pass of [`contains_card_number`] over the line; only a line that may hold a card
//! number or has an escape is parsed.

use crate::decode::{contains_card_number, record_contains_card_number};

/// Largest money value the event format accepts (`amount_minor`, `fee_minor`).
const MAX_MONEY: u64 = 1_000_000_000_000_000;
/// Latest event time the format accepts, epoch milliseconds (9999-12-31T23:59:59.999Z).
const MAX_EVENT_TIME: u64 = 253_402_300_799_999;

/// Whether the JSON record `line` holds a card number (see the module documentation).
pub(crate) fn holds_card_number(line: &[u8]) -> bool {
    if !contains_card_number(line) && memchr::memchr(b'\\', line).is_none() {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(fields)) => fields
            .iter()
            .any(|(name, v)| !known_in_range(name, v) && value_holds_card(v)),
        Ok(v) => value_holds_card(&v),
        // Not JSON: screened as a record, its bytes and any escaped strings in it decoded.
        Err(_) => record_contains_card_number(line),
    }
}

/// A top-level field whose value is a timestamp or an amount within the format's range.
fn known_in_range(name: &str, v: &serde_json::Value) -> bool {
    let Some(n) = v.as_u64() else {
        return false;
    };
    match name {
        "amount_minor" | "fee_minor" => n <= MAX_MONEY,
        // Epoch milliseconds the validator accepts (up to the year 9999).
        "event_time" => n <= MAX_EVENT_TIME,
        _ => false,
    }
}

fn value_holds_card(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => contains_card_number(s.as_bytes()),
        Value::Number(n) => contains_card_number(n.to_string().as_bytes()),
        Value::Array(a) => a.iter().any(value_holds_card),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| contains_card_number(k.as_bytes()) || value_holds_card(v)),
        Value::Null | Value::Bool(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for line in held {
            assert!(holds_card_number(line.as_bytes()), "{line}");
        }
        // 1700000000004 and 100000000000009 pass the Luhn check: a timestamp and an amount.
        let clean = [
            r#"{"event_time":1700000000004,"amount_minor":100000000000009}"#,
            r#"{"fee_minor":100000000000009,"note":"caf\u00e9"}"#,
            r#"{"card_id":"card_4539148"}"#,
        ];
        assert!(contains_card_number(b"1700000000004"));
        assert!(contains_card_number(b"100000000000009"));
        for line in clean {
            assert!(!holds_card_number(line.as_bytes()), "{line}");
        }
    }
}
