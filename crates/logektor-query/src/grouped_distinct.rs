//! `count(DISTINCT text)` per group, with canonical UUID text kept as 128-bit numbers.
//!
//! DataFusion has a groups accumulator for `count(DISTINCT)` of numbers only; for text it
//! wraps one row accumulator per group in its `GroupsAccumulatorAdapter`, which sorts each
//! batch's rows by group, copies every group's rows out (`take`) and feeds each group's set
//! separately, which hashes the string's 36 bytes and compares them with its stored copy. In a
//! profile of the `events` report (`count(*)` and `count(DISTINCT visitor)` per day and event
//! name) that was a quarter of the CPU.
//!
//! [`GroupedDistinct`] keeps a set of numbers per group: a visitor id in canonical UUID text
//! goes in as its 128 bits (see [`uuid_bits`]), a string of up to 12 bytes as its inline Arrow
//! view (length and bytes), any longer one as its number in an interner. A string is exactly
//! one of the three, so a group's count is the size of its sets. Rows go into the sets in
//! group order (a counting sort of the batch, while there are at most [`MAX_SORTED_GROUPS`]
//! groups), so each group's set is filled while it is in the cache. A group's UUIDs past
//! [`SPLIT_AT`] are kept in 64 sets chosen by a hash of the bits, and a batch's go in part by
//! part: a group can hold ~200,000 ids (`events_per_day` on the benchmark's data: a day's
//! visitors of one event type), a table of several MB that one insert after another missed the
//! cache in (set inserts were 23.5% of that report's CPU, 18.6% in parts; server CPU per run
//! 1,685 → 1,593 ms, alternating, mean of 6; reports with smaller groups unchanged). The state
//! is DataFusion's (a list of the group's strings per group), so partial states pass to any
//! `count(DISTINCT)` accumulator and back.
//!
//! Measured on the 10M-event benchmark table, server CPU per report run against DataFusion's
//! adapter: `events_per_day` 1,467–1,497 → 1,190–1,267 ms, `active_users` 3,370–3,433 →
//! 2,953–3,113, `events` 1,013–1,067 → 923–1,010, `utm` 947–973 → 920–923. A first version
//! with one set of `(group, value)` pairs for all groups (DataFusion's design for numbers) was
//! 20–70% slower than the adapter: every insert missed the cache.
//!
//! [`crate::distinct_views::DistinctViews`] puts it in place of every grouped
//! `count(DISTINCT text)`, also of those DataFusion would rewrite into a two-level `GROUP BY`
//! (see there for the measurements).

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringViewArray,
    StringViewBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use crate::distinct_views::{push_uuid_text, uuid_bits};

/// The sets of a grouped `count(DISTINCT text)` (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct GroupedDistinct {
    groups: Vec<GroupSet>,
    interned: Interner,
    /// Scratch of `update_batch`: each row's key, and the rows in group order.
    keys: Vec<Option<Key>>,
    starts: Vec<u32>,
    order: Vec<u32>,
    /// Scratch of `update_batch`: one group's UUIDs, the same sorted by part, the parts' counts.
    run: Vec<u128>,
    sorted: Vec<u128>,
    counts: Vec<u32>,
}

/// The distinct values of one group.
#[derive(Debug, Default)]
struct GroupSet {
    /// The bits of canonical UUID texts: none until the first, one set up to [`SPLIT_AT`], then
    /// [`UUID_PARTS`] sets chosen by [`part`].
    uuids: Vec<hashbrown::HashSet<u128>>,
    /// Every other string as a [`Key::Other`].
    others: hashbrown::HashSet<u128>,
}

/// Parts of a group's UUID set. A group of a day's visitors can hold ~200,000 ids, several MB
/// of table; a batch's ids inserted part by part touch one part (~60 KB) at a time.
const UUID_PARTS: usize = 64;

/// UUIDs a group's single set holds before it is split into [`UUID_PARTS`]: such a table is
/// still in the cache, and queries with tens of thousands of small groups (visitors per page)
/// keep one set, not 64, per group. (Small in the unit tests, so that they split.)
#[cfg(not(test))]
const SPLIT_AT: usize = 8_192;
#[cfg(test)]
const SPLIT_AT: usize = 64;

/// The part of a group's UUID set that holds `bits` (UUIDv7's leading bits are a time, so the
/// part mixes all of them).
fn part(bits: u128) -> usize {
    let mixed = ((bits as u64) ^ ((bits >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - UUID_PARTS.trailing_zeros())) as usize
}

impl GroupSet {
    fn insert(&mut self, key: Key) {
        match key {
            Key::Uuid(bits) => self.insert_uuid(bits),
            Key::Other(key) => {
                self.others.insert(key);
            }
        }
    }

    fn insert_uuid(&mut self, bits: u128) {
        match self.uuids.len() {
            0 => self.uuids.push(hashbrown::HashSet::from_iter([bits])),
            1 => {
                self.uuids[0].insert(bits);
                if self.uuids[0].len() > SPLIT_AT {
                    let whole = std::mem::take(&mut self.uuids[0]);
                    self.uuids = (0..UUID_PARTS).map(|_| Default::default()).collect();
                    for bits in whole {
                        self.uuids[part(bits)].insert(bits);
                    }
                }
            }
            _ => {
                self.uuids[part(bits)].insert(bits);
            }
        }
    }

    /// Inserts `bits`; into a split set with many of them, sorted by [`part`] (in `sorted`)
    /// first.
    fn insert_uuids(&mut self, bits: &[u128], sorted: &mut Vec<u128>, counts: &mut Vec<u32>) {
        if self.uuids.len() < UUID_PARTS || bits.len() < 4 * UUID_PARTS {
            for &bits in bits {
                self.insert_uuid(bits);
            }
            return;
        }
        counts.clear();
        counts.resize(UUID_PARTS + 1, 0);
        for &bits in bits {
            counts[part(bits) + 1] += 1;
        }
        for at in 0..UUID_PARTS {
            counts[at + 1] += counts[at];
        }
        sorted.clear();
        sorted.resize(bits.len(), 0);
        for &bits in bits {
            let at = &mut counts[part(bits)];
            sorted[*at as usize] = bits;
            *at += 1;
        }
        for &bits in sorted.iter() {
            self.insert_uuid(bits);
        }
    }

    fn len(&self) -> usize {
        self.uuids
            .iter()
            .map(hashbrown::HashSet::len)
            .sum::<usize>()
            + self.others.len()
    }
}

/// A string as a number: canonical UUID text as its bits; any other string of up to 12 bytes
/// as its length and its bytes, zero-padded (the form of an inline Arrow view, and never
/// more than 12 in its low 32 bits); a longer one as its number in the [`Interner`] with
/// `u32::MAX` in the low 32 bits.
#[derive(Debug, Clone, Copy)]
enum Key {
    Uuid(u128),
    Other(u128),
}

/// Groups counted in batch order rather than group order beyond this many. The counting sort
/// clears and sums a table of one entry per group for every batch, which with many more groups
/// than a batch's rows (8,192) costs more than the rows themselves; half a batch is a bound
/// chosen on that reasoning, not a measured optimum (the reports measured have up to ~100
/// groups; visitors per page path has 30,000 and takes the batch-order path).
const MAX_SORTED_GROUPS: usize = 4_096;

impl GroupedDistinct {
    fn key(&mut self, text: &[u8]) -> Result<Key> {
        if text.len() <= 12 {
            let mut view = [0u8; 16];
            view[..4].copy_from_slice(&(text.len() as u32).to_le_bytes());
            view[4..4 + text.len()].copy_from_slice(text);
            return Ok(Key::Other(u128::from_le_bytes(view)));
        }
        if let Some(bits) = uuid_bits(text) {
            return Ok(Key::Uuid(bits));
        }
        let id = self.interned.intern(text)?;
        Ok(Key::Other((u128::from(id) << 32) | u128::from(u32::MAX)))
    }

    /// The text of an [`Key::Other`], appended to `out`.
    fn push_other(&self, key: u128, out: &mut Vec<u8>) {
        let length = key as u32;
        if length == u32::MAX {
            out.extend_from_slice(self.interned.text((key >> 32) as u32).as_bytes());
        } else {
            out.extend_from_slice(&(key >> 32).to_le_bytes()[..length as usize]);
        }
    }

    fn emitted(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.groups.len(),
            EmitTo::First(groups) => groups.min(self.groups.len()),
        }
    }
}

impl GroupsAccumulator for GroupedDistinct {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let strings = argument(values)?;
        if self.groups.len() < total_num_groups {
            self.groups.resize_with(total_num_groups, GroupSet::default);
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        for row in 0..strings.len() {
            keys.push(if passes(opt_filter, row) && strings.is_valid(row) {
                Some(self.key(strings.value(row).as_bytes())?)
            } else {
                None
            });
        }
        if total_num_groups > MAX_SORTED_GROUPS {
            for (&group, key) in group_indices.iter().zip(&keys) {
                if let Some(key) = *key {
                    self.groups[group].insert(key);
                }
            }
        } else {
            // Rows in group order (a counting sort), so that each group's set is filled in
            // one go while it is in the cache.
            self.starts.clear();
            self.starts.resize(total_num_groups + 1, 0);
            for &group in group_indices {
                self.starts[group + 1] += 1;
            }
            for group in 0..total_num_groups {
                self.starts[group + 1] += self.starts[group];
            }
            self.order.clear();
            self.order.resize(group_indices.len(), 0);
            for (row, &group) in group_indices.iter().enumerate() {
                let at = &mut self.starts[group];
                self.order[*at as usize] = row as u32;
                *at += 1;
            }
            // Each group's UUIDs go in part by part.
            let mut run = std::mem::take(&mut self.run);
            let mut sorted = std::mem::take(&mut self.sorted);
            let mut counts = std::mem::take(&mut self.counts);
            let mut current = None;
            for &row in &self.order {
                let group = group_indices[row as usize];
                if current != Some(group) {
                    if let Some(previous) = current {
                        self.groups[previous].insert_uuids(&run, &mut sorted, &mut counts);
                    }
                    run.clear();
                    current = Some(group);
                }
                match keys[row as usize] {
                    Some(Key::Uuid(bits)) => run.push(bits),
                    Some(other) => self.groups[group].insert(other),
                    None => {}
                }
            }
            if let Some(previous) = current {
                self.groups[previous].insert_uuids(&run, &mut sorted, &mut counts);
            }
            run.clear();
            self.run = run;
            self.sorted = sorted;
            self.counts = counts;
        }
        self.keys = keys;
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.emitted(emit_to);
        let counts = self
            .groups
            .drain(..groups)
            .map(|set| set.len() as i64)
            .collect::<Int64Array>();
        Ok(Arc::new(counts))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.emitted(emit_to);
        let emitted: Vec<GroupSet> = self.groups.drain(..groups).collect();
        let mut offsets = Vec::with_capacity(emitted.len() + 1);
        offsets.push(0i32);
        let mut end = 0usize;
        for set in &emitted {
            end += set.len();
            let Ok(end) = i32::try_from(end) else {
                return internal_err!("a count(DISTINCT) state of more than 2^31 strings");
            };
            offsets.push(end);
        }
        let mut values = StringViewBuilder::with_capacity(end);
        let mut text = Vec::with_capacity(64);
        for set in emitted {
            for bits in set.uuids.into_iter().flatten() {
                text.clear();
                push_uuid_text(bits, &mut text);
                values.append_value(std::str::from_utf8(&text).expect("hex and hyphens"));
            }
            for key in set.others {
                text.clear();
                self.push_other(key, &mut text);
                // Whole strings of `Utf8View` arrays: UTF-8.
                values.append_value(std::str::from_utf8(&text).expect("UTF-8 text"));
            }
        }
        let lists = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Utf8View, true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(values.finish()),
            None,
        )?;
        Ok(vec![Arc::new(lists)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let [state] = values else {
            return internal_err!("count(DISTINCT) has one state column");
        };
        let Some(lists) = state.as_list_opt::<i32>() else {
            return internal_err!("count(DISTINCT) state is a list, not {}", state.data_type());
        };
        let Some(strings) = lists.values().as_string_view_opt() else {
            return internal_err!("count_distinct_views state holds Utf8View");
        };
        if self.groups.len() < total_num_groups {
            self.groups.resize_with(total_num_groups, GroupSet::default);
        }
        let offsets = lists.value_offsets();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            for at in offsets[row] as usize..offsets[row + 1] as usize {
                if strings.is_valid(at) {
                    let key = self.key(strings.value(at).as_bytes())?;
                    self.groups[group].insert(key);
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
        let strings = argument(values)?;
        // Each row's own list: its value, or nothing when it is NULL or filtered out.
        let kept: Vec<usize> = (0..strings.len())
            .filter(|&row| strings.is_valid(row) && passes(opt_filter, row))
            .collect();
        let mut offsets = Vec::with_capacity(strings.len() + 1);
        offsets.push(0i32);
        let mut next = kept.iter().peekable();
        let mut end = 0i32;
        for row in 0..strings.len() {
            if next.next_if(|&&kept| kept == row).is_some() {
                end += 1;
            }
            offsets.push(end);
        }
        let indices = arrow::array::UInt32Array::from_iter_values(kept.iter().map(|&r| r as u32));
        let lists = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Utf8View, true)),
            OffsetBuffer::new(offsets.into()),
            arrow::compute::take(strings, &indices, None)?,
            None,
        )?;
        Ok(vec![Arc::new(lists)])
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.groups.capacity() * size_of::<GroupSet>()
            + self
                .groups
                .iter()
                .map(|set| {
                    set.uuids
                        .iter()
                        .map(hashbrown::HashSet::allocation_size)
                        .sum::<usize>()
                        + set.uuids.capacity() * size_of::<hashbrown::HashSet<u128>>()
                        + set.others.allocation_size()
                })
                .sum::<usize>()
            + self.interned.size()
            + self.keys.capacity() * size_of::<Option<Key>>()
            + (self.starts.capacity() + self.order.capacity() + self.counts.capacity())
                * size_of::<u32>()
            + (self.run.capacity() + self.sorted.capacity()) * size_of::<u128>()
    }
}

/// The one `Utf8View` argument of `count_distinct_views`.
fn argument(values: &[ArrayRef]) -> Result<&StringViewArray> {
    let [column] = values else {
        return internal_err!("count(DISTINCT) takes one argument");
    };
    match column.as_string_view_opt() {
        Some(strings) => Ok(strings),
        None => internal_err!(
            "count_distinct_views takes Utf8View, not {}",
            column.data_type()
        ),
    }
}

/// Whether `row` passes the aggregate's `FILTER` (NULL does not).
fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|filter| filter.is_valid(row) && filter.value(row))
}

/// Strings stored once each, numbered in the order they came.
#[derive(Debug, Default)]
struct Interner {
    table: hashbrown::HashTable<u32>,
    /// Each string's end in `bytes` (it starts where the previous one ends).
    ends: Vec<usize>,
    bytes: Vec<u8>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Interner {
    fn intern(&mut self, text: &[u8]) -> Result<u32> {
        let Self {
            table,
            ends,
            bytes,
            hasher,
        } = self;
        let stored = |id: u32| {
            let id = id as usize;
            let start = if id == 0 { 0 } else { ends[id - 1] };
            &bytes[start..ends[id]]
        };
        let hash = hasher.hash_one(text);
        if let Some(&id) = table.find(hash, |&id| stored(id) == text) {
            return Ok(id);
        }
        let Ok(id) = u32::try_from(ends.len()) else {
            return internal_err!("more than 2^32 distinct strings in one count(DISTINCT)");
        };
        bytes.extend_from_slice(text);
        ends.push(bytes.len());
        let rehash = |&id: &u32| {
            let id = id as usize;
            let start = if id == 0 { 0 } else { ends[id - 1] };
            hasher.hash_one(&bytes[start..ends[id]])
        };
        table.insert_unique(hash, id, rehash);
        Ok(id)
    }

    fn text(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        // Only whole strings of a `Utf8View` array go in.
        std::str::from_utf8(&self.bytes[start..self.ends[id]]).expect("interned text is UTF-8")
    }

    fn size(&self) -> usize {
        self.table.allocation_size()
            + self.ends.capacity() * size_of::<usize>()
            + self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use arrow::array::StringViewArray;

    use super::*;

    fn value(i: usize) -> Option<String> {
        match i % 8 {
            0 => None,
            1 => Some(String::new()),
            2 => Some(format!("user-{}", i % 53)),
            7 => Some(format!("a-longer-user-id-{}", i % 41)),
            // Uppercase hex: UUID-shaped, but not canonical text, so an interned string.
            3 => Some(format!("{:08X}-0000-4000-8000-{:012x}", i % 31, i % 17)),
            _ => Some(format!("{:08x}-0000-4000-8000-{:012x}", i % 211, i % 89)),
        }
    }

    fn batch(rows: usize, seed: usize) -> (ArrayRef, Vec<usize>) {
        let values: Vec<Option<String>> = (0..rows).map(|r| value(r * 31 + seed)).collect();
        let groups = (0..rows).map(|r| (r * 7 + seed) % 5).collect();
        (Arc::new(StringViewArray::from(values)), groups)
    }

    /// What a set of `(group, string)` pairs counts per group.
    fn truth(batches: &[(ArrayRef, Vec<usize>)]) -> BTreeMap<usize, i64> {
        let mut seen = HashSet::new();
        let mut counts = BTreeMap::new();
        for (values, groups) in batches {
            let values = values.as_string_view();
            for (row, &group) in groups.iter().enumerate() {
                counts.entry(group).or_insert(0);
                if values.is_valid(row) && seen.insert((group, values.value(row).to_string())) {
                    *counts.get_mut(&group).unwrap() += 1;
                }
            }
        }
        counts
    }

    fn counts(accumulator: &mut GroupedDistinct, emit_to: EmitTo) -> Vec<i64> {
        accumulator
            .evaluate(emit_to)
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn counts_what_a_set_of_pairs_counts_through_partial_states() {
        // 6,000 rows in 5 groups: ~450 canonical UUIDs per group and batch, so they go into
        // the parts sorted (`GroupSet::insert_uuids`), and fewer in the merges' inserts.
        let batches: Vec<_> = (0..6).map(|seed| batch(6_000, seed)).collect();
        let want: Vec<i64> = truth(&batches).into_values().collect();

        let mut whole = GroupedDistinct::default();
        for (values, groups) in &batches {
            whole
                .update_batch(std::slice::from_ref(values), groups, None, 5)
                .unwrap();
        }
        assert_eq!(counts(&mut whole, EmitTo::All), want);

        // Two partial accumulators, one emitting its state in two parts, merged into a third.
        let mut final_ = GroupedDistinct::default();
        for part in batches.chunks(3) {
            let mut partial = GroupedDistinct::default();
            for (values, groups) in part {
                partial
                    .update_batch(std::slice::from_ref(values), groups, None, 5)
                    .unwrap();
            }
            let [first] = partial.state(EmitTo::First(2)).unwrap().try_into().unwrap();
            let [rest] = partial.state(EmitTo::All).unwrap().try_into().unwrap();
            assert_eq!((first.len(), rest.len()), (2, 3));
            final_.merge_batch(&[first], &[0, 1], 5).unwrap();
            final_.merge_batch(&[rest], &[2, 3, 4], 5).unwrap();
        }
        let mut got = counts(&mut final_, EmitTo::First(3));
        got.extend(counts(&mut final_, EmitTo::All));
        assert_eq!(got, want);
    }

    #[test]
    fn a_filter_and_nulls_leave_rows_out() {
        let values: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("00000000-0000-4000-8000-000000000001"),
            Some("00000000-0000-4000-8000-000000000001"),
            Some("00000000-0000-4000-8000-000000000002"),
            None,
            Some("x"),
            Some("x"),
        ]));
        let filter = BooleanArray::from(vec![
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(true),
        ]);
        let mut accumulator = GroupedDistinct::default();
        accumulator
            .update_batch(&[values], &[0, 1, 0, 0, 1, 1], Some(&filter), 3)
            .unwrap();
        assert_eq!(counts(&mut accumulator, EmitTo::All), [1, 2, 0]);
    }

    #[test]
    fn converted_rows_merge_as_their_values() {
        let (values, groups) = batch(3_000, 4);
        let filter = BooleanArray::from_iter((0..3_000).map(|row| Some(row % 4 != 0)));
        let mut direct = GroupedDistinct::default();
        direct
            .update_batch(std::slice::from_ref(&values), &groups, Some(&filter), 5)
            .unwrap();
        let mut merged = GroupedDistinct::default();
        let [state] = merged
            .convert_to_state(std::slice::from_ref(&values), Some(&filter))
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(state.len(), 3_000);
        merged.merge_batch(&[state], &groups, 5).unwrap();
        assert_eq!(
            counts(&mut merged, EmitTo::All),
            counts(&mut direct, EmitTo::All)
        );
    }
}
