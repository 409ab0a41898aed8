//! Whether a raw value fits its declared column, and the value it then is ([`check_value`]):
//! never coerced, never nulled silently; a card number is refused wherever it was sent.

use std::borrow::Cow;

use super::super::card::contains_card_number;
use super::super::reject::RejectReason;
use super::super::row::{Invalid, RawValue};
use super::{Column, ColumnKind};
use crate::time::parse_rfc3339_millis;

/// A checked value, ready to append.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A value of column `c` as it fits the column's type, or why it does not.
#[inline]
pub(super) fn check_value<'a>(c: &Column, v: Option<RawValue<'a>>) -> Result<Cell<'a>, Invalid> {
    let name = &c.name;
    let ty = c.kind.sql();
    let wrong = |v: &RawValue<'_>, hint: &str| {
        (
            RejectReason::WrongType,
            format!("column `{name}` is {ty}, but holds {}{hint}", v.type_name()),
        )
    };
    let v = match v {
        None if c.nullable => return Ok(Cell::Null),
        None => {
            return Err((
                RejectReason::MissingField,
                format!("column `{name}` is NOT NULL, but the record has no `{name}`"),
            ));
        }
        Some(RawValue::Null) if c.nullable => return Ok(Cell::Null),
        Some(RawValue::Null) => {
            return Err((
                RejectReason::NullField,
                format!("column `{name}` is NOT NULL, but the record's `{name}` is null"),
            ));
        }
        Some(v) => v,
    };
    let too_long = |n: usize| {
        (
            RejectReason::OutOfRange,
            format!("column `{name}` is VARCHAR({n}), but holds a longer text"),
        )
    };
    // Text moves into its cell (cloning each value's `Cow` was 3 % of a declared replay).
    if c.kind == ColumnKind::Utf8 {
        let s: Cow<'a, str> = match v {
            RawValue::Str(s) => s,
            RawValue::Text(t) => Cow::Borrowed(t),
            v => return Err(wrong(&v, "; text is written in quotes")),
        };
        if contains_card_number(s.as_bytes()) {
            return Err(card(name));
        }
        if let Some(n) = c.max_chars
            && s.len() > n
            && s.chars().count() > n
        {
            return Err(too_long(n));
        }
        return Ok(Cell::Str(s));
    }
    let v = &v;
    // A card number is a card number whatever column it was sent in (a quoted one in a number
    // column is said to be a card, not a wrong type; CSV cells go through the number checks).
    if let RawValue::Str(s) = v
        && contains_card_number(s.as_bytes())
    {
        return Err(card(name));
    }
    let out_of_range = |what: &str| {
        (
            RejectReason::OutOfRange,
            format!("column `{name}` is {ty}, but {what} is out of its range"),
        )
    };
    match c.kind {
        // Taken above.
        ColumnKind::Utf8 => Err(wrong(v, "")),
        ColumnKind::Int64 | ColumnKind::Int32 => {
            let n = match v {
                RawValue::Int(n) => *n,
                RawValue::Text(t) => match strict_int(t) {
                    Some(Ok(n)) => n,
                    Some(Err(())) => return Err(out_of_range(&format!("{t:?}"))),
                    None => {
                        return Err((
                            RejectReason::WrongType,
                            format!("column `{name}` is {ty}, but holds {:?}", redact_cell(t)),
                        ));
                    }
                },
                // Only a whole number beyond 64 bits is out of range; `12.0` or `1e3` is not
                // an integer as written.
                RawValue::Float(f) if f.abs() >= 9.223_372_036_854_776e18 => {
                    return Err(out_of_range("the number"));
                }
                RawValue::Float(_) => {
                    return Err(wrong(
                        v,
                        "; write a whole number without a fraction or exponent",
                    ));
                }
                RawValue::Str(_) => return Err(wrong(v, "; numbers are written without quotes")),
                v => return Err(wrong(v, "")),
            };
            if card_like(n) {
                return Err(card(name));
            }
            if c.kind == ColumnKind::Int32 && i32::try_from(n).is_err() {
                return Err(out_of_range(&n.to_string()));
            }
            Ok(Cell::Int(n))
        }
        ColumnKind::Float64 => {
            let f = match v {
                RawValue::Int(n) => {
                    if card_like(*n) {
                        return Err(card(name));
                    }
                    // Beyond 2^53 an integer may not survive as a DOUBLE: never rounded silently.
                    if (*n as f64) as i64 != *n || n.unsigned_abs() > 1 << 53 {
                        return Err(out_of_range(&n.to_string()));
                    }
                    *n as f64
                }
                RawValue::Float(f) => {
                    if f.fract() == 0.0 && f.abs() < 1e19 && card_like(*f as i64) {
                        return Err(card(name));
                    }
                    *f
                }
                RawValue::Text(t) => match t.trim().parse::<f64>() {
                    Ok(f)
                        if t.bytes()
                            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
                    {
                        if f.fract() == 0.0 && f.abs() < 1e19 && card_like(f as i64) {
                            return Err(card(name));
                        }
                        f
                    }
                    _ => {
                        return Err((
                            RejectReason::WrongType,
                            format!("column `{name}` is {ty}, but holds {:?}", redact_cell(t)),
                        ));
                    }
                },
                RawValue::Str(_) => return Err(wrong(v, "; numbers are written without quotes")),
                v => return Err(wrong(v, "")),
            };
            if !f.is_finite() {
                return Err(out_of_range("the number"));
            }
            Ok(Cell::Float(f))
        }
        ColumnKind::Bool => match v {
            RawValue::Bool(b) => Ok(Cell::Bool(*b)),
            RawValue::Text(t) if t.eq_ignore_ascii_case("true") => Ok(Cell::Bool(true)),
            RawValue::Text(t) if t.eq_ignore_ascii_case("false") => Ok(Cell::Bool(false)),
            v => Err(wrong(v, "; write true or false")),
        },
        ColumnKind::Timestamp => {
            // A JSON time is an RFC 3339 string or an epoch-millisecond number (as the payment
            // event's); a CSV cell is either, as text.
            let ms = match v {
                RawValue::Int(ms) => Some(*ms),
                RawValue::Str(s) => parse_rfc3339_millis(s),
                RawValue::Text(t) => match strict_int(t) {
                    Some(ms) => ms.ok(),
                    None => parse_rfc3339_millis(t),
                },
                v => return Err(wrong(v, "; write an RFC 3339 time or epoch milliseconds")),
            };
            let Some(ms) = ms else {
                let text = match v {
                    RawValue::Str(s) => s.as_ref(),
                    RawValue::Text(t) => t,
                    _ => "",
                };
                return Err((
                    RejectReason::BadTimestamp,
                    format!(
                        "column `{name}` is TIMESTAMP, but {:?} is not an RFC 3339 time with an offset (2026-11-01T12:00:00Z) or epoch milliseconds",
                        redact_cell(text)
                    ),
                ));
            };
            // The payment event's range: windows and watermarks compute on it without overflow.
            if !(0..=super::super::row::MAX_EVENT_TIME).contains(&ms) {
                return Err((
                    RejectReason::BadTimestamp,
                    format!(
                        "column `{name}` is TIMESTAMP, but {ms} is outside 1970-01-01 to 9999-12-31 in epoch milliseconds (microseconds or nanoseconds?)"
                    ),
                ));
            }
            Ok(Cell::Int(ms))
        }
    }
}

/// Whether an integer value reads as a card number: 13 to 19 digits that pass the Luhn check,
/// other than a 13-digit number starting with 1 to 3 (an epoch-millisecond time from 2001 to
/// 2065: no scheme issues 13 digits outside Visa's 4), the rule `produce` applies too.
pub(super) fn card_like(n: i64) -> bool {
    let v = n.unsigned_abs();
    if v < 1_000_000_000_000 {
        return false;
    }
    let digits = v.to_string();
    if digits.len() == 13 && matches!(digits.as_bytes()[0], b'1'..=b'3') {
        return false;
    }
    contains_card_number(digits.as_bytes())
}

pub(super) fn card(name: &str) -> Invalid {
    (
        RejectReason::CardNumber,
        format!("column `{name}` holds what looks like a card number; send a token instead"),
    )
}

/// A cell's text for an error message, card numbers masked, long text cut.
fn redact_cell(t: &str) -> String {
    let t: String = t.chars().take(40).collect();
    super::super::card::redact_value(&t)
}

/// `t` as an integer written strictly (optional `-`, digits only): `Some(Err)` when it is one
/// but beyond i64, `None` when it is not one.
fn strict_int(t: &str) -> Option<Result<i64, ()>> {
    let d = t.strip_prefix('-').unwrap_or(t);
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(t.parse::<i64>().map_err(|_| ()))
}
