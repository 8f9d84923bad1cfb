//! The kubeboot node agent: discovers its peers, self-assembles a TLS etcd
//! quorum and keeps it converged. See `README.md` for the architecture.
//!
//! The pure [`core`] (plan, quorum decisions, persisted model), the flag
//! rendering in [`etcd`] and the layering in [`config`] take data and
//! `now` and return data; the shell
//! ([`run`]) does the I/O and feeds results back as events. [`kube`] wires
//! the Kubernetes phase (crate `kubeadm`) into the loop.
#![warn(missing_docs)]

mod actions;
pub mod config;
pub mod core;
pub mod etcd;
pub mod kube;
pub mod node_pki;
pub mod peers;
pub mod run;
pub mod startup;
pub mod state;
pub mod status;
pub mod vip;

pub use cluster_config;
