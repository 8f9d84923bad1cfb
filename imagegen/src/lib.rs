#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod assemble;
pub mod bake;
pub mod build;
pub mod cli;
pub mod manifest;
pub mod output;
pub mod packages;
/// Profiles: parsing, merge and validation (the `profile` crate).
pub use ::profile;
