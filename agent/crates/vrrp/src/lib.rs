#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
#[cfg(feature = "http-check")]
pub mod http_check;
pub mod machine;
#[cfg(feature = "runtime")]
pub mod netlink;
pub mod packet;
#[cfg(feature = "runtime")]
pub mod proof;
#[cfg(feature = "runtime")]
pub mod runner;
#[cfg(feature = "runtime")]
pub mod sock;
pub mod status;
#[cfg(feature = "runtime")]
pub mod tracker;
pub mod verdict;

pub use config::VrrpConfig;
pub use machine::{Health, ProofParams, State};
#[cfg(feature = "runtime")]
pub use proof::{EtcdProver, ProofError, Shed};
#[cfg(feature = "runtime")]
pub use runner::{Quorum, RunError, Vrrp, VrrpHandle};
pub use status::Status;
#[cfg(feature = "runtime")]
pub use tracker::{CheckRole, CheckSpec, TlsFiles, Tracker};
