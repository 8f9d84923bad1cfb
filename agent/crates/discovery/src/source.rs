//! Where sealed messages go and come from: the [`DiscoverySource`] trait and
//! its two implementations. Sources move opaque bytes; authentication,
//! rates and the peer table live elsewhere, so a DNS SRV or cloud-tag
//! source only has to implement `send` and `recv`.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cluster_config::Role;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Every node (masters announce here).
    Everyone,
    /// Masters only (workers announce here, so workers never hear workers).
    Masters,
    /// One node, unicast (a master's reply to a newly seen node).
    Node(SocketAddr),
}

/// A transport for discovery datagrams.
pub trait DiscoverySource: Send + Sync {
    /// Sends one sealed message.
    fn send(&self, msg: &[u8], to: Destination) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`: its length and sender.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// The group workers send to: the configured group with its lowest bit
/// flipped (239.255.77.77 → 239.255.77.76). Only masters join it, so on a
/// switch with IGMP snooping workers never even receive workers' frames.
pub fn masters_group(group: Ipv4Addr) -> Ipv4Addr {
    let o = group.octets();
    Ipv4Addr::new(o[0], o[1], o[2], o[3] ^ 1)
}

/// Settings for a [`MulticastSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastOptions {
    /// The "everyone" group (`discovery.group`).
    pub group: Ipv4Addr,
    /// UDP port (`discovery.port`); replies arrive on it too.
    pub port: u16,
    /// This node's address on the cluster network: joins and sends there.
    pub interface: Ipv4Addr,
    /// Masters also join [`masters_group`].
    pub role: Role,
    /// Deliver our own multicasts back to this host (tests with several
    /// sources on one host; the runner ignores its own messages anyway).
    pub multicast_loop: bool,
}

/// UDP multicast on the cluster network (TTL 1: never routed).
#[derive(Debug)]
pub struct MulticastSource {
    socket: UdpSocket,
    everyone: SocketAddrV4,
    masters: SocketAddrV4,
}

impl MulticastSource {
    /// Binds `0.0.0.0:port`, joins the groups on `interface`. Must run
    /// inside a Tokio runtime.
    pub fn bind(opts: &MulticastOptions) -> io::Result<Self> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "discovery multicast {}:{} on {}: {what}: {e}",
                    opts.group, opts.port, opts.interface
                ),
            )
        };
        let masters = masters_group(opts.group);
        if !opts.group.is_multicast() || !masters.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("discovery group {} is not a multicast address", opts.group),
            ));
        }
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| ctx("socket", e))?;
        // Several sockets may share the port (tests; a restarting agent).
        socket
            .set_reuse_address(true)
            .map_err(|e| ctx("SO_REUSEADDR", e))?;
        // Only the groups this socket joined, not every group any socket on
        // the host joined (Linux's surprising default for 0.0.0.0 binds).
        socket
            .set_multicast_all_v4(false)
            .map_err(|e| ctx("IP_MULTICAST_ALL", e))?;
        socket
            .set_multicast_if_v4(&opts.interface)
            .map_err(|e| ctx("IP_MULTICAST_IF", e))?;
        socket
            .set_multicast_loop_v4(opts.multicast_loop)
            .map_err(|e| ctx("IP_MULTICAST_LOOP", e))?;
        socket
            .set_multicast_ttl_v4(1)
            .map_err(|e| ctx("IP_MULTICAST_TTL", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| ctx("O_NONBLOCK", e))?;
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, opts.port).into())
            .map_err(|e| ctx("bind", e))?;
        socket
            .join_multicast_v4(&opts.group, &opts.interface)
            .map_err(|e| ctx("join group", e))?;
        if opts.role == Role::Master {
            socket
                .join_multicast_v4(&masters, &opts.interface)
                .map_err(|e| ctx("join masters group", e))?;
        }
        let socket =
            UdpSocket::from_std(socket.into()).map_err(|e| ctx("register with tokio", e))?;
        Ok(MulticastSource {
            socket,
            everyone: SocketAddrV4::new(opts.group, opts.port),
            masters: SocketAddrV4::new(masters, opts.port),
        })
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl DiscoverySource for MulticastSource {
    async fn send(&self, msg: &[u8], to: Destination) -> io::Result<()> {
        let addr: SocketAddr = match to {
            Destination::Everyone => self.everyone.into(),
            Destination::Masters => self.masters.into(),
            Destination::Node(addr) => addr,
        };
        self.socket.send_to(msg, addr).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// Unicast to a fixed list of peers, for networks without multicast. List
/// the masters' addresses on every node: workers then reach the masters,
/// and masters learn workers (and answer them) from what they receive.
#[derive(Debug)]
pub struct StaticPeersSource {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
}

impl StaticPeersSource {
    /// Binds `local` and sends to `peers`. Must run inside a Tokio runtime.
    pub async fn bind(local: SocketAddr, peers: Vec<SocketAddr>) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("discovery: binding {local}: {e}")))?;
        Ok(StaticPeersSource { socket, peers })
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl DiscoverySource for StaticPeersSource {
    async fn send(&self, msg: &[u8], to: Destination) -> io::Result<()> {
        match to {
            Destination::Node(addr) => self.socket.send_to(msg, addr).await.map(|_| ()),
            Destination::Everyone | Destination::Masters => {
                // Try every peer; report the first failure after trying all.
                let mut first_err = None;
                for peer in &self.peers {
                    if let Err(e) = self.socket.send_to(msg, peer).await {
                        first_err.get_or_insert(io::Error::new(
                            e.kind(),
                            format!("sending to {peer}: {e}"),
                        ));
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_group_differs_and_stays_multicast() {
        let g = Ipv4Addr::new(239, 255, 77, 77);
        assert_eq!(masters_group(g), Ipv4Addr::new(239, 255, 77, 76));
        assert_eq!(masters_group(masters_group(g)), g);
        assert!(masters_group(Ipv4Addr::new(239, 255, 255, 255)).is_multicast());
    }
}
