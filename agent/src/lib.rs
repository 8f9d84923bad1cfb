//! The first-boot agent (skeleton; its reconcilers arrive with the quorum issue).
#![warn(missing_docs)]

pub use cluster_config;
