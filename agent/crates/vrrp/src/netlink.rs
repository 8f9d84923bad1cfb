//! Interface facts and the VIP, through rtnetlink (never by running `ip`).
//!
//! The VIP is added with its configured prefix (for example /24), so the
//! kernel gives it the subnet's broadcast address, never a /32 host route
//! with a bogus broadcast; it becomes a secondary address next to the
//! node's primary one, which stays the source of our adverts.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use thiserror::Error;
use tokio::task::JoinHandle;

/// Errors from netlink operations, each naming the interface or address.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    /// Looking up the interface failed.
    #[error("looking up interface {interface}: {source}")]
    Link {
        /// Interface name.
        interface: String,
        /// Netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The interface does not exist.
    #[error("interface {interface} not found")]
    NoSuchInterface {
        /// Interface name.
        interface: String,
    },
    /// The interface has no Ethernet address (gratuitous ARP needs one).
    #[error("interface {interface} has no 6-byte hardware address")]
    NoMac {
        /// Interface name.
        interface: String,
    },
    /// Listing addresses failed.
    #[error("listing addresses of {interface}: {source}")]
    ListAddresses {
        /// Interface name.
        interface: String,
        /// Netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The interface has no IPv4 address other than the VIP.
    #[error("interface {interface} has no IPv4 address of its own (besides the VIP {vip})")]
    NoLocalAddress {
        /// Interface name.
        interface: String,
        /// The VIP.
        vip: Ipv4Addr,
    },
    /// Adding the VIP failed.
    #[error("adding {vip} to {interface}: {source}")]
    AddVip {
        /// Interface name.
        interface: String,
        /// The VIP with prefix.
        vip: Ipv4Net,
        /// Netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// Removing the VIP failed.
    #[error("removing {vip} from {interface}: {source}")]
    RemoveVip {
        /// Interface name.
        interface: String,
        /// The VIP with prefix.
        vip: Ipv4Net,
        /// Netlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// What we need to know about the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Hardware (MAC) address.
    pub mac: [u8; 6],
    /// The node's own primary IPv4 address on it.
    pub local_addr: Ipv4Addr,
}

/// A netlink connection bound to one interface and VIP.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    conn: JoinHandle<()>,
    interface: String,
    vip: Ipv4Net,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

impl Netlink {
    /// Opens a connection (its driver runs on the current tokio runtime).
    pub fn open(interface: &str, vip: Ipv4Net) -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        let conn = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            conn,
            interface: interface.to_owned(),
            vip,
        })
    }

    /// Looks up the interface's index, MAC and primary IPv4 address (the
    /// first one that is not the VIP).
    pub async fn link_info(&self) -> Result<LinkInfo, NetlinkError> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute()
            .try_next()
            .await
            .map_err(|source| {
                if errno(&source) == Some(libc::ENODEV) {
                    NetlinkError::NoSuchInterface {
                        interface: self.interface.clone(),
                    }
                } else {
                    NetlinkError::Link {
                        interface: self.interface.clone(),
                        source,
                    }
                }
            })?
            .ok_or_else(|| NetlinkError::NoSuchInterface {
                interface: self.interface.clone(),
            })?;
        let index = link.header.index;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NoMac {
                interface: self.interface.clone(),
            })?;
        let local_addr = self
            .addresses(index)
            .await?
            .into_iter()
            .find(|a| *a != self.vip.addr())
            .ok_or(NetlinkError::NoLocalAddress {
                interface: self.interface.clone(),
                vip: self.vip.addr(),
            })?;
        Ok(LinkInfo {
            index,
            mac,
            local_addr,
        })
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>, NetlinkError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::ListAddresses {
                interface: self.interface.clone(),
                source,
            })?;
        Ok(msgs
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            })
            .collect())
    }

    /// The name of the interface holding an address inside `cidr` (the
    /// cluster network), for when no interface is configured. Opens its
    /// own connection; call it before building the [`crate::VrrpConfig`].
    pub async fn interface_for(cidr: Ipv4Net) -> Result<Option<String>, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        let conn = tokio::spawn(conn);
        let list = |source| NetlinkError::ListAddresses {
            interface: "*".to_owned(),
            source,
        };
        let addrs: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(list)?;
        let index = addrs.iter().find_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) if cidr.contains(v4) => {
                    Some(m.header.index)
                }
                _ => None,
            })
        });
        let mut name = None;
        if let Some(index) = index {
            let links: Vec<_> = handle
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_collect()
                .await
                .map_err(list)?;
            name = links
                .iter()
                .flat_map(|l| l.attributes.iter())
                .find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
        }
        conn.abort();
        Ok(name)
    }

    /// Whether the VIP is on the interface now.
    pub async fn has_vip(&self, index: u32) -> Result<bool, NetlinkError> {
        Ok(self.addresses(index).await?.contains(&self.vip.addr()))
    }

    /// Adds the VIP with its prefix; already present is fine.
    pub async fn add_vip(&self, index: u32) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(self.vip.addr()), self.vip.prefix_len())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(NetlinkError::AddVip {
                interface: self.interface.clone(),
                vip: self.vip,
                source,
            }),
        }
    }

    /// Removes the VIP; already absent is fine.
    pub async fn remove_vip(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(self.vip.addr(), self.vip.prefix_len())
            .build();
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH)
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(NetlinkError::RemoveVip {
                interface: self.interface.clone(),
                vip: self.vip,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_interface_holding_a_network() {
        // Read-only: every network namespace has lo with 127.0.0.1/8.
        let lo = Netlink::interface_for("127.0.0.0/8".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(lo.as_deref(), Some("lo"));
        // TEST-NET-2 is never assigned here.
        let none = Netlink::interface_for("198.51.100.0/24".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn missing_interface_is_named() {
        let nl = Netlink::open("nosuch0vrrp", "10.77.0.10/24".parse().unwrap()).unwrap();
        let err = nl.link_info().await.unwrap_err();
        assert!(matches!(err, NetlinkError::NoSuchInterface { .. }), "{err}");
        assert!(err.to_string().contains("nosuch0vrrp"), "{err}");
    }
}
