//! One event between parsing and Arrow: the raw field values a format parser found, their
//! validation against the event format (`docs/EVENTS.md`), and the builder that appends valid rows to a batch.
//!
//! Parsers (JSON, CSV, Parquet) fill a [`RawRow`] without judging values; [`validate`] is the one
//! place that decides what is a valid event, so every format rejects the same things for the same
//! reasons. A row is appended only once it is fully valid, so a rejected row never leaves half of
//! itself in a batch.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int8Array, RecordBatch};
use datafusion::arrow::datatypes::{Int8Type, Int64Type, TimestampMillisecondType};

use super::card::{contains_card_number, redact};
use super::currency::is_iso4217;
use super::prim_column::PrimColumn;
use super::projection::Projection;
use super::reject::RejectReason;
use super::str_column::{StrColumn, empty_strings};
use crate::schema::{
    EVENT_TYPES, FieldId, NUM_FIELDS, STATUSES, event_schema, event_type_values, status_values,
};
use crate::time::parse_rfc3339_millis;

/// A field value as the format parser saw it, before any judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue<'a> {
    /// A JSON string (or a Parquet string column).
    Str(Cow<'a, str>),
    /// An untyped text cell (CSV): numbers are parsed strictly from it.
    Text(&'a str),
    /// A JSON integer that fits in i64 (or a Parquet integer column).
    Int(i64),
    /// A JSON number with a fraction or exponent, or an integer beyond i64.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An explicit `null`.
    Null,
    /// An object or array (JSON), or a Parquet value of a type without a JSON counterpart; the
    /// text says which, for errors ("an object or array", "a decimal", "a date").
    Compound(&'static str),
}

impl RawValue<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            RawValue::Str(_) | RawValue::Text(_) => "a string",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a non-integer number",
            RawValue::Bool(_) => "a boolean",
            RawValue::Null => "null",
            RawValue::Compound(what) => what,
        }
    }
}

/// The raw values of one record, indexed by [`FieldId`].
#[derive(Debug, Default)]
pub struct RawRow<'a> {
    /// Known fields; `None` when absent.
    pub values: [Option<RawValue<'a>>; NUM_FIELDS],
    /// Number of fields not in the event format (accepted and ignored, but counted).
    pub unknown_fields: u32,
    /// Name of a field (known or not) whose string value looks like a card number.
    pub card_number_in: Option<String>,
}

/// What a parser tells about the strings it passes over: the first field whose string (a
/// member's value, a key, a string inside an object or array) looks like a card number.
pub(super) trait Screen {
    /// Records a string value of `field`, checking it for card numbers.
    fn note_string(&mut self, field: &str, value: &str);
}

/// Notes `field` in `slot` when `value` looks like a card number and no field was noted yet.
#[inline]
pub(super) fn screen_into(slot: &mut Option<String>, field: &str, value: &str) {
    if slot.is_none() && contains_card_number(value.as_bytes()) {
        *slot = Some(field.to_string());
    }
}

impl Screen for RawRow<'_> {
    fn note_string(&mut self, field: &str, value: &str) {
        screen_into(&mut self.card_number_in, field, value);
    }
}

impl<'a> RawRow<'a> {
    /// Records a string value, checking it for card numbers.
    pub fn note_string(&mut self, field: &str, value: &str) {
        screen_into(&mut self.card_number_in, field, value);
    }

    /// Records the string value of known field `f`, checking it for card numbers when the field
    /// is screened as it is parsed ([`screened_eagerly`]): every format calls this, so a value
    /// gets the same reason from each.
    #[inline]
    pub(super) fn note_field(&mut self, f: FieldId, value: &str) {
        if screened_eagerly(f) {
            self.note_string(f.name(), value);
        }
    }
}

/// The validated values of one event, ready to append.
#[derive(Debug)]
pub struct ValidRow<'r> {
    pub(super) strs: [Option<&'r str>; NUM_FIELDS],
    /// `event_type` as its index in [`EVENT_TYPES`].
    pub(super) event_type: i8,
    /// `status` as its index in [`STATUSES`].
    pub(super) status: Option<i8>,
    pub(super) event_time: i64,
    pub(super) amount_minor: i64,
    pub(super) fee_minor: Option<i64>,
}

impl<'r> ValidRow<'r> {
    /// A row with no values, for the fast path to fill.
    pub(super) fn empty() -> Self {
        ValidRow {
            strs: [None; NUM_FIELDS],
            event_type: 0,
            status: None,
            event_time: 0,
            amount_minor: 0,
            fee_minor: None,
        }
    }

    /// Event time in epoch milliseconds.
    pub fn event_time(&self) -> i64 {
        self.event_time
    }
}

/// A validation failure: reason code and a human detail that never echoes a card number.
pub(super) type Invalid = (RejectReason, String);

/// Whether `s` is a valid `event_id`: 1–128 bytes of [`EVENT_ID_BYTES`].
#[inline]
pub(super) fn is_event_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| EVENT_ID_BYTES[b as usize])
}

/// Whether `s` is an ISO 3166-1 alpha-2 code in form: two upper-case letters.
#[inline]
pub(super) fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether `s` is a merchant category code in form: four digits.
#[inline]
pub(super) fn is_mcc(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The bytes an `event_id` may hold: `[A-Za-z0-9_\-:.]`.
const EVENT_ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':' | b'.');
        b += 1;
    }
    t
};

/// The largest accepted `amount_minor` (and `fee_minor`): 10^15 minor units.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// A value for a detail: redacted of card numbers ([`redact`]) first, then cut to 40
/// characters and quoted.
fn show(s: &str) -> String {
    let s = redact(s);
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    format!("{t:?}")
}

/// A number for a detail, redacted when its digits look like a card number.
fn show_int(v: i64) -> String {
    redact(itoa::Buffer::new().format(v))
}

fn str_field<'r>(row: &'r RawRow<'_>, f: FieldId) -> Result<Option<&'r str>, Invalid> {
    match &row.values[f as usize] {
        None => Ok(None),
        Some(RawValue::Null) if !f.required() => Ok(None),
        Some(RawValue::Null) => Err((
            RejectReason::NullField,
            format!("required field `{}` is null", f.name()),
        )),
        Some(RawValue::Str(s)) => Ok(Some(s.as_ref())),
        Some(RawValue::Text(s)) => Ok(Some(s)),
        Some(other) => Err((
            RejectReason::WrongType,
            format!(
                "`{}` must be a string, found {}",
                f.name(),
                other.type_name()
            ),
        )),
    }
}

fn int_field(row: &RawRow<'_>, f: FieldId) -> Result<Option<i64>, Invalid> {
    match &row.values[f as usize] {
        None => Ok(None),
        Some(RawValue::Null) if !f.required() => Ok(None),
        Some(RawValue::Null) => Err((
            RejectReason::NullField,
            format!("required field `{}` is null", f.name()),
        )),
        Some(RawValue::Int(v)) => Ok(Some(*v)),
        Some(RawValue::Text(t)) => parse_strict_int(t).map(Some).ok_or_else(|| {
            (
                RejectReason::WrongType,
                format!("`{}` must be an integer, found {}", f.name(), show(t)),
            )
        }),
        Some(other) => Err((
            RejectReason::WrongType,
            format!(
                "`{}` must be a JSON integer in minor units, found {}",
                f.name(),
                other.type_name()
            ),
        )),
    }
}

/// Parses `-?[0-9]+` (no sign `+`, no fraction, no exponent, no spaces) into an i64.
fn parse_strict_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(if neg { -v } else { v })
}

fn required<T>(v: Option<T>, f: FieldId) -> Result<T, Invalid> {
    v.ok_or_else(|| {
        (
            RejectReason::MissingField,
            format!("required field `{}` is missing", f.name()),
        )
    })
}

fn check_amount(v: i64, f: FieldId) -> Result<i64, Invalid> {
    if (0..=MAX_AMOUNT).contains(&v) {
        Ok(v)
    } else {
        Err((
            RejectReason::OutOfRange,
            format!(
                "`{}` = {} is outside 0..=10^15 (the sign comes from event_type)",
                f.name(),
                show_int(v)
            ),
        ))
    }
}

/// Fields whose valid values are short codes or words (an ISO code, an `event_type`, a
/// `status`, a 4-digit `mcc`): no valid value can hold a card number, so the JSON parser does not
/// check them ([`checks_card_lazily`]); [`validate`] checks them only when the row is invalid,
/// before any detail could echo one.
const LAZY_CARD_CHECK: [FieldId; 6] = [
    FieldId::EventType,
    FieldId::Currency,
    FieldId::CardCountry,
    FieldId::IpCountry,
    FieldId::Mcc,
    FieldId::Status,
];

/// Fields whose type and meaning are known — the event time and the amounts — are never
/// screened for card numbers: a value is a valid time or amount or it is rejected for its type
/// or range (`bad_timestamp`, `wrong_type`, `out_of_range`), with the same reason in every
/// format (an epoch-millisecond time whose 13 digits happen to pass the Luhn check is a time).
/// Details never echo a value that looks like a card number ([`show`]), and a rejected
/// record's raw text is redacted whatever the field.
pub(super) const fn is_typed(f: FieldId) -> bool {
    matches!(
        f,
        FieldId::EventTime | FieldId::AmountMinor | FieldId::FeeMinor
    )
}

/// Whether every parser checks the string value of field `f` for card numbers as it parses it:
/// the id and free-text fields. Codes are checked by [`validate`] when invalid
/// ([`checks_card_lazily`]); times and amounts never ([`is_typed`]).
pub(super) const fn screened_eagerly(f: FieldId) -> bool {
    !is_typed(f) && !checks_card_lazily(f)
}

/// Whether field `f` is a code checked for card numbers only when the row is invalid (see
/// [`LAZY_CARD_CHECK`]).
pub(super) const fn checks_card_lazily(f: FieldId) -> bool {
    let mut i = 0;
    while i < LAZY_CARD_CHECK.len() {
        if LAZY_CARD_CHECK[i] as usize == f as usize {
            return true;
        }
        i += 1;
    }
    false
}

/// Validates a raw row against the event format.
pub fn validate<'r>(row: &'r RawRow<'_>) -> Result<ValidRow<'r>, Invalid> {
    validate_fields(row).map_err(|e| {
        // Only an invalid row can hold a card number in a code, or an integer in a string
        // field (a card number sent as a JSON number, or from an integer Parquet column, is
        // as much a card number as the same digits in a CSV cell or a string).
        let lazy_card = FieldId::ALL.iter().find(|f| {
            !is_typed(**f)
                && match &row.values[**f as usize] {
                    Some(RawValue::Str(s)) if checks_card_lazily(**f) => {
                        contains_card_number(s.as_bytes())
                    }
                    Some(RawValue::Text(s)) if checks_card_lazily(**f) => {
                        contains_card_number(s.as_bytes())
                    }
                    Some(RawValue::Int(v)) => {
                        contains_card_number(itoa::Buffer::new().format(*v).as_bytes())
                    }
                    _ => false,
                }
        });
        match lazy_card {
            Some(f) => card_number_error(f.name()),
            None => e,
        }
    })
}

fn card_number_error(field: &str) -> Invalid {
    (
        RejectReason::CardNumber,
        format!(
            "field `{field}` holds a value that looks like a card number (redacted); send card tokens only"
        ),
    )
}

fn validate_fields<'r>(row: &'r RawRow<'_>) -> Result<ValidRow<'r>, Invalid> {
    if let Some(field) = row.card_number_in.as_deref() {
        return Err(card_number_error(field));
    }
    let event_time = parse_event_time(row);
    let mut strs: [Option<&'r str>; NUM_FIELDS] = [None; NUM_FIELDS];
    for f in FieldId::ALL {
        if matches!(
            f,
            FieldId::EventTime | FieldId::AmountMinor | FieldId::FeeMinor
        ) {
            continue;
        }
        let v = str_field(row, f)?;
        strs[f as usize] = if f.required() {
            Some(required(v, f)?)
        } else {
            v
        };
    }

    let event_id = strs[FieldId::EventId as usize].unwrap_or_default();
    if !is_event_id(event_id) {
        return Err((
            RejectReason::InvalidValue,
            format!(
                "`event_id` {} must be 1–128 characters of A-Z a-z 0-9 _ - : .",
                show(event_id)
            ),
        ));
    }
    let event_type = strs[FieldId::EventType as usize].unwrap_or_default();
    let Some(event_type_code) = EVENT_TYPES.iter().position(|t| *t == event_type) else {
        return Err((
            RejectReason::UnknownEventType,
            format!(
                "unknown `event_type` {}; expected one of {}",
                show(event_type),
                EVENT_TYPES.join(", ")
            ),
        ));
    };
    for f in [FieldId::PaymentId, FieldId::MerchantId, FieldId::CardId] {
        if strs[f as usize].is_some_and(str::is_empty) {
            return Err((
                RejectReason::InvalidValue,
                format!("`{}` is empty", f.name()),
            ));
        }
    }
    let currency = strs[FieldId::Currency as usize].unwrap_or_default();
    if !is_iso4217(currency) {
        return Err((
            RejectReason::UnknownCurrency,
            format!(
                "`currency` {} is not an upper-case ISO 4217 code",
                show(currency)
            ),
        ));
    }
    for f in [FieldId::CardCountry, FieldId::IpCountry] {
        if let Some(c) = strs[f as usize]
            && !is_country_code(c)
        {
            return Err((
                RejectReason::InvalidValue,
                format!(
                    "`{}` {} is not an ISO 3166-1 alpha-2 code",
                    f.name(),
                    show(c)
                ),
            ));
        }
    }
    if let Some(m) = strs[FieldId::Mcc as usize]
        && !is_mcc(m)
    {
        return Err((
            RejectReason::InvalidValue,
            format!("`mcc` {} is not a 4-digit code", show(m)),
        ));
    }
    let status_code = match strs[FieldId::Status as usize] {
        None if event_type == "authorization" => {
            // docs/EVENTS.md: an absent status means approved.
            strs[FieldId::Status as usize] = Some(STATUSES[0]);
            Some(0)
        }
        None => None,
        Some(s) => match STATUSES.iter().position(|t| *t == s) {
            Some(code) => Some(code as i8),
            None => {
                return Err((
                    RejectReason::InvalidValue,
                    format!("`status` {} must be approved or declined", show(s)),
                ));
            }
        },
    };

    let event_time = event_time?;
    let amount_minor = check_amount(
        required(int_field(row, FieldId::AmountMinor)?, FieldId::AmountMinor)?,
        FieldId::AmountMinor,
    )?;
    let fee_minor = int_field(row, FieldId::FeeMinor)?
        .map(|v| check_amount(v, FieldId::FeeMinor))
        .transpose()?;
    Ok(ValidRow {
        strs,
        event_type: event_type_code as i8,
        status: status_code,
        event_time,
        amount_minor,
        fee_minor,
    })
}

/// Latest accepted event time (year 9999), so arithmetic on windows never overflows.
pub(super) const MAX_EVENT_TIME: i64 = 253_402_300_799_999;

fn parse_event_time(row: &RawRow<'_>) -> Result<i64, Invalid> {
    let f = FieldId::EventTime;
    let bad = |what: String| {
        (
            RejectReason::BadTimestamp,
            format!(
                "`event_time` {what}: expected RFC 3339 with offset (2026-11-01T00:00:00.016Z) or epoch milliseconds"
            ),
        )
    };
    let ms = match &row.values[f as usize] {
        None => return Err(required::<()>(None, f).unwrap_err()),
        Some(RawValue::Null) => {
            return Err((
                RejectReason::NullField,
                "required field `event_time` is null".into(),
            ));
        }
        Some(RawValue::Int(v)) => *v,
        Some(RawValue::Str(s)) => {
            parse_rfc3339_millis(s).ok_or_else(|| bad(format!("{} is not a timestamp", show(s))))?
        }
        Some(RawValue::Text(t)) => match parse_strict_int(t) {
            Some(v) => v,
            None => parse_rfc3339_millis(t)
                .ok_or_else(|| bad(format!("{} is not a timestamp", show(t))))?,
        },
        Some(other) => return Err(bad(format!("is {}", other.type_name()))),
    };
    if !(0..=MAX_EVENT_TIME).contains(&ms) {
        return Err(bad(format!("{} is outside 1970..9999", show_int(ms))));
    }
    Ok(ms)
}

/// A dictionary column of codes the validator produced.
fn codes(keys: Int8Array, values: ArrayRef) -> ArrayRef {
    debug_assert!(keys.iter().flatten().all(|k| (k as usize) < values.len()));
    // SAFETY: every key is an index into `values` (EVENT_TYPES or STATUSES), written by
    // `validate_fields` from a position in that same list.
    Arc::new(unsafe { DictionaryArray::<Int8Type>::new_unchecked(keys, values) })
}

/// Appends valid rows into Arrow builders and finishes them as a batch of [`event_schema`].
pub struct EventBatchBuilder {
    strings: Vec<(usize, StrColumn)>,
    /// String columns left out by the projection, built as empty strings.
    left_out: Vec<usize>,
    /// String columns taken from a column of the source at each row's span
    /// ([`Self::take_from`]).
    taken: Vec<(usize, ArrayRef)>,
    event_type: Vec<i8>,
    status: PrimColumn<i8>,
    event_time: PrimColumn<i64>,
    amount_minor: PrimColumn<i64>,
    fee_minor: PrimColumn<i64>,
    len: usize,
}

impl EventBatchBuilder {
    /// A builder sized for `capacity` rows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::projected(capacity, &Projection::ALL)
    }

    /// A builder sized for `capacity` rows that builds the columns of `projection` (the others
    /// hold empty strings).
    pub fn projected(capacity: usize, projection: &Projection) -> Self {
        let (strings, left_out): (Vec<FieldId>, Vec<FieldId>) = FieldId::ALL
            .iter()
            .filter(|f| {
                !matches!(
                    f,
                    FieldId::EventTime
                        | FieldId::AmountMinor
                        | FieldId::FeeMinor
                        | FieldId::EventType
                        | FieldId::Status
                )
            })
            .partition(|f| projection.builds(**f));
        let strings = strings
            .iter()
            .map(|f| {
                (
                    *f as usize,
                    StrColumn::with_capacity(capacity, capacity * 16),
                )
            })
            .collect();
        EventBatchBuilder {
            strings,
            left_out: left_out.iter().map(|f| *f as usize).collect(),
            taken: Vec::new(),
            event_type: Vec::with_capacity(capacity),
            status: PrimColumn::with_capacity(capacity),
            event_time: PrimColumn::with_capacity(capacity),
            amount_minor: PrimColumn::with_capacity(capacity),
            fee_minor: PrimColumn::with_capacity(capacity),
            len: 0,
        }
    }

    /// Whether the projection left columns out (they hold empty strings).
    pub fn leaves_columns_out(&self) -> bool {
        !self.left_out.is_empty()
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one validated row.
    pub fn append(&mut self, row: &ValidRow<'_>) {
        for (idx, b) in &mut self.strings {
            b.push(row.strs[*idx]);
        }
        self.event_type.push(row.event_type);
        self.status.push_option(row.status);
        self.event_time.push(row.event_time);
        self.amount_minor.push(row.amount_minor);
        self.fee_minor.push_option(row.fee_minor);
        self.len += 1;
    }

    /// String field `field` (one the builder builds) takes its values from `column`, a `Utf8`
    /// column of the source, at the row each appended row's span starts at, instead of row by
    /// row: every row appended must hold its value there unchanged. Batches are then finished
    /// by [`Self::finish_rows`].
    pub(super) fn take_from(&mut self, field: FieldId, column: ArrayRef) {
        let f = field as usize;
        if let Some(k) = self.strings.iter().position(|(i, _)| *i == f) {
            self.strings.remove(k);
            self.taken.push((f, column));
        }
    }

    /// Finishes the batch, leaving the builder empty for reuse.
    pub fn finish(&mut self) -> RecordBatch {
        debug_assert!(self.taken.is_empty(), "taken columns need the rows' spans");
        self.finish_rows(&[])
    }

    /// Finishes the batch whose rows' records are at `spans` (rows of the source the taken
    /// columns come from), leaving the builder empty for reuse.
    pub(super) fn finish_rows(&mut self, spans: &[(u32, u32)]) -> RecordBatch {
        let mut cols: Vec<Option<ArrayRef>> = vec![None; NUM_FIELDS];
        for (idx, column) in &self.taken {
            cols[*idx] = Some(super::taken::rows_of(column, spans));
        }
        for (idx, b) in &mut self.strings {
            cols[*idx] = Some(Arc::new(b.finish()));
        }
        if !self.left_out.is_empty() {
            let empty: ArrayRef = Arc::new(empty_strings(self.len));
            for idx in &self.left_out {
                cols[*idx] = Some(Arc::clone(&empty));
            }
        }
        let event_type = Int8Array::from(std::mem::take(&mut self.event_type));
        cols[FieldId::EventType as usize] = Some(codes(event_type, event_type_values()));
        cols[FieldId::Status as usize] =
            Some(codes(self.status.finish::<Int8Type>(), status_values()));
        cols[FieldId::EventTime as usize] = Some(Arc::new(
            self.event_time
                .finish::<TimestampMillisecondType>()
                .with_timezone("UTC"),
        ));
        cols[FieldId::AmountMinor as usize] =
            Some(Arc::new(self.amount_minor.finish::<Int64Type>()));
        cols[FieldId::FeeMinor as usize] = Some(Arc::new(self.fee_minor.finish::<Int64Type>()));
        self.len = 0;
        let cols = cols
            .into_iter()
            .map(|c| c.expect("every column built"))
            .collect();
        RecordBatch::try_new(event_schema(), cols).expect("builder matches the event schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RawRow<'static> {
        let mut r = RawRow::default();
        let s = |v: &'static str| Some(RawValue::Str(Cow::Borrowed(v)));
        r.values[FieldId::EventId as usize] = s("e1");
        r.values[FieldId::EventType as usize] = s("capture");
        r.values[FieldId::EventTime as usize] = s("2026-11-01T00:00:00.016Z");
        r.values[FieldId::PaymentId as usize] = s("p1");
        r.values[FieldId::MerchantId as usize] = s("m1");
        r.values[FieldId::CardId as usize] = s("c1");
        r.values[FieldId::AmountMinor as usize] = Some(RawValue::Int(1250));
        r.values[FieldId::Currency as usize] = s("EUR");
        r
    }

    #[test]
    fn accepts_a_minimal_event() {
        let r = base();
        let v = validate(&r).unwrap();
        assert_eq!(v.amount_minor, 1250);
        let mut b = EventBatchBuilder::with_capacity(4);
        b.append(&v);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), event_schema());
    }

    #[test]
    fn rejects_each_kind_of_invalid_value() {
        let cases: Vec<(FieldId, Option<RawValue<'static>>, RejectReason)> = vec![
            (FieldId::AmountMinor, None, RejectReason::MissingField),
            (
                FieldId::AmountMinor,
                Some(RawValue::Null),
                RejectReason::NullField,
            ),
            (
                FieldId::AmountMinor,
                Some(RawValue::Float(0.5)),
                RejectReason::WrongType,
            ),
            (
                FieldId::AmountMinor,
                Some(RawValue::Str("10".into())),
                RejectReason::WrongType,
            ),
            (
                FieldId::AmountMinor,
                Some(RawValue::Int(-1)),
                RejectReason::OutOfRange,
            ),
            (
                FieldId::AmountMinor,
                Some(RawValue::Int(MAX_AMOUNT + 1)),
                RejectReason::OutOfRange,
            ),
            (
                FieldId::EventType,
                Some(RawValue::Str("capturee".into())),
                RejectReason::UnknownEventType,
            ),
            (
                FieldId::Currency,
                Some(RawValue::Str("usd".into())),
                RejectReason::UnknownCurrency,
            ),
            (
                FieldId::EventTime,
                Some(RawValue::Str("yesterday".into())),
                RejectReason::BadTimestamp,
            ),
            (
                FieldId::EventId,
                Some(RawValue::Str("a b".into())),
                RejectReason::InvalidValue,
            ),
            (
                FieldId::Mcc,
                Some(RawValue::Str("12a4".into())),
                RejectReason::InvalidValue,
            ),
            (
                FieldId::FeeMinor,
                Some(RawValue::Int(-5)),
                RejectReason::OutOfRange,
            ),
        ];
        for (field, value, reason) in cases {
            let mut r = base();
            r.values[field as usize] = value.clone();
            let err = validate(&r).unwrap_err();
            assert_eq!(err.0, reason, "{field:?} = {value:?}: {}", err.1);
        }
    }

    #[test]
    fn csv_text_numbers_are_strict() {
        let mut r = base();
        r.values[FieldId::AmountMinor as usize] = Some(RawValue::Text("10"));
        assert!(validate(&r).is_ok());
        for bad in ["12.5", "1e3", "+3", " 3", ""] {
            r.values[FieldId::AmountMinor as usize] = Some(RawValue::Text(bad));
            assert_eq!(
                validate(&r).unwrap_err().0,
                RejectReason::WrongType,
                "{bad}"
            );
        }
    }

    #[test]
    fn card_numbers_win_over_other_reasons() {
        let mut r = base();
        r.note_string("card_id", "4111111111111111");
        let (reason, detail) = validate(&r).unwrap_err();
        assert_eq!(reason, RejectReason::CardNumber);
        assert!(!detail.contains("4111"));
    }
}
