//! Authenticated peer discovery for kubeboot nodes.
//!
//! Nodes announce who they are (id, role, name, addresses, phase, etcd
//! cluster, proposed initial member set) in small UDP datagrams, each
//! authenticated with HMAC-SHA256 under a key derived (HKDF) from the
//! cluster secret and the cluster name, and carrying a timestamp and a
//! random nonce against replay. Anything failing a check is dropped and
//! counted by reason.
//!
//! Layers, pure first:
//!
//! - [`message`]: the [`Announcement`], [`seal`] / [`open`] and the bounded
//!   [`ReplayGuard`] (pure: data + `now`).
//! - [`peers`]: the [`PeerTable`] with per-role expiry (pure).
//! - [`skew`]: clock-skew diagnostics: peers whose authenticated messages
//!   fall outside the time window, their offset and the warning to log
//!   (pure; documents why the window stays absolute).
//! - [`rate`]: the rate policy ([`announce_interval`], jitter, replies,
//!   backoff), which keeps a master under 100 received msg/s with 5,000
//!   workers and a worker's rate independent of the cluster size (pure).
//! - [`source`]: the [`DiscoverySource`] trait, [`MulticastSource`] and
//!   [`StaticPeersSource`] (I/O).
//! - [`runner`]: [`Discovery::spawn`], the async loop tying them together.
#![warn(missing_docs)]

pub mod message;
pub mod peers;
pub mod rate;
pub mod runner;
pub mod skew;
pub mod source;

pub use message::{
    open, parse_frame, peek_authenticated, seal, seal_body, Announcement, DiscoveryKeys, EtcdInfo,
    KubeJoinInfo, KubeState, NodeId, ParseNodeIdError, Phase, Rejected, ReplayGuard,
};
pub use peers::{Observed, Peer, PeerSnapshot, PeerTable};
pub use rate::announce_interval;
pub use runner::{Discovery, DiscoveryHandle, DiscoveryOptions, DiscoveryStats, RejectCounts};
pub use skew::{SkewReport, SkewTracker};
pub use source::{
    masters_group, Destination, DiscoverySource, MulticastOptions, MulticastSource,
    StaticPeersSource,
};
