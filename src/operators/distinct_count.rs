//! `count(DISTINCT x)` as a [`GroupsAccumulator`], for any argument type.
//!
//! DataFusion computes distinct counts per group with one row accumulator (a hash set) per group
//! behind an adapter. A window over card ids has hundreds of thousands of groups with a handful of
//! values each, and allocating a hash set per group dominated the hop operator's profile. Here the
//! values of a whole table are interned once (Arrow row format → dense id), and each group keeps a
//! small sorted vector of ids. The state is DataFusion's shape, one list of the group's values
//! per group, with the values dictionary-encoded over the table's distinct values: merging a
//! pane into a window then interns each distinct value once rather than once per group holding
//! it (card_velocity's operator +10–16 %). Plain lists (DataFusion's, older snapshots) merge too.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int32Array, Int64Array, ListArray,
    StringArray, StringBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use hashbrown::{DefaultHashBuilder, HashTable};

/// How values become the bytes they are interned by: a string's own bytes (distinct strings are
/// distinct bytes), or Arrow's row format for any other type. Shared with the session window's
/// distinct counts.
pub(super) enum Encoding {
    Utf8,
    Rows(RowConverter),
}

impl Encoding {
    /// The encoding of values of `data_type`.
    pub(super) fn new(data_type: &DataType) -> Result<Self> {
        Ok(match data_type {
            DataType::Utf8 => Encoding::Utf8,
            _ => Encoding::Rows(RowConverter::new(vec![SortField::new(data_type.clone())])?),
        })
    }

    /// The bytes of each value of `col` (of the encoding's type).
    pub(super) fn keys<'a>(&self, col: &'a ArrayRef) -> Result<Keys<'a>> {
        Ok(match self {
            Encoding::Utf8 => Keys::Utf8(col.as_string::<i32>()),
            Encoding::Rows(c) => Keys::Rows(c.convert_columns(std::slice::from_ref(col))?),
        })
    }

    /// The values whose bytes are `keys`, as an array of the encoding's type.
    pub(super) fn values<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Result<ArrayRef> {
        Ok(match self {
            Encoding::Utf8 => {
                let mut b = StringBuilder::new();
                for k in keys {
                    // Encoded from a string array, so always UTF-8.
                    let s = std::str::from_utf8(k).map_err(|e| {
                        datafusion::error::DataFusionError::Internal(format!(
                            "count(DISTINCT) kept a string that is not UTF-8: {e}"
                        ))
                    })?;
                    b.append_value(s);
                }
                Arc::new(b.finish())
            }
            Encoding::Rows(c) => {
                let parser = c.parser();
                Arc::clone(&c.convert_rows(keys.map(|k| parser.parse(k)))?[0])
            }
        })
    }
}

/// The interning bytes of a column's values.
pub(super) enum Keys<'a> {
    Utf8(&'a StringArray),
    Rows(Rows),
}

impl Keys<'_> {
    pub(super) fn get(&self, i: usize) -> &[u8] {
        match self {
            Keys::Utf8(s) => s.value(i).as_bytes(),
            Keys::Rows(r) => r.row(i).data(),
        }
    }
}

/// Ids a group holds in place before it allocates (as many as fit beside the tag in the space
/// [`IdSet::Many`]'s vector takes anyway).
const FEW: usize = 5;

/// One group's distinct value ids, sorted. Most groups hold a handful — of card_velocity's
/// card-windows 58 % saw one merchant, 28 % two, 10 % three — so up to [`FEW`] are kept in
/// place: a window of a hundred thousand groups does not allocate (and grow) a vector for each
/// group with a second value.
#[derive(Debug, Clone)]
pub(super) enum IdSet {
    /// No value, or one (`u32::MAX`: none).
    One(u32),
    /// Two to [`FEW`]: the first `len` of `ids`.
    Few { len: u8, ids: [u32; FEW] },
    /// More.
    Many(Vec<u32>),
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet::One(u32::MAX)
    }
}

impl IdSet {
    fn insert(&mut self, id: u32) {
        match self {
            IdSet::One(x) if *x == u32::MAX => *x = id,
            IdSet::One(x) if *x == id => {}
            IdSet::One(x) => {
                let (a, b) = if *x < id { (*x, id) } else { (id, *x) };
                *self = IdSet::Few {
                    len: 2,
                    ids: [a, b, 0, 0, 0],
                };
            }
            IdSet::Few { len, ids } => {
                let n = *len as usize;
                let pos = ids[..n].iter().take_while(|x| **x < id).count();
                if pos < n && ids[pos] == id {
                    return;
                }
                if n < FEW {
                    ids.copy_within(pos..n, pos + 1);
                    ids[pos] = id;
                    *len += 1;
                } else {
                    let mut v = Vec::with_capacity(2 * FEW);
                    v.extend_from_slice(&ids[..pos]);
                    v.push(id);
                    v.extend_from_slice(&ids[pos..]);
                    *self = IdSet::Many(v);
                }
            }
            IdSet::Many(v) => {
                if let Err(pos) = v.binary_search(&id) {
                    v.insert(pos, id);
                }
            }
        }
    }

    fn ids(&self) -> &[u32] {
        match self {
            IdSet::One(x) if *x == u32::MAX => &[],
            IdSet::One(x) => std::slice::from_ref(x),
            IdSet::Few { len, ids } => &ids[..*len as usize],
            IdSet::Many(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.ids().len()
    }
}

/// Distinct-count state of every group in a table.
pub(super) struct DistinctCountGroups {
    data_type: DataType,
    encoding: Encoding,
    /// Ids of the interned values, found by the hash of their bytes (kept once, in `bytes`: no
    /// per-value allocation, and foldhash instead of SipHash).
    ids: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The bytes of value `id`: `bytes[offsets[id]..offsets[id + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// Per group, the sorted distinct value ids.
    groups: Vec<IdSet>,
}

impl DistinctCountGroups {
    /// An accumulator for values of `data_type`.
    pub(super) fn new(data_type: DataType) -> Result<Self> {
        let encoding = Encoding::new(&data_type)?;
        Ok(DistinctCountGroups {
            data_type,
            encoding,
            ids: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            bytes: Vec::new(),
            offsets: vec![0],
            groups: Vec::new(),
        })
    }

    fn value(&self, id: u32) -> &[u8] {
        &self.bytes[self.offsets[id as usize]..self.offsets[id as usize + 1]]
    }

    fn keys<'a>(&self, col: &'a ArrayRef) -> Result<Keys<'a>> {
        self.encoding.keys(col)
    }

    fn add(&mut self, group: usize, key: &[u8]) {
        let id = self.intern(key);
        self.add_id(group, id);
    }

    /// The id of `key`, interning it when new.
    fn intern(&mut self, key: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(key);
        let (bytes, offsets) = (&self.bytes, &self.offsets);
        let found = self.ids.find(hash, |id| {
            &bytes[offsets[*id as usize]..offsets[*id as usize + 1]] == key
        });
        match found {
            Some(id) => *id,
            None => {
                let id = (self.offsets.len() - 1) as u32;
                self.bytes.extend_from_slice(key);
                self.offsets.push(self.bytes.len());
                let (bytes, offsets, hasher) = (&self.bytes, &self.offsets, &self.hasher);
                self.ids.insert_unique(hash, id, |id| {
                    hasher.hash_one(&bytes[offsets[*id as usize]..offsets[*id as usize + 1]])
                });
                id
            }
        }
    }

    /// Adds interned value `id` to `group`.
    fn add_id(&mut self, group: usize, id: u32) {
        self.groups[group].insert(id);
    }

    /// How many groups `emit_to` emits.
    fn emitted(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.groups.len(),
            EmitTo::First(n) => n,
        }
    }

    /// Drops the groups `emit_to` emits. Emitting all keeps the vector's capacity: a hop window
    /// table fills up to about as many groups again, and regrowing it by doubling copied a
    /// megabyte per window (3 % of card_velocity's instructions).
    fn drop_groups(&mut self, emit_to: EmitTo) {
        match emit_to {
            EmitTo::All => self.groups.clear(),
            EmitTo::First(n) => {
                self.groups.drain(..n);
            }
        }
        if self.groups.is_empty() {
            // No group refers to an interned value any more: start afresh.
            self.ids.clear();
            self.bytes.clear();
            self.offsets.truncate(1);
        }
    }

    /// Merges a state list whose values are dictionary-encoded (what [`Self::state`] writes):
    /// each distinct value is interned once, then every group's entries map by index.
    fn merge_dictionary(
        &mut self,
        list: &ListArray,
        dict: &DictionaryArray<Int32Type>,
        group_indices: &[usize],
    ) -> Result<()> {
        let values = in_state_type(dict.values(), &self.data_type)?;
        let value_keys = self.keys(&values)?;
        // Our id of each dictionary value (`u32::MAX`: a null value, skipped).
        let ids: Vec<u32> = (0..values.len())
            .map(|i| match values.is_valid(i) {
                true => self.intern(value_keys.get(i)),
                false => u32::MAX,
            })
            .collect();
        drop(value_keys);
        let keys = dict.keys();
        let offsets = list.value_offsets();
        if list.null_count() == 0 && keys.null_count() == 0 {
            // What `state` writes: no null lists, no null entries. Every group's entries are a
            // run of dictionary keys; map each through `ids` without per-entry validity checks.
            let keys = keys.values();
            for (i, &g) in group_indices.iter().enumerate() {
                for k in &keys[offsets[i] as usize..offsets[i + 1] as usize] {
                    match ids.get(*k as usize) {
                        Some(&id) if id != u32::MAX => self.add_id(g, id),
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        for (i, &g) in group_indices.iter().enumerate() {
            if list.is_null(i) {
                continue;
            }
            for k in offsets[i] as usize..offsets[i + 1] as usize {
                if keys.is_valid(k)
                    && let Some(&id) = ids.get(keys.value(k) as usize)
                    && id != u32::MAX
                {
                    self.add_id(g, id);
                }
            }
        }
        Ok(())
    }

    /// The values of `ids`, as an array of the argument's type.
    fn values_of<'a>(&self, ids: impl Iterator<Item = &'a u32>) -> Result<ArrayRef> {
        self.encoding.values(ids.map(|id| self.value(*id)))
    }
}

impl GroupsAccumulator for DistinctCountGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, IdSet::default);
        let col = &in_state_type(&values[0], &self.data_type)?;
        let keys = self.keys(col)?;
        // Logical nulls: `count(DISTINCT NULL)` has an all-NULL argument without a null buffer.
        let nulls = col.logical_nulls();
        for (i, &g) in group_indices.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(i))
                || opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i))
            {
                continue;
            }
            self.add(g, keys.get(i));
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let n = self.emitted(emit_to);
        let counts = Int64Array::from_iter_values(self.groups[..n].iter().map(|g| g.len() as i64));
        self.drop_groups(emit_to);
        Ok(Arc::new(counts))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        // Read the values before taking: taking everything resets the value table.
        let n = self.emitted(emit_to);
        let lens = self.groups[..n].iter().map(IdSet::len);
        let offsets = OffsetBuffer::from_lengths(lens);
        // Each group's values as ids into this table's distinct values: merging the state then
        // interns each distinct value once, not once per group that holds it.
        // (Sized up front: collecting a flattening iterator grew the buffer by doubling.)
        let mut flat_ids = Vec::with_capacity(offsets.last().map_or(0, |l| *l as usize));
        for g in &self.groups[..n] {
            flat_ids.extend(g.ids().iter().map(|id| *id as i32));
        }
        let ids = Int32Array::from(flat_ids);
        let all = (0..(self.offsets.len() - 1) as u32).collect::<Vec<_>>();
        let values = self.values_of(all.iter())?;
        let flat: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(ids, values)?);
        self.drop_groups(emit_to);
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(flat.data_type().clone(), true)),
            offsets,
            flat,
            None,
        )?;
        Ok(vec![Arc::new(list)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, IdSet::default);
        let list = values[0].as_list::<i32>();
        let inner = list.values();
        if let Some(dict) = inner.as_dictionary_opt::<Int32Type>() {
            return self.merge_dictionary(list, dict, group_indices);
        }
        let keys = self.keys(inner)?;
        let offsets = list.value_offsets();
        for (i, &g) in group_indices.iter().enumerate() {
            if list.is_null(i) {
                continue;
            }
            for k in offsets[i] as usize..offsets[i + 1] as usize {
                if !inner.is_null(k) {
                    self.add(g, keys.get(k));
                }
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row becomes a list of its one value (empty when null or filtered out).
        let col = &values[0];
        let keep =
            |i: usize| col.is_valid(i) && opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        let lens = (0..col.len()).map(|i| usize::from(keep(i)));
        let offsets = OffsetBuffer::from_lengths(lens);
        let idx = datafusion::arrow::array::UInt32Array::from_iter_values(
            (0..col.len() as u32).filter(|i| keep(*i as usize)),
        );
        let inner = datafusion::arrow::compute::take(col, &idx, None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(self.data_type.clone(), true)),
            offsets,
            inner,
            None,
        )?;
        Ok(vec![Arc::new(list)])
    }

    fn size(&self) -> usize {
        // O(1) as the trait asks: group vectors are small and counted by their number.
        self.bytes.capacity()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.ids.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.groups.capacity() * (std::mem::size_of::<IdSet>() + 8)
    }
}

/// The argument type of a `count(DISTINCT x)` aggregate, or `None` for any other aggregate.
/// `col` as the type the distinct values are kept in: DataFusion keeps a dictionary argument's
/// values (`count(DISTINCT event_type)` lists strings), so dictionary input is unpacked first.
pub(super) fn in_state_type(col: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    Ok(if col.data_type() == data_type {
        Arc::clone(col)
    } else {
        datafusion::arrow::compute::cast(col, data_type)?
    })
}

pub(super) fn distinct_count_type(agg: &AggregateFunctionExpr) -> Result<Option<DataType>> {
    if agg.fun().name() == "count" && agg.is_distinct() && agg.expressions().len() == 1 {
        // The state is one list of the distinct values; its item type is the argument's type.
        if let [field] = agg.state_fields()?.as_slice()
            && let DataType::List(item) = field.data_type()
        {
            return Ok(Some(item.data_type().clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;

    use super::*;

    #[test]
    fn counts_merges_and_round_trips_state() {
        let mut a = DistinctCountGroups::new(DataType::Utf8).unwrap();
        let v: ArrayRef = Arc::new(StringArray::from(vec![
            Some("x"),
            Some("y"),
            Some("x"),
            None,
            Some("z"),
        ]));
        a.update_batch(&[v], &[0, 0, 1, 1, 0], None, 2).unwrap();
        let state = a.state(EmitTo::All).unwrap();
        let mut b = DistinctCountGroups::new(DataType::Utf8).unwrap();
        b.merge_batch(&state, &[1, 0], 2).unwrap();
        let w: ArrayRef = Arc::new(StringArray::from(vec!["x", "q"]));
        let filter = BooleanArray::from(vec![true, false]);
        b.update_batch(&[w], &[1, 1], Some(&filter), 2).unwrap();
        let counts = b.evaluate(EmitTo::All).unwrap();
        let counts = counts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        // group 1 got group 0's {x, y, z} plus x (filtered q out); group 0 got group 1's {x}.
        assert_eq!(counts.values(), &[1, 3]);
    }

    #[test]
    fn merges_plain_and_dictionary_state_alike() {
        // `state` writes dictionary-encoded lists; state from DataFusion's own accumulator (and
        // snapshots of older versions) holds plain lists. Both merge to the same counts.
        let mut a = DistinctCountGroups::new(DataType::Utf8).unwrap();
        let v: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "x", "z", "y"]));
        a.update_batch(&[v], &[0, 0, 1, 1, 2], None, 3).unwrap();
        let dict_state = a.state(EmitTo::All).unwrap();
        assert!(matches!(
            dict_state[0].as_list::<i32>().values().data_type(),
            DataType::Dictionary(_, _)
        ));
        let plain = datafusion::arrow::compute::cast(
            &dict_state[0],
            &DataType::new_list(DataType::Utf8, true),
        )
        .unwrap();
        let mut counts = Vec::new();
        for state in [dict_state, vec![plain]] {
            let mut b = DistinctCountGroups::new(DataType::Utf8).unwrap();
            let w: ArrayRef = Arc::new(StringArray::from(vec!["z", "q"]));
            b.update_batch(&[w], &[0, 2], None, 3).unwrap();
            b.merge_batch(&state, &[0, 1, 2], 3).unwrap();
            let c = b.evaluate(EmitTo::All).unwrap();
            counts.push(
                c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone(),
            );
        }
        assert_eq!(counts[0].values(), &[3, 2, 2]);
        assert_eq!(counts[0], counts[1]);
    }

    #[test]
    fn id_sets_stay_sorted_and_distinct_in_place_and_beyond() {
        use rand::{Rng, SeedableRng};
        assert!(
            std::mem::size_of::<IdSet>() <= 32,
            "no bigger than a vector and a tag"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let mut set = IdSet::default();
            let mut model = std::collections::BTreeSet::new();
            for _ in 0..rng.random_range(0..20) {
                let id = rng.random_range(0..12u32);
                set.insert(id);
                model.insert(id);
                assert_eq!(
                    set.ids(),
                    model.iter().copied().collect::<Vec<_>>().as_slice()
                );
            }
            assert_eq!(matches!(set, IdSet::Many(_)), model.len() > FEW);
        }
    }

    #[test]
    fn dictionary_state_with_nulls_skips_them() {
        // Three groups' lists over values [x, null, y]: [x, <null key>, y], a null list, and
        // [the null value, y]. Nulls at any level are not values.
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("y")]));
        let keys = Int32Array::from(vec![Some(0), None, Some(2), Some(1), Some(2)]);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(dict.data_type().clone(), true)),
            OffsetBuffer::from_lengths([3, 0, 2]),
            Arc::new(dict),
            Some(vec![true, false, true].into()),
        )
        .unwrap();
        let mut a = DistinctCountGroups::new(DataType::Utf8).unwrap();
        a.merge_batch(&[Arc::new(list)], &[0, 1, 2], 3).unwrap();
        let counts = a.evaluate(EmitTo::All).unwrap();
        let counts = counts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(counts.values(), &[2, 0, 1]);
    }

    #[test]
    fn agrees_with_hash_sets_for_strings_and_other_types() {
        // Random batches into random groups, half merged through state into a second
        // accumulator: per-group counts equal hash sets', for the string fast path and the
        // row-format path alike.
        use datafusion::arrow::array::Int64Array;
        use rand::{Rng, SeedableRng};
        use std::collections::{HashMap, HashSet};
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for strings in [true, false] {
            let dt = if strings {
                DataType::Utf8
            } else {
                DataType::Int64
            };
            let mut a = DistinctCountGroups::new(dt.clone()).unwrap();
            let mut b = DistinctCountGroups::new(dt.clone()).unwrap();
            let mut model: HashMap<usize, HashSet<Option<i64>>> = HashMap::new();
            for _ in 0..40 {
                let n = rng.random_range(1..50);
                let vals: Vec<Option<i64>> = (0..n)
                    .map(|_| rng.random_bool(0.9).then(|| rng.random_range(0..30)))
                    .collect();
                let groups: Vec<usize> = (0..n).map(|_| rng.random_range(0..6)).collect();
                let col: ArrayRef = if strings {
                    Arc::new(StringArray::from(
                        vals.iter()
                            .map(|v| v.map(|x| format!("m_{x}")))
                            .collect::<Vec<_>>(),
                    ))
                } else {
                    Arc::new(Int64Array::from(vals.clone()))
                };
                a.update_batch(&[col], &groups, None, 6).unwrap();
                for (v, g) in vals.iter().zip(&groups) {
                    if v.is_some() {
                        model.entry(*g).or_default().insert(*v);
                    }
                }
                if rng.random_bool(0.3) {
                    let state = a.state(EmitTo::All).unwrap();
                    b.merge_batch(&state, &[0, 1, 2, 3, 4, 5], 6).unwrap();
                }
            }
            let state = a.state(EmitTo::All).unwrap();
            b.merge_batch(&state, &[0, 1, 2, 3, 4, 5], 6).unwrap();
            let counts = b.evaluate(EmitTo::All).unwrap();
            let counts = counts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for g in 0..6 {
                let want = model.get(&g).map_or(0, HashSet::len) as i64;
                assert_eq!(counts.value(g), want, "strings={strings} group {g}");
            }
        }
    }
}
