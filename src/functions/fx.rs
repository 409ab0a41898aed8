//! `fx_convert(amount_minor, currency, rate, to_currency)`: an amount in minor units of
//! `currency` converted at `rate` (units of `to_currency` per unit of `currency`) into minor
//! units of `to_currency`, exactly: amount · rate · 10^(e_to − e_from), rounded half to even
//! (bankers' rounding, as settlement systems round) to a whole minor unit. The rate is an exact
//! decimal — a DECIMAL, an integer, or decimal text such as `'1.0834500'` (a reference table's
//! VARCHAR column: tables hold money-grade rates as text, never as floats). NULL for a null
//! argument, a code without minor units or an unreadable rate; beyond 64 bits an error.
//!
//! With a reference table of rates valid from a time, `JOIN fx FOR SYSTEM_TIME AS OF
//! p.event_time AS r ON r.currency = p.currency` converts each payment at the rate of its
//! time, so a replay converts as the live run did.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Builder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::money::{currency_type, minor_unit_exponent};

/// Decimal text (`-1.0834`, `7`, `0.5`) as unscaled digits and a scale.
pub fn parse_decimal(s: &str) -> Option<(i128, u32)> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || int.len() + frac.len() > 36
    {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v * 10 + i128::from(b - b'0');
    }
    Some((if neg { -v } else { v }, frac.len() as u32))
}

/// `amount` minor units at exponent `from`, times the rate `rate / 10^scale`, in minor units at
/// exponent `to`, rounded half to even; `None` past 128 bits.
pub fn convert(amount: i128, from: u8, rate: i128, scale: u32, to: u8) -> Option<i128> {
    // amount · rate · 10^(to − from) / 10^scale = num / 10^shift.
    let mut num = amount.checked_mul(rate)?;
    let mut shift = i64::from(scale) + i64::from(from) - i64::from(to);
    while shift < 0 {
        num = num.checked_mul(10)?;
        shift += 1;
    }
    if shift == 0 {
        return Some(num);
    }
    let den = 10i128.checked_pow(u32::try_from(shift).ok()?)?;
    let (q, r) = (num / den, num % den);
    // Half to even, on the magnitude of the remainder.
    let twice = r.unsigned_abs() * 2;
    let den_u = den.unsigned_abs();
    let away = twice > den_u || (twice == den_u && q % 2 != 0);
    Some(if away { q + num.signum() } else { q })
}

/// The function `fx_convert`.
pub fn fx_convert_udf() -> ScalarUDF {
    ScalarUDF::from(FxConvert {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FxConvert {
    signature: Signature,
}

impl ScalarUDFImpl for FxConvert {
    fn name(&self) -> &str {
        "fx_convert"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [amount, from, rate, to] = args else {
            return Err(DataFusionError::Plan(
                "fx_convert takes four arguments: fx_convert(amount_minor, currency, rate, 'EUR')"
                    .into(),
            ));
        };
        if !(amount.is_integer() || amount.is_null()) {
            return Err(DataFusionError::Plan(format!(
                "fx_convert's amount is an integer count of minor units, not {amount}"
            )));
        }
        let rate = match rate {
            DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
            t if t.is_integer() => DataType::Decimal128(38, 0),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                DataType::Utf8
            }
            DataType::Float32 | DataType::Float64 => {
                return Err(DataFusionError::Plan(
                    "fx_convert's rate is an exact decimal (a DECIMAL, or decimal text such as '1.08345'), never a float: a float cannot hold most rates exactly".into(),
                ));
            }
            other => {
                return Err(DataFusionError::Plan(format!(
                    "fx_convert's rate is a decimal, not {other}"
                )));
            }
        };
        Ok(vec![
            DataType::Int64,
            currency_type(from, "fx_convert's currency")?,
            rate,
            currency_type(to, "fx_convert's target currency")?,
        ])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let amounts = arrays[0].as_primitive::<Int64Type>();
        let from = super::as_strings(&arrays[1])?;
        let to = super::as_strings(&arrays[3])?;
        let rate = |i: usize| -> Option<(i128, u32)> {
            let r = &arrays[2];
            if r.is_null(i) {
                return None;
            }
            match r.data_type() {
                DataType::Decimal128(_, s) => Some((
                    r.as_primitive::<Decimal128Type>().value(i),
                    u32::try_from(*s).ok()?,
                )),
                DataType::Utf8 => parse_decimal(r.as_string::<i32>().value(i)),
                _ => None,
            }
        };
        let mut out = Int64Builder::with_capacity(args.number_rows);
        for i in 0..args.number_rows {
            let parts = (
                amounts.is_valid(i).then(|| amounts.value(i)),
                super::text_at(&from, i).and_then(minor_unit_exponent),
                rate(i),
                super::text_at(&to, i).and_then(minor_unit_exponent),
            );
            let (Some(a), Some(ef), Some((r, s)), Some(et)) = parts else {
                out.append_null();
                continue;
            };
            let v = convert(i128::from(a), ef, r, s, et)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "fx_convert: {a} at rate {r}e-{s} does not fit in a 64-bit count of minor units"
                    ))
                })?;
            out.append_value(v);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn examples() {
        // 100.00 USD at 0.92 EUR/USD = 92.00 EUR.
        assert_eq!(convert(10_000, 2, 92, 2, 2), Some(9_200));
        // 1234 JPY at 0.0061 EUR/JPY = 7.5274 EUR → 7.53 EUR.
        assert_eq!(convert(1_234, 0, 61, 4, 2), Some(753));
        // 1.000 KWD at 3.25 USD/KWD = 3.25 USD; 0.125 EUR at 1 → 0.12 (half to even).
        assert_eq!(convert(1_000, 3, 325, 2, 2), Some(325));
        assert_eq!(convert(125, 3, 1, 0, 2), Some(12));
        assert_eq!(convert(135, 3, 1, 0, 2), Some(14));
        assert_eq!(convert(-125, 3, 1, 0, 2), Some(-12));
        assert_eq!(parse_decimal("1.0834500"), Some((10_834_500, 7)));
        assert_eq!(parse_decimal("-0.5"), Some((-5, 1)));
        assert_eq!(parse_decimal("1e3"), None);
        assert_eq!(parse_decimal("."), None);
    }

    /// Against Python's `decimal` (exact arithmetic, ROUND_HALF_EVEN) over random amounts,
    /// rates and exponents.
    #[test]
    fn agrees_with_python_decimal() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4217);
        let cases: Vec<(i64, u8, String, u8)> = (0..3000)
            .map(|_| {
                let amount = rng.random_range(-10_000_000i64..10_000_000);
                let scale = rng.random_range(0..9usize);
                let digits = rng.random_range(1u64..100_000_000);
                let rate = if scale == 0 {
                    digits.to_string()
                } else {
                    let s = format!("{digits:0>w$}", w = scale + 1);
                    format!("{}.{}", &s[..s.len() - scale], &s[s.len() - scale..])
                };
                (
                    amount,
                    rng.random_range(0..=4u8),
                    rate,
                    rng.random_range(0..=4u8),
                )
            })
            .collect();
        let script = r#"
import sys
from decimal import Decimal, ROUND_HALF_EVEN, getcontext
getcontext().prec = 80
for line in sys.stdin:
    a, ef, r, et = line.split()
    v = Decimal(a) / (Decimal(10) ** int(ef)) * Decimal(r) * (Decimal(10) ** int(et))
    print(v.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
"#;
        let input: String = cases
            .iter()
            .map(|(a, ef, r, et)| format!("{a} {ef} {r} {et}\n"))
            .collect();
        let want = crate::functions::python_lines(script, &input);
        assert_eq!(want.len(), cases.len());
        for ((a, ef, r, et), want) in cases.iter().zip(want) {
            let (rate, scale) = parse_decimal(r).unwrap();
            let got = convert(i128::from(*a), *ef, rate, scale, *et).unwrap();
            assert_eq!(
                got.to_string(),
                want.trim_start_matches('+'),
                "{a} {ef} {r} {et}"
            );
        }
    }
}
