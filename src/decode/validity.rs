//! Which values of a column being built are null, a bit per row.
//!
//! Arrow's `NullBufferBuilder` grows its bitmap through a `memset` call for every null it
//! appends (and materialises it through another call on the first): a declared source whose
//! optional columns are mostly absent spent more on its nulls than on its values. This one
//! appends a bit with a few inline instructions, a word at a time.

use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};

/// A validity bitmap being built (bit set: the value is valid).
#[derive(Debug, Default)]
pub(super) struct Validity {
    words: Vec<u64>,
    len: usize,
    nulls: usize,
}

impl Validity {
    /// A bitmap for about `rows` values.
    pub(super) fn with_capacity(rows: usize) -> Self {
        Validity {
            words: Vec::with_capacity(rows.div_ceil(64)),
            len: 0,
            nulls: 0,
        }
    }

    /// Appends a value's bit.
    #[inline(always)]
    pub(super) fn push(&mut self, valid: bool) {
        let bit = self.len % 64;
        if bit == 0 {
            self.words.push(0);
        }
        if let Some(w) = self.words.last_mut() {
            *w |= u64::from(valid) << bit;
        }
        self.nulls += usize::from(!valid);
        self.len += 1;
    }

    /// The bitmap so far, `None` when no value is null; the builder is left empty.
    pub(super) fn finish(&mut self) -> Option<NullBuffer> {
        let (len, nulls) = (self.len, self.nulls);
        let mut words = std::mem::replace(&mut self.words, Vec::with_capacity(len.div_ceil(64)));
        // Arrow's bitmaps are little-endian bytes: bit `k` of byte `k / 8`.
        for w in &mut words {
            *w = w.to_le();
        }
        self.len = 0;
        self.nulls = 0;
        if nulls == 0 {
            return None;
        }
        let bits = BooleanBuffer::new(Buffer::from_vec(words), 0, len);
        // SAFETY: `nulls` counts the clear bits among the first `len`.
        Some(unsafe { NullBuffer::new_unchecked(bits, nulls) })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::NullBufferBuilder;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn builds_what_arrow_builds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut v = Validity::with_capacity(4);
        for _ in 0..200 {
            let mut want = NullBufferBuilder::new(4);
            let p = rng.random_range(0.0..=1.0);
            for _ in 0..rng.random_range(0..300) {
                let valid = rng.random_bool(p);
                v.push(valid);
                want.append(valid);
            }
            assert_eq!(v.finish(), want.finish());
        }
    }
}
