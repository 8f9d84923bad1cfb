//! etcd: the command line the agent starts etcd with (pure), and the
//! `etcd-client` adapter for membership and health (gRPC over TLS, never
//! etcdctl).
//!
//! etcd always runs with peer and client TLS and client-certificate
//! authentication on both (`--client-cert-auth`, `--peer-client-cert-auth`);
//! the certificates come from the `pki` crate (derived CA, so every master
//! and every joiner can mint what it needs). API notes for etcd 3.4
//! (Debian's `etcd-server`): learners (`MemberAdd` with `isLearner`) and
//! `MemberPromote` exist since 3.4; 3.4 allows a single learner at a time
//! and refuses to promote one that has not caught up with the leader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, Identity, LockOptions, MemberAddOptions, TlsOptions,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::model::ClusterState;

/// File locations of etcd's TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The etcd CA certificate.
    pub ca: PathBuf,
    /// Server certificate and key (client port).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Peer certificate (server + client usage).
    pub peer_cert: PathBuf,
    /// Peer key.
    pub peer_key: PathBuf,
}

impl TlsFiles {
    /// The standard names under a directory.
    pub fn under(dir: &Path) -> Self {
        Self {
            ca: dir.join("etcd-ca.crt"),
            server_cert: dir.join("etcd-server.crt"),
            server_key: dir.join("etcd-server.key"),
            peer_cert: dir.join("etcd-peer.crt"),
            peer_key: dir.join("etcd-peer.key"),
        }
    }
}

/// Everything needed to render etcd's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The etcd binary.
    pub binary: PathBuf,
    /// Member name (the node name).
    pub name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The node's cluster address.
    pub ip: std::net::Ipv4Addr,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Raft heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Raft election timeout in milliseconds.
    pub election_timeout_ms: u64,
    /// New, existing or restart.
    pub state: ClusterState,
    /// TLS files.
    pub tls: TlsFiles,
}

/// The peer URL of a node.
pub fn peer_url(ip: std::net::Ipv4Addr, port: u16) -> String {
    format!("https://{ip}:{port}")
}

/// The client URL of a node.
pub fn client_url(ip: std::net::Ipv4Addr, port: u16) -> String {
    format!("https://{ip}:{port}")
}

/// The supervised service's name.
pub const SERVICE_NAME: &str = "etcd";

impl Launch {
    /// The service spec for the supervisor (a systemd unit or a child). Pure.
    pub fn service_spec(&self) -> supervisor::ServiceSpec {
        supervisor::ServiceSpec {
            name: SERVICE_NAME.to_owned(),
            description: format!("etcd member {} (kubeboot)", self.name),
            exec: self.argv(),
            restart_sec: 2,
            ..Default::default()
        }
    }

    /// etcd's argv (binary first). Pure.
    pub fn argv(&self) -> Vec<String> {
        let d = |p: &Path| p.display().to_string();
        let client = client_url(self.ip, self.client_port);
        // Every local address, not just the node's: the VIP (added and
        // removed by VRRP while etcd runs) must answer too, so a client can
        // always reach the cluster at one address. Client TLS with
        // certificate authentication applies on every one of them.
        let any_client = format!("https://0.0.0.0:{}", self.client_port);
        let peer = peer_url(self.ip, self.peer_port);
        let (initial_cluster, state, token) = match &self.state {
            ClusterState::New {
                initial_cluster,
                token,
            } => (initial_cluster.clone(), "new", Some(token.clone())),
            ClusterState::Existing { initial_cluster }
            | ClusterState::Restart { initial_cluster } => {
                (initial_cluster.clone(), "existing", None)
            }
        };
        let mut v = vec![
            d(&self.binary),
            format!("--name={}", self.name),
            format!("--data-dir={}", d(&self.data_dir)),
            format!("--listen-client-urls={any_client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
            "--client-cert-auth=true".to_owned(),
            format!("--trusted-ca-file={}", d(&self.tls.ca)),
            format!("--cert-file={}", d(&self.tls.server_cert)),
            format!("--key-file={}", d(&self.tls.server_key)),
            "--peer-client-cert-auth=true".to_owned(),
            format!("--peer-trusted-ca-file={}", d(&self.tls.ca)),
            format!("--peer-cert-file={}", d(&self.tls.peer_cert)),
            format!("--peer-key-file={}", d(&self.tls.peer_key)),
            "--logger=zap".to_owned(),
            // A member that comes back from a partition first asks whether
            // it could win before raising the term (Raft's pre-vote; on by
            // default from etcd 3.5). Without it, every healed partition
            // deposes a working leader and costs an election, during which
            // no VIP holder can renew its quorum proof.
            "--pre-vote=true".to_owned(),
            // etcd's defaults unless the cluster configuration raises them
            // (`[etcd] heartbeat_ms`, `election_timeout_ms`) for a slow
            // machine: every member must use the same values.
            format!("--heartbeat-interval={}", self.heartbeat_ms),
            format!("--election-timeout={}", self.election_timeout_ms),
        ];
        if let Some(token) = token {
            v.push(format!("--initial-cluster-token={token}"));
        }
        v
    }
}

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
        let tls_opts = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(tls.ca_pem.as_bytes()))
            .identity(Identity::from_pem(
                tls.cert_pem.as_bytes(),
                tls.key_pem.as_bytes(),
            ));
        let opts = ConnectOptions::new()
            .with_tls(tls_opts)
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = timed("connect", timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|e| match e {
                EtcdError::Rpc { source, .. } => EtcdError::Connect {
                    endpoints: endpoints.join(","),
                    source,
                },
                other => other,
            })?;
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

    fn launch(state: ClusterState) -> Launch {
        Launch {
            binary: "/usr/bin/etcd".into(),
            name: "master-abcdef".into(),
            data_dir: "/var/lib/kubeboot/etcd".into(),
            ip: "10.0.0.1".parse().unwrap(),
            client_port: 2379,
            peer_port: 2380,
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
            state,
            tls: TlsFiles::under(Path::new("/var/lib/kubeboot/pki")),
        }
    }

    #[test]
    fn new_cluster_flags_have_tls_auth_and_token() {
        let argv = launch(ClusterState::New {
            initial_cluster: "a=https://10.0.0.1:2380".into(),
            token: "tok".into(),
        })
        .argv();
        for f in [
            "--initial-cluster-state=new",
            "--initial-cluster-token=tok",
            "--client-cert-auth=true",
            "--peer-client-cert-auth=true",
            "--pre-vote=true",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--listen-peer-urls=https://10.0.0.1:2380",
            "--advertise-client-urls=https://10.0.0.1:2379",
            "--listen-client-urls=https://0.0.0.0:2379",
            "--trusted-ca-file=/var/lib/kubeboot/pki/etcd-ca.crt",
            "--peer-key-file=/var/lib/kubeboot/pki/etcd-peer.key",
        ] {
            assert!(argv.iter().any(|a| a == f), "{f} missing from {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.starts_with("http://")));
    }

    #[test]
    fn restart_and_join_never_say_new() {
        for st in [
            ClusterState::Existing {
                initial_cluster: "a=https://10.0.0.1:2380".into(),
            },
            ClusterState::Restart {
                initial_cluster: "a=https://10.0.0.1:2380".into(),
            },
        ] {
            let argv = launch(st).argv();
            assert!(argv.iter().any(|a| a == "--initial-cluster-state=existing"));
            assert!(!argv.iter().any(|a| a.contains("=new")));
            assert!(!argv
                .iter()
                .any(|a| a.starts_with("--initial-cluster-token")));
        }
    }

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
