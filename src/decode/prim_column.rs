//! A fixed-width column builder for the decoders' numbers, times and codes.
//!
//! Arrow's `PrimitiveBuilder` is a call per value and, through its null buffer, a `memset`
//! call per null: optional fields that are mostly absent (a fee, a status) cost more as nulls
//! than as values. This builder appends inline: a push to a vector and a bit ([`Validity`]).

use datafusion::arrow::array::PrimitiveArray;
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{ArrowNativeType, ArrowPrimitiveType};

use super::validity::Validity;

/// Builds one primitive column of native type `T`.
pub(super) struct PrimColumn<T> {
    values: Vec<T>,
    nulls: Validity,
}

impl<T: ArrowNativeType> PrimColumn<T> {
    /// A builder for about `rows` values.
    pub(super) fn with_capacity(rows: usize) -> Self {
        PrimColumn {
            values: Vec::with_capacity(rows),
            nulls: Validity::with_capacity(rows),
        }
    }

    /// Appends a value.
    #[inline(always)]
    pub(super) fn push(&mut self, v: T) {
        self.values.push(v);
        self.nulls.push(true);
    }

    /// Appends a null.
    #[inline(always)]
    pub(super) fn push_null(&mut self) {
        self.values.push(T::default());
        self.nulls.push(false);
    }

    /// Appends a value or a null.
    #[inline(always)]
    pub(super) fn push_option(&mut self, v: Option<T>) {
        self.values.push(v.unwrap_or_default());
        self.nulls.push(v.is_some());
    }

    /// The column so far as an array of `A`; the builder is left empty.
    pub(super) fn finish<A: ArrowPrimitiveType<Native = T>>(&mut self) -> PrimitiveArray<A> {
        let rows = self.values.len();
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(rows));
        PrimitiveArray::new(ScalarBuffer::from(values), self.nulls.finish())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Int64Type;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn builds_what_arrow_builds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut col = PrimColumn::<i64>::with_capacity(2);
        for _ in 0..50 {
            let values: Vec<Option<i64>> = (0..rng.random_range(0..300))
                .map(|_| rng.random_bool(0.7).then(|| rng.random()))
                .collect();
            for (k, v) in values.iter().enumerate() {
                match (k % 3, v) {
                    (0, _) => col.push_option(*v),
                    (_, Some(v)) => col.push(*v),
                    (_, None) => col.push_null(),
                }
            }
            assert_eq!(col.finish::<Int64Type>(), Int64Array::from(values));
        }
    }
}
