//! The announcement message and its authenticated wire format (pure).
//!
//! ```text
//! offset  size  field
//!      0     3  magic "KBD"
//!      3     1  version (1)
//!      4     8  timestamp, ms since the Unix epoch, big endian
//!     12    16  nonce (random per message)
//!     28     2  body length L, big endian
//!     30     L  body: the Announcement as JSON
//!   30+L    32  tag: HMAC-SHA256(key, bytes 0 .. 30+L)
//! ```
//!
//! The key is HKDF-SHA256 (RFC 5869) of the cluster secret with the cluster
//! name in `info`, so two clusters sharing a secret by mistake still do not
//! accept each other's messages. [`open`] checks, in this order: framing and
//! size, the tag (constant-time compare), the timestamp window, the body,
//! then the replay cache. Nothing from an unauthenticated message is parsed
//! beyond the fixed header.
//!
//! The body is JSON (`serde_json`): small (about 300 bytes for three
//! masters), readable in a packet capture, and new fields can be added
//! without a version bump (unknown fields are ignored by older nodes).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use cluster_config::{ClusterSecret, Role};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

/// Magic bytes at the start of every message.
pub const MAGIC: &[u8; 3] = b"KBD";
/// The wire format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Fixed header length (magic, version, timestamp, nonce, body length).
pub const HEADER_LEN: usize = 30;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// Largest message accepted (fits an Ethernet frame without fragmenting).
pub const MAX_MESSAGE_LEN: usize = 1400;
/// Default accepted clock difference between sender and receiver, each way.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
/// Nonces remembered per sender before the oldest is folded into a floor.
pub const MAX_NONCES_PER_SENDER: usize = 128;
/// Senders remembered by a [`ReplayGuard`] at once.
pub const MAX_SENDERS: usize = 65_536;

type HmacSha256 = Hmac<Sha256>;

/// A node's stable identity: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A fresh random id (the agent persists it on the data partition).
    pub fn random() -> Self {
        NodeId(rand::random())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A [`NodeId`] string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("node id {0:?} must be 32 hex digits")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseNodeIdError(s.to_owned()))?;
        Ok(NodeId(id))
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a node is in its first-boot life (on the wire, kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Reading configuration.
    Starting,
    /// Looking for peers (masters: waiting for the expected count).
    Discovering,
    /// Starting a new etcd cluster with the chosen initial members.
    Bootstrapping,
    /// Joining an existing etcd cluster (learner, then promoted).
    Joining,
    /// A member of an etcd cluster (not yet serving everything).
    EtcdMember,
    /// Fully up.
    Ready,
    /// Stopped on an error (see the node's status).
    Failed,
}

impl Phase {
    /// True while a node is still assembling (announces at the fast rate).
    pub fn is_assembling(self) -> bool {
        matches!(
            self,
            Phase::Starting | Phase::Discovering | Phase::Bootstrapping | Phase::Joining
        )
    }
}

/// The etcd cluster a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EtcdInfo {
    /// etcd's cluster id.
    pub cluster_id: u64,
    /// This node's member id in it.
    pub member_id: u64,
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Stable node id.
    pub node_id: NodeId,
    /// Master or worker.
    pub role: Role,
    /// Host name.
    pub name: String,
    /// Addresses on the cluster network.
    pub addresses: Vec<Ipv4Addr>,
    /// Current phase.
    pub phase: Phase,
    /// The etcd cluster it is a member of, if any.
    pub etcd: Option<EtcdInfo>,
    /// The initial member set it proposes while assembling (else empty).
    pub proposal: Vec<NodeId>,
    /// Where it is in the Kubernetes phase (absent from nodes that predate
    /// it: the field is optional on the wire both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeState>,
    /// What a worker needs to join the Kubernetes cluster (masters only;
    /// absent from nodes that predate it, ignored by them: optional on the
    /// wire both ways). Never carries the bootstrap token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_join: Option<KubeJoinInfo>,
    /// The recovery epoch of the node's etcd state (issue 17): absent for
    /// epoch 0 (the cluster formed at first boot) and from nodes that
    /// predate recovery, which ignore it: optional on the wire both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<EpochInfo>,
    /// The SHA-256 (hex) of the etcd snapshot a blank master was given to
    /// bootstrap a new cluster from (issue 17, `[etcd] restore_from`):
    /// part of what the initial set must agree on. Absent without one and
    /// from nodes that predate it: optional on the wire both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// A recovery epoch on the wire: its number and the node that recovered
/// into it (epochs order by number, then by that node's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EpochInfo {
    /// 1 after the first recovery, +1 per recovery.
    pub number: u32,
    /// The recovering node.
    pub by: NodeId,
}

/// The public Kubernetes join material a master announces: the API
/// endpoint on the VIP and the CA public key pin. Authenticated like the
/// rest of the announcement (HMAC with the cluster's key), so a worker can
/// trust the pin; the token stays derived from the secret on every node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KubeJoinInfo {
    /// `<VIP>:<API port>`, e.g. `10.77.0.10:6443`.
    pub api_endpoint: String,
    /// `sha256:<hex>` of the Kubernetes CA's SubjectPublicKeyInfo.
    pub ca_pin: String,
}

/// Where a node is in the Kubernetes (kubeadm) phase, on the wire
/// (kebab-case). Masters use it to tell whether some node still waits to
/// join (and so needs the bootstrap token); workers use a master's `ready`
/// as the sign that the API server behind the VIP exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeState {
    /// Not started yet (masters: etcd not a healthy voter yet; workers: no
    /// master with a ready API server seen yet).
    Pending,
    /// The image has no Kubernetes components.
    Skipped,
    /// A master waiting for the init node.
    WaitingForInit,
    /// Running `kubeadm init`.
    Initialising,
    /// Running `kubeadm join`.
    Joining,
    /// A step failed and is retried.
    Retrying,
    /// Stopped on a configuration error.
    Failed,
    /// Initialised or joined.
    Ready,
    /// A state this node does not know (sent by a newer node).
    #[serde(other)]
    Unknown,
}

impl KubeState {
    /// Whether a node in this state still has to init or join (it may need
    /// the bootstrap token). `Unknown` counts as not waiting.
    pub fn waits_to_join(self) -> bool {
        matches!(
            self,
            KubeState::Pending
                | KubeState::WaitingForInit
                | KubeState::Initialising
                | KubeState::Joining
                | KubeState::Retrying
        )
    }
}

/// Why [`open`] refused a message. Every variant is counted by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Error)]
pub enum Rejected {
    /// Too short, too long, wrong magic, inconsistent length, or (after
    /// authentication) a body that is not a valid announcement.
    #[error("malformed message")]
    Malformed,
    /// A wire format version this node does not speak.
    #[error("unsupported message version")]
    UnsupportedVersion,
    /// The tag does not match: forged, corrupted, or another secret/cluster.
    #[error("bad message authentication tag (wrong secret or forged)")]
    BadMac,
    /// Timestamp older than the window.
    #[error("stale timestamp (older than the accepted window)")]
    Stale,
    /// Timestamp newer than the window (sender clock ahead).
    #[error("timestamp in the future (beyond the accepted window)")]
    Future,
    /// The same sender already used this nonce, or the message is older
    /// than what the replay cache still remembers for that sender.
    #[error("replayed message")]
    Replayed,
    /// The replay cache holds [`MAX_SENDERS`] live senders already.
    #[error("too many senders in the replay cache")]
    TooManySenders,
}

/// The discovery MAC key, derived from the cluster secret and name.
#[derive(Clone)]
pub struct DiscoveryKeys {
    mac_key: [u8; 32],
}

impl fmt::Debug for DiscoveryKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiscoveryKeys(<redacted>)")
    }
}

impl DiscoveryKeys {
    /// HKDF-SHA256: salt `kubeboot/discovery/v1`, ikm the secret, info
    /// `kubeboot/discovery/v1/hmac/<cluster name>`.
    pub fn derive(secret: &ClusterSecret, cluster_name: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"kubeboot/discovery/v1"), secret.expose());
        let mut mac_key = [0u8; 32];
        let info = format!("kubeboot/discovery/v1/hmac/{cluster_name}");
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: cannot fail.
        if hk.expand(info.as_bytes(), &mut mac_key).is_err() {
            unreachable!("HKDF-SHA256 can always expand 32 bytes");
        }
        DiscoveryKeys { mac_key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length: cannot fail.
        match HmacSha256::new_from_slice(&self.mac_key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

/// Encodes and authenticates an announcement.
///
/// The body of a sane announcement is a few hundred bytes; one larger than
/// [`MAX_MESSAGE_LEN`] is still produced but every receiver rejects it as
/// malformed, so keep `addresses` and `proposal` short.
pub fn seal(ann: &Announcement, keys: &DiscoveryKeys, now_ms: u64, nonce: [u8; 16]) -> Vec<u8> {
    // Serialising plain data (strings, numbers, enums) to JSON cannot fail.
    let body = serde_json::to_vec(ann).unwrap_or_default();
    seal_body(&body, keys, now_ms, nonce)
}

/// Frames and authenticates arbitrary body bytes. For tests and fuzzing: it
/// plays a peer that holds the secret but sends garbage. A body longer than
/// 65,535 bytes is cut (and the message is then too long to be accepted).
pub fn seal_body(body: &[u8], keys: &DiscoveryKeys, now_ms: u64, nonce: [u8; 16]) -> Vec<u8> {
    let body_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut msg = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    msg.extend_from_slice(MAGIC);
    msg.push(VERSION);
    msg.extend_from_slice(&now_ms.to_be_bytes());
    msg.extend_from_slice(&nonce);
    msg.extend_from_slice(&body_len.to_be_bytes());
    msg.extend_from_slice(&body[..usize::from(body_len)]);
    let mut mac = keys.mac();
    mac.update(&msg);
    msg.extend_from_slice(&mac.finalize().into_bytes());
    msg
}

/// The fixed header of a message, parsed without authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sender's timestamp, ms.
    pub timestamp_ms: u64,
    /// Sender's nonce.
    pub nonce: [u8; 16],
    /// The (unauthenticated) body bytes.
    pub body: &'a [u8],
    /// Everything the tag covers.
    pub signed: &'a [u8],
    /// The tag.
    pub tag: &'a [u8],
}

/// Splits a message into its parts, checking only sizes, magic and version.
pub fn parse_frame(msg: &[u8]) -> Result<Frame<'_>, Rejected> {
    if msg.len() < HEADER_LEN + TAG_LEN || msg.len() > MAX_MESSAGE_LEN {
        return Err(Rejected::Malformed);
    }
    if &msg[..3] != MAGIC {
        return Err(Rejected::Malformed);
    }
    if msg[3] != VERSION {
        return Err(Rejected::UnsupportedVersion);
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&msg[4..12]);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&msg[12..28]);
    let body_len = usize::from(u16::from_be_bytes([msg[28], msg[29]]));
    if HEADER_LEN + body_len + TAG_LEN != msg.len() {
        return Err(Rejected::Malformed);
    }
    let signed_end = HEADER_LEN + body_len;
    Ok(Frame {
        timestamp_ms: u64::from_be_bytes(ts),
        nonce,
        body: &msg[HEADER_LEN..signed_end],
        signed: &msg[..signed_end],
        tag: &msg[signed_end..],
    })
}

/// Authenticates and decodes a message; records its nonce in `replay`.
pub fn open(
    msg: &[u8],
    keys: &DiscoveryKeys,
    now_ms: u64,
    replay: &mut ReplayGuard,
) -> Result<Announcement, Rejected> {
    let frame = parse_frame(msg)?;
    let mut mac = keys.mac();
    mac.update(frame.signed);
    // `verify_slice` compares in constant time.
    mac.verify_slice(frame.tag).map_err(|_| Rejected::BadMac)?;
    replay.check_time(frame.timestamp_ms, now_ms)?;
    let ann: Announcement = serde_json::from_slice(frame.body).map_err(|_| Rejected::Malformed)?;
    replay.record(ann.node_id, frame.timestamp_ms, frame.nonce, now_ms)?;
    Ok(ann)
}

/// Authenticates and decodes a message **without** the time and replay
/// checks: for diagnosing a message [`open`] refused as stale or future
/// (its tag is genuine, so its sender and timestamp can be believed; see
/// [`crate::skew`]). Never use its result as a live announcement.
pub fn peek_authenticated(msg: &[u8], keys: &DiscoveryKeys) -> Option<(Announcement, u64)> {
    let frame = parse_frame(msg).ok()?;
    let mut mac = keys.mac();
    mac.update(frame.signed);
    mac.verify_slice(frame.tag).ok()?;
    let ann: Announcement = serde_json::from_slice(frame.body).ok()?;
    Some((ann, frame.timestamp_ms))
}

/// What the replay cache remembers of one sender.
#[derive(Debug, Default)]
struct SenderNonces {
    /// (timestamp, nonce) of accepted messages still inside the window.
    seen: VecDeque<(u64, [u8; 16])>,
    /// Messages at or before this timestamp are refused: their nonces were
    /// evicted to bound memory, so they cannot be checked any more.
    floor_ms: u64,
}

/// A bounded replay cache: per sender, the nonces seen within the window.
///
/// Memory is bounded by [`MAX_SENDERS`] × [`MAX_NONCES_PER_SENDER`]. When a
/// sender's list is full, its oldest nonce is dropped and its timestamp
/// becomes that sender's floor, so a replay of a dropped message is still
/// refused (as are that sender's late, reordered messages older than the
/// floor: harmless, announcements repeat). Entries older than the window
/// expire: the timestamp check already refuses them.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    senders: HashMap<NodeId, SenderNonces>,
    last_sweep_ms: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_MS)
    }
}

impl ReplayGuard {
    /// A cache accepting timestamps within `window_ms` of the receiver's clock.
    pub fn new(window_ms: u64) -> Self {
        ReplayGuard {
            window_ms,
            senders: HashMap::new(),
            last_sweep_ms: 0,
        }
    }

    /// The accepted clock difference, each way.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Number of senders currently remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Refuses timestamps outside `now ± window`.
    pub fn check_time(&self, timestamp_ms: u64, now_ms: u64) -> Result<(), Rejected> {
        if timestamp_ms.saturating_add(self.window_ms) < now_ms {
            return Err(Rejected::Stale);
        }
        if timestamp_ms > now_ms.saturating_add(self.window_ms) {
            return Err(Rejected::Future);
        }
        Ok(())
    }

    /// Records `(sender, nonce)`; refuses a repeat. Call only for messages
    /// that passed the tag and time checks.
    pub fn record(
        &mut self,
        sender: NodeId,
        timestamp_ms: u64,
        nonce: [u8; 16],
        now_ms: u64,
    ) -> Result<(), Rejected> {
        self.check_time(timestamp_ms, now_ms)?;
        if now_ms.saturating_sub(self.last_sweep_ms) >= self.window_ms
            || (self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&sender))
        {
            self.sweep(now_ms);
        }
        if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&sender) {
            return Err(Rejected::TooManySenders);
        }
        let horizon = now_ms.saturating_sub(self.window_ms);
        let entry = self.senders.entry(sender).or_default();
        entry.seen.retain(|(ts, _)| *ts >= horizon);
        if entry.floor_ms > 0 && timestamp_ms <= entry.floor_ms {
            return Err(Rejected::Replayed);
        }
        if entry.seen.iter().any(|(_, n)| *n == nonce) {
            return Err(Rejected::Replayed);
        }
        entry.seen.push_back((timestamp_ms, nonce));
        if entry.seen.len() > MAX_NONCES_PER_SENDER {
            // Drop the entry with the oldest timestamp (arrival order may differ).
            let oldest = entry
                .seen
                .iter()
                .enumerate()
                .min_by_key(|(_, (ts, _))| *ts)
                .map(|(i, (ts, _))| (i, *ts));
            if let Some((i, ts)) = oldest {
                entry.seen.remove(i);
                entry.floor_ms = entry.floor_ms.max(ts);
            }
        }
        Ok(())
    }

    /// Forgets senders with nothing left inside the window.
    pub fn sweep(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.window_ms);
        self.senders.retain(|_, s| {
            s.seen.retain(|(ts, _)| *ts >= horizon);
            !s.seen.is_empty() || s.floor_ms >= horizon
        });
        self.last_sweep_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn keys(secret: &str, cluster: &str) -> DiscoveryKeys {
        DiscoveryKeys::derive(&ClusterSecret::new(secret).unwrap(), cluster)
    }

    fn ann(id: u8) -> Announcement {
        Announcement {
            node_id: NodeId([id; 16]),
            role: Role::Master,
            name: format!("master-{id}"),
            addresses: vec![Ipv4Addr::new(10, 77, 0, id)],
            phase: Phase::Discovering,
            etcd: Some(EtcdInfo {
                cluster_id: u64::MAX,
                member_id: 7,
            }),
            proposal: vec![NodeId([1; 16]), NodeId([2; 16]), NodeId([3; 16])],
            kube: None,
            kube_join: None,
            epoch: None,
            restore: None,
        }
    }

    #[test]
    fn round_trip() {
        let k = keys("0123456789abcdef-secret", "c1");
        let msg = seal(&ann(5), &k, NOW, [9; 16]);
        assert!(msg.len() < 600, "{} bytes", msg.len());
        let mut guard = ReplayGuard::default();
        assert_eq!(open(&msg, &k, NOW + 10, &mut guard), Ok(ann(5)));
    }

    #[test]
    fn wrong_secret_or_cluster_rejected() {
        let msg = seal(
            &ann(1),
            &keys("0123456789abcdef-secret", "c1"),
            NOW,
            [1; 16],
        );
        let mut guard = ReplayGuard::default();
        for other in [
            keys("0123456789abcdef-secreT", "c1"),
            keys("0123456789abcdef-secret", "c2"),
        ] {
            assert_eq!(open(&msg, &other, NOW, &mut guard), Err(Rejected::BadMac));
        }
        assert_eq!(
            guard.senders(),
            0,
            "unauthenticated messages must not touch the cache"
        );
    }

    #[test]
    fn forged_messages_rejected() {
        let k = keys("0123456789abcdef-secret", "c1");
        let msg = seal(&ann(1), &k, NOW, [1; 16]);
        // Flip each bit of the covered bytes and of the tag: all fail the MAC.
        for i in 0..msg.len() {
            if (28..30).contains(&i) {
                continue; // the length field: covered below (malformed)
            }
            let mut forged = msg.clone();
            forged[i] ^= 0x01;
            let got = open(&forged, &k, NOW, &mut ReplayGuard::default());
            let want = if i < 3 {
                Rejected::Malformed
            } else if i == 3 {
                Rejected::UnsupportedVersion
            } else {
                Rejected::BadMac
            };
            assert_eq!(got, Err(want), "byte {i}");
        }
        // A body swapped in with the old tag (the classic forgery).
        let other = seal(&ann(2), &k, NOW, [1; 16]);
        let mut spliced = other[..other.len() - TAG_LEN].to_vec();
        spliced.extend_from_slice(&msg[msg.len() - TAG_LEN..]);
        assert_eq!(
            open(&spliced, &k, NOW, &mut ReplayGuard::default()),
            Err(Rejected::BadMac)
        );
        // An attacker without the key computing a tag with an empty key.
        let mut m = HmacSha256::new_from_slice(b"").unwrap();
        m.update(&other[..other.len() - TAG_LEN]);
        let mut zero_key = other[..other.len() - TAG_LEN].to_vec();
        zero_key.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(
            open(&zero_key, &k, NOW, &mut ReplayGuard::default()),
            Err(Rejected::BadMac)
        );
    }

    #[test]
    fn malformed_rejected() {
        let k = keys("0123456789abcdef-secret", "c1");
        let msg = seal(&ann(1), &k, NOW, [1; 16]);
        let mut g = ReplayGuard::default();
        assert_eq!(open(&[], &k, NOW, &mut g), Err(Rejected::Malformed));
        assert_eq!(
            open(&msg[..msg.len() - 1], &k, NOW, &mut g),
            Err(Rejected::Malformed)
        );
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(open(&longer, &k, NOW, &mut g), Err(Rejected::Malformed));
        assert_eq!(
            open(&vec![0u8; MAX_MESSAGE_LEN + 1], &k, NOW, &mut g),
            Err(Rejected::Malformed)
        );
        // An authenticated body that is not an announcement.
        let raw = seal_body(b"{}", &k, NOW, [3; 16]);
        assert_eq!(open(&raw, &k, NOW, &mut g), Err(Rejected::Malformed));
    }

    #[test]
    fn peek_believes_only_a_genuine_tag() {
        let k = keys("0123456789abcdef-secret", "c1");
        let msg = seal(&ann(4), &k, NOW + 7_200_000, [3; 16]);
        let mut g = ReplayGuard::default();
        assert_eq!(open(&msg, &k, NOW, &mut g), Err(Rejected::Future));
        let (peeked, ts) = peek_authenticated(&msg, &k).expect("genuine");
        assert_eq!(peeked, ann(4));
        assert_eq!(ts, NOW + 7_200_000);
        let mut forged = msg.clone();
        let at = forged.len() - 40;
        forged[at] ^= 1;
        assert!(peek_authenticated(&forged, &k).is_none());
        assert!(peek_authenticated(&msg, &keys("another-secret-0123456789abc", "c1")).is_none());
    }

    #[test]
    fn stale_and_future_rejected_at_window_edges() {
        let k = keys("0123456789abcdef-secret", "c1");
        let mut g = ReplayGuard::new(30_000);
        let at = |ts: u64, nonce: u8| seal(&ann(1), &k, ts, [nonce; 16]);
        assert_eq!(
            open(&at(NOW - 30_001, 1), &k, NOW, &mut g),
            Err(Rejected::Stale)
        );
        assert_eq!(
            open(&at(NOW + 30_001, 2), &k, NOW, &mut g),
            Err(Rejected::Future)
        );
        assert!(open(&at(NOW - 30_000, 3), &k, NOW, &mut g).is_ok());
        assert!(open(&at(NOW + 30_000, 4), &k, NOW, &mut g).is_ok());
    }

    #[test]
    fn kube_state_is_optional_and_forward_compatible() {
        // A body from a node that predates the field parses, with no state.
        let mut old = serde_json::to_value(ann(1)).unwrap();
        assert!(old.get("kube").is_none(), "None is not sent: {old}");
        let parsed: Announcement = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(parsed.kube, None);
        // A state this node knows round-trips in kebab-case.
        let mut a = ann(1);
        a.kube = Some(KubeState::WaitingForInit);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kube"], "waiting-for-init");
        assert_eq!(serde_json::from_value::<Announcement>(v).unwrap(), a);
        // A newer node's state is Unknown, not a malformed message.
        old["kube"] = serde_json::json!("some-future-state");
        let parsed: Announcement = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.kube, Some(KubeState::Unknown));
        assert!(!KubeState::Unknown.waits_to_join());
        assert!(!KubeState::Ready.waits_to_join());
        assert!(!KubeState::Skipped.waits_to_join());
        assert!(!KubeState::Failed.waits_to_join());
        assert!(KubeState::Joining.waits_to_join());
        assert!(KubeState::Pending.waits_to_join());
    }

    #[test]
    fn epoch_is_optional_both_ways() {
        // Epoch 0 and older nodes: no field at all, and it parses.
        let old = serde_json::to_value(ann(1)).unwrap();
        assert!(old.get("epoch").is_none(), "None is not sent: {old}");
        assert_eq!(
            serde_json::from_value::<Announcement>(old).unwrap().epoch,
            None
        );
        // A recovered node's epoch round-trips through seal/open.
        let mut a = ann(1);
        a.epoch = Some(EpochInfo {
            number: 2,
            by: NodeId([3; 16]),
        });
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["epoch"]["number"], 2);
        assert_eq!(v["epoch"]["by"], "03".repeat(16));
        let k = keys("0123456789abcdef-secret", "c1");
        let mut g = ReplayGuard::new(30_000);
        let msg = seal(&a, &k, NOW, [9; 16]);
        assert!(msg.len() <= MAX_MESSAGE_LEN, "{} bytes", msg.len());
        assert_eq!(open(&msg, &k, NOW, &mut g), Ok(a));
        // An older node's parser (no epoch field) ignores it: the field is
        // one more unknown key, like any a newer node adds.
        #[derive(Deserialize)]
        struct Older {
            name: String,
        }
        let older: Older = serde_json::from_value(v).unwrap();
        assert_eq!(older.name, "master-1");
    }

    #[test]
    fn kube_join_is_optional_and_authenticated() {
        // A body from a node that predates the field parses, without it.
        let old = serde_json::to_value(ann(1)).unwrap();
        assert!(old.get("kube_join").is_none(), "None is not sent: {old}");
        let parsed: Announcement = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.kube_join, None);
        // A master's join material round-trips through seal/open.
        let mut a = ann(1);
        a.kube = Some(KubeState::Ready);
        a.kube_join = Some(KubeJoinInfo {
            api_endpoint: "10.77.0.10:6443".into(),
            ca_pin: format!("sha256:{}", "ab".repeat(32)),
        });
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kube_join"]["api_endpoint"], "10.77.0.10:6443");
        assert_eq!(
            v["kube_join"]["ca_pin"],
            format!("sha256:{}", "ab".repeat(32))
        );
        let k = keys("0123456789abcdef-secret", "c1");
        let mut g = ReplayGuard::new(30_000);
        let msg = seal(&a, &k, NOW, [9; 16]);
        assert!(msg.len() <= MAX_MESSAGE_LEN, "{} bytes", msg.len());
        assert_eq!(open(&msg, &k, NOW, &mut g), Ok(a.clone()));
        // A body from a newer node with more fields in it still parses.
        let mut newer = v.clone();
        newer["kube_join"]["future_field"] = serde_json::json!(1);
        let parsed: Announcement = serde_json::from_value(newer).unwrap();
        assert_eq!(parsed.kube_join, a.kube_join);
    }

    #[test]
    fn replay_rejected_then_expires_with_the_window() {
        let k = keys("0123456789abcdef-secret", "c1");
        let mut g = ReplayGuard::new(30_000);
        let msg = seal(&ann(1), &k, NOW, [7; 16]);
        assert!(open(&msg, &k, NOW, &mut g).is_ok());
        assert_eq!(open(&msg, &k, NOW + 1, &mut g), Err(Rejected::Replayed));
        assert_eq!(
            open(&msg, &k, NOW + 30_000, &mut g),
            Err(Rejected::Replayed)
        );
        // Once outside the window, the timestamp check refuses it instead.
        assert_eq!(open(&msg, &k, NOW + 30_001, &mut g), Err(Rejected::Stale));
        g.sweep(NOW + 60_001);
        assert_eq!(g.senders(), 0);
        // Same nonce from another sender is fine (cache is per sender).
        let mut g = ReplayGuard::new(30_000);
        assert!(open(&seal(&ann(1), &k, NOW, [7; 16]), &k, NOW, &mut g).is_ok());
        assert!(open(&seal(&ann(2), &k, NOW, [7; 16]), &k, NOW, &mut g).is_ok());
    }

    #[test]
    fn replay_cache_is_bounded_and_stays_sound() {
        let k = keys("0123456789abcdef-secret", "c1");
        let mut g = ReplayGuard::new(30_000);
        let msgs: Vec<Vec<u8>> = (0..(MAX_NONCES_PER_SENDER as u64 + 10))
            .map(|i| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&i.to_be_bytes());
                seal(&ann(1), &k, NOW + i, nonce)
            })
            .collect();
        let now = NOW + 200;
        for m in &msgs {
            assert!(open(m, &k, now, &mut g).is_ok());
        }
        // Every one of them, including those evicted from the list, is refused.
        for m in &msgs {
            assert_eq!(open(m, &k, now, &mut g), Err(Rejected::Replayed));
        }
        let entry = g.senders.get(&NodeId([1; 16])).unwrap();
        assert_eq!(entry.seen.len(), MAX_NONCES_PER_SENDER);
    }

    #[test]
    fn node_id_text_round_trip() {
        let id = NodeId([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<NodeId>(), Ok(id));
        assert!("abc".parse::<NodeId>().is_err());
        assert!("zz".repeat(16).parse::<NodeId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
    }

    #[test]
    fn phase_wire_names() {
        assert_eq!(
            serde_json::to_string(&Phase::EtcdMember).unwrap(),
            "\"etcd-member\""
        );
        assert!(Phase::Joining.is_assembling());
        assert!(!Phase::Ready.is_assembling());
    }
}
