//! Anomaly baselines over an ordered frame, as window functions:
//! `ewma_zscore(x, alpha, warmup) OVER (PARTITION BY merchant_id ORDER BY event_time)`,
//! `ewma(x, alpha)` and `mad_zscore(x, n)`.
//!
//! Over the frame's values x1 … xn (xn the current row's):
//! - the exponentially weighted baseline of x1 … x(n−1) starts at m = x1, v = 0 and takes each
//!   later xi as d = xi − m; m = m + alpha·d; v = (1 − alpha)·(v + alpha·d²);
//! - `ewma_zscore` is (xn − m) / sqrt(v) — the current value scored against the baseline
//!   *before* it, so a spike does not mask itself — NULL while n − 1 < warmup or v = 0;
//! - `ewma` is the mean m after xn is taken too;
//! - `mad_zscore` is 0.6745·(xn − median) / MAD over the n values before xn (MAD: the median
//!   of their absolute deviations from their median), NULL while fewer than n came before or
//!   when MAD = 0.
//!
//! Nulls are skipped, as by every aggregate: the frame's values are its non-null ones.
//!
//! The functions here are the definitions, computed from the values as written; the over
//! operator keeps an unbounded frame's baseline incrementally ([`Baseline`]) and the two must
//! agree (the oracle test runs the same SQL through DataFusion, whose accumulators below call
//! the definitions). Used as a plain aggregate (GROUP BY) they are refused: their order is the
//! OVER clause's.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// The exponentially weighted mean and variance of the values taken so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    /// Values taken.
    pub n: u64,
    /// The mean.
    pub m: f64,
    /// The variance.
    pub v: f64,
}

impl Baseline {
    /// Takes value `x`.
    pub fn take(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            (self.m, self.v) = (x, 0.0);
        } else {
            let d = x - self.m;
            self.m += alpha * d;
            self.v = (1.0 - alpha) * (self.v + alpha * d * d);
        }
        self.n += 1;
    }

    /// `x` scored against this baseline (of the values before it), or `None` (NULL) while it
    /// holds fewer than `warmup` values or no variance.
    pub fn zscore(&self, x: f64, warmup: u64) -> Option<f64> {
        (self.n >= warmup.max(1) && self.v > 0.0).then(|| (x - self.m) / self.v.sqrt())
    }
}

/// `ewma_zscore` of the frame `values` (the current row's last).
pub fn ewma_zscore(values: &[f64], alpha: f64, warmup: u64) -> Option<f64> {
    let (xn, before) = values.split_last()?;
    let mut b = Baseline::default();
    for x in before {
        b.take(*x, alpha);
    }
    b.zscore(*xn, warmup)
}

/// `ewma` of the frame `values`: the mean after the last.
pub fn ewma(values: &[f64], alpha: f64) -> Option<f64> {
    let mut b = Baseline::default();
    for x in values {
        b.take(*x, alpha);
    }
    (b.n > 0).then_some(b.m)
}

/// `mad_zscore` of the frame `values` (the current row's last) over the `n` before it.
pub fn mad_zscore(values: &[f64], n: usize) -> Option<f64> {
    let (xn, before) = values.split_last()?;
    if n == 0 || before.len() < n {
        return None;
    }
    let mut prev = before[before.len() - n..].to_vec();
    let median = median_of(&mut prev);
    let mut deviations: Vec<f64> = prev.iter().map(|x| (x - median).abs()).collect();
    let mad = median_of(&mut deviations);
    (mad > 0.0).then(|| 0.6745 * (xn - median) / mad)
}

/// The median (the mean of the two middle values of an even count).
fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = v.len();
    if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    }
}

/// The most values `mad_zscore` takes a median over (each row sorts them).
pub const MAX_MAD_N: u64 = 10_000;

/// Which function, with its constant parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anomaly {
    /// `ewma_zscore(x, alpha, warmup)`.
    EwmaZscore {
        /// The smoothing factor, in (0, 1].
        alpha: f64,
        /// Values the baseline needs before a score.
        warmup: u64,
    },
    /// `ewma(x, alpha)`.
    Ewma {
        /// The smoothing factor, in (0, 1].
        alpha: f64,
    },
    /// `mad_zscore(x, n)`.
    MadZscore {
        /// Values before the current one the median and MAD are over.
        n: u64,
    },
}

impl Anomaly {
    /// The function's value over the frame `values`.
    pub fn over(&self, values: &[f64]) -> Option<f64> {
        match *self {
            Anomaly::EwmaZscore { alpha, warmup } => ewma_zscore(values, alpha, warmup),
            Anomaly::Ewma { alpha } => ewma(values, alpha),
            Anomaly::MadZscore { n } => mad_zscore(values, n as usize),
        }
    }

    /// The function of `name` with the constant parameters `params` (after the value), or
    /// what is wrong with them.
    pub fn parse(
        name: &str,
        params: &[Option<ScalarValue>],
    ) -> std::result::Result<Anomaly, String> {
        let number = |i: usize, what: &str| -> std::result::Result<f64, String> {
            match params.get(i) {
                Some(Some(v)) if !v.is_null() => match v.cast_to(&DataType::Float64) {
                    Ok(ScalarValue::Float64(Some(x))) if x.is_finite() => Ok(x),
                    _ => Err(format!("{name}'s {what} must be a number")),
                },
                Some(Some(_)) => Err(format!("{name}'s {what} must not be NULL")),
                Some(None) => Err(format!("{name}'s {what} must be a constant")),
                None => Err(format!("{name} needs its {what}")),
            }
        };
        let count = |i: usize, what: &str| -> std::result::Result<u64, String> {
            let x = number(i, what)?;
            if x < 0.0 || x.fract() != 0.0 || x > 1e9 {
                return Err(format!(
                    "{name}'s {what} must be a whole number from 0 (it is {x})"
                ));
            }
            Ok(x as u64)
        };
        let alpha = |i: usize| -> std::result::Result<f64, String> {
            let a = number(i, "alpha")?;
            if a <= 0.0 || a > 1.0 {
                return Err(format!(
                    "{name}'s alpha must be in (0, 1] (it is {a}); 0.1 to 0.3 is usual"
                ));
            }
            Ok(a)
        };
        let arity = |k: usize, example: &str| {
            if params.len() == k {
                Ok(())
            } else {
                Err(format!("{name} takes {} arguments: {example}", k + 1))
            }
        };
        match name {
            "ewma_zscore" => {
                arity(2, "ewma_zscore(x, 0.2, 5)")?;
                Ok(Anomaly::EwmaZscore {
                    alpha: alpha(0)?,
                    warmup: count(1, "warmup")?,
                })
            }
            "ewma" => {
                arity(1, "ewma(x, 0.2)")?;
                Ok(Anomaly::Ewma { alpha: alpha(0)? })
            }
            "mad_zscore" => {
                arity(1, "mad_zscore(x, 30)")?;
                let n = count(0, "n")?;
                if n == 0 || n > MAX_MAD_N {
                    return Err(format!(
                        "{name}'s n must be from 1 to {MAX_MAD_N} (a median over more values per row would cost too much)"
                    ));
                }
                Ok(Anomaly::MadZscore { n })
            }
            other => Err(format!("{other} is not an anomaly function")),
        }
    }
}

/// The three functions, for DataFusion to plan (and to compute in batch, over its frames).
pub fn udafs() -> Vec<AggregateUDF> {
    ["ewma_zscore", "ewma", "mad_zscore"]
        .into_iter()
        .map(|name| {
            AggregateUDF::from(AnomalyUdaf {
                name,
                signature: Signature::user_defined(Volatility::Immutable),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyUdaf {
    name: &'static str,
    signature: Signature,
}

impl AggregateUDFImpl for AnomalyUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let Some((value, params)) = args.split_first() else {
            return Err(DataFusionError::Plan(format!(
                "{} needs a value",
                self.name
            )));
        };
        if !(value.is_integer()
            || value.is_floating()
            || value.is_null()
            || matches!(value, DataType::Decimal128(_, _)))
        {
            return Err(DataFusionError::Plan(format!(
                "{}'s value is a number, not {value}",
                self.name
            )));
        }
        let mut out = vec![DataType::Float64];
        out.extend(params.iter().map(|_| DataType::Float64));
        Ok(out)
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let params: Vec<Option<ScalarValue>> = args.exprs[1..]
            .iter()
            .map(|e| e.downcast_ref::<Literal>().map(|l| l.value().clone()))
            .collect();
        let f = Anomaly::parse(self.name, &params).map_err(DataFusionError::Plan)?;
        Ok(Box::new(FrameValues {
            f,
            values: std::collections::VecDeque::new(),
        }))
    }

    fn state_fields(&self, _args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            "values",
            DataType::Float64,
            true,
        ))])
    }

    fn supports_null_handling_clause(&self) -> bool {
        false
    }
}

/// The frame's values in order (DataFusion feeds a window's rows sorted), computed from them
/// at each row: the definition, not the incremental form.
#[derive(Debug)]
struct FrameValues {
    f: Anomaly,
    values: std::collections::VecDeque<Option<f64>>,
}

impl Accumulator for FrameValues {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let a = values[0].as_primitive::<Float64Type>();
        self.values
            .extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))));
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for _ in 0..values[0].len() {
            self.values.pop_front();
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Nulls are skipped, as every aggregate skips them: the frame's values are its
        // non-null ones.
        let values: Vec<f64> = self.values.iter().flatten().copied().collect();
        // As the stream writes them: a score that is not a number is NULL.
        Ok(ScalarValue::Float64(
            self.f.over(&values).filter(|x| x.is_finite()),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.len() * 16
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Err(window_only())
    }

    fn merge_batch(&mut self, _states: &[ArrayRef]) -> Result<()> {
        Err(window_only())
    }
}

fn window_only() -> DataFusionError {
    DataFusionError::Plan(
        "ewma_zscore, ewma and mad_zscore are window functions: use them with OVER (PARTITION BY … ORDER BY …)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The definition written out once more, as the issue states it, for random series.
    #[test]
    fn ewma_zscore_is_the_stated_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        for _ in 0..2000 {
            let n = rng.random_range(1..40);
            let xs: Vec<f64> = (0..n).map(|_| rng.random_range(0..50) as f64).collect();
            let alpha = [0.1, 0.2, 0.5, 1.0][rng.random_range(0..4)];
            let warmup = rng.random_range(0..8);
            let (mut m, mut v) = (xs[0], 0.0f64);
            for x in xs.iter().take(n - 1).skip(1) {
                let d = x - m;
                m += alpha * d;
                v = (1.0 - alpha) * (v + alpha * d * d);
            }
            let want = if n < 2 || ((n - 1) as u64) < warmup || v == 0.0 {
                None
            } else {
                Some((xs[n - 1] - m) / v.sqrt())
            };
            let got = ewma_zscore(&xs, alpha, warmup);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{xs:?}"),
                (g, w) => assert_eq!(g, w, "{xs:?} alpha {alpha} warmup {warmup}"),
            }
            // The mean after every value; the incremental baseline takes the same steps.
            let mut b = Baseline::default();
            for x in &xs {
                b.take(*x, alpha);
            }
            assert_eq!(ewma(&xs, alpha), Some(b.m));
        }
        // A spike after a steady but noisy series scores high; the spike itself is not in
        // its own baseline.
        let mut xs = vec![10.0, 12.0, 9.0, 11.0, 10.0, 12.0, 9.0, 11.0];
        xs.push(40.0);
        assert!(ewma_zscore(&xs, 0.2, 5).unwrap() > 10.0);
        assert_eq!(ewma_zscore(&[5.0, 5.0, 5.0], 0.2, 1), None, "no variance");
    }

    #[test]
    fn mad_zscore_is_the_stated_definition() {
        // Before the current 100: 1..=9 — median 5, deviations 4,3,2,1,0,1,2,3,4 → MAD 2.
        let mut xs: Vec<f64> = (1..=9).map(f64::from).collect();
        xs.push(100.0);
        assert_eq!(mad_zscore(&xs, 9), Some(0.6745 * 95.0 / 2.0));
        // Only the last n before it count; fewer than n: NULL; no spread: NULL.
        assert_eq!(mad_zscore(&xs, 10), None);
        assert_eq!(mad_zscore(&[3.0, 3.0, 3.0, 9.0], 3), None);
        let tail = mad_zscore(&xs, 4).unwrap();
        // 6, 7, 8, 9: median 7.5, deviations 1.5, 0.5, 0.5, 1.5 → MAD 1.
        assert_eq!(tail, 0.6745 * (100.0 - 7.5) / 1.0);
    }

    #[test]
    fn parameters_are_checked() {
        let p = |v: &[f64]| -> Vec<Option<ScalarValue>> {
            v.iter()
                .map(|x| Some(ScalarValue::Float64(Some(*x))))
                .collect()
        };
        assert_eq!(
            Anomaly::parse("ewma_zscore", &p(&[0.2, 5.0])),
            Ok(Anomaly::EwmaZscore {
                alpha: 0.2,
                warmup: 5
            })
        );
        assert!(
            Anomaly::parse("ewma_zscore", &p(&[1.5, 5.0]))
                .unwrap_err()
                .contains("(0, 1]")
        );
        assert!(
            Anomaly::parse("ewma_zscore", &p(&[0.2, 2.5]))
                .unwrap_err()
                .contains("whole")
        );
        assert!(
            Anomaly::parse("ewma", &[None])
                .unwrap_err()
                .contains("constant")
        );
        for n in [0.0, 1e6] {
            assert!(
                Anomaly::parse("mad_zscore", &p(&[n]))
                    .unwrap_err()
                    .contains("from 1 to")
            );
        }
    }
}
