#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod components;
mod http;
pub mod images;
pub mod pins;
pub mod registry;
#[cfg(test)]
mod testserver;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA256 of `data`: how components, blobs and image
/// digests are named and checked.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
