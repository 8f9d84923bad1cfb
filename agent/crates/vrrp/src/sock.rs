//! Raw sockets: VRRP (IP protocol 112) send and receive, and gratuitous
//! ARP over `AF_PACKET`. Built on `socket2`; the only hand-written piece is
//! the ARP frame (28 bytes, [`garp_frame`]), which no maintained crate
//! builds for us without pulling a packet-crafting framework.
//!
//! Two VRRP sockets, as keepalived does: the receive socket is bound to the
//! interface (`SO_BINDTODEVICE`) and joined to 224.0.0.18 on it, and is
//! *not* bound to an address (a raw socket bound to an address only sees
//! packets addressed to it, which would hide the multicast group); the
//! send socket is bound to the node's primary address so that address is
//! always the source, even while the VIP sits on the same interface, and
//! the checksum's pseudo-header matches what goes on the wire. The kernel
//! builds the IPv4 header: TTL 255 comes from `IP_MULTICAST_TTL` and
//! `IP_TTL`. On receipt Linux hands a raw socket the whole IPv4 header, so
//! the TTL check needs no `IP_RECVTTL`.

use std::io;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::packet::{IPPROTO_VRRP, VRRP_GROUP, VRRP_TTL};

/// Errors from opening or using the raw sockets.
#[derive(Debug, Error)]
pub enum SocketError {
    /// A socket call failed while setting up.
    #[error("setting up the {what} socket on {interface}: {source}")]
    Setup {
        /// Which socket and step.
        what: &'static str,
        /// Interface name.
        interface: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Sending an advertisement failed.
    #[error("sending an advertisement to {dst}: {source}")]
    Send {
        /// Destination.
        dst: Ipv4Addr,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Receiving failed.
    #[error("receiving on the VRRP socket: {0}")]
    Recv(#[source] io::Error),
    /// Sending a gratuitous ARP failed.
    #[error("sending a gratuitous ARP on {interface}: {source}")]
    Garp {
        /// Interface name.
        interface: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

/// The pair of VRRP sockets for one interface.
#[derive(Debug)]
pub struct VrrpSocket {
    rx: AsyncFd<Socket>,
    tx: Socket,
}

impl VrrpSocket {
    /// Opens and configures both sockets on `interface` (index `ifindex`),
    /// sending from `local`. `multicast` joins the group; unicast mode
    /// needs no membership.
    pub fn open(
        interface: &str,
        ifindex: u32,
        local: Ipv4Addr,
        multicast: bool,
    ) -> Result<Self, SocketError> {
        let setup = |what: &'static str| {
            let interface = interface.to_owned();
            move |source| SocketError::Setup {
                what,
                interface,
                source,
            }
        };
        let proto = Protocol::from(i32::from(IPPROTO_VRRP));

        let rx = Socket::new(Domain::IPV4, Type::RAW, Some(proto)).map_err(setup("receive"))?;
        rx.bind_device(Some(interface.as_bytes()))
            .map_err(setup("receive SO_BINDTODEVICE"))?;
        if multicast {
            rx.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(setup("receive IP_ADD_MEMBERSHIP"))?;
        }
        rx.set_nonblocking(true).map_err(setup("receive"))?;
        // SAFETY: a socket2 `Socket` owns its descriptor, never swaps it,
        // and closes it only when dropped, which the AsyncFd does last.
        let rx = unsafe { AsyncFd::register(rx) }
            .map_err(|e| setup("receive (register)")(io::Error::from(e)))?;

        let tx = Socket::new(Domain::IPV4, Type::RAW, Some(proto)).map_err(setup("send"))?;
        tx.bind_device(Some(interface.as_bytes()))
            .map_err(setup("send SO_BINDTODEVICE"))?;
        tx.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))
            .map_err(setup("send bind"))?;
        tx.set_multicast_ttl_v4(u32::from(VRRP_TTL))
            .map_err(setup("send IP_MULTICAST_TTL"))?;
        tx.set_ttl(u32::from(VRRP_TTL))
            .map_err(setup("send IP_TTL"))?;
        tx.set_multicast_loop_v4(false)
            .map_err(setup("send IP_MULTICAST_LOOP"))?;
        tx.set_multicast_if_v4(&local)
            .map_err(setup("send IP_MULTICAST_IF"))?;
        // The send socket never reads: keep its queue tiny so unicast
        // adverts addressed to us do not pile up there.
        tx.set_recv_buffer_size(1)
            .map_err(setup("send SO_RCVBUF"))?;
        tx.set_nonblocking(true).map_err(setup("send"))?;
        Ok(VrrpSocket { rx, tx })
    }

    /// Sends one VRRP message (the kernel adds the IPv4 header). The
    /// socket is non-blocking; a full queue is reported as an error and
    /// the advert is simply lost, as on a busy wire.
    pub fn send(&self, message: &[u8], dst: Ipv4Addr) -> Result<(), SocketError> {
        self.tx
            .send_to(message, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(|_| ())
            .map_err(|source| SocketError::Send { dst, source })
    }

    /// Waits for the next packet (IPv4 header included) into `buf`;
    /// returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, SocketError> {
        loop {
            let mut guard = self.rx.readable().await.map_err(SocketError::Recv)?;
            match guard.try_io(|inner| (&mut inner.get_ref()).read(buf)) {
                Ok(result) => return result.map_err(SocketError::Recv),
                Err(_would_block) => continue,
            }
        }
    }
}

const ETH_P_ARP: u16 = 0x0806;

/// Builds a gratuitous ARP request frame: broadcast Ethernet, sender and
/// target protocol address both the VIP (RFC 5227 §3 "ARP Announcement"),
/// as keepalived sends them.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An `AF_PACKET` socket bound to the interface, for gratuitous ARP.
#[derive(Debug)]
pub struct GarpSocket {
    sock: Socket,
    interface: String,
}

fn link_addr(ifindex: u32) -> SockAddr {
    // SAFETY: sockaddr_ll fits in sockaddr_storage; every field we do not
    // set is zero, which the kernel accepts for bind and sendto.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ETH_P_ARP.to_be();
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: we copy a fully initialised sockaddr_ll into the storage and
    // report its exact length.
    let (_, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            std::ptr::copy_nonoverlapping(
                &ll as *const libc::sockaddr_ll as *const u8,
                storage as *mut u8,
                std::mem::size_of::<libc::sockaddr_ll>(),
            );
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }
    .unwrap_or_else(|_: io::Error| unreachable!("the init closure never fails"));
    addr
}

impl GarpSocket {
    /// Opens the socket on `interface` (index `ifindex`).
    pub fn open(interface: &str, ifindex: u32) -> Result<Self, SocketError> {
        let err = |source| SocketError::Setup {
            what: "gratuitous ARP",
            interface: interface.to_owned(),
            source,
        };
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
        )
        .map_err(err)?;
        sock.bind(&link_addr(ifindex)).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        // We only send: a tiny receive queue keeps ARP traffic from piling up.
        sock.set_recv_buffer_size(1).map_err(err)?;
        Ok(GarpSocket {
            sock,
            interface: interface.to_owned(),
        })
    }

    /// Sends one gratuitous ARP frame.
    pub fn send(&self, frame: &[u8]) -> Result<(), SocketError> {
        self.sock
            .send(frame)
            .map(|_| ())
            .map_err(|source| SocketError::Garp {
                interface: self.interface.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let f = garp_frame(mac, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "opcode request");
        assert_eq!(&f[22..28], &mac, "sender hardware address");
        assert_eq!(&f[28..32], &[10, 77, 0, 10], "sender protocol address");
        assert_eq!(&f[38..42], &[10, 77, 0, 10], "target protocol address");
    }
}
