//! The one TLS etcd client of the agent: [`tls_client`] builds the
//! `etcd-client` connection with the agent's client certificate (used by
//! [`Etcd`] for membership and health, and by the kube phase's init
//! election), [`Etcd`] wraps it with a per-call timeout (gRPC over TLS,
//! never etcdctl).

use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, Identity, LockOptions, MemberAddOptions, TlsOptions,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors from the etcd adapter; each names the operation and endpoint.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// Building the client failed (bad TLS material or URL).
    #[error("connecting to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints.
        endpoints: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// An RPC failed.
    #[error("etcd {op}: {source}")]
    Rpc {
        /// The operation.
        op: &'static str,
        /// The client error.
        source: etcd_client::Error,
    },
    /// An RPC did not answer in time.
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The response lacked a field it always carries.
    #[error("etcd {op}: the response has no {field}")]
    Incomplete {
        /// The operation.
        op: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// Client-side TLS material (PEM).
#[derive(Clone)]
pub struct ClientTls {
    /// The etcd CA certificate.
    pub ca_pem: String,
    /// A client certificate signed by the etcd CA.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(<redacted>)")
    }
}

/// One member as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Member id.
    pub id: u64,
    /// Name (empty while an added member has not started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty while not started).
    pub client_urls: Vec<String>,
    /// Learner (non-voting).
    pub is_learner: bool,
}

impl MemberView {
    fn from_member(m: &etcd_client::Member) -> Self {
        Self {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// Renders `name=peer_url,...` from a member list, with `own` (name and
/// peer URL) standing in for the unstarted entry that has `own`'s peer URL.
pub fn initial_cluster_of(members: &[MemberView], own_name: &str, own_peer_url: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for m in members {
        for url in &m.peer_urls {
            let name = if url == own_peer_url {
                own_name
            } else {
                &m.name
            };
            if !name.is_empty() {
                parts.push(format!("{name}={url}"));
            }
        }
    }
    parts.sort();
    parts.dedup();
    parts.join(",")
}

/// A connected etcd client with a per-call timeout.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    timeout: Duration,
}

async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Rpc { op, source }),
        Err(_) => Err(EtcdError::Timeout { op, timeout }),
    }
}

/// Connects an `etcd-client` to `endpoints` (`https://ip:port`) with the
/// agent's client certificate and etcd's CA: the one place the agent's TLS
/// etcd client is built. `connect_timeout` bounds each connection attempt,
/// `timeout` each request and the whole connect.
pub async fn tls_client(
    endpoints: &[String],
    tls: &ClientTls,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Client, EtcdError> {
    let tls_opts = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(tls.ca_pem.as_bytes()))
        .identity(Identity::from_pem(
            tls.cert_pem.as_bytes(),
            tls.key_pem.as_bytes(),
        ));
    let opts = ConnectOptions::new()
        .with_tls(tls_opts)
        .with_connect_timeout(connect_timeout)
        .with_timeout(timeout);
    timed("connect", timeout, Client::connect(endpoints, Some(opts)))
        .await
        .map_err(|e| match e {
            EtcdError::Rpc { source, .. } => EtcdError::Connect {
                endpoints: endpoints.join(","),
                source,
            },
            other => other,
        })
}

/// The answer of `Status` from one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// Cluster id.
    pub cluster_id: u64,
    /// The answering member's id.
    pub member_id: u64,
    /// The leader's member id (0: no leader).
    pub leader: u64,
    /// The answering member is a learner.
    pub is_learner: bool,
}

impl Etcd {
    /// Builds a client for `endpoints` (`https://ip:port`) with the given
    /// client certificate. The connection itself is made lazily.
    pub async fn connect(
        endpoints: &[String],
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let client = tls_client(endpoints, tls, timeout, timeout).await?;
        Ok(Self { client, timeout })
    }

    /// `Status` of the member the client talks to (use a single endpoint).
    pub async fn status(&self) -> Result<MemberStatus, EtcdError> {
        let mut c = self.client.clone();
        let r = timed("status", self.timeout, c.status()).await?;
        let h = r.header().ok_or(EtcdError::Incomplete {
            op: "status",
            field: "header",
        })?;
        Ok(MemberStatus {
            cluster_id: h.cluster_id(),
            member_id: h.member_id(),
            leader: r.leader(),
            is_learner: r.is_learner(),
        })
    }

    /// A linearizable read: true when the cluster has a working quorum.
    pub async fn quorum_read(&self) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        timed("range health", self.timeout, c.get("health", None))
            .await
            .map(|_| ())
    }

    /// The member list.
    pub async fn members(&self) -> Result<Vec<MemberView>, EtcdError> {
        let mut c = self.client.clone();
        let r = timed("member list", self.timeout, c.member_list()).await?;
        Ok(r.members().iter().map(MemberView::from_member).collect())
    }

    /// Adds `peer_url` as a learner; returns its id and the new member list.
    pub async fn add_learner(&self, peer_url: &str) -> Result<(u64, Vec<MemberView>), EtcdError> {
        let mut c = self.client.clone();
        let r = timed(
            "member add (learner)",
            self.timeout,
            c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())),
        )
        .await?;
        let id = r
            .member()
            .ok_or(EtcdError::Incomplete {
                op: "member add",
                field: "member",
            })?
            .id();
        Ok((
            id,
            r.member_list()
                .iter()
                .map(MemberView::from_member)
                .collect(),
        ))
    }

    /// Removes a member.
    pub async fn remove(&self, id: u64) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        timed("member remove", self.timeout, c.member_remove(id))
            .await
            .map(|_| ())
    }

    /// Promotes a learner (fails until it has caught up).
    pub async fn promote(&self, id: u64) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        timed("member promote", self.timeout, c.member_promote(id))
            .await
            .map(|_| ())
    }

    /// Takes the cluster-wide membership lock (an etcd lock on a lease of
    /// `ttl_s` seconds, so a holder that dies releases it). Returns the lock
    /// key and the lease id for [`Etcd::unlock`].
    pub async fn lock_membership(&self, ttl_s: i64) -> Result<(Vec<u8>, i64), EtcdError> {
        let mut c = self.client.clone();
        let lease = timed("lease grant", self.timeout, c.lease_grant(ttl_s, None))
            .await?
            .id();
        let r = timed(
            "lock membership",
            self.timeout * 4,
            c.lock(MEMBERSHIP_LOCK, Some(LockOptions::new().with_lease(lease))),
        )
        .await?;
        Ok((r.key().to_vec(), lease))
    }

    /// Releases the membership lock and its lease.
    pub async fn unlock(&self, key: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        timed("unlock membership", self.timeout, c.unlock(key)).await?;
        timed("lease revoke", self.timeout, c.lease_revoke(lease))
            .await
            .map(|_| ())
    }

    /// Writes a key (tests and benchmarks).
    pub async fn put(&self, key: &str, value: &str) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        timed("put", self.timeout, c.put(key, value, None))
            .await
            .map(|_| ())
    }

    /// Reads a key (tests and benchmarks).
    pub async fn get(&self, key: &str) -> Result<Option<String>, EtcdError> {
        let mut c = self.client.clone();
        let r = timed("get", self.timeout, c.get(key, None)).await?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

/// The etcd key serialising membership changes between joiners.
pub const MEMBERSHIP_LOCK: &str = "kubeboot/membership-lock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_names_the_unstarted_self() {
        let members = vec![
            MemberView {
                id: 1,
                name: "m-1".into(),
                peer_urls: vec!["https://10.0.0.1:2380".into()],
                client_urls: vec![],
                is_learner: false,
            },
            MemberView {
                id: 2,
                name: String::new(),
                peer_urls: vec!["https://10.0.0.4:2380".into()],
                client_urls: vec![],
                is_learner: true,
            },
        ];
        assert_eq!(
            initial_cluster_of(&members, "m-4", "https://10.0.0.4:2380"),
            "m-1=https://10.0.0.1:2380,m-4=https://10.0.0.4:2380"
        );
    }
}
