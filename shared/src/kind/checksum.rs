//! `checksum`: bytes → a SHA-256 Merkle root over fixed-size blocks.
//!
//! The input is cut into blocks of `block_size` bytes (64 KiB by default). Each block is a leaf
//! `SHA-256(0x00 ‖ block)`; inner nodes are `SHA-256(0x01 ‖ left ‖ right)`, and an odd node is
//! carried up unchanged (the RFC 6962 shape). Shards cover whole blocks, return their leaf
//! hashes, and the merge builds the tree in shard order. The root therefore depends on the
//! order of the bytes but **not** on how many shards were cut, so sharding never changes it.
//!
//! The payload may be MessagePack `bin`, a string (its UTF-8 bytes), or an array of bytes.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Kind, KindError, Stop};

/// Default block size: 64 KiB.
pub const DEFAULT_BLOCK_SIZE: usize = 64 * 1024;

/// Computes a Merkle root over blocks.
#[derive(Debug, Clone, Copy)]
pub struct Checksum {
    block_size: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl Checksum {
    /// A checksum kind with another block size (at least 1 byte).
    pub fn with_block_size(block_size: usize) -> Self {
        Checksum {
            block_size: block_size.max(1),
        }
    }
}

/// Bytes that accept `bin`, a string, or a sequence of integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes, a string, or an array of bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
                Ok(Blob(v.as_bytes().to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Blob(out))
            }
        }
        d.deserialize_any(BlobVisitor)
    }
}

/// One shard: whole blocks of the input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChecksumShard {
    /// Block size the shard was cut with.
    pub block_size: u32,
    /// The bytes, a whole number of blocks except possibly in the last shard.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// One shard's leaf hashes, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leaves {
    /// Bytes covered.
    pub bytes: u64,
    /// `SHA-256(0x00 ‖ block)` for each block.
    pub leaves: Vec<serde_bytes::ByteBuf>,
}

/// The merged result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Merkle root, lower-case hex.
    pub root: String,
    /// Number of blocks (leaves).
    pub blocks: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Total input length in bytes.
    pub bytes: u64,
}

impl Kind for Checksum {
    type Input = Blob;
    type Shard = ChecksumShard;
    type Partial = Leaves;
    type Output = Root;

    /// Pure: a shard's result depends on the shard alone.
    fn hedge_safe(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "checksum"
    }

    fn size(&self, input: &Blob) -> u64 {
        input.0.len() as u64
    }

    fn shard_size_hint(&self) -> u64 {
        16 * DEFAULT_BLOCK_SIZE as u64
    }

    fn split(&self, input: Blob, n: usize) -> Vec<ChecksumShard> {
        let blocks: Vec<&[u8]> = input.0.chunks(self.block_size).collect();
        super::even_chunks(&blocks, n)
            .into_iter()
            .map(|run| ChecksumShard {
                block_size: u32::try_from(self.block_size).unwrap_or(u32::MAX),
                data: run.concat(),
            })
            .collect()
    }

    fn process(&self, shard: ChecksumShard) -> Result<Leaves, KindError> {
        self.process_with(shard, &Stop::new())
    }

    fn process_with(&self, shard: ChecksumShard, stop: &Stop) -> Result<Leaves, KindError> {
        let block_size = usize::try_from(shard.block_size.max(1)).unwrap_or(DEFAULT_BLOCK_SIZE);
        let mut leaves = Vec::with_capacity(shard.data.len().div_ceil(block_size));
        for (i, block) in shard.data.chunks(block_size).enumerate() {
            if i % 256 == 0 {
                stop.check()?;
            }
            leaves.push(serde_bytes::ByteBuf::from(hash(&[&[0x00], block]).to_vec()));
        }
        Ok(Leaves {
            bytes: shard.data.len() as u64,
            leaves,
        })
    }

    fn merge(&self, parts: Vec<Leaves>) -> Result<Root, KindError> {
        let bytes = parts.iter().map(|p| p.bytes).sum();
        let mut level: Vec<[u8; 32]> = Vec::new();
        for leaf in parts.into_iter().flat_map(|p| p.leaves) {
            let leaf: [u8; 32] = leaf.as_slice().try_into().map_err(|_| KindError::Corrupt {
                kind: "checksum",
                what: "partial",
                detail: format!("leaf of {} bytes, expected 32", leaf.len()),
            })?;
            level.push(leaf);
        }
        let blocks = level.len() as u64;
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => hash(&[&[0x01], l, r]),
                    [only] => *only,
                    _ => unreachable!("chunks(2) yields 1 or 2 items"),
                })
                .collect();
        }
        let root = level.first().copied().unwrap_or_else(|| hash(&[]));
        Ok(Root {
            root: hex::encode(root),
            blocks,
            block_size: u32::try_from(self.block_size).unwrap_or(u32::MAX),
            bytes,
        })
    }
}

fn hash(pieces: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in pieces {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::testing::run_sharded;
    use quickcheck::quickcheck;

    fn value(bytes: &[u8]) -> rmpv::Value {
        rmpv::Value::Binary(bytes.to_vec())
    }

    quickcheck! {
        /// Any number of shards gives the same root as one shard.
        fn sharded_equals_unsharded(data: Vec<u8>, n: u8, bs: u8) -> bool {
            if data.is_empty() { return true; }
            let kind = Checksum::with_block_size(usize::from(bs % 16) + 1);
            let n = usize::from(n).clamp(1, data.len());
            run_sharded(kind, value(&data), n) == run_sharded(kind, value(&data), 1)
        }
    }

    /// Swapping two blocks changes the root: the result depends on order.
    #[test]
    fn root_depends_on_order() {
        let kind = Checksum::with_block_size(4);
        let a = run_sharded(kind, value(b"aaaabbbbcccc"), 3);
        let b = run_sharded(kind, value(b"bbbbaaaacccc"), 3);
        assert_ne!(a, b);
    }

    /// A single block's root is its leaf hash: SHA-256 of 0x00 followed by the bytes.
    #[test]
    fn single_block_root_is_the_leaf() {
        let out = run_sharded(Checksum::default(), value(b"abc"), 1);
        let root: Root = rmpv::ext::from_value(out).expect("root");
        assert_eq!(root.root, hex::encode(hash(&[&[0], b"abc"])));
        assert_eq!((root.blocks, root.bytes), (1, 3));
    }

    /// Strings, binary and byte arrays are the same input.
    #[test]
    fn accepts_strings_bins_and_arrays() {
        let kind = Checksum::with_block_size(2);
        let s = run_sharded(kind, "hello".into(), 2);
        let b = run_sharded(kind, value(b"hello"), 2);
        let a = run_sharded(kind, rmpv::ext::to_value(b"hello".to_vec()).expect("v"), 2);
        assert_eq!(s, b);
        assert_eq!(s, a);
    }
}
