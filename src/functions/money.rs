//! `to_major(amount_minor, currency)`: an amount in minor units as the exact decimal text of
//! the currency's major unit — `"12.34"` for 1234 USD, `"1234"` for 1234 JPY, `"1.234"` for
//! 1234 KWD. Text, not a float (which cannot hold 0.10 exactly) and not one decimal type
//! (whose fixed scale would write `"1234.000"` for yen). NULL for a null argument, a code
//! that is not ISO 4217, or one without minor units (gold, testing codes).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The ISO 4217 minor-unit exponent of `code`: how many decimal places its minor unit is
/// (2 for USD, 0 for JPY, 3 for KWD, 4 for CLF); `None` for a code that is not ISO 4217 or has
/// no minor unit (precious metals, SDRs, testing codes).
pub fn minor_unit_exponent(code: &str) -> Option<u8> {
    if !crate::decode::is_iso4217(code) {
        return None;
    }
    // ISO 4217's list, amendment 179: every other active code has two decimals.
    const NONE: [&str; 13] = [
        "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX",
    ];
    const ZERO: [&str; 17] = [
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const FOUR: [&str; 2] = ["CLF", "UYW"];
    if NONE.contains(&code) {
        None
    } else if ZERO.contains(&code) {
        Some(0)
    } else if THREE.contains(&code) {
        Some(3)
    } else if FOUR.contains(&code) {
        Some(4)
    } else {
        Some(2)
    }
}

/// `minor` (an integer count of minor units) as the decimal text of `exponent` places.
pub fn major_text(minor: i128, exponent: u8, out: &mut String) {
    use std::fmt::Write;
    if minor < 0 {
        out.push('-');
    }
    let m = minor.unsigned_abs();
    let unit = 10u128.pow(exponent as u32);
    let _ = write!(out, "{}", m / unit);
    if exponent > 0 {
        let _ = write!(out, ".{:0width$}", m % unit, width = exponent as usize);
    }
}

/// The function `to_major`.
pub fn to_major_udf() -> ScalarUDF {
    ScalarUDF::from(ToMajor {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToMajor {
    signature: Signature,
}

impl ScalarUDFImpl for ToMajor {
    fn name(&self) -> &str {
        "to_major"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [amount, currency] = args else {
            return Err(DataFusionError::Plan(
                "to_major takes two arguments: to_major(amount_minor, currency)".into(),
            ));
        };
        let amount = match amount {
            t if t.is_integer() => DataType::Int64,
            DataType::Decimal128(_, 0) | DataType::Decimal256(_, 0) => DataType::Decimal128(38, 0),
            DataType::Null => DataType::Int64,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "to_major's amount is an integer count of minor units, not {other}; pass amount_minor (or a sum of it)"
                )));
            }
        };
        Ok(vec![
            amount,
            currency_type(currency, "to_major's currency")?,
        ])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let currency = super::as_strings(&arrays[1])?;
        let amount: &ArrayRef = &arrays[0];
        let value = |i: usize| -> Option<i128> {
            if amount.is_null(i) {
                return None;
            }
            match amount.data_type() {
                DataType::Int64 => Some(amount.as_primitive::<Int64Type>().value(i) as i128),
                DataType::Decimal128(_, 0) => {
                    Some(amount.as_primitive::<Decimal128Type>().value(i))
                }
                _ => None,
            }
        };
        let mut out = StringBuilder::with_capacity(args.number_rows, args.number_rows * 8);
        let mut text = String::new();
        for i in 0..args.number_rows {
            match (
                value(i),
                super::text_at(&currency, i).and_then(minor_unit_exponent),
            ) {
                (Some(v), Some(e)) => {
                    text.clear();
                    major_text(v, e, &mut text);
                    out.append_value(&text);
                }
                _ => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A string-like argument's type, or a plan error naming `what`.
pub(crate) fn currency_type(t: &DataType, what: &str) -> Result<DataType> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        DataType::Dictionary(_, v)
            if matches!(
                **v,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            Ok(DataType::Utf8)
        }
        other => Err(DataFusionError::Plan(format!(
            "{what} is text, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(minor_unit_exponent("USD"), Some(2));
        assert_eq!(minor_unit_exponent("EUR"), Some(2));
        assert_eq!(minor_unit_exponent("JPY"), Some(0));
        assert_eq!(minor_unit_exponent("KWD"), Some(3));
        assert_eq!(minor_unit_exponent("CLF"), Some(4));
        assert_eq!(minor_unit_exponent("XAU"), None);
        assert_eq!(minor_unit_exponent("ABC"), None);
        assert_eq!(minor_unit_exponent("usd"), None);
    }

    /// The text read back as digits is the amount: `int · 10^e + frac` with the sign, for
    /// random amounts over the whole 128-bit range a sum can reach.
    #[test]
    fn the_text_is_the_exact_amount() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4217);
        let mut text = String::new();
        for n in 0..20_000 {
            let v: i128 = match n % 4 {
                0 => rng.random_range(-1_000..1_000),
                1 => rng.random::<i64>() as i128,
                2 => rng.random::<i128>() / 1000,
                _ => [i128::MIN + 1, i128::MAX, 0, -1, 1][n % 5],
            };
            let e: u8 = rng.random_range(0..=4);
            text.clear();
            major_text(v, e, &mut text);
            let (neg, digits) = match text.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, text.as_str()),
            };
            let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
            assert_eq!(frac.len(), e as usize, "{text}");
            assert!(
                !int.is_empty() && (int == "0" || !int.starts_with('0')),
                "{text}"
            );
            let back = int.parse::<u128>().unwrap() * 10u128.pow(e as u32)
                + if frac.is_empty() {
                    0
                } else {
                    frac.parse::<u128>().unwrap()
                };
            assert_eq!(back, v.unsigned_abs(), "{v} at {e}: {text}");
            assert_eq!(neg, v < 0, "{text}");
        }
        for (v, e, want) in [
            (1234, 2, "12.34"),
            (1234, 0, "1234"),
            (1234, 3, "1.234"),
            (-5, 2, "-0.05"),
            (0, 2, "0.00"),
        ] {
            text.clear();
            major_text(v, e, &mut text);
            assert_eq!(text, want);
        }
    }
}
