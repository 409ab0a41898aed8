//! Event schemas as values ([`EventSchema`]) and the built-in one, the payment event (see
//! `docs/EVENTS.md`).
//!
//! An [`EventSchema`] is what the rest of the engine knows about a stream's events: the Arrow
//! schema, and the roles of its columns (the id dedup keys on, the event time the watermark and
//! windows follow, the dictionary-coded columns and their vocabularies, which fields are
//! required). The planner registers the stream with it (plus `window_start`/`window_end` when a
//! window table function is used), and the router, operators and late output find the columns
//! they need through it. [`EventSchema::payments`] is the built-in instance; its decoders keep a
//! fast path written for it ([`FieldId`] indexes its columns). Money is `Int64` minor units;
//! event time is millisecond UTC.
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
        let id = FieldId::candidate(name)?;
        (FIELD_NAMES[id as usize].as_bytes() == name).then_some(id)
    }

    /// The only field `name` can be, judged by its length and one or two bytes; the caller
    /// confirms with one comparison ([`FieldId::from_name`] compares the bytes, the JSON fast
    /// path a masked 16-byte word). This runs for every field of every event.
    #[inline]
    pub fn candidate(name: &[u8]) -> Option<FieldId> {
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
        Some(id)
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

/// An event stream's schema and the roles of its columns.
///
/// Invariants, checked by [`EventSchema::new`]: the id column is `Utf8` and not nullable, the
/// event-time column is a millisecond UTC timestamp and not nullable, every dictionary-coded
/// column has an `Int8`-keyed dictionary type, and no column is called `window_start` or
/// `window_end` (a window adds those).
#[derive(Debug, Clone)]
pub struct EventSchema {
    stream: String,
    arrow: SchemaRef,
    windowed: SchemaRef,
    id: Option<usize>,
    event_time: usize,
    dictionaries: Vec<(usize, ArrayRef)>,
    declared: bool,
    /// For events joined to tables: where the tables' columns start ([`Self::joined`]).
    joined_at: Option<usize>,
}

impl EventSchema {
    /// A schema for the stream `stream` whose events have the columns of `arrow`, identified by
    /// the column `id` and timed by `event_time`; `dictionaries` lists the dictionary-coded
    /// columns with their vocabularies, in key order.
    pub fn new(
        stream: impl Into<String>,
        arrow: SchemaRef,
        id: &str,
        event_time: &str,
        dictionaries: Vec<(&str, ArrayRef)>,
    ) -> crate::error::Result<Self> {
        Self::build(
            stream,
            arrow,
            Some(id),
            event_time,
            dictionaries,
            false,
            false,
        )
    }

    /// The schema of a source declared with its own columns (`CREATE SOURCE orders (…)`):
    /// decoded by the schema-driven decoder, deduplicated on `id` when the source names one
    /// (`dedup_key`), timed by `event_time`.
    pub fn declared(
        stream: impl Into<String>,
        arrow: SchemaRef,
        id: Option<&str>,
        event_time: &str,
    ) -> crate::error::Result<Self> {
        Self::build(stream, arrow, id, event_time, vec![], true, false)
    }

    /// The schema of a windowed query's result rows read as events by window functions
    /// (`… OVER (PARTITION BY merchant_id ORDER BY window_start)` over a windowed CTE): timed
    /// by one of their window bounds, both of which keep their names (no window table function
    /// reads these events, so the names are not taken).
    pub fn window_rows(
        stream: impl Into<String>,
        arrow: SchemaRef,
        event_time: &str,
    ) -> crate::error::Result<Self> {
        Self::build(stream, arrow, None, event_time, vec![], true, true)
    }

    fn build(
        stream: impl Into<String>,
        arrow: SchemaRef,
        id: Option<&str>,
        event_time: &str,
        dictionaries: Vec<(&str, ArrayRef)>,
        declared: bool,
        bounds_are_columns: bool,
    ) -> crate::error::Result<Self> {
        let bad = |m: String| crate::error::Error::Internal(format!("event schema: {m}"));
        let col = |name: &str| {
            arrow
                .index_of(name)
                .map_err(|_| bad(format!("no column `{name}`")))
        };
        let (id, event_time) = (id.map(col).transpose()?, col(event_time)?);
        if let Some(id) = id {
            let f = arrow.field(id);
            if f.data_type() != &DataType::Utf8 || f.is_nullable() {
                return Err(bad(format!(
                    "the id column `{}` must be a non-null string",
                    f.name()
                )));
            }
        }
        let f = arrow.field(event_time);
        if f.data_type() != &timestamp_type() || f.is_nullable() {
            return Err(bad(format!(
                "the event-time column `{}` must be a non-null UTC millisecond timestamp",
                f.name()
            )));
        }
        let dictionaries = dictionaries
            .into_iter()
            .map(|(name, values)| {
                let i = col(name)?;
                match arrow.field(i).data_type() {
                    DataType::Dictionary(k, _) if **k == DataType::Int8 => Ok((i, values)),
                    t => Err(bad(format!(
                        "`{name}` is {t}, not a dictionary-coded column"
                    ))),
                }
            })
            .collect::<crate::error::Result<_>>()?;
        if !bounds_are_columns
            && let Some(f) = arrow
                .fields()
                .iter()
                .find(|f| f.name() == WINDOW_START || f.name() == WINDOW_END)
        {
            return Err(bad(format!("`{}` is reserved for window bounds", f.name())));
        }
        let mut fields: Vec<Field> = arrow.fields().iter().map(|f| f.as_ref().clone()).collect();
        if !bounds_are_columns {
            fields.push(Field::new(WINDOW_START, timestamp_type(), false));
            fields.push(Field::new(WINDOW_END, timestamp_type(), false));
        }
        Ok(EventSchema {
            stream: stream.into(),
            windowed: Arc::new(Schema::new(fields)),
            arrow,
            id,
            event_time,
            dictionaries,
            declared,
            joined_at: None,
        })
    }

    /// These events joined to reference tables: their columns, with the same roles (id, time,
    /// dictionaries), followed by `extra` (the tables' columns). A window still appends its
    /// bounds after all of them.
    pub fn joined(
        &self,
        extra: &[datafusion::arrow::datatypes::FieldRef],
    ) -> crate::error::Result<Self> {
        if let Some(f) = extra
            .iter()
            .find(|f| f.name() == WINDOW_START || f.name() == WINDOW_END)
        {
            return Err(crate::error::Error::Plan {
                position: "the join".into(),
                message: format!(
                    "a joined table's column is named `{}`, the name of a window bound; select it under another name",
                    f.name()
                ),
            });
        }
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            self.arrow.fields().iter().cloned().collect();
        fields.extend(extra.iter().cloned());
        let arrow = Arc::new(Schema::new(fields));
        let mut windowed: Vec<datafusion::arrow::datatypes::FieldRef> =
            arrow.fields().iter().cloned().collect();
        windowed.push(Arc::new(Field::new(WINDOW_START, timestamp_type(), false)));
        windowed.push(Arc::new(Field::new(WINDOW_END, timestamp_type(), false)));
        Ok(EventSchema {
            stream: self.stream.clone(),
            windowed: Arc::new(Schema::new(windowed)),
            arrow,
            id: self.id,
            event_time: self.event_time,
            dictionaries: self.dictionaries.clone(),
            declared: self.declared,
            joined_at: Some(self.arrow.fields().len()),
        })
    }

    /// These events with [`ARRIVAL_WATERMARK`] after their columns (`booking_time`).
    pub fn with_arrival_watermark(&self) -> Self {
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            self.arrow.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            ARRIVAL_WATERMARK,
            timestamp_type(),
            true,
        )));
        let arrow = Arc::new(Schema::new(fields));
        let mut windowed: Vec<datafusion::arrow::datatypes::FieldRef> =
            arrow.fields().iter().cloned().collect();
        windowed.push(Arc::new(Field::new(WINDOW_START, timestamp_type(), false)));
        windowed.push(Arc::new(Field::new(WINDOW_END, timestamp_type(), false)));
        EventSchema {
            windowed: Arc::new(Schema::new(windowed)),
            arrow,
            ..self.clone()
        }
    }

    /// The built-in payment event schema (the stream `payments`).
    pub fn payments() -> Arc<EventSchema> {
        Arc::clone(&PAYMENTS)
    }

    /// The stream's name (what `FROM` reads unless a query file declares a source).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The events' Arrow schema: decoders produce batches in exactly this column order.
    pub fn arrow(&self) -> &SchemaRef {
        &self.arrow
    }

    /// The Arrow schema with `window_start` and `window_end` appended, as a windowed query sees
    /// the stream.
    pub fn windowed(&self) -> &SchemaRef {
        &self.windowed
    }

    /// Index of the id column, which dedup keys on; `None` for a declared source without a
    /// `dedup_key` (its events are not deduplicated).
    pub fn id_column(&self) -> Option<usize> {
        self.id
    }

    /// The columns that break ties between events of one event time, after the query's own
    /// ORDER BY: the id when there is one, else every other column in order (two events equal
    /// in all of them are interchangeable, so any order of them gives the same results).
    pub fn tie_columns(&self) -> Vec<usize> {
        match (self.id, self.joined_at) {
            // One event joined to several table rows: its rows differ in the tables' columns.
            (Some(id), Some(at)) => std::iter::once(id)
                .chain(at..self.arrow.fields().len())
                .collect(),
            (Some(id), None) => vec![id],
            (None, _) => (0..self.arrow.fields().len())
                .filter(|c| *c != self.event_time)
                .collect(),
        }
    }

    /// Whether the events were declared with their own columns (decoded by the schema-driven
    /// decoder), rather than being the built-in payment events.
    pub fn is_declared(&self) -> bool {
        self.declared
    }

    /// Index of the event-time column, which the watermark and the windows follow.
    pub fn event_time_column(&self) -> usize {
        self.event_time
    }

    /// Index of `window_start` in [`Self::windowed`] (`window_end` is the next).
    pub fn window_start_column(&self) -> usize {
        self.arrow.fields().len()
    }

    /// The vocabulary of dictionary-coded column `column`, in key order, if it is one.
    pub fn dictionary(&self, column: usize) -> Option<&ArrayRef> {
        self.dictionaries
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| v)
    }

    /// Whether two schemas describe the same events (their stream name aside).
    pub fn same_events(&self, other: &EventSchema) -> bool {
        self.arrow == other.arrow
            && (self.id, self.event_time, self.declared)
                == (other.id, other.event_time, other.declared)
            && self.dictionaries.len() == other.dictionaries.len()
            && self
                .dictionaries
                .iter()
                .zip(&other.dictionaries)
                .all(|((a, x), (b, y))| a == b && x.as_ref() == y.as_ref())
    }
}

static PAYMENTS: LazyLock<Arc<EventSchema>> = LazyLock::new(|| {
    Arc::new(
        EventSchema::new(
            "payments",
            event_schema(),
            FieldId::EventId.name(),
            FieldId::EventTime.name(),
            vec![
                (FieldId::EventType.name(), event_type_values()),
                (FieldId::Status.name(), status_values()),
            ],
        )
        .expect("the payment schema is valid"),
    )
});

/// Name of the window start column added by window table functions.
pub const WINDOW_START: &str = "window_start";

/// The column a query calling `booking_time` reads: the watermark each event arrived under
/// (NULL before there is one). The operator adds it; no source decodes it.
pub const ARRIVAL_WATERMARK: &str = "__arrival_watermark";
/// Name of the window end column added by window table functions.
pub const WINDOW_END: &str = "window_end";

/// The payment event schema extended with `window_start` and `window_end`, as seen by a
/// windowed query ([`EventSchema::windowed`] of [`EventSchema::payments`]).
pub fn windowed_schema() -> SchemaRef {
    Arc::clone(EventSchema::payments().windowed())
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

    #[test]
    fn the_payment_schema_declares_its_roles() {
        let p = EventSchema::payments();
        assert_eq!(p.stream(), "payments");
        assert_eq!(p.id_column(), Some(FieldId::EventId as usize));
        assert_eq!(p.tie_columns(), vec![FieldId::EventId as usize]);
        assert!(!p.is_declared());
        assert_eq!(p.event_time_column(), FieldId::EventTime as usize);
        assert_eq!(p.windowed().as_ref(), windowed_schema().as_ref());
        assert_eq!(p.window_start_column(), NUM_FIELDS);
        assert_eq!(p.dictionary(FieldId::Status as usize).unwrap().len(), 2);
        assert!(p.dictionary(FieldId::Currency as usize).is_none());
        assert!(p.same_events(&p));
    }

    #[test]
    fn a_schema_without_usable_roles_is_refused() {
        let arrow = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("window_end", timestamp_type(), false),
        ]));
        for (id, time) in [
            ("nope", "ts"),
            ("ts", "ts"),
            ("id", "ts"),
            ("id", "window_end"),
        ] {
            assert!(EventSchema::new("s", Arc::clone(&arrow), id, time, vec![]).is_err());
        }
    }
}
