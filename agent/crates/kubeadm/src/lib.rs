#![doc = include_str!("../README.md")]
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
pub mod report;
pub mod runner;
pub mod task;
pub mod token;

pub use decide::{vip_health, PhaseState, VipHealth};
pub use phase::{DerivedMaterial, KubeContext, KubeError, KubePhase, KubeStatus};
pub use pin::CaPin;
pub use render::KubeadmInputs;
pub use runner::{KubeadmRunner, ProcessRunner, RecordingRunner};
pub use token::BootstrapToken;
