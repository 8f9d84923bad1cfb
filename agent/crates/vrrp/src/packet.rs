//! VRRPv3 advertisement codec for IPv4 ([RFC 5798 §5]). Pure: bytes in,
//! values out.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)                        |
//! ```
//!
//! The checksum covers the VRRP message plus the IPv4 pseudo-header
//! (source, destination, zero, protocol 112, VRRP length), as §5.2.8 says
//! and as keepalived computes it for `vrrp_version 3` (unless its
//! `vrrp_v3_checksum_as_v2` compatibility switch is on, which we do not
//! support). A raw `IPPROTO_VRRP` socket on Linux delivers the IPv4 header
//! too, so [`parse_ipv4`] checks TTL = 255 (§7.1) and the protocol before
//! the VRRP part is decoded.
//!
//! The one's complement sum is eight lines, so it is written here rather
//! than pulled from a crate.
//!
//! [RFC 5798 §5]: https://www.rfc-editor.org/rfc/rfc5798#section-5

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group VRRP advertisements go to.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL an advertisement may be sent or accepted with.
pub const VRRP_TTL: u8 = 255;
/// VRRP version this codec speaks.
pub const VERSION: u8 = 3;
/// Type field of an advertisement (the only type defined).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed VRRP header, before the addresses.
pub const HEADER_LEN: usize = 8;
/// Largest advertisement interval the 12-bit field holds, in centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// A decoded VRRPv3 advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router id (1..=255).
    pub vrid: u8,
    /// Sender's priority; 0 means "the master is leaving".
    pub priority: u8,
    /// Sender's advertisement interval in centiseconds (12 bits).
    pub max_adver_int_cs: u16,
    /// The virtual addresses the sender protects.
    pub addresses: Vec<Ipv4Addr>,
}

/// Why a received packet was rejected. Counted by reason in the status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Error, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Shorter than its headers or its own length fields say.
    #[error("packet truncated")]
    Truncated,
    /// Not an IPv4 packet, or a malformed IPv4 header.
    #[error("not a well-formed IPv4 packet")]
    BadIpHeader,
    /// The IPv4 protocol is not 112.
    #[error("IP protocol is not VRRP (112)")]
    NotVrrp,
    /// TTL (hop limit) was not 255 (RFC 5798 §7.1): the packet was routed.
    #[error("TTL is not 255")]
    BadTtl,
    /// Version field is not 3.
    #[error("VRRP version is not 3")]
    BadVersion,
    /// Type field is not 1 (advertisement).
    #[error("VRRP type is not advertisement (1)")]
    BadType,
    /// The checksum over pseudo-header and message does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// Zero advertisement interval.
    #[error("advertisement interval is 0")]
    BadInterval,
    /// Count of addresses is 0 or does not match the length.
    #[error("address count does not match the packet length")]
    BadCount,
    /// The advertisement is for another virtual router id (not counted as
    /// an error: several routers can share a segment).
    #[error("advertisement for another virtual router id")]
    OtherVrid,
    /// Same router id, but a different set of virtual addresses
    /// (a misconfiguration; RFC 5798 §7.1 says to log it).
    #[error("virtual addresses differ from ours")]
    AddressMismatch,
}

/// The IPv4 envelope of a received packet, with its VRRP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Envelope<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// The bytes after the IPv4 header, bounded by its total length.
    pub payload: &'a [u8],
}

/// Parses the IPv4 header a raw socket delivers and checks protocol and
/// TTL. Fragments are not expected (an advert is at most 1028 bytes).
pub fn parse_ipv4(packet: &[u8]) -> Result<Ipv4Envelope<'_>, Reject> {
    let first = *packet.first().ok_or(Reject::Truncated)?;
    if first >> 4 != 4 {
        return Err(Reject::BadIpHeader);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(Reject::BadIpHeader);
    }
    if packet.len() < ihl {
        return Err(Reject::Truncated);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < ihl {
        return Err(Reject::BadIpHeader);
    }
    if packet.len() < total {
        return Err(Reject::Truncated);
    }
    if packet[9] != IPPROTO_VRRP {
        return Err(Reject::NotVrrp);
    }
    let ttl = packet[8];
    if ttl != VRRP_TTL {
        return Err(Reject::BadTtl);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok(Ipv4Envelope {
        src,
        dst,
        ttl,
        payload: &packet[ihl..total],
    })
}

/// Sums 16-bit big-endian words into a 32-bit accumulator (RFC 1071).
fn sum_words(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// The VRRPv3 checksum of `message` (checksum field included as-is) with
/// the IPv4 pseudo-header. A message whose checksum field is correct
/// gives 0.
pub fn checksum(src: Ipv4Addr, dst: Ipv4Addr, message: &[u8]) -> u16 {
    let mut acc = sum_words(0, &src.octets());
    acc = sum_words(acc, &dst.octets());
    acc += u32::from(IPPROTO_VRRP);
    // A message is at most 8 + 255 * 4 bytes, so the length fits 16 bits.
    acc += message.len() as u32;
    acc = sum_words(acc, message);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl Advert {
    /// Encodes the advertisement with its checksum for a packet from `src`
    /// to `dst` (224.0.0.18, or a peer's address in unicast mode).
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        // At most 255 addresses fit the count field; callers pass one.
        let count = self.addresses.len().min(255);
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * count);
        out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(count as u8);
        let interval = self.max_adver_int_cs & MAX_INTERVAL_CS;
        out.extend_from_slice(&interval.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for addr in &self.addresses[..count] {
            out.extend_from_slice(&addr.octets());
        }
        let sum = checksum(src, dst, &out);
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// Decodes and verifies a VRRP message received from `src` to `dst`.
    pub fn decode(src: Ipv4Addr, dst: Ipv4Addr, message: &[u8]) -> Result<Advert, Reject> {
        if message.len() < HEADER_LEN {
            return Err(Reject::Truncated);
        }
        if message[0] >> 4 != VERSION {
            return Err(Reject::BadVersion);
        }
        if message[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(Reject::BadType);
        }
        let count = usize::from(message[3]);
        if count == 0 {
            return Err(Reject::BadCount);
        }
        let needed = HEADER_LEN + 4 * count;
        if message.len() < needed {
            return Err(Reject::Truncated);
        }
        // Trailing bytes beyond the addresses would change the checksum
        // base and are not part of any valid advert.
        if message.len() != needed {
            return Err(Reject::BadCount);
        }
        if checksum(src, dst, message) != 0 {
            return Err(Reject::BadChecksum);
        }
        let max_adver_int_cs = u16::from_be_bytes([message[4], message[5]]) & MAX_INTERVAL_CS;
        if max_adver_int_cs == 0 {
            return Err(Reject::BadInterval);
        }
        let addresses = message[HEADER_LEN..]
            .chunks_exact(4)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            .collect();
        Ok(Advert {
            vrid: message[1],
            priority: message[2],
            max_adver_int_cs,
            addresses,
        })
    }
}

/// A packet that passed every check, with its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender's (primary) address, used for the tie-break.
    pub src: Ipv4Addr,
    /// The advertisement.
    pub advert: Advert,
}

/// Full receive path for one raw-socket packet: IPv4 envelope (protocol,
/// TTL), VRRP header and checksum, then our router id and address set.
pub fn accept(packet: &[u8], vrid: u8, vip: Ipv4Addr) -> Result<Received, Reject> {
    let env = parse_ipv4(packet)?;
    let advert = Advert::decode(env.src, env.dst, env.payload)?;
    if advert.vrid != vrid {
        return Err(Reject::OtherVrid);
    }
    if advert.addresses != [vip] {
        return Err(Reject::AddressMismatch);
    }
    Ok(Received {
        src: env.src,
        advert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    /// Builds an IPv4 header (no options) around `payload`; the header
    /// checksum is left 0 because receivers on raw sockets do not see it
    /// verified by us (the kernel already did).
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0xc0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, ttl, IPPROTO_VRRP, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    /// An advert laid out by hand from the RFC 5798 §5.1 diagram: version
    /// 3, type 1, VRID 1, priority 100, one address, interval 100 cs,
    /// 192.168.1.10, from 192.168.1.1 to 224.0.0.18. The checksum was
    /// worked out on paper from §5.2.8 (pseudo-header + message):
    /// c0a8 + 0101 + e000 + 0012 + 0070 + 000c + 3101 + 6401 + 0064
    /// + c0a8 + 010a = 0x2_f94f -> fold 0xf951 -> complement 0x06ae.
    const RFC_LAYOUT: [u8; 12] = [
        0x31, 0x01, 0x64, 0x01, 0x00, 0x64, 0x06, 0xae, 192, 168, 1, 10,
    ];

    #[test]
    fn encodes_rfc_layout_with_hand_computed_checksum() {
        let advert = Advert {
            vrid: 1,
            priority: 100,
            max_adver_int_cs: 100,
            addresses: vec![Ipv4Addr::new(192, 168, 1, 10)],
        };
        assert_eq!(advert.encode(SRC, VRRP_GROUP), RFC_LAYOUT);
        assert_eq!(Advert::decode(SRC, VRRP_GROUP, &RFC_LAYOUT), Ok(advert));
    }

    #[test]
    fn checksum_depends_on_pseudo_header() {
        // The same bytes from another source fail: the pseudo-header is
        // part of the sum (a VRRPv2-style checksum would not notice).
        let other = Ipv4Addr::new(192, 168, 1, 2);
        assert_eq!(
            Advert::decode(other, VRRP_GROUP, &RFC_LAYOUT),
            Err(Reject::BadChecksum)
        );
        // Unicast destination changes the sum too.
        let enc = Advert::decode(SRC, VRRP_GROUP, &RFC_LAYOUT).unwrap();
        let uni = enc.encode(SRC, Ipv4Addr::new(192, 168, 1, 3));
        assert_ne!(uni[6..8], RFC_LAYOUT[6..8]);
        assert_eq!(checksum(SRC, Ipv4Addr::new(192, 168, 1, 3), &uni), 0);
    }

    #[test]
    fn checksum_odd_length_pads_with_zero() {
        assert_eq!(sum_words(0, &[0x12]), 0x1200);
        assert_eq!(sum_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn captured_keepalived_advert_decodes() {
        // Captured from Debian's keepalived 2.2.7 (vrrp_version 3,
        // virtual_router_id 51, priority 150, advert_int 0.2,
        // virtual_ipaddress 10.77.0.10/24) on a test bridge with tcpdump,
        // full IPv4 packet as a raw socket receives it.
        let packet = include_bytes!("../test_data/keepalived-v3-advert.bin");
        let rx = accept(packet, 51, Ipv4Addr::new(10, 77, 0, 10)).unwrap();
        assert_eq!(rx.src, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(rx.advert.priority, 150);
        assert_eq!(rx.advert.max_adver_int_cs, 20);
        // Our encoder produces the very same VRRP bytes.
        let env = parse_ipv4(packet).unwrap();
        assert_eq!(rx.advert.encode(env.src, env.dst), env.payload);
    }

    #[test]
    fn rejects_each_fault_with_its_reason() {
        let vip = Ipv4Addr::new(192, 168, 1, 10);
        let good = ipv4(SRC, VRRP_GROUP, 255, &RFC_LAYOUT);
        assert!(accept(&good, 1, vip).is_ok());

        let mut ttl = good.clone();
        ttl[8] = 254;
        assert_eq!(accept(&ttl, 1, vip), Err(Reject::BadTtl));

        let mut proto = good.clone();
        proto[9] = 17;
        assert_eq!(accept(&proto, 1, vip), Err(Reject::NotVrrp));

        let mut ver = good.clone();
        ver[20] = 0x21;
        assert_eq!(accept(&ver, 1, vip), Err(Reject::BadVersion));

        let mut ty = good.clone();
        ty[20] = 0x32;
        assert_eq!(accept(&ty, 1, vip), Err(Reject::BadType));

        let mut sum = good.clone();
        sum[22] = 101;
        assert_eq!(accept(&sum, 1, vip), Err(Reject::BadChecksum));

        assert_eq!(accept(&good, 2, vip), Err(Reject::OtherVrid));
        assert_eq!(
            accept(&good, 1, Ipv4Addr::new(192, 168, 1, 11)),
            Err(Reject::AddressMismatch)
        );
        assert_eq!(accept(&good[..25], 1, vip), Err(Reject::Truncated));
        assert_eq!(accept(&[0x60; 40], 1, vip), Err(Reject::BadIpHeader));
        assert_eq!(accept(&[], 1, vip), Err(Reject::Truncated));

        let zero_count = Advert {
            vrid: 1,
            priority: 1,
            max_adver_int_cs: 1,
            addresses: vec![],
        }
        .encode(SRC, VRRP_GROUP);
        assert_eq!(
            accept(&ipv4(SRC, VRRP_GROUP, 255, &zero_count), 1, vip),
            Err(Reject::BadCount)
        );

        let zero_int = Advert {
            vrid: 1,
            priority: 1,
            max_adver_int_cs: 0,
            addresses: vec![vip],
        }
        .encode(SRC, VRRP_GROUP);
        assert_eq!(
            accept(&ipv4(SRC, VRRP_GROUP, 255, &zero_int), 1, vip),
            Err(Reject::BadInterval)
        );
    }

    #[test]
    fn interval_is_twelve_bits_and_reserved_bits_ignored() {
        let mut m = RFC_LAYOUT;
        m[4] = 0xf0; // reserved bits set, interval still 100
        let sum = checksum(SRC, VRRP_GROUP, &{
            let mut z = m;
            z[6] = 0;
            z[7] = 0;
            z
        });
        m[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            Advert::decode(SRC, VRRP_GROUP, &m)
                .unwrap()
                .max_adver_int_cs,
            100
        );
    }

    #[test]
    fn ip_options_are_skipped() {
        let mut p = ipv4(SRC, VRRP_GROUP, 255, &RFC_LAYOUT);
        p[0] = 0x46; // IHL 6: one 4-byte option word
        p.splice(20..20, [1, 1, 1, 0]);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse_ipv4(&p).unwrap().payload, RFC_LAYOUT);
    }
}
