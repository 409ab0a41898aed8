//! Columns taken from the file's own batch instead of built row by row.
//!
//! A Parquet batch already holds its text columns as Arrow arrays, and a row the decoder
//! accepts holds each text cell unchanged (checked, never rewritten). Copying those strings
//! into a new column, row by row, was a third of a Parquet replay's decode; a batch of
//! consecutive accepted rows instead takes a slice of the file's column (no copy), and a batch
//! with refused rows between its rows takes those rows with Arrow's `take`.

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;

/// The values of `column` at the rows whose spans are `spans` (row `i`'s span starts at `i`,
/// as a Parquet batch's do; rows in increasing order): a slice when they are consecutive.
pub(super) fn rows_of(column: &ArrayRef, spans: &[(u32, u32)]) -> ArrayRef {
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return column.slice(0, 0);
    };
    let (first, last) = (first.0 as usize, last.0 as usize);
    if last + 1 - first == spans.len() {
        return column.slice(first, spans.len());
    }
    let rows = UInt32Array::from_iter_values(spans.iter().map(|s| s.0));
    take(column.as_ref(), &rows, None).expect("the rows are the batch's")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, StringArray};

    use super::*;

    #[test]
    fn consecutive_rows_are_a_slice_and_others_are_taken() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("c"),
            Some("d"),
        ]));
        let span = |i: u32| (i, i + 1);
        let slice = rows_of(&column, &[span(1), span(2), span(3)]);
        assert_eq!(
            slice.as_ref(),
            &StringArray::from(vec![None, Some("c"), Some("d")]) as &dyn Array
        );
        assert_eq!(
            slice.as_string::<i32>().values().as_ptr(),
            column.as_string::<i32>().values().as_ptr(),
            "a slice shares the file's bytes"
        );
        let taken = rows_of(&column, &[span(0), span(3)]);
        assert_eq!(
            taken.as_ref(),
            &StringArray::from(vec![Some("a"), Some("d")]) as &dyn Array
        );
        assert_eq!(rows_of(&column, &[]).len(), 0);
    }
}
