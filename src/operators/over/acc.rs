//! Frame accumulators: each window aggregate as state that rows enter and leave in order.
//!
//! A frame moves forward over a key's history: rows enter at its end and leave at its start, in
//! the order they entered. So every aggregate here is retractable: sums and counts subtract,
//! `min`/`max` keep a monotone queue (the candidates that can still become the extreme once
//! the rows before them leave), `count(DISTINCT)` keeps a count per value. Integer sums and
//! variances are exact (128-bit sums of values and squares), so a result never depends on
//! which rows entered and left before.

use std::collections::VecDeque;

use hashbrown::HashMap;

use super::value::Val;
use crate::error::{Error, Result};
use crate::functions::anomaly::{Anomaly, Baseline};
use crate::sql::FunctionKind;

/// The state of one aggregate over one key's frame.
#[derive(Debug, Clone)]
pub(super) enum Acc {
    /// Non-null values (or rows, for `count(*)`).
    Count(i64),
    /// Exact sum of integers.
    SumInt { sum: i128, n: i64 },
    /// Sum of floats.
    SumFloat { sum: f64, n: i64 },
    /// Exact sums of integers and their squares.
    VarInt { n: i64, s: i128, ss: i128 },
    /// Welford's running mean and squared deviations of floats.
    VarFloat { n: i64, mean: f64, m2: f64 },
    /// Candidates for the minimum (`max = false`) or maximum, by sequence number.
    Extreme {
        max: bool,
        queue: VecDeque<(u64, Val)>,
    },
    /// Count of each distinct non-null value.
    Distinct(HashMap<Val, u32>),
    /// `ewma_zscore`, `ewma`, `mad_zscore` (`crate::functions::anomaly`).
    Anomaly(AnomalyAcc),
}

/// An anomaly baseline over a frame. A frame from the key's first row never loses a row: its
/// EWMA is kept incrementally (the baseline of every value but the newest, and the newest), and
/// `mad_zscore` keeps only the `n + 1` newest values. A bounded frame keeps its values (it
/// holds at most the frame) and computes from them.
#[derive(Debug, Clone)]
pub(super) struct AnomalyAcc {
    f: Anomaly,
    bounded: bool,
    /// A bounded frame's values, or `mad_zscore`'s newest `n + 1`.
    values: VecDeque<f64>,
    /// Values in the frame (an unbounded `mad_zscore`'s outnumber the `values` it keeps).
    size: u64,
    /// An unbounded EWMA's baseline of every value but the newest.
    base: Baseline,
    /// An unbounded EWMA's newest value.
    last: Option<f64>,
}

impl AnomalyAcc {
    fn keeps_values(&self) -> bool {
        self.bounded || matches!(self.f, Anomaly::MadZscore { .. })
    }

    fn add(&mut self, x: f64) {
        self.size += 1;
        if self.keeps_values() {
            self.values.push_back(x);
            if let Anomaly::MadZscore { n } = self.f
                && !self.bounded
                && self.values.len() as u64 > n + 1
            {
                self.values.pop_front();
            }
            return;
        }
        let alpha = match self.f {
            Anomaly::EwmaZscore { alpha, .. } | Anomaly::Ewma { alpha } => alpha,
            Anomaly::MadZscore { .. } => return,
        };
        if let Some(l) = self.last.replace(x) {
            self.base.take(l, alpha);
        }
    }

    fn remove(&mut self) {
        self.size = self.size.saturating_sub(1);
        // Rows leave oldest first; only the frame's newest are kept.
        while self.values.len() as u64 > self.size {
            self.values.pop_front();
        }
    }

    fn value(&self) -> Option<f64> {
        if self.keeps_values() {
            let (a, b) = self.values.as_slices();
            return if b.is_empty() {
                self.f.over(a)
            } else {
                self.f
                    .over(&self.values.iter().copied().collect::<Vec<_>>())
            };
        }
        let last = self.last?;
        match self.f {
            Anomaly::EwmaZscore { warmup, .. } => self.base.zscore(last, warmup),
            Anomaly::Ewma { alpha } => {
                let mut b = self.base;
                b.take(last, alpha);
                Some(b.m)
            }
            Anomaly::MadZscore { .. } => None,
        }
    }
}

impl Acc {
    /// Empty state for `kind` over values that are floats or not, in a frame that starts a
    /// fixed distance back (`bounded`) or at the key's first row.
    pub(super) fn new(kind: &FunctionKind, float: bool, bounded: bool) -> Acc {
        match kind {
            FunctionKind::Anomaly(f) => Acc::Anomaly(AnomalyAcc {
                f: *f,
                bounded,
                values: VecDeque::new(),
                size: 0,
                base: Baseline::default(),
                last: None,
            }),
            FunctionKind::Sum | FunctionKind::Avg if float => Acc::SumFloat { sum: 0.0, n: 0 },
            FunctionKind::Sum | FunctionKind::Avg => Acc::SumInt { sum: 0, n: 0 },
            FunctionKind::StddevSamp
            | FunctionKind::StddevPop
            | FunctionKind::VarSamp
            | FunctionKind::VarPop
                if float =>
            {
                Acc::VarFloat {
                    n: 0,
                    mean: 0.0,
                    m2: 0.0,
                }
            }
            FunctionKind::StddevSamp
            | FunctionKind::StddevPop
            | FunctionKind::VarSamp
            | FunctionKind::VarPop => Acc::VarInt { n: 0, s: 0, ss: 0 },
            FunctionKind::Min => Acc::Extreme {
                max: false,
                queue: VecDeque::new(),
            },
            FunctionKind::Max => Acc::Extreme {
                max: true,
                queue: VecDeque::new(),
            },
            FunctionKind::CountDistinct => Acc::Distinct(HashMap::new()),
            _ => Acc::Count(0),
        }
    }

    /// Row `seq` with value `v` enters the frame (`None`: `count(*)`, which counts rows).
    pub(super) fn add(&mut self, seq: u64, v: Option<&Val>) {
        let Some(v) = v else {
            if let Acc::Count(n) = self {
                *n += 1;
            }
            return;
        };
        if v.is_null() {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::SumInt { sum, n } => {
                if let Val::Int(x) = v {
                    *sum += i128::from(*x);
                    *n += 1;
                }
            }
            Acc::SumFloat { sum, n } => {
                if let Val::Float(x) = v {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::VarInt { n, s, ss } => {
                if let Val::Int(x) = v {
                    let x = i128::from(*x);
                    *n += 1;
                    *s += x;
                    // Past 128 bits (values near ±2^63) the variance cannot be exact: the
                    // state is marked (`n` < 0) and reading it is an overflow error.
                    match ss.checked_add(x * x) {
                        Some(v) => *ss = v,
                        None => *n = i64::MIN / 2,
                    }
                }
            }
            Acc::VarFloat { n, mean, m2 } => {
                if let Val::Float(x) = v {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            Acc::Extreme { max, queue } => {
                // A candidate older than `v` and no better can never be the extreme again.
                while let Some((_, back)) = queue.back() {
                    let beaten = if *max { back <= v } else { back >= v };
                    if !beaten {
                        break;
                    }
                    queue.pop_back();
                }
                queue.push_back((seq, v.clone()));
            }
            Acc::Distinct(counts) => match counts.get_mut(v) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(v.clone(), 1);
                }
            },
            Acc::Anomaly(a) => {
                if let Some(x) = as_f64(v) {
                    a.add(x);
                }
            }
        }
    }

    /// Row `seq` with value `v` leaves the frame (rows leave in the order they entered).
    pub(super) fn remove(&mut self, seq: u64, v: Option<&Val>) {
        let Some(v) = v else {
            if let Acc::Count(n) = self {
                *n -= 1;
            }
            return;
        };
        if v.is_null() {
            return;
        }
        match self {
            Acc::Count(n) => *n -= 1,
            Acc::SumInt { sum, n } => {
                if let Val::Int(x) = v {
                    *sum -= i128::from(*x);
                    *n -= 1;
                }
            }
            Acc::SumFloat { sum, n } => {
                if let Val::Float(x) = v {
                    *sum -= x;
                    *n -= 1;
                    if *n == 0 {
                        *sum = 0.0;
                    }
                }
            }
            Acc::VarInt { n, s, ss } => {
                if let Val::Int(x) = v {
                    let x = i128::from(*x);
                    *n -= 1;
                    *s -= x;
                    *ss = ss.wrapping_sub(x * x);
                }
            }
            Acc::VarFloat { n, mean, m2 } => {
                if let Val::Float(x) = v {
                    if *n <= 1 {
                        (*n, *mean, *m2) = (0, 0.0, 0.0);
                    } else {
                        let new_n = *n - 1;
                        let d1 = *mean - x;
                        let new_mean = d1 / new_n as f64 + *mean;
                        let d2 = new_mean - x;
                        *m2 -= d1 * d2;
                        (*n, *mean) = (new_n, new_mean);
                    }
                }
            }
            Acc::Extreme { queue, .. } => {
                if queue.front().is_some_and(|(s, _)| *s == seq) {
                    queue.pop_front();
                }
            }
            Acc::Distinct(counts) => {
                if let Some(c) = counts.get_mut(v) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(v);
                    }
                }
            }
            Acc::Anomaly(a) => {
                if as_f64(v).is_some() {
                    a.remove();
                }
            }
        }
    }

    /// The aggregate's value now, as a [`Val`] of the output column's kind.
    pub(super) fn value(&self, kind: &FunctionKind) -> Result<Val> {
        Ok(match self {
            Acc::Count(n) => Val::Int(*n),
            Acc::Distinct(c) => Val::Int(c.len() as i64),
            Acc::SumInt { n: 0, .. } | Acc::SumFloat { n: 0, .. } => Val::Null,
            Acc::SumInt { sum, n } => match kind {
                FunctionKind::Avg => Val::Float(*sum as f64 / *n as f64),
                _ => i64::try_from(*sum).map_or(Val::Big(*sum), Val::Int),
            },
            Acc::SumFloat { sum, n } => match kind {
                FunctionKind::Avg => Val::Float(sum / *n as f64),
                _ => Val::Float(*sum),
            },
            Acc::VarInt { n, .. } if *n < 0 => {
                return Err(Error::DataFusion(
                    datafusion::error::DataFusionError::ArrowError(
                        Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
                            "the sum of squares of a variance (values near ±2^63)".into(),
                        )),
                        None,
                    ),
                ));
            }
            Acc::VarInt { n, s, ss } => {
                let n = *n;
                // n·Σx² − (Σx)², exact while it fits; the variance is that over n² or n(n − 1).
                let num = i128::from(n)
                    .checked_mul(*ss)
                    .and_then(|a| s.checked_mul(*s).and_then(|b| a.checked_sub(b)))
                    .map(|v| v as f64)
                    .unwrap_or_else(|| n as f64 * *ss as f64 - (*s as f64) * (*s as f64));
                variance(kind, n, |den| num / den)
            }
            Acc::VarFloat { n, m2, .. } => {
                let n = *n;
                // m2 = Σ(x − mean)²; over n or n − 1.
                variance(kind, n, |den| m2 * n as f64 / den)
            }
            Acc::Extreme { queue, .. } => queue.front().map_or(Val::Null, |(_, v)| v.clone()),
            Acc::Anomaly(a) => a
                .value()
                .filter(|x| x.is_finite())
                .map_or(Val::Null, Val::Float),
        })
    }

    /// The state as values, for snapshots ([`Self::decode`] reads it back).
    pub(super) fn encode(&self, out: &mut Vec<Val>) {
        let split = |x: i128| [Val::Int((x >> 64) as i64), Val::Int(x as u64 as i64)];
        match self {
            Acc::Count(n) => out.push(Val::Int(*n)),
            Acc::SumInt { sum, n } => {
                out.extend(split(*sum));
                out.push(Val::Int(*n));
            }
            Acc::SumFloat { sum, n } => out.extend([Val::Float(*sum), Val::Int(*n)]),
            Acc::VarInt { n, s, ss } => {
                out.push(Val::Int(*n));
                out.extend(split(*s));
                out.extend(split(*ss));
            }
            Acc::VarFloat { n, mean, m2 } => {
                out.extend([Val::Int(*n), Val::Float(*mean), Val::Float(*m2)])
            }
            Acc::Extreme { queue, .. } => {
                for (seq, v) in queue {
                    out.extend([Val::Int(*seq as i64), v.clone()]);
                }
            }
            Acc::Distinct(c) => {
                for (v, n) in c {
                    out.extend([v.clone(), Val::Int(i64::from(*n))]);
                }
            }
            Acc::Anomaly(a) => {
                out.extend([
                    Val::Int(a.size as i64),
                    Val::Int(a.base.n as i64),
                    Val::Float(a.base.m),
                    Val::Float(a.base.v),
                    a.last.map_or(Val::Null, Val::Float),
                ]);
                out.extend(a.values.iter().map(|x| Val::Float(*x)));
            }
        }
    }

    /// Replaces the state with one written by [`Self::encode`].
    pub(super) fn decode(&mut self, vals: &[Val]) -> Result<()> {
        let bad = || Error::Internal("over-window snapshot: bad accumulator".into());
        let int = |i: usize| match vals.get(i) {
            Some(Val::Int(x)) => Ok(*x),
            _ => Err(bad()),
        };
        let float = |i: usize| match vals.get(i) {
            Some(Val::Float(x)) => Ok(*x),
            _ => Err(bad()),
        };
        let wide = |i: usize| -> Result<i128> {
            Ok((i128::from(int(i)?) << 64) | i128::from(int(i + 1)? as u64))
        };
        match self {
            Acc::Count(n) => *n = int(0)?,
            Acc::SumInt { sum, n } => (*sum, *n) = (wide(0)?, int(2)?),
            Acc::SumFloat { sum, n } => (*sum, *n) = (float(0)?, int(1)?),
            Acc::VarInt { n, s, ss } => (*n, *s, *ss) = (int(0)?, wide(1)?, wide(3)?),
            Acc::VarFloat { n, mean, m2 } => (*n, *mean, *m2) = (int(0)?, float(1)?, float(2)?),
            Acc::Extreme { queue, .. } => {
                queue.clear();
                for pair in vals.chunks(2) {
                    let [Val::Int(seq), v] = pair else {
                        return Err(bad());
                    };
                    queue.push_back((*seq as u64, v.clone()));
                }
            }
            Acc::Distinct(c) => {
                c.clear();
                for pair in vals.chunks(2) {
                    let [v, Val::Int(n)] = pair else {
                        return Err(bad());
                    };
                    c.insert(v.clone(), *n as u32);
                }
            }
            Acc::Anomaly(a) => {
                a.size = int(0)? as u64;
                a.base = Baseline {
                    n: int(1)? as u64,
                    m: float(2)?,
                    v: float(3)?,
                };
                a.last = match vals.get(4) {
                    Some(Val::Float(x)) => Some(*x),
                    Some(Val::Null) => None,
                    _ => return Err(bad()),
                };
                a.values = (5..vals.len()).map(float).collect::<Result<_>>()?;
            }
        }
        Ok(())
    }
}

/// A numeric value as a float (anomaly functions take their value as one).
fn as_f64(v: &Val) -> Option<f64> {
    match v {
        Val::Float(x) => Some(*x),
        Val::Int(x) => Some(*x as f64),
        _ => None,
    }
}

/// A variance or standard deviation of `n` values from `over(denominator)`, NULL where SQL says
/// so (no values; one value for the sample variants).
fn variance(kind: &FunctionKind, n: i64, over: impl Fn(f64) -> f64) -> Val {
    let nf = n as f64;
    let v = match kind {
        FunctionKind::VarPop | FunctionKind::StddevPop if n >= 1 => over(nf * nf),
        FunctionKind::VarSamp | FunctionKind::StddevSamp if n >= 2 => over(nf * (nf - 1.0)),
        _ => return Val::Null,
    };
    let v = v.max(0.0);
    match kind {
        FunctionKind::StddevPop | FunctionKind::StddevSamp => Val::Float(v.sqrt()),
        _ => Val::Float(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(acc: &mut Acc, vals: &[i64]) {
        for (i, v) in vals.iter().enumerate() {
            acc.add(i as u64, Some(&Val::Int(*v)));
        }
    }

    #[test]
    fn extremes_follow_rows_leaving_in_order() {
        let vals = [5, 3, 8, 8, 1, 9, 2, 2, 7];
        for max in [false, true] {
            let kind = if max {
                FunctionKind::Max
            } else {
                FunctionKind::Min
            };
            let mut acc = Acc::new(&kind, false, true);
            // A sliding frame of 3 rows, checked against a direct computation.
            for (i, v) in vals.iter().enumerate() {
                acc.add(i as u64, Some(&Val::Int(*v)));
                if i >= 3 {
                    acc.remove((i - 3) as u64, Some(&Val::Int(vals[i - 3])));
                }
                let frame = &vals[i.saturating_sub(2)..=i];
                let want = if max {
                    frame.iter().max()
                } else {
                    frame.iter().min()
                };
                assert_eq!(acc.value(&kind).unwrap(), Val::Int(*want.unwrap()), "{i}");
            }
        }
    }

    #[test]
    fn integer_variance_is_exact_and_sums_widen_past_64_bits() {
        let mut acc = Acc::new(&FunctionKind::VarSamp, false, true);
        ints(&mut acc, &[2, 4, 4, 4, 5, 5, 7, 9]);
        let Val::Float(v) = acc.value(&FunctionKind::VarSamp).unwrap() else {
            panic!()
        };
        assert!((v - 32.0 / 7.0).abs() < 1e-12);
        let mut sum = Acc::new(&FunctionKind::Sum, false, true);
        ints(&mut sum, &[i64::MAX, 1]);
        assert_eq!(
            sum.value(&FunctionKind::Sum).unwrap(),
            Val::Big(i128::from(i64::MAX) + 1)
        );
        sum.remove(1, Some(&Val::Int(1)));
        assert_eq!(sum.value(&FunctionKind::Sum).unwrap(), Val::Int(i64::MAX));
    }

    #[test]
    fn state_round_trips() {
        let kinds = [
            FunctionKind::Count,
            FunctionKind::Sum,
            FunctionKind::StddevPop,
            FunctionKind::Max,
            FunctionKind::CountDistinct,
        ];
        for kind in kinds {
            let mut acc = Acc::new(&kind, false, true);
            ints(&mut acc, &[3, -7, 3, 12]);
            let mut vals = Vec::new();
            acc.encode(&mut vals);
            let mut back = Acc::new(&kind, false, true);
            back.decode(&vals).unwrap();
            assert_eq!(
                back.value(&kind).unwrap(),
                acc.value(&kind).unwrap(),
                "{kind:?}"
            );
        }
    }
}
