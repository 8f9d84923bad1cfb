//! Debian archive client (skeleton in progress).
#![warn(missing_docs)]

pub mod control;
pub mod index;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod signature;
pub mod version;
