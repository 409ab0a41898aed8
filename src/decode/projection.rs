//! Which of the payment event's columns the decoder builds.
//!
//! Every field of a record is still read and checked (a record is valid or dead-lettered as a
//! whole, its payload hash covers every field); what a projection saves is copying the values
//! of string columns no query reads into Arrow buffers, which was a third of the decoder's
//! cycles and most of the memory a batch takes. A column left out is built as empty strings,
//! never read: the id and the event time (dedup, watermarks, ties) and the fixed-width columns
//! (codes and amounts, a few bytes a row) are always built. Late events, which go out whole,
//! are decoded again from their records ([`crate::operators::RawEvents`]).
//!
//! A declared source's decoder applies the same rule to its own string columns
//! ([`Projection::reads`]), building its id and time columns whatever the queries read.

use std::sync::Arc;

use crate::schema::{FieldId, NUM_FIELDS};

/// The columns a decoder builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    built: [bool; NUM_FIELDS],
    /// The words of the queries' texts that may name a column; `None` when a query may read
    /// every column.
    words: Option<Arc<[String]>>,
}

impl Default for Projection {
    fn default() -> Self {
        Projection::ALL
    }
}

impl Projection {
    /// Every column.
    pub const ALL: Projection = Projection {
        built: [true; NUM_FIELDS],
        words: None,
    };

    /// The payment event's columns named in `names` (any case), with those that are always
    /// built; every word is kept for a declared source's columns ([`Self::reads`]).
    pub fn of_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Projection {
        let mut built = [false; NUM_FIELDS];
        for f in FieldId::ALL {
            built[f as usize] = Self::always(f);
        }
        let mut words = Vec::new();
        for n in names {
            if let Some(f) = FieldId::from_name(n.to_ascii_lowercase().as_bytes()) {
                built[f as usize] = true;
            }
            words.push(n.to_string());
        }
        Projection {
            built,
            words: Some(words.into()),
        }
    }

    /// The columns any of `queries` may read (each the words of a query's text, `None` for one
    /// that may read all: [`crate::sql::columns_read`]).
    pub fn reading(queries: impl IntoIterator<Item = Option<Vec<String>>>) -> Projection {
        let mut names = Vec::new();
        for q in queries {
            match q {
                Some(words) => names.extend(words),
                None => return Projection::ALL,
            }
        }
        Projection::of_names(names.iter().map(String::as_str))
    }

    /// Columns built whatever the queries read.
    const fn always(f: FieldId) -> bool {
        !matches!(
            f,
            FieldId::PaymentId
                | FieldId::MerchantId
                | FieldId::CardId
                | FieldId::Currency
                | FieldId::CardCountry
                | FieldId::IpCountry
                | FieldId::Mcc
                | FieldId::DeviceId
                | FieldId::CustomerId
                | FieldId::DeclineCode
        )
    }

    /// Whether column `f` is built.
    pub fn builds(&self, f: FieldId) -> bool {
        self.built[f as usize]
    }

    /// Whether every column is built.
    pub fn is_all(&self) -> bool {
        self.built.iter().all(|b| *b)
    }

    /// Whether a query may read a column named `name` (of a declared source: any name). SQL
    /// folds unquoted names to lower case and a quoted one keeps its case: a word equal to
    /// `name` but for case counts, which may build a column no query reads, never the reverse.
    pub fn reads(&self, name: &str) -> bool {
        match &self.words {
            None => true,
            Some(words) => words.iter().any(|w| w.eq_ignore_ascii_case(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_add_to_the_columns_always_built() {
        let p = Projection::reading([Some(vec!["MERCHANT_ID".into(), "n".into()]), Some(vec![])]);
        assert!(p.builds(FieldId::MerchantId) && p.builds(FieldId::EventId));
        assert!(p.builds(FieldId::EventTime) && p.builds(FieldId::AmountMinor));
        assert!(!p.builds(FieldId::CardId) && !p.is_all());
        assert!(Projection::reading([Some(vec![]), None]).is_all());
        assert!(Projection::reading(std::iter::empty()).builds(FieldId::Status));
        assert!(p.reads("merchant_id") && p.reads("N") && !p.reads("card_id"));
        assert!(Projection::ALL.reads("anything"));
    }
}
