//! Checks a gallery's `index.usearch` field by field before usearch's C++ loader sees it: that
//! loader trusts sizes, levels and neighbour slots, so a corrupt or hostile file could make it
//! read out of bounds or allocate without limit. This module owns the file's layout as usearch
//! 2.x writes it (read from its `index_dense.hpp` and `index.hpp`); it must not load or search.
//!
//! The layout, all integers little-endian:
//! 1. the vectors matrix: `rows: u32`, `cols: u32` (bytes per vector), then `rows × cols` bytes;
//! 2. the dense header, 64 bytes: magic `usearch`, version `u16 × 3`, metric, scalar, key and slot
//!    kinds (`u8` each), `count_present`, `count_deleted`, `dimensions` (`u64` each), `multi`
//!    (`u8`), then unused bytes;
//! 3. the HNSW header: `size`, `connectivity`, `connectivity_base`, `max_level`, `entry_slot`
//!    (`u64` each);
//! 4. `size` levels (`i16`);
//! 5. `size` nodes: `key: u64`, `level: i16`, then for each level `0..=level` a neighbour list
//!    `count: u32` and `capacity` slots (`u32`): `connectivity_base` at level 0,
//!    `connectivity` above.

use std::io::Read;

/// What the gallery's `gallery.json` says the index must hold, and what `Gallery::save` writes.
pub(super) struct Expected {
    pub dimensions: usize,
    pub count: usize,
    pub connectivity: usize,
}

const MAGIC: &[u8; 7] = b"usearch";
/// The file format's major version; usearch refuses any other, and before minor 10 the scalar
/// kinds had other codes.
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR_MIN: u16 = 10;
/// usearch's `metric_kind_t::cos_k` and `scalar_kind_t` codes (`index_plugins.hpp`).
const METRIC_COS: u8 = b'c';
const SCALAR_F16: u8 = 12;
const SCALAR_U64: u8 = 14;
const SCALAR_U32: u8 = 15;
const DENSE_HEADER_BYTES: usize = 64;
/// A node's head: its key (`u64`) and level (`i16`).
const NODE_HEAD_BYTES: u64 = 10;
/// Bytes of one f16 value.
const F16_BYTES: usize = 2;

/// Reads `len` bytes of `index.usearch` from `reader` and checks every field against `want`
/// and against the rest of the file. The reason for a rejection is one line.
pub(super) fn check(reader: impl Read, len: u64, want: &Expected) -> Result<(), String> {
    let mut f = Bytes {
        reader,
        pos: 0,
        len,
    };

    // 1. The vectors matrix.
    let rows = f.u32("the vectors matrix's row count")? as u64;
    let cols = f.u32("the vectors matrix's bytes per vector")? as u64;
    if rows != want.count as u64 {
        return Err(format!(
            "its vectors matrix has {rows} rows, gallery.json lists {} entries",
            want.count
        ));
    }
    let want_cols = (want.dimensions as u64).checked_mul(F16_BYTES as u64);
    if Some(cols) != want_cols {
        return Err(format!(
            "its vectors are {cols} bytes each, {} f16 dimensions need {}",
            want.dimensions,
            2 * want.dimensions as u128
        ));
    }
    let matrix = rows
        .checked_mul(cols)
        .filter(|&m| m <= f.left())
        .ok_or_else(|| {
            format!(
                "its vectors matrix ({rows} × {cols} bytes) does not fit in the file's {len} bytes"
            )
        })?;
    let mut row = vec![0u8; cols as usize];
    for r in 0..rows {
        f.fill(&mut row, "a vector")?;
        if let Some(i) = row.chunks_exact(F16_BYTES).position(|h| {
            let bits = u16::from_le_bytes([h[0], h[1]]);
            bits & 0x7c00 == 0x7c00
        }) {
            return Err(format!(
                "vector {r} holds a non-finite value at dimension {i}"
            ));
        }
    }
    debug_assert_eq!(f.pos, 8 + matrix);

    // 2. The dense header.
    let mut h = [0u8; DENSE_HEADER_BYTES];
    f.fill(&mut h, "the 64-byte index header")?;
    if &h[..7] != MAGIC {
        return Err("its header does not start with `usearch`: not a usearch index".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let (major, minor, patch) = (u16_at(7), u16_at(9), u16_at(11));
    if major != VERSION_MAJOR || minor < VERSION_MINOR_MIN {
        return Err(format!(
            "it was written by usearch {major}.{minor}.{patch}; this build reads format 2.10 and later 2.x"
        ));
    }
    let kinds = (h[13], h[14], h[15], h[16]);
    if kinds != (METRIC_COS, SCALAR_F16, SCALAR_U64, SCALAR_U32) {
        return Err(format!(
            "its metric, scalar, key and slot kinds are codes {}, {}, {}, {}; a gallery is cosine, f16, u64 keys, u32 slots ({METRIC_COS}, {SCALAR_F16}, {SCALAR_U64}, {SCALAR_U32})",
            kinds.0, kinds.1, kinds.2, kinds.3
        ));
    }
    let (present, deleted, dimensions, multi) = (u64_at(17), u64_at(25), u64_at(33), h[41]);
    if dimensions != want.dimensions as u64 {
        return Err(format!(
            "its header says {dimensions} dimensions, gallery.json says {}",
            want.dimensions
        ));
    }
    if present != rows || deleted != 0 {
        return Err(format!(
            "its header counts {present} present and {deleted} deleted vectors, the matrix holds {rows} (a gallery deletes none)"
        ));
    }
    if multi != 0 {
        return Err(format!(
            "its header's `multi` byte is {multi}; a gallery has one vector per key (0)"
        ));
    }

    // 3. The HNSW header.
    let size = f.u64("the graph's node count")?;
    let connectivity = f.u64("the graph's connectivity")?;
    let connectivity_base = f.u64("the graph's base connectivity")?;
    let max_level = f.u64("the graph's top level")?;
    let entry_slot = f.u64("the graph's entry point")?;
    if size != rows {
        return Err(format!("its graph has {size} nodes for {rows} vectors"));
    }
    if connectivity != want.connectivity as u64
        || Some(connectivity_base) != connectivity.checked_mul(2)
    {
        return Err(format!(
            "its graph's connectivity is {connectivity} (base {connectivity_base}); gallery.json's settings give {} (base {})",
            want.connectivity,
            2 * want.connectivity as u128
        ));
    }
    // Bytes of one neighbour list: its count and `capacity` slots, all u32.
    let list_bytes = |capacity: u64| capacity.checked_mul(4).and_then(|b| b.checked_add(4));
    let (Some(base_bytes), Some(upper_bytes)) =
        (list_bytes(connectivity_base), list_bytes(connectivity))
    else {
        return Err(format!(
            "its connectivity {connectivity} overflows a node's size"
        ));
    };
    if size == 0 {
        // An empty index: usearch writes its "no level" (-1, as u64) and slot 0.
        if max_level != u64::MAX || entry_slot != 0 {
            return Err(format!(
                "its empty graph names top level {max_level} and entry point {entry_slot}"
            ));
        }
        return f.end();
    }

    // 4. The levels. `size` is at most the row count, which fitted in the file.
    if size.checked_mul(2).map_or(true, |b| b > f.left()) {
        return Err(format!(
            "its {size} node levels do not fit in the file's {len} bytes"
        ));
    }
    let mut raw = vec![0u8; size as usize * 2];
    f.fill(&mut raw, "the node levels")?;
    let levels: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    if entry_slot >= size {
        return Err(format!(
            "its entry point {entry_slot} is not one of its {size} nodes"
        ));
    }
    let top = levels[entry_slot as usize];
    if max_level != top as u64 || top < 0 {
        return Err(format!(
            "its top level is {max_level} but its entry point {entry_slot} has level {top}"
        ));
    }
    let mut nodes_bytes = 0u64;
    for (slot, &level) in levels.iter().enumerate() {
        if level < 0 || level > top {
            return Err(format!("node {slot} has level {level}, outside 0..={top}"));
        }
        nodes_bytes = (level as u64)
            .checked_mul(upper_bytes)
            .and_then(|b| b.checked_add(NODE_HEAD_BYTES + base_bytes))
            .and_then(|b| b.checked_add(nodes_bytes))
            .ok_or_else(|| format!("its nodes' sizes overflow at node {slot}"))?;
    }
    if nodes_bytes != f.left() {
        return Err(format!(
            "its levels ask for {nodes_bytes} bytes of nodes, the file has {} left: {}",
            f.left(),
            if nodes_bytes > f.left() {
                "truncated"
            } else {
                "trailing bytes"
            }
        ));
    }

    // 5. The nodes: keys are the entries' indices, each once; every neighbour is a node present
    // at that level (search walks its list there).
    let mut seen = vec![false; want.count];
    let mut list = Vec::new();
    for (slot, &level) in levels.iter().enumerate() {
        let key = f.u64("a node's key")?;
        let node_level = f.i16("a node's level")?;
        if node_level != level {
            return Err(format!(
                "node {slot} says level {node_level}, the levels table says {level}"
            ));
        }
        if key >= want.count as u64 {
            return Err(format!(
                "node {slot} has key {key}, beyond gallery.json's {} entries",
                want.count
            ));
        }
        if std::mem::replace(&mut seen[key as usize], true) {
            return Err(format!("node {slot} repeats key {key}"));
        }
        for l in 0..=level {
            let capacity = if l == 0 {
                connectivity_base
            } else {
                connectivity
            };
            let count = f.u32("a neighbour count")? as u64;
            if count > capacity {
                return Err(format!(
                    "node {slot} lists {count} neighbours at level {l}, more than its {capacity} slots"
                ));
            }
            list.resize(capacity as usize * 4, 0);
            f.fill(&mut list, "a neighbour list")?;
            for n in list.chunks_exact(4).take(count as usize) {
                let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as u64;
                if n >= size {
                    return Err(format!(
                        "node {slot} at level {l} links to node {n}, beyond its {size} nodes"
                    ));
                }
                if levels[n as usize] < l {
                    return Err(format!(
                        "node {slot} at level {l} links to node {n}, which has only level {}",
                        levels[n as usize]
                    ));
                }
            }
        }
    }
    f.end()
}

/// The file, read in order, with its position for messages.
struct Bytes<R> {
    reader: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Bytes<R> {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), String> {
        let n = buf.len() as u64;
        if n > self.left() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, the file ends at {}",
                self.pos, self.len
            ));
        }
        self.reader
            .read_exact(buf)
            .map_err(|e| format!("reading {what} at offset {} failed: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let mut b = [0u8; 2];
        self.fill(&mut b, what)?;
        Ok(i16::from_le_bytes(b))
    }

    /// Nothing may follow the last field.
    fn end(self) -> Result<(), String> {
        if self.pos != self.len {
            return Err(format!(
                "{} trailing bytes after the index's last node",
                self.len - self.pos
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::{Gallery, IndexSettings, ModelTag, INDEX_FILE};
    use crate::rng::Rng;

    /// A gallery of `n` random unit `d`-D vectors at `connectivity`, saved; its folder and index
    /// bytes.
    fn saved(n: usize, d: usize, connectivity: usize) -> (tempfile::TempDir, Vec<u8>) {
        let settings = IndexSettings {
            connectivity,
            ..IndexSettings::default()
        };
        let mut g = Gallery::new(d, ModelTag::external(), settings).unwrap();
        if n > 0 {
            let mut r = Rng::new(n as u64 + 11);
            let mut v: Vec<f32> = (0..n * d).map(|_| r.normal()).collect();
            for row in v.chunks_mut(d) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
            let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            g.add(&v, &names, &names, 2).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(INDEX_FILE)).unwrap();
        (dir, bytes)
    }

    fn want(n: usize, d: usize, connectivity: usize) -> Expected {
        Expected {
            dimensions: d,
            count: n,
            connectivity,
        }
    }

    fn check_bytes(bytes: &[u8], want: &Expected) -> Result<(), String> {
        check(bytes, bytes.len() as u64, want)
    }

    /// Where the parts of a well-formed file start, for the corruptions below.
    struct Layout {
        dense: usize,
        graph: usize,
        levels: Vec<i16>,
        /// Each node's offset.
        nodes: Vec<usize>,
    }

    fn layout(bytes: &[u8], n: usize, d: usize, c: usize) -> Layout {
        let dense = 8 + n * 2 * d;
        let graph = dense + 64;
        let lv = graph + 40;
        let levels: Vec<i16> = (0..n)
            .map(|i| i16::from_le_bytes([bytes[lv + 2 * i], bytes[lv + 2 * i + 1]]))
            .collect();
        let mut at = lv + 2 * n;
        let nodes = levels
            .iter()
            .map(|&l| {
                let here = at;
                at += 10 + (4 + 8 * c) + l as usize * (4 + 4 * c);
                here
            })
            .collect();
        assert_eq!(at, bytes.len(), "the test's reading of the layout");
        Layout {
            dense,
            graph,
            levels,
            nodes,
        }
    }

    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn galleries_saved_by_gallery_save_pass_and_still_search() {
        // 600 nodes at connectivity 4: about one node in four reaches level 1 and one in sixteen
        // level 2, so multi-level neighbour lists are covered; 0 and 1 are the edge cases.
        for (n, d, c) in [
            (0, 8, 16),
            (1, 8, 16),
            (2, 16, 16),
            (50, 16, 16),
            (600, 8, 4),
        ] {
            let (dir, bytes) = saved(n, d, c);
            check_bytes(&bytes, &want(n, d, c)).unwrap_or_else(|e| panic!("{n} entries: {e}"));
            if n == 600 {
                let l = layout(&bytes, n, d, c);
                assert!(l.levels.iter().any(|&v| v >= 2), "{:?}", l.levels);
            }
            for g in [
                Gallery::load(dir.path()).unwrap(),
                Gallery::view(dir.path()).unwrap(),
            ] {
                assert_eq!(g.len(), n);
                if n > 0 {
                    let probe = &std::fs::read(dir.path().join(INDEX_FILE)).unwrap()[8..8 + 2 * d];
                    let q: Vec<f32> = probe
                        .chunks_exact(2)
                        .map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32())
                        .collect();
                    let m = g.search(&q, 1).unwrap();
                    assert!((m[0].similarity - 1.0).abs() < 2e-3, "{}", m[0].similarity);
                }
            }
        }
    }

    /// Applies `corrupt` to a saved 600-entry, connectivity-4 file and expects `needle` in the
    /// rejection.
    fn rejects(needle: &str, corrupt: impl FnOnce(&mut Vec<u8>, &Layout)) {
        let (n, d, c) = (600, 8, 4);
        let (_dir, mut bytes) = saved(n, d, c);
        let l = layout(&bytes, n, d, c);
        corrupt(&mut bytes, &l);
        let e = check_bytes(&bytes, &want(n, d, c)).expect_err(needle);
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn each_kind_of_corruption_is_named() {
        rejects("does not start with `usearch`", |b, l| b[l.dense] = b'U');
        rejects("written by usearch 3.", |b, l| b[l.dense + 7] = 3);
        rejects("written by usearch 2.9.", |b, l| b[l.dense + 9] = 9);
        rejects("kinds are codes 101, 12", |b, l| b[l.dense + 13] = b'e');
        rejects("kinds are codes 99, 11", |b, l| b[l.dense + 14] = 11);
        rejects("kinds are codes 99, 12, 15", |b, l| b[l.dense + 15] = 15);
        rejects("header says 9 dimensions", |b, l| b[l.dense + 33] = 9);
        rejects("601 present and 0 deleted", |b, l| b[l.dense + 17] = 0x59);
        rejects("600 present and 1 deleted", |b, l| b[l.dense + 25] = 1);
        rejects("`multi` byte is 1", |b, l| b[l.dense + 41] = 1);
        rejects("vectors matrix has 601 rows", |b, _| put_u32(b, 0, 601));
        rejects("vectors are 18 bytes each", |b, _| put_u32(b, 4, 18));
        rejects(
            "vector 3 holds a non-finite value at dimension 1",
            |b, _| {
                b[8 + 3 * 16 + 2..8 + 3 * 16 + 4].copy_from_slice(&[0x00, 0x7c]);
            },
        );
        rejects("graph has 599 nodes", |b, l| put_u64(b, l.graph, 599));
        rejects("connectivity is 5 (base 8)", |b, l| {
            put_u64(b, l.graph + 8, 5)
        });
        rejects("connectivity is 4 (base 9)", |b, l| {
            put_u64(b, l.graph + 16, 9)
        });
        rejects("entry point 600 is not one of its 600 nodes", |b, l| {
            put_u64(b, l.graph + 32, 600)
        });
        rejects("has level 0", |b, l| {
            // The entry point moved to a level-0 node while the header keeps the top level.
            let low = l.levels.iter().position(|&v| v == 0).unwrap();
            put_u64(b, l.graph + 32, low as u64);
        });
        rejects("top level is 9", |b, l| put_u64(b, l.graph + 24, 9));
        rejects("has level 100, outside 0..=", |b, l| {
            let low = l.levels.iter().position(|&v| v == 0).unwrap();
            b[l.graph + 40 + 2 * low] = 100;
        });
        rejects("has level -1, outside", |b, l| {
            let at = l.graph + 40 + 2 * l.levels.iter().position(|&v| v == 0).unwrap();
            b[at..at + 2].copy_from_slice(&(-1i16).to_le_bytes());
        });
        rejects("node 5 says level", |b, l| b[l.nodes[5] + 8] ^= 1);
        rejects("node 7 repeats key", |b, l| {
            let k = b[l.nodes[6]..l.nodes[6] + 8].to_vec();
            b[l.nodes[7]..l.nodes[7] + 8].copy_from_slice(&k);
        });
        rejects("node 7 has key 600, beyond", |b, l| {
            put_u64(b, l.nodes[7], 600)
        });
        rejects(
            "node 9 lists 9 neighbours at level 0, more than its 8",
            |b, l| put_u32(b, l.nodes[9] + 10, 9),
        );
        rejects("node 9 at level 0 links to node 600", |b, l| {
            put_u32(b, l.nodes[9] + 14, 600)
        });
        rejects("at level 1 links to node", |b, l| {
            // A level-1 list pointing at a level-0 node: search would read past that node.
            let (slot, _) = l.levels.iter().enumerate().find(|(_, &v)| v >= 1).unwrap();
            let low = l.levels.iter().position(|&v| v == 0).unwrap() as u32;
            let upper = l.nodes[slot] + 10 + 4 + 8 * 4;
            put_u32(b, upper, 1);
            put_u32(b, upper + 4, low);
        });
        rejects("truncated", |b, _| {
            b.pop();
        });
        rejects("trailing bytes", |b, _| b.extend_from_slice(&[0; 3]));
        rejects("does not fit in the file", |b, _| b.truncate(100));
        rejects(
            "truncated: the vectors matrix's bytes per vector",
            |b, _| b.truncate(6),
        );
    }

    #[test]
    fn huge_sizes_are_refused_without_allocating_them() {
        // 2^32 − 1 rows of 2^17 bytes: the product is checked against the file, not allocated.
        let mut b = Vec::new();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(&(1u32 << 17).to_le_bytes());
        let e = check_bytes(&b, &want(u32::MAX as usize, 1 << 16, 16)).unwrap_err();
        assert!(e.contains("does not fit in the file's 8 bytes"), "{e}");
        // An empty graph whose header names a top level and an entry point.
        let (_dir, mut bytes) = saved(0, 8, 16);
        put_u64(&mut bytes, 8 + 64 + 24, 3);
        let e = check_bytes(&bytes, &want(0, 8, 16)).unwrap_err();
        assert!(e.contains("empty graph names top level 3"), "{e}");
        let (_dir, mut bytes) = saved(0, 8, 16);
        bytes.push(0);
        let e = check_bytes(&bytes, &want(0, 8, 16)).unwrap_err();
        assert!(
            e.contains("1 trailing bytes after the index's last node"),
            "{e}"
        );
    }

    #[test]
    fn load_and_view_both_refuse_a_corrupt_index_with_one_line_naming_the_file() {
        let (n, d, c) = (50, 16, 16);
        let (dir, mut bytes) = saved(n, d, c);
        let l = layout(&bytes, n, d, c);
        put_u32(&mut bytes, l.nodes[3] + 14, 4_000_000);
        std::fs::write(dir.path().join(INDEX_FILE), &bytes).unwrap();
        for opened in [Gallery::load(dir.path()), Gallery::view(dir.path())] {
            let e = opened.err().expect("a corrupt index must not open");
            assert!(matches!(e, crate::Error::InvalidArgument(_)), "{e:?}");
            let e = e.to_string();
            assert!(e.contains(INDEX_FILE), "{e}");
            assert!(
                e.contains("links to node 4000000, beyond its 50 nodes"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
