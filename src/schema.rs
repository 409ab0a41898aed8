//! The payment event schema: the columns every source decodes into (see `shared/EVENTS.md`).
//!
//! Decoders produce Arrow batches in exactly this column order; the SQL layer registers the
//! stream `payments` with this schema, plus `window_start`/`window_end` when a window table
//! function is used. Money is `Int64` minor units; event time is millisecond UTC.
//!
//! `event_type` and `status` have fixed vocabularies, so they are dictionary-encoded
//! ([`code_type`]) over [`EVENT_TYPES`] and [`STATUSES`]: a query's `event_type = 'capture'` then
//! compares six strings per batch instead of one per event, and filtering a batch moves one byte
//! per event instead of the word.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Every valid `event_type`, in dictionary key order.
pub const EVENT_TYPES: [&str; 6] = [
    "authorization",
    "capture",
    "refund",
    "chargeback",
    "void",
    "chargeback_reversal",
];

/// Every valid `status`, in dictionary key order.
pub const STATUSES: [&str; 2] = ["approved", "declined"];

/// The Arrow type of the fixed-vocabulary columns (`event_type`, `status`).
pub fn code_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

static EVENT_TYPE_VALUES: LazyLock<ArrayRef> =
    LazyLock::new(|| Arc::new(StringArray::from(EVENT_TYPES.to_vec())));
static STATUS_VALUES: LazyLock<ArrayRef> =
    LazyLock::new(|| Arc::new(StringArray::from(STATUSES.to_vec())));

/// The dictionary values of `event_type` columns ([`EVENT_TYPES`]), shared by every batch.
pub fn event_type_values() -> ArrayRef {
    Arc::clone(&EVENT_TYPE_VALUES)
}

/// The dictionary values of `status` columns ([`STATUSES`]), shared by every batch.
pub fn status_values() -> ArrayRef {
    Arc::clone(&STATUS_VALUES)
}

/// Index of each event field in [`event_schema`]; the decoders index their row buffers by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
#[allow(missing_docs)]
pub enum FieldId {
    EventId = 0,
    EventType,
    EventTime,
    PaymentId,
    MerchantId,
    CardId,
    AmountMinor,
    Currency,
    CardCountry,
    IpCountry,
    Mcc,
    DeviceId,
    CustomerId,
    Status,
    DeclineCode,
    FeeMinor,
}

/// Number of event fields.
pub const NUM_FIELDS: usize = 16;

/// Field names, in column order.
pub const FIELD_NAMES: [&str; NUM_FIELDS] = [
    "event_id",
    "event_type",
    "event_time",
    "payment_id",
    "merchant_id",
    "card_id",
    "amount_minor",
    "currency",
    "card_country",
    "ip_country",
    "mcc",
    "device_id",
    "customer_id",
    "status",
    "decline_code",
    "fee_minor",
];

impl FieldId {
    /// All fields in column order.
    pub const ALL: [FieldId; NUM_FIELDS] = [
        FieldId::EventId,
        FieldId::EventType,
        FieldId::EventTime,
        FieldId::PaymentId,
        FieldId::MerchantId,
        FieldId::CardId,
        FieldId::AmountMinor,
        FieldId::Currency,
        FieldId::CardCountry,
        FieldId::IpCountry,
        FieldId::Mcc,
        FieldId::DeviceId,
        FieldId::CustomerId,
        FieldId::Status,
        FieldId::DeclineCode,
        FieldId::FeeMinor,
    ];

    /// The field's name in the event format.
    pub fn name(self) -> &'static str {
        FIELD_NAMES[self as usize]
    }

    /// Looks a field up by its name (exact, case-sensitive, as in the JSON format).
    pub fn from_name(name: &[u8]) -> Option<FieldId> {
        // Dispatch on length and one distinguishing byte, then confirm with one comparison: this
        // runs for every field of every event.
        let id = match (name.len(), name.first()?) {
            (8, b'e') => FieldId::EventId,
            // `event_type` and `event_time` differ first at byte 7.
            (10, b'e') if name[7] == b'i' => FieldId::EventTime,
            (10, b'e') => FieldId::EventType,
            (10, b'p') => FieldId::PaymentId,
            (11, b'm') => FieldId::MerchantId,
            (7, b'c') => FieldId::CardId,
            (12, b'a') => FieldId::AmountMinor,
            (8, b'c') => FieldId::Currency,
            (12, b'c') => FieldId::CardCountry,
            (10, b'i') => FieldId::IpCountry,
            (3, b'm') => FieldId::Mcc,
            (9, b'd') => FieldId::DeviceId,
            (11, b'c') => FieldId::CustomerId,
            (6, b's') => FieldId::Status,
            (12, b'd') => FieldId::DeclineCode,
            (9, b'f') => FieldId::FeeMinor,
            _ => return None,
        };
        (FIELD_NAMES[id as usize].as_bytes() == name).then_some(id)
    }

    /// Whether the event format requires this field.
    pub fn required(self) -> bool {
        (self as usize) <= FieldId::Currency as usize
    }
}

/// The Arrow type of event time and window bounds: milliseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields: Vec<Field> = FieldId::ALL
        .iter()
        .map(|f| {
            let dt = match f {
                FieldId::EventTime => timestamp_type(),
                FieldId::AmountMinor | FieldId::FeeMinor => DataType::Int64,
                FieldId::EventType | FieldId::Status => code_type(),
                _ => DataType::Utf8,
            };
            Field::new(f.name(), dt, !f.required())
        })
        .collect();
    Arc::new(Schema::new(fields))
});

/// The Arrow schema of decoded payment events.
pub fn event_schema() -> SchemaRef {
    Arc::clone(&EVENT_SCHEMA)
}

/// Name of the window start column added by window table functions.
pub const WINDOW_START: &str = "window_start";
/// Name of the window end column added by window table functions.
pub const WINDOW_END: &str = "window_end";

/// The event schema extended with `window_start` and `window_end`, as seen by a windowed query.
pub fn windowed_schema() -> SchemaRef {
    let mut fields: Vec<Field> = event_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(WINDOW_START, timestamp_type(), false));
    fields.push(Field::new(WINDOW_END, timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in FieldId::ALL {
            assert_eq!(FieldId::from_name(f.name().as_bytes()), Some(f));
            assert_eq!(event_schema().field(f as usize).name(), f.name());
        }
        for bad in [
            &b"amount"[..],
            b"event_tame",
            b"event_idx",
            b"",
            b"Event_id",
            b"mcc_",
        ] {
            assert_eq!(
                FieldId::from_name(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(FieldId::Currency.required() && !FieldId::CardCountry.required());
    }
}
