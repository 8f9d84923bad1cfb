#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod message;
pub mod peers;
pub mod rate;
pub mod runner;
pub mod skew;
pub mod source;

pub use message::{
    open, parse_frame, peek_authenticated, seal, seal_body, Announcement, DiscoveryKeys, EpochInfo,
    EtcdInfo, KubeJoinInfo, KubeState, NodeId, ParseNodeIdError, Phase, Rejected, ReplayGuard,
};
pub use peers::{Observed, Peer, PeerSnapshot, PeerTable};
pub use rate::announce_interval;
pub use runner::{Discovery, DiscoveryHandle, DiscoveryOptions, DiscoveryStats, RejectCounts};
pub use skew::{SkewReport, SkewTracker};
pub use source::{
    masters_group, Destination, DiscoverySource, MulticastOptions, MulticastSource,
    StaticPeersSource,
};
