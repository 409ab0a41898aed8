//! Comparisons of code columns (`event_type`, `status`) with string literals, on their codes.
//!
//! Those columns are dictionary-encoded (see `schema`). Arrow compares a dictionary column with
//! a literal by comparing its values, then gathering one result bit per row by key — a gather
//! that was an eighth of the settlement operator. Here `event_type = 'capture'`, `<>`, and OR
//! chains of them over one column (how `IN (…)` arrives after simplification) become one
//! [`CodeMatch`]: which dictionary entries match is decided per batch (a handful of strings),
//! then each row tests its key's bit.

use std::any::Any;
use std::fmt::{self, Display, Formatter};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Int8Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_plan::PhysicalExpr;

/// `column IN (strings)` (or `NOT IN` when negated) on an `Int8`-keyed dictionary column; null
/// where the column is null, as the comparison it replaces.
#[derive(Debug)]
pub(super) struct CodeMatch {
    /// The column, as an expression: a child, so re-indexing passes (projections) reach it.
    column: Arc<dyn PhysicalExpr>,
    strings: Vec<String>,
    negated: bool,
    /// The expression it replaces, evaluated instead for a batch whose column is not such a
    /// dictionary (the schema says it is; this keeps any other input correct). Also a child.
    original: Arc<dyn PhysicalExpr>,
}

// Equality and hashing leave out `original`: it is the same comparison, written the long way.
impl PartialEq for CodeMatch {
    fn eq(&self, other: &Self) -> bool {
        self.column.as_ref() == other.column.as_ref()
            && (&self.strings, self.negated) == (&other.strings, other.negated)
    }
}

impl Eq for CodeMatch {}

impl std::hash::Hash for CodeMatch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.as_ref().dyn_hash(state);
        (&self.strings, self.negated).hash(state);
    }
}

impl CodeMatch {
    /// Bit `k` set when dictionary entry `k` matches.
    fn entry_bits(&self, values: &dyn Array) -> Option<u64> {
        let values = values.as_string_opt::<i32>()?;
        if values.len() > 64 {
            return None;
        }
        let mut bits = 0u64;
        for (k, v) in values.iter().enumerate() {
            let hit = v.is_some_and(|v| self.strings.iter().any(|s| s == v));
            if hit != self.negated && v.is_some() {
                bits |= 1 << k;
            }
        }
        Some(bits)
    }
}

impl Display for CodeMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.fmt_sql(f)
    }
}

impl PhysicalExpr for CodeMatch {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let ColumnarValue::Array(col) = self.column.evaluate(batch)? else {
            return self.original.evaluate(batch);
        };
        let Some(dict) = col.as_dictionary_opt::<Int8Type>() else {
            return self.original.evaluate(batch);
        };
        let Some(bits) = self.entry_bits(dict.values().as_ref()) else {
            return self.original.evaluate(batch);
        };
        let keys = dict.keys();
        let codes = keys.values();
        // A null row's key is arbitrary: its bit is masked by the null buffer below.
        let values =
            BooleanBuffer::collect_bool(codes.len(), |i| (bits >> (codes[i] as u8 & 63)) & 1 == 1);
        // Null where the key is, or points at a null entry (the comparison's logical nulls).
        let nulls = if dict.values().null_count() > 0 {
            dict.logical_nulls()
        } else {
            keys.nulls().cloned()
        };
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            values, nulls,
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column, &self.original]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [column, original]: [Arc<dyn PhysicalExpr>; 2] = children.try_into().map_err(|_| {
            datafusion::error::DataFusionError::Internal("CodeMatch has two children".into())
        })?;
        Ok(Arc::new(CodeMatch {
            column,
            strings: self.strings.clone(),
            negated: self.negated,
            original,
        }))
    }

    fn fmt_sql(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let not = if self.negated { "NOT " } else { "" };
        write!(f, "{} {not}IN ({:?})", self.column, self.strings)
    }
}

/// `expr` with every comparison of an `Int8`-keyed dictionary column to string literals turned
/// into a [`CodeMatch`].
pub(super) fn specialize(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    let expr = expr
        .transform_up(|e| Ok(rewrite(&e).map_or(Transformed::no(e), Transformed::yes)))?
        .data;
    // And timestamps shifted by whole milliseconds, on the integers.
    super::time_shift::specialize(expr)
}

fn rewrite(e: &Arc<dyn PhysicalExpr>) -> Option<Arc<dyn PhysicalExpr>> {
    let b = (e.as_ref() as &dyn Any).downcast_ref::<BinaryExpr>()?;
    match b.op() {
        Operator::Eq | Operator::NotEq => {
            let (column, literal) = column_and_literal(b.left(), b.right())
                .or_else(|| column_and_literal(b.right(), b.left()))?;
            let column: Arc<dyn PhysicalExpr> = Arc::new(column);
            Some(Arc::new(CodeMatch {
                column,
                strings: vec![literal],
                negated: *b.op() == Operator::NotEq,
                original: Arc::clone(e),
            }))
        }
        // `c = 'a' OR c = 'b'`, both sides already rewritten: one match over both strings.
        Operator::Or => {
            let l = (b.left().as_ref() as &dyn Any).downcast_ref::<CodeMatch>()?;
            let r = (b.right().as_ref() as &dyn Any).downcast_ref::<CodeMatch>()?;
            if l.negated || r.negated || l.column.as_ref() != r.column.as_ref() {
                return None;
            }
            let mut strings = l.strings.clone();
            strings.extend(r.strings.iter().cloned());
            Some(Arc::new(CodeMatch {
                column: Arc::clone(&l.column),
                strings,
                negated: false,
                original: Arc::clone(e),
            }))
        }
        _ => None,
    }
}

/// The column and string of `column <op> literal` when the literal is an `Int8`-keyed
/// dictionary string (the type the planner coerces to for a dictionary column).
fn column_and_literal(
    c: &Arc<dyn PhysicalExpr>,
    l: &Arc<dyn PhysicalExpr>,
) -> Option<(Column, String)> {
    let column = (c.as_ref() as &dyn Any).downcast_ref::<Column>()?;
    let literal = (l.as_ref() as &dyn Any).downcast_ref::<Literal>()?;
    match literal.value() {
        ScalarValue::Dictionary(key, v) if key.as_ref() == &DataType::Int8 => match v.as_ref() {
            ScalarValue::Utf8(Some(s)) => Some((column.clone(), s.clone())),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int8Array, StringArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, lit};
    use rand::{Rng, SeedableRng};

    use super::*;

    fn dict_literal(s: &str) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::Dictionary(
            Box::new(DataType::Int8),
            Box::new(ScalarValue::from(s)),
        ))
    }

    #[test]
    fn agrees_with_the_comparisons_it_replaces() {
        // Random dictionaries (any entry order, unused and null entries), null keys, and
        // `=`, `<>` and OR chains: the specialised expression returns exactly what Arrow does.
        let dict_type = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("c", dict_type, true)]));
        let words = ["a", "bb", "capture", "d", "refund"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for _ in 0..200 {
            let mut entries: Vec<Option<&str>> = words.iter().map(|w| Some(*w)).collect();
            entries.truncate(rng.random_range(1..=words.len()));
            if rng.random_bool(0.2) {
                entries.push(None);
            }
            let n = rng.random_range(0..100);
            let keys = Int8Array::from_iter((0..n).map(|_| {
                rng.random_bool(0.8)
                    .then(|| rng.random_range(0..entries.len()) as i8)
            }));
            let values: ArrayRef = Arc::new(StringArray::from(entries.clone()));
            let column: ArrayRef = Arc::new(DictionaryArray::new(keys, values));
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).unwrap();
            let c = col("c", &schema).unwrap();
            let pick = |rng: &mut rand::rngs::StdRng| dict_literal(words[rng.random_range(0..5)]);
            let eq = binary(Arc::clone(&c), Operator::Eq, pick(&mut rng), &schema).unwrap();
            let ne = binary(pick(&mut rng), Operator::NotEq, Arc::clone(&c), &schema).unwrap();
            let eq2 = binary(Arc::clone(&c), Operator::Eq, pick(&mut rng), &schema).unwrap();
            let or = binary(Arc::clone(&eq), Operator::Or, eq2, &schema).unwrap();
            for expr in [eq, ne, or] {
                let fast = specialize(Arc::clone(&expr)).unwrap();
                assert!(
                    (fast.as_ref() as &dyn Any).is::<CodeMatch>(),
                    "{expr} was not specialised"
                );
                let want = expr.evaluate(&batch).unwrap().into_array(n).unwrap();
                let got = fast.evaluate(&batch).unwrap().into_array(n).unwrap();
                assert_eq!(got.as_ref(), want.as_ref(), "{expr} over {entries:?}");
            }
        }
    }

    #[test]
    fn a_plain_string_column_takes_the_original_path() {
        let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8, true)]));
        let c = col("c", &schema).unwrap();
        let m = CodeMatch {
            column: Arc::clone(&c),
            strings: vec!["x".into()],
            negated: false,
            original: binary(c, Operator::Eq, lit("x"), &schema).unwrap(),
        };
        let column: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("y")]));
        let batch = RecordBatch::try_new(schema, vec![column]).unwrap();
        let got = m.evaluate(&batch).unwrap().into_array(3).unwrap();
        assert_eq!(
            got.as_boolean(),
            &BooleanArray::from(vec![Some(true), None, Some(false)])
        );
    }
}
