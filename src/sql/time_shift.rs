//! `event_time ± INTERVAL '10' MINUTE` on the milliseconds.
//!
//! Arrow adds an interval to a timestamp with a time zone through calendar arithmetic in that
//! zone (chrono and its zone tables, per row) — most of what an interval join's ON condition
//! cost to evaluate over candidate pairs. An interval of whole milliseconds without months
//! added to a UTC (or zone-less) millisecond timestamp is plain integer addition, so such a sum
//! becomes a [`TimeShift`]; any other input is left to the expression it replaces.

use std::any::Any;
use std::fmt::{self, Display, Formatter};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_plan::PhysicalExpr;

/// `time + ms` over a millisecond timestamp in UTC; the original expression for anything else.
#[derive(Debug)]
pub(super) struct TimeShift {
    time: Arc<dyn PhysicalExpr>,
    ms: i64,
    /// The sum it replaces (also a child, so re-indexing reaches it).
    original: Arc<dyn PhysicalExpr>,
}

impl PartialEq for TimeShift {
    fn eq(&self, other: &Self) -> bool {
        self.time.as_ref() == other.time.as_ref() && self.ms == other.ms
    }
}

impl Eq for TimeShift {}

impl std::hash::Hash for TimeShift {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.time.as_ref().dyn_hash(state);
        self.ms.hash(state);
    }
}

impl Display for TimeShift {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.fmt_sql(f)
    }
}

/// Whether a timestamp's zone makes a day exactly 86,400,000 ms.
fn utc(zone: Option<&str>) -> bool {
    matches!(zone, None | Some("UTC" | "+00:00" | "Z"))
}

impl PhysicalExpr for TimeShift {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.original.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.original.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let ColumnarValue::Array(a) = self.time.evaluate(batch)? else {
            return self.original.evaluate(batch);
        };
        let Some(ts) = a.as_primitive_opt::<TimestampMillisecondType>() else {
            return self.original.evaluate(batch);
        };
        if !matches!(a.data_type(), DataType::Timestamp(TimeUnit::Millisecond, z) if utc(z.as_deref()))
        {
            return self.original.evaluate(batch);
        }
        let ms = self.ms;
        let shifted: TimestampMillisecondArray = ts.try_unary(|t| {
            t.checked_add(ms).ok_or_else(|| {
                ArrowError::ArithmeticOverflow(format!("{t} ms + {ms} ms is out of range"))
            })
        })?;
        Ok(ColumnarValue::Array(Arc::new(
            shifted.with_timezone_opt(ts.timezone()),
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.time, &self.original]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [time, original]: [Arc<dyn PhysicalExpr>; 2] = children.try_into().map_err(|_| {
            datafusion::error::DataFusionError::Internal("TimeShift has two children".into())
        })?;
        Ok(Arc::new(TimeShift {
            time,
            ms: self.ms,
            original,
        }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {} ms", self.time, self.ms)
    }
}

/// `expr` with every timestamp ± whole-millisecond interval as a [`TimeShift`].
pub(super) fn specialize(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|e| Ok(rewrite(&e).map_or(Transformed::no(e), Transformed::yes)))?
        .data)
}

/// The interval literal `e` in milliseconds, when it has no months and whole milliseconds.
fn interval_ms(e: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    let lit = (e.as_ref() as &dyn Any).downcast_ref::<Literal>()?;
    match lit.value() {
        ScalarValue::IntervalMonthDayNano(Some(v))
            if v.months == 0 && v.nanoseconds % 1_000_000 == 0 =>
        {
            i64::from(v.days)
                .checked_mul(86_400_000)?
                .checked_add(v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(86_400_000)?
            .checked_add(i64::from(v.milliseconds)),
        _ => None,
    }
}

fn rewrite(e: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let b = (e.as_ref() as &dyn Any).downcast_ref::<BinaryExpr>()?;
    let (time, ms) = match b.op() {
        Operator::Plus => match (interval_ms(b.right()), interval_ms(b.left())) {
            (Some(ms), _) => (b.left(), ms),
            (None, Some(ms)) => (b.right(), ms),
            _ => return None,
        },
        Operator::Minus => (b.left(), interval_ms(b.right())?.checked_neg()?),
        _ => return None,
    };
    Some(Arc::new(TimeShift {
        time: Arc::clone(time),
        ms,
        original: Arc::clone(e),
    }))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    /// The shift equals Arrow's interval arithmetic on UTC timestamps, and defers to it
    /// elsewhere (another zone, whole months).
    #[test]
    fn shifts_equal_arrows_interval_arithmetic() {
        use datafusion::arrow::datatypes::IntervalMonthDayNano;
        let schema = Schema::new(vec![
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "z",
                DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Berlin".into())),
                true,
            ),
        ]);
        let times = [
            Some(1_793_491_200_000i64),
            None,
            Some(1_793_491_200_123),
            Some(0),
        ];
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")),
                Arc::new(
                    TimestampMillisecondArray::from(times.to_vec()).with_timezone("Europe/Berlin"),
                ),
            ],
        )
        .unwrap();
        for (col, idx) in [("t", 0), ("z", 1)] {
            for (op, v) in [
                (
                    Operator::Plus,
                    IntervalMonthDayNano::new(0, 1, 600_000_000_000),
                ),
                (Operator::Minus, IntervalMonthDayNano::new(0, 0, 5_000_000)),
                (Operator::Plus, IntervalMonthDayNano::new(1, 0, 0)),
            ] {
                let lit: Arc<dyn PhysicalExpr> =
                    Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(v))));
                let sum: Arc<dyn PhysicalExpr> =
                    Arc::new(BinaryExpr::new(Arc::new(Column::new(col, idx)), op, lit));
                let fast = specialize(Arc::clone(&sum)).unwrap();
                let want = sum.evaluate(&batch).unwrap().into_array(4).unwrap();
                let got = fast.evaluate(&batch).unwrap().into_array(4).unwrap();
                assert_eq!(&got, &want, "{col} {op} {v:?}");
                assert_eq!(
                    (fast.as_ref() as &dyn Any).is::<TimeShift>(),
                    v.months == 0,
                    "{fast}"
                );
            }
        }
    }
}
