//! The agent's Kubernetes phase: turns masters into an HA control plane
//! and joins workers with kubeadm, the way an operator would by hand, with
//! no hand work. See `README.md` for the architecture and the decisions.
//!
//! Pure parts (data in, data out; no files, processes, clocks or etcd):
//! - [`render`]: the kubeadm configuration per role (`kubeadm.k8s.io/v1beta4`,
//!   types in [`api`]);
//! - [`token`]: the bootstrap token derived from the cluster secret, and
//!   whether to recreate it;
//! - [`decide`]: idempotence, the next step, backoff, the VIP's health check;
//! - [`pin`]: the CA public key pin.
//!
//! I/O parts:
//! - [`election`]: the init election, one etcd transaction;
//! - [`facts`]: what earlier kubeadm runs left on disk;
//! - [`pki_files`]: placing the shared CA material;
//! - [`proof`]: the persisted proof that init/join worked;
//! - [`hostgw`]: the agent's own pod network (bridge CNI + routes);
//! - [`runner`]: running kubeadm ([`runner::ProcessRunner`]) or recording
//!   the calls ([`runner::RecordingRunner`], tests);
//! - [`image`]: the image's Kubernetes manifest (skip reason);
//! - [`kubeapi`]: the one Kubernetes API client (`/readyz`, Nodes), TLS
//!   verified against the derived CA;
//! - [`probe`]: the API server's `/readyz` and the kubelet's unit state for the status;
//! - [`phase`]: [`phase::KubePhase::reconcile`], which ties it together.
#![warn(missing_docs)]

pub mod api;
pub mod decide;
pub mod election;
pub mod facts;
pub mod hostgw;
pub mod image;
pub mod kubeapi;
pub mod outcome;
pub mod paths;
pub mod phase;
pub mod pin;
pub mod pki_files;
pub mod probe;
pub mod proof;
pub mod render;
pub mod runner;
pub mod token;

pub use decide::{vip_health, PhaseState, VipHealth};
pub use phase::{DerivedMaterial, KubeContext, KubeError, KubePhase, KubeStatus};
pub use pin::CaPin;
pub use render::KubeadmInputs;
pub use runner::{KubeadmRunner, ProcessRunner, RecordingRunner};
pub use token::BootstrapToken;
