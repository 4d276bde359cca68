//! The data plane's one concurrent map: readers never wait, writers copy.
//!
//! A [`ShardMap`] is `N` shards, each an immutable `HashMap` behind an `ArcSwap`. A reader finds
//! its key with one atomic load and one probe, and takes no lock. A writer takes its shard's
//! writer mutex (which readers never touch), copies the shard (about `len / N` entries), changes
//! the copy and swaps it in; a reader that loaded the old shard keeps reading it. So a map that
//! is read on every request and written rarely (tokens change when the control plane writes,
//! per-key counters appear once per key) costs the request path atomics only. Sharded `RwLock`s
//! (dashmap-style) were the alternative; they make readers and writers contend on the same shard
//! lock, and a reload of a million entries would have to hold them.
//!
//! A complete map can also be built aside in [`Tables`] (in a blocking thread, say) and swapped
//! in shard by shard ([`ShardMap::replace_all`]), so readers keep running on the old shards
//! while it is built and never see a half-built one.
//!
//! The shard is chosen from bits 32 and up of the key's hash: hashbrown indexes a table with the
//! low bits and tags entries with the top seven, so within a shard keys still differ in the bits
//! the table uses.
//!
//! [`LazyMap`] is the form the per-key counters and caches use (`limits`, `metrics`, `meter`):
//! values made on first use of their key, shared as `Arc`s, with a keyed hasher because their
//! keys (addresses, ids, model names) come from outside.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};

/// One shard's table.
pub(crate) type Table<K, V, S> = HashMap<K, V, S>;

struct Shard<K, V, S> {
    table: ArcSwap<Table<K, V, S>>,
    /// Serialises writers of this shard; readers never take it.
    write: Mutex<()>,
}

/// A map of `N` shards (a power of two) that readers use without locks; see the module docs.
pub(crate) struct ShardMap<K, V, S, const N: usize> {
    shards: Box<[Shard<K, V, S>]>,
    /// Chooses the shard, and hashes within every table.
    hasher: S,
}

/// The shard of a hash; see the module docs.
fn index_of<const N: usize>(hash: u64) -> usize {
    ((hash >> 32) as usize) & (N - 1)
}

impl<K, V, S: BuildHasher + Clone, const N: usize> ShardMap<K, V, S, N> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        const { assert!(N.is_power_of_two()) };
        ShardMap {
            shards: (0..N)
                .map(|_| Shard {
                    table: ArcSwap::from_pointee(HashMap::with_hasher(hasher.clone())),
                    write: Mutex::new(()),
                })
                .collect(),
            hasher,
        }
    }

    /// The shard that holds `key`.
    pub(crate) fn index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        index_of::<N>(self.hasher.hash_one(key))
    }

    /// Shard `index`'s current table, for reading (one atomic load).
    pub(crate) fn table(&self, index: usize) -> Guard<Arc<Table<K, V, S>>> {
        self.shards[index].table.load()
    }

    /// `f` of the value under `key`, if there is one: no lock, no allocation.
    pub(crate) fn get_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q> + Eq + Hash,
        Q: Hash + Eq + ?Sized,
    {
        self.table(self.index(key)).get(key).map(f)
    }

    /// Entries in the shard that holds `key`.
    pub(crate) fn shard_len<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        self.table(self.index(key)).len()
    }

    /// Every entry, shard by shard (each shard as one load saw it).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for shard in self.shards.iter() {
            for (k, v) in shard.table.load().iter() {
                f(k, v);
            }
        }
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, ()> {
        // The mutex guards no data: a writer that panicked left the last table it stored.
        self.shards[index]
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Clone + Eq + Hash, V: Clone, S: BuildHasher + Clone, const N: usize> ShardMap<K, V, S, N> {
    /// Changes shard `index`: `f` gets a copy of its table, which then replaces it. Writers of
    /// the shard wait for each other; readers keep reading the table they loaded.
    pub(crate) fn update<R>(&self, index: usize, f: impl FnOnce(&mut Table<K, V, S>) -> R) -> R {
        let _w = self.lock(index);
        let shard = &self.shards[index];
        let mut next = Table::clone(&shard.table.load());
        let out = f(&mut next);
        shard.table.store(Arc::new(next));
        out
    }

    /// The value under `key`, made by `make` the first time (`make` runs under the shard's
    /// writer lock, and only if the key is still missing there).
    pub(crate) fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.index(key);
        if let Some(value) = self.table(index).get(key) {
            return value.clone();
        }
        let _w = self.lock(index);
        let shard = &self.shards[index];
        let current = shard.table.load_full();
        if let Some(value) = current.get(key) {
            return value.clone();
        }
        let (k, v) = make();
        let mut next = Table::clone(&current);
        next.insert(k, v.clone());
        shard.table.store(Arc::new(next));
        v
    }

    /// Drops the entries `keep` refuses from the shard that holds `key`. The shard gets a table
    /// sized for what is left.
    pub(crate) fn retain_shard_of<Q>(&self, key: &Q, mut keep: impl FnMut(&K, &V) -> bool)
    where
        Q: Hash + ?Sized,
    {
        let index = self.index(key);
        let _w = self.lock(index);
        let shard = &self.shards[index];
        let current = shard.table.load_full();
        let mut next = HashMap::with_hasher(self.hasher.clone());
        next.extend(
            current
                .iter()
                .filter(|(k, v)| keep(k, v))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        shard.table.store(Arc::new(next));
    }
}

impl<K, V, S: BuildHasher + Clone + Default, const N: usize> Default for ShardMap<K, V, S, N> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

/// A complete set of shard tables, built aside to replace a map's all at once
/// ([`ShardMap::replace_all`]). Only for hashers without state (`BuildHasherDefault`), so that
/// tables built aside put every key in the shard the live map will look in.
pub(crate) struct Tables<K, V, H, const N: usize> {
    tables: Box<[Table<K, V, BuildHasherDefault<H>>]>,
}

impl<K: Eq + Hash, V, H: Hasher + Default, const N: usize> Tables<K, V, H, N> {
    pub(crate) fn new() -> Self {
        Tables {
            tables: (0..N).map(|_| HashMap::default()).collect(),
        }
    }

    /// The table that will hold `key`.
    pub(crate) fn table_for<Q: Hash + ?Sized>(
        &mut self,
        key: &Q,
    ) -> &mut Table<K, V, BuildHasherDefault<H>> {
        let index = index_of::<N>(BuildHasherDefault::<H>::default().hash_one(key));
        &mut self.tables[index]
    }
}

impl<K, V, H: Hasher + Default, const N: usize> ShardMap<K, V, BuildHasherDefault<H>, N> {
    /// Swaps `tables` in, shard by shard (each under its writer lock), and returns the tables
    /// they replaced, in shard order. Readers see each shard either whole before or whole after.
    pub(crate) fn replace_all(
        &self,
        tables: Tables<K, V, H, N>,
    ) -> Vec<Arc<Table<K, V, BuildHasherDefault<H>>>> {
        let tables = tables.tables.into_vec();
        let mut old = Vec::with_capacity(N);
        for (index, table) in tables.into_iter().enumerate() {
            let _w = self.lock(index);
            old.push(self.shards[index].table.swap(Arc::new(table)));
        }
        old
    }
}

/// Shards of a [`LazyMap`]: few keys, written once each.
pub(crate) const LAZY_SHARDS: usize = 16;

/// Per-key state made on first use of its key (counters in atomics, cached answers), shared as
/// an `Arc` that outlives a later sweep of its key. The keys come from outside, so they are
/// hashed with a keyed hasher.
pub(crate) struct LazyMap<K, V>(ShardMap<K, Arc<V>, RandomState, LAZY_SHARDS>);

impl<K: Hash + Eq + Clone, V> LazyMap<K, V> {
    pub(crate) fn new() -> Self {
        LazyMap(ShardMap::default())
    }

    /// The value for `key`, if there is one.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get_with(key, Arc::clone)
    }

    /// The value for `key`, made by `make` the first time (`make` runs under the shard's writer
    /// lock, and only if the key is still missing there).
    pub(crate) fn get_or_insert<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get_or_insert_with(key, || {
            let (k, v) = make();
            (k, Arc::new(v))
        })
    }

    /// Every entry, for a scrape.
    pub(crate) fn for_each_arc(&self, mut f: impl FnMut(&K, Arc<V>)) {
        self.0.for_each(|k, v| f(k, v.clone()));
    }

    /// Drops the entries `keep` refuses, in the shard of `key` (writers only).
    pub(crate) fn retain_shard_of<Q>(&self, key: &Q, keep: impl Fn(&V) -> bool)
    where
        Q: Hash + ?Sized,
    {
        self.0.retain_shard_of(key, |_, v| keep(v));
    }

    /// Entries in the shard of `key`.
    pub(crate) fn shard_len<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        self.0.shard_len(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hasher that passes a `u64` key through, so tests can place keys in shards.
    #[derive(Default)]
    struct Identity(u64);

    impl Hasher for Identity {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, _: &[u8]) {
            unreachable!("only u64 keys")
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }

    type Map = ShardMap<u64, &'static str, BuildHasherDefault<Identity>, 4>;

    #[test]
    fn the_shard_comes_from_the_middle_bits() {
        let map = Map::default();
        assert_eq!(map.index(&0x0000_0003_0000_0001u64), 3);
        assert_eq!(map.index(&0x0000_0007_ffff_ffffu64), 3);
        assert_eq!(map.index(&0xffff_fff0_0000_0000u64), 0);
    }

    #[test]
    fn writers_copy_and_readers_keep_what_they_loaded() {
        let map = Map::default();
        let key = 1u64 << 33;
        let before = map.table(map.index(&key));
        map.update(map.index(&key), |t| t.insert(key, "one"));
        assert!(before.is_empty());
        assert_eq!(map.get_with(&key, |v| *v), Some("one"));
        assert_eq!(map.get_or_insert_with(&key, || unreachable!()), "one");
        assert_eq!(map.get_or_insert_with(&3, || (3, "three")), "three");
        map.retain_shard_of(&key, |_, v| *v != "one");
        assert_eq!(map.get_with(&key, |v| *v), None);
        let mut all = Vec::new();
        map.for_each(|k, v| all.push((*k, *v)));
        assert_eq!(all, [(3, "three")]);
    }

    #[test]
    fn tables_built_aside_replace_the_shards_whole() {
        let map = Map::default();
        map.get_or_insert_with(&5, || (5, "old"));
        let mut tables = Tables::<u64, &'static str, Identity, 4>::new();
        for key in [1u64 << 32, 2 << 32, 3 << 32, 7] {
            tables.table_for(&key).insert(key, "new");
        }
        let old = map.replace_all(tables);
        assert_eq!(old.len(), 4);
        assert_eq!(old[0].get(&5), Some(&"old"));
        assert_eq!(map.get_with(&5, |v| *v), None);
        for key in [1u64 << 32, 2 << 32, 3 << 32, 7] {
            assert_eq!(map.get_with(&key, |v| *v), Some("new"), "{key:#x}");
            assert_eq!(map.shard_len(&key), 1, "{key:#x}");
        }
    }

    #[test]
    fn a_lazy_map_makes_each_value_once() {
        let map: LazyMap<String, u32> = LazyMap::new();
        let a = map.get_or_insert("a", || ("a".to_owned(), 1));
        let again = map.get_or_insert("a", || unreachable!());
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(map.get("b"), None);
        map.retain_shard_of("a", |v| *v != 1);
        assert_eq!(map.get("a"), None);
        assert_eq!(*a, 1);
    }
}
