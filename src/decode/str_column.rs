//! A string column builder for the decoder's short values.
//!
//! Event strings are ids and codes of a few to a few dozen bytes. Arrow's `StringBuilder` copies
//! each with a `memcpy` call and checks capacity twice (values, offsets); across eleven string
//! columns that was an eighth of decoding. This builder reserves once per value and copies up to
//! 32 bytes with a few overlapping word moves, then hands its vectors to Arrow without a copy.

use datafusion::arrow::array::StringArray;
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};

use super::validity::Validity;

/// Builds one `Utf8` column.
pub(super) struct StrColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
    nulls: Validity,
}

impl StrColumn {
    /// A builder for `rows` values of about `bytes` bytes in all.
    pub(super) fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StrColumn {
            values: Vec::with_capacity(bytes),
            offsets,
            nulls: Validity::with_capacity(rows),
        }
    }

    /// Appends a value, or a null.
    #[inline]
    pub(super) fn push(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                append_short(&mut self.values, s.as_bytes());
                self.nulls.push(true);
            }
            None => self.nulls.push(false),
        }
        let end = i32::try_from(self.values.len()).expect("byte array offset overflow");
        self.offsets.push(end);
    }

    /// The column so far; the builder is left empty.
    pub(super) fn finish(&mut self) -> StringArray {
        let (rows, bytes) = (self.offsets.len() - 1, self.values.len());
        let offsets = std::mem::replace(&mut self.offsets, Vec::with_capacity(rows + 1));
        self.offsets.push(0);
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(bytes));
        // SAFETY: offsets start at 0 and never decrease (each is the length of `values` after an
        // append), the last is `values.len()`, and `values` is a concatenation of `&str`s, so
        // every slice between offsets is UTF-8.
        unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
                Buffer::from_vec(values),
                self.nulls.finish(),
            )
        }
    }
}

/// A column of `rows` empty strings: what a projection leaves in a column no query reads.
pub(super) fn empty_strings(rows: usize) -> StringArray {
    // SAFETY: offsets all zero start at 0, never decrease and end at the (empty) values'
    // length; an empty slice is UTF-8. (`StringArray::new` checked each offset of each such
    // column again: 1 % of a declared replay.)
    unsafe {
        StringArray::new_unchecked(
            OffsetBuffer::new_zeroed(rows),
            Buffer::from_vec(Vec::<u8>::new()),
            None,
        )
    }
}

/// `out.extend_from_slice(s)`, with values of up to 32 bytes copied by a few overlapping word
/// moves (first and last word of the value) instead of a `memcpy` call.
#[inline(always)]
fn append_short(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > 32 {
        out.extend_from_slice(s);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` made room for `n` more bytes. Each branch writes words that lie within
    // `len..len + n` and together cover all of it (a word of `w` bytes at `0` and at `n - w`
    // overlap when `n < 2w`), before `set_len`.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        let src = s.as_ptr();
        match n {
            16..=32 => {
                for at in [0, 8, n - 16, n - 8] {
                    dst.add(at)
                        .cast::<u64>()
                        .write_unaligned(src.add(at).cast::<u64>().read_unaligned());
                }
            }
            8..=15 => {
                for at in [0, n - 8] {
                    dst.add(at)
                        .cast::<u64>()
                        .write_unaligned(src.add(at).cast::<u64>().read_unaligned());
                }
            }
            4..=7 => {
                for at in [0, n - 4] {
                    dst.add(at)
                        .cast::<u32>()
                        .write_unaligned(src.add(at).cast::<u32>().read_unaligned());
                }
            }
            // First, middle and last byte cover 1..=3 (a loop here became a `memcpy` call).
            1..=3 => {
                *dst = *src;
                *dst.add(n / 2) = *src.add(n / 2);
                *dst.add(n - 1) = *src.add(n - 1);
            }
            _ => {}
        }
        out.set_len(len + n);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn builds_what_arrow_builds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut col = StrColumn::with_capacity(4, 8);
        for round in 0..3 {
            let values: Vec<Option<String>> = (0..rng.random_range(0..300))
                .map(|_| {
                    rng.random_bool(0.9).then(|| {
                        let n = rng.random_range(0..40);
                        (0..n)
                            .map(|_| rng.random_range('a'..='é'))
                            .collect::<String>()
                    })
                })
                .collect();
            for v in &values {
                col.push(v.as_deref());
            }
            let got = col.finish();
            got.to_data().validate_full().unwrap();
            let want = StringArray::from(values.clone());
            assert_eq!(got, want, "round {round}");
        }
    }
}
