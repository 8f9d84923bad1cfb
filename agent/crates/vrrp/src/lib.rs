//! VRRPv3 ([RFC 5798]) virtual IP for the API server: a
//! keepalived-equivalent that speaks real VRRPv3 on the wire (so it
//! interoperates with keepalived), plus a quorum rule keepalived lacks.
//! See `README.md` for the architecture, the quorum rule and how the
//! default interval was chosen.
//!
//! Modules, pure first:
//! - [`packet`]: advert encoding/decoding, checksum with the IPv4
//!   pseudo-header, receive checks (TTL 255, version, router id).
//! - [`machine`]: the Initialize/Backup/Master state machine plus `Fault`
//!   (no proven quorum) and `Leaving` (planned stop); a backup becomes
//!   master only on a quorum proof issued after its master-down decision,
//!   a master resigns when its proof lease runs out; takes events and
//!   `now`, returns actions.
//! - [`proof`]: the quorum proof, a linearizable read on the local etcd
//!   member.
//! - [`tracker`]: fall/rise verdicts and the HTTP(S) weighted checks (API
//!   server `/readyz` for priority).
//! - [`config`]: [`VrrpConfig`] from the cluster configuration.
//! - [`status`]: the snapshot `agent status` prints.
//! - [`netlink`], [`sock`], [`runner`]: the I/O shell (rtnetlink for the
//!   VIP, raw sockets for adverts and gratuitous ARP, tokio for timers).
//!
//! Embedding:
//!
//! ```no_run
//! # async fn demo(cfg: cluster_config::ClusterConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use vrrp::{config::DEFAULT_PROOF, proof::DEFAULT_PROOF_TIMEOUT};
//! use vrrp::{tracker, EtcdProver, Quorum, TlsFiles, Vrrp, VrrpConfig};
//! let vip = cfg.network.vip.ok_or("no VIP configured")?;
//! let config = VrrpConfig::new(&cfg.vrrp, vip, "eth0")?;
//! let prover = EtcdProver::new(
//!     "https://127.0.0.1:2379",
//!     TlsFiles::default(),
//!     DEFAULT_PROOF_TIMEOUT,
//! )?;
//! let quorum = Quorum::Proven {
//!     prover,
//!     params: DEFAULT_PROOF,
//!     shed_leadership: true,
//! };
//! let checks = tracker::spawn(Vec::new())?; // weighted checks, if any
//! let (_peers_tx, peers) = tokio::sync::watch::channel(Vec::new());
//! let handle = Vrrp::spawn(config, quorum, checks.health(), peers).await?;
//! println!("{}", handle.status());
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! [RFC 5798]: https://www.rfc-editor.org/rfc/rfc5798
#![warn(missing_docs)]

pub mod config;
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

pub use config::VrrpConfig;
pub use machine::{Health, ProofParams, State};
#[cfg(feature = "runtime")]
pub use proof::{EtcdProver, ProofError, Shed};
#[cfg(feature = "runtime")]
pub use runner::{Quorum, RunError, Vrrp, VrrpHandle};
pub use status::Status;
#[cfg(feature = "runtime")]
pub use tracker::{CheckRole, CheckSpec, TlsFiles, Tracker};
