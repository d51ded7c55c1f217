//! The content tree of a version 2 file: one BLAKE3 Merkle tree over the
//! *sealed* payload chunks, whose root the sender signs (docs/FORMAT.md §6).
//!
//! ```text
//! leaf_i      = BLAKE3-derive-key("coffer v2 chunk leaf", BE64(i) || sealed_i)
//! node(l, r)  = BLAKE3-derive-key("coffer v2 tree node",  l || r)
//! root(lo..hi) = leaf_lo                                  if hi - lo = 1
//!              = node(root(lo..lo+k), root(lo+k..hi))     k = largest power of two < hi - lo
//! ```
//!
//! The shape is that of RFC 6962 (and of BLAKE3's own tree): every left
//! subtree is complete. In the file, after sealed chunk `i` come its
//! **entries**: `leaf_i`, then the roots of the `ctz(i+1)` complete
//! subtrees that leaf completes, smallest first (post-order). So
//!
//! * a writer needs `O(log n)` memory (the stack of open subtrees), and
//!   emits every entry as soon as it is known;
//! * a streaming reader recomputes each entry and compares it with the
//!   stored one, with a bounded look-ahead (at most 64 entries);
//! * a random-access reader verifies any chunk against the root by reading
//!   that chunk and `O(log n)` stored entries, at offsets that follow from
//!   the chunk index alone ([`chunk_offset`]).
//!
//! **Why over ciphertext, and why a tree.** Hashing the sealed bytes lets
//! anyone holding the object compute the root without a key: the server
//! computes the same value while it receives an upload and uses it as the
//! receipt, ETag and digest, so each side hashes each byte once. Leaves are
//! independent, so chunks hash on every core. And because the sender's
//! signature covers the root and the chunk count, a co-recipient (who knows
//! the payload key and could re-seal a chunk with a valid GCM tag) cannot
//! substitute, cut or extend chunks: every chunk a range read returns is
//! checked against the signed root.
//!
//! **Invariant: the tree has exactly the signed number of leaves.** Readers
//! derive `n` from the layout and the signature covers `n`, so a leaf count
//! that disagrees with the layout fails the signature.

/// Length of a leaf or node hash.
pub const HASH_LEN: usize = 32;
/// Most entries that can follow one chunk (`1 + ctz(i + 1)` for a `u64` index).
pub const MAX_ENTRIES_PER_CHUNK: usize = 65;

const LEAF_CONTEXT: &str = "coffer v2 chunk leaf";
const NODE_CONTEXT: &str = "coffer v2 tree node";

/// A leaf or node hash.
pub type Hash = [u8; HASH_LEN];

/// BLAKE3 hashes [`ALIGN`] bytes (16 of its 1 KiB chunks) at once on
/// AVX-512, but only where an update starts at a multiple of that in the
/// message. An update that starts elsewhere first works through ever larger
/// small subtrees, one, two, four and eight chunks wide, because BLAKE3's
/// tree fixes which chunks pair up. A leaf's message starts with the 8-byte
/// index, and the server feeds it in network-sized pieces, so every update
/// would start out of step: measured here, 2.2 GB/s for 16 KiB pieces
/// against 4.4 GB/s realigned, and 4.4 against 6.2 GB/s for whole 64 KiB
/// chunks in cache.
pub const ALIGN: usize = 16 * 1024;

/// Hashes one sealed chunk incrementally (its bytes may arrive in pieces).
///
/// **Invariant: the hasher has absorbed a multiple of [`ALIGN`] bytes of
/// the leaf message; the `carried` bytes after them wait in `carry`.** An
/// update tops the carry up to the next boundary (copying at most
/// [`ALIGN`] bytes), then feeds whole aligned blocks straight from the
/// caller's slice, and keeps the remainder.
#[derive(Clone)]
pub struct LeafHasher {
    hasher: blake3::Hasher,
    carry: [u8; ALIGN],
    carried: usize,
}

impl LeafHasher {
    /// Starts the leaf of chunk `index`.
    pub fn new(index: u64) -> Self {
        let mut leaf = Self {
            hasher: blake3::Hasher::new_derive_key(LEAF_CONTEXT),
            carry: [0; ALIGN],
            carried: 0,
        };
        leaf.restart(index);
        leaf
    }

    /// Starts the leaf of chunk `index` in place (no new 16 KiB buffer).
    pub fn restart(&mut self, index: u64) {
        self.hasher.reset();
        self.carry[..8].copy_from_slice(&index.to_be_bytes());
        self.carried = 8;
    }

    /// Absorbs more bytes of the sealed chunk.
    pub fn update(&mut self, mut sealed: &[u8]) {
        if self.carried > 0 {
            let take = (ALIGN - self.carried).min(sealed.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&sealed[..take]);
            self.carried += take;
            sealed = &sealed[take..];
            if self.carried < ALIGN {
                return;
            }
            self.hasher.update(&self.carry);
        }
        let whole = sealed.len() - sealed.len() % ALIGN;
        self.hasher.update(&sealed[..whole]);
        let rest = &sealed[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// The leaf hash.
    pub fn finish(&self) -> Hash {
        // On a copy (about 2 KiB of state), so the invariant holds.
        let mut hasher = self.hasher.clone();
        hasher.update(&self.carry[..self.carried]);
        *hasher.finalize().as_bytes()
    }
}

/// `leaf_i` of a whole sealed chunk.
pub fn leaf(index: u64, sealed: &[u8]) -> Hash {
    let mut hasher = LeafHasher::new(index);
    hasher.update(sealed);
    hasher.finish()
}

/// The parent of two subtree roots.
pub fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// Number of entries stored after chunk `index`: its leaf and the roots of
/// the subtrees it completes.
pub fn entries_after(index: u64) -> u64 {
    1 + u64::from((index + 1).trailing_zeros())
}

/// Number of entries stored before chunk `index`:
/// `sum(entries_after(j), j < index) = 2·index − popcount(index)`.
pub fn entries_before(index: u64) -> u64 {
    2 * index - u64::from(index.count_ones())
}

/// Offset of sealed chunk `index` from the start of the payload.
pub fn chunk_offset(index: u64, sealed_chunk: u64) -> u64 {
    index * sealed_chunk + entries_before(index) * HASH_LEN as u64
}

/// Offset, from the start of the payload, of the stored root of the
/// complete subtree of `2^level` leaves whose last leaf is `last` (level 0:
/// the leaf itself). `last_len` is the sealed length of chunk `last`.
pub fn entry_offset(last: u64, level: u32, sealed_chunk: u64, last_len: u64) -> u64 {
    chunk_offset(last, sealed_chunk) + last_len + u64::from(level) * HASH_LEN as u64
}

/// Payload length (chunks and entries, without the trailer) of a file of
/// `n >= 1` chunks whose final chunk is `final_len` sealed bytes.
pub fn payload_len(n: u64, sealed_chunk: u64, final_len: u64) -> Option<u64> {
    let entries = entries_before(n).checked_mul(HASH_LEN as u64)?;
    (n - 1)
        .checked_mul(sealed_chunk)?
        .checked_add(final_len)?
        .checked_add(entries)
}

/// The chunk count and sealed final-chunk length of a payload of `len`
/// bytes (chunks and entries, without the trailer), or `None` if no layout
/// has that length. The count is unique: the lengths possible for `n`
/// chunks, `[(n−1)·S + 16 + e(n), n·S + e(n)]` with `e(n) = 32·(2n − popcount(n))`,
/// are disjoint and increasing in `n`.
pub fn layout_of(len: u64, sealed_chunk: u64) -> Option<(u64, u64)> {
    const TAG: u64 = crate::stream::TAG_LEN as u64;
    let shortest = |n: u64| payload_len(n, sealed_chunk, TAG);
    let (mut lo, mut hi) = (1u64, len / TAG + 1);
    // Largest n whose shortest layout fits in `len`.
    if shortest(1)? > len {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match shortest(mid) {
            Some(min) if min <= len => lo = mid,
            _ => hi = mid - 1,
        }
    }
    let n = lo;
    let final_len = len - payload_len(n, sealed_chunk, 0)?;
    (TAG..=sealed_chunk)
        .contains(&final_len)
        .then_some((n, final_len))
}

/// Builds the tree leaf by leaf with `O(log n)` memory: the roots of the
/// complete subtrees not yet merged, largest first.
#[derive(Clone, Default)]
pub struct TreeBuilder {
    /// (log2 of the subtree's leaf count, its root), sizes strictly decreasing.
    stack: Vec<(u32, Hash)>,
    leaves: u64,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves added so far.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// Adds the next leaf and appends its entries (the leaf, then each
    /// subtree root it completes) to `entries`.
    pub fn push(&mut self, leaf: Hash, entries: &mut Vec<u8>) {
        let before = entries.len();
        entries.extend_from_slice(&leaf);
        let mut top = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != top.0 {
                break;
            }
            self.stack.pop();
            top = (level + 1, node(&left, &top.1));
            entries.extend_from_slice(&top.1);
        }
        // The post-order invariant: leaf i is followed by exactly the
        // ctz(i + 1) subtree roots it completes.
        debug_assert_eq!(
            (entries.len() - before) as u64,
            entries_after(self.leaves) * HASH_LEN as u64,
        );
        self.stack.push(top);
        self.leaves += 1;
    }

    /// The root over all leaves added (`None` for an empty tree, which no
    /// file has: every payload has at least one chunk).
    pub fn root(&self) -> Option<Hash> {
        let mut iter = self.stack.iter().rev();
        let mut root = iter.next()?.1;
        for (_, left) in iter {
            root = node(left, &root);
        }
        Some(root)
    }
}

/// Computes the root of leaves `lo..hi` of a tree, taking each complete
/// subtree that `known` can supply (a stored entry) whole and recursing into
/// the others down to single leaves, which `known` must then supply.
/// `known(lo, level)` returns the root of the complete subtree of `2^level`
/// leaves starting at `lo`, or `None` to have it recomputed from below.
pub fn root_with<E>(
    lo: u64,
    hi: u64,
    known: &mut impl FnMut(u64, u32) -> Result<Option<Hash>, E>,
    missing: impl Fn() -> E + Copy,
) -> Result<Hash, E> {
    let count = hi - lo;
    if count.is_power_of_two() {
        let level = count.trailing_zeros();
        if let Some(hash) = known(lo, level)? {
            return Ok(hash);
        }
        if count == 1 {
            return Err(missing());
        }
    }
    let split = if count.is_power_of_two() {
        count / 2
    } else {
        1u64 << (63 - count.leading_zeros())
    };
    let left = root_with(lo, lo + split, known, missing)?;
    let right = root_with(lo + split, hi, known, missing)?;
    Ok(node(&left, &right))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's definition, written recursively over all leaves.
    fn reference_root(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
        node(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf(i, &i.to_le_bytes())).collect()
    }

    /// The leaf by its definition, in one call to BLAKE3.
    fn reference_leaf(index: u64, sealed: &[u8]) -> Hash {
        let mut message = index.to_be_bytes().to_vec();
        message.extend_from_slice(sealed);
        blake3::derive_key(LEAF_CONTEXT, &message)
    }

    #[test]
    fn leaf_hasher_realigns_any_pieces_without_changing_the_hash() {
        let sealed: Vec<u8> = (0..(1 << 20) + 16).map(|i| (i * 131 % 251) as u8).collect();
        let lengths = [
            0,
            1,
            ALIGN - 9,
            ALIGN - 8,
            ALIGN - 7,
            3 * ALIGN + 5,
            sealed.len(),
        ];
        let pieces = [1, 7, 1000, ALIGN - 1, ALIGN, ALIGN + 1, 70_000, usize::MAX];
        let mut reused = LeafHasher::new(99);
        for len in lengths {
            let data = &sealed[..len];
            let expected = reference_leaf(5, data);
            assert_eq!(leaf(5, data), expected, "whole, length {len}");
            for piece in pieces {
                reused.restart(5);
                for part in data.chunks(piece.min(len.max(1))) {
                    reused.update(part);
                }
                assert_eq!(reused.finish(), expected, "length {len}, pieces of {piece}");
                // finish() leaves the hasher as it was: more bytes continue the leaf.
                reused.update(b"x");
                let mut longer = data.to_vec();
                longer.push(b'x');
                assert_eq!(reused.finish(), reference_leaf(5, &longer));
            }
        }
        assert_ne!(leaf(6, &sealed), leaf(5, &sealed), "the index is hashed");
    }

    #[test]
    fn builder_matches_the_recursive_definition_and_emits_post_order() {
        for n in 1..=70u64 {
            let all = leaves(n);
            let mut tree = TreeBuilder::new();
            let mut emitted = 0u64;
            for (i, leaf) in all.iter().enumerate() {
                let mut entries = Vec::new();
                tree.push(*leaf, &mut entries);
                let i = i as u64;
                assert_eq!(entries.len() as u64 / 32, entries_after(i), "n {n} i {i}");
                assert_eq!(&entries[..32], leaf);
                // The last entry is the root of the largest subtree ending here.
                let level = (i + 1).trailing_zeros();
                let start = (i + 1 - (1 << level)) as usize;
                assert_eq!(
                    entries[entries.len() - 32..],
                    reference_root(&all[start..=i as usize])
                );
                assert_eq!(entries_before(i), emitted);
                emitted += entries.len() as u64 / 32;
            }
            assert_eq!(tree.root().unwrap(), reference_root(&all), "n {n}");
        }
    }

    #[test]
    fn layout_is_unique_and_inverts_payload_len() {
        let sealed = 256 + 16;
        for n in 1..=300u64 {
            for final_len in [16, 17, 100, sealed] {
                let len = payload_len(n, sealed, final_len).unwrap();
                assert_eq!(layout_of(len, sealed), Some((n, final_len)), "n {n}");
            }
        }
        assert_eq!(layout_of(0, sealed), None);
        assert_eq!(layout_of(15, sealed), None);
        // Hostile lengths near the top of the range do not overflow.
        let _ = layout_of(u64::MAX, sealed);
        let _ = layout_of(u64::MAX, 16 * 1024 * 1024 + 16);
    }

    #[test]
    fn every_length_maps_to_at_most_one_layout_and_gaps_are_refused() {
        let sealed = 256 + 16;
        let mut valid = std::collections::BTreeSet::new();
        for n in 1..=40u64 {
            for f in 16..=sealed {
                assert!(
                    valid.insert(payload_len(n, sealed, f).unwrap()),
                    "duplicate"
                );
            }
        }
        let top = payload_len(40, sealed, sealed).unwrap();
        for len in 0..=top {
            assert_eq!(
                layout_of(len, sealed).is_some(),
                valid.contains(&len),
                "len {len}"
            );
        }
    }

    #[test]
    fn root_with_uses_stored_subtrees_and_needs_only_the_range() {
        let n = 13u64;
        let all = leaves(n);
        let expect = reference_root(&all);
        // Everything from leaves only.
        let mut from_leaves = |lo: u64, level: u32| -> Result<Option<Hash>, ()> {
            Ok((level == 0).then(|| all[lo as usize]))
        };
        assert_eq!(root_with(0, n, &mut from_leaves, || ()).unwrap(), expect);
        // Leaf 5 computed, everything else from the largest stored subtrees:
        // the lookups must not touch any other single leaf except siblings.
        let mut asked = Vec::new();
        let mut stored = |lo: u64, level: u32| -> Result<Option<Hash>, ()> {
            let size = 1u64 << level;
            if (lo..lo + size).contains(&5) && level > 0 {
                return Ok(None);
            }
            asked.push((lo, level));
            Ok(Some(reference_root(
                &all[lo as usize..(lo + size) as usize],
            )))
        };
        assert_eq!(root_with(0, n, &mut stored, || ()).unwrap(), expect);
        assert!(asked.len() <= 2 * 64, "{asked:?}");
        assert!(asked.contains(&(5, 0)));
    }
}
