//! A connector's `WITH (…)` options, read into its own serde struct.
//!
//! Each connector declares its options as a struct with `#[serde(deny_unknown_fields)]`; the
//! `key = 'value'` pairs of `CREATE SOURCE`/`CREATE SINK` are deserialized into it, so a
//! misspelled or unknown option, a missing one and a bad value are errors the query file
//! reports with the statement's line — without a hand-written list of names to keep in step.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, IntoDeserializer, Visitor};

/// What was wrong with a connector's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionError {
    /// An option the connector does not have.
    Unknown {
        /// The option given.
        option: String,
        /// The connector's options.
        expected: &'static [&'static str],
    },
    /// A required option that is absent.
    Missing(&'static str),
    /// A value that does not fit the option.
    Invalid(String),
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Unknown { option, expected } => {
                write!(
                    f,
                    "unknown option `{option}`; the options are: {}",
                    expected.join(", ")
                )
            }
            OptionError::Missing(o) => write!(f, "needs option `{o}`"),
            OptionError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OptionError {}

impl serde::de::Error for OptionError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        OptionError::Invalid(msg.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        OptionError::Unknown {
            option: field.to_string(),
            expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        OptionError::Missing(field)
    }
}

/// Checks a source's `format` option, which only JSON may be: `what` names the source ("a
/// Kafka topic"), `unit` what one JSON object is (" (one JSON object a record)", or "").
pub(crate) fn json_only(format: Option<&str>, what: &str, unit: &str) -> Result<(), OptionError> {
    match format.filter(|f| *f != "json") {
        Some(f) => Err(OptionError::Invalid(format!(
            "format '{f}' is not supported for {what}; use format = 'json'{unit}"
        ))),
        None => Ok(()),
    }
}

/// Reads `options` (names lower-cased, values as written) into `T`.
pub(crate) fn from_options<T: DeserializeOwned>(
    options: &BTreeMap<String, String>,
) -> Result<T, OptionError> {
    let pairs = options
        .iter()
        .map(|(k, v)| (k.as_str().into_deserializer(), Text(v)));
    T::deserialize(MapDeserializer::<_, OptionError>::new(pairs))
}

/// An option's value: text, which an `Option<_>` field takes as present (serde's own string
/// deserializer does not).
struct Text<'a>(&'a str);

impl<'de> serde::Deserializer<'de> for Text<'_> {
    type Error = OptionError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, OptionError> {
        v.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, OptionError> {
        v.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

impl<'de> IntoDeserializer<'de, OptionError> for Text<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        topic: String,
        format: Option<String>,
        partitions: Option<String>,
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_read_into_the_struct_and_mistakes_are_named() {
        let o: Opts = from_options(&map(&[("topic", "t"), ("partitions", "4")])).unwrap();
        assert_eq!(
            o,
            Opts {
                topic: "t".into(),
                format: None,
                partitions: Some("4".into())
            }
        );
        let e = from_options::<Opts>(&map(&[("topic", "t"), ("topc", "u")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option `topc`; the options are: topic, format, partitions"
        );
        let e = from_options::<Opts>(&map(&[("format", "json")])).unwrap_err();
        assert_eq!(e, OptionError::Missing("topic"));
    }
}
