#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod actions;
pub mod balance;
pub mod config;
pub mod control;
pub mod core;
pub mod etcd;
pub mod kube;
pub mod node_pki;
pub mod peers;
pub mod recovery;
pub mod remote;
pub mod restore;
pub mod run;
pub mod socket;
pub mod startup;
pub mod state;
pub mod status;
pub mod vip;

pub use cluster_config;
