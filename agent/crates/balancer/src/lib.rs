#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod check;
pub mod pool;
pub mod proxy;
pub mod status;

pub use check::{CheckError, CheckSpec};
pub use pool::{BackendId, HealthRules, Pool};
pub use proxy::{
    hand_over, BackendChange, Balancer, BalancerConfig, BalancerError, HandOverReport, POLICY,
};
pub use status::{BackendHealth, BackendStatus, BalancerStatus, ListenerState};
