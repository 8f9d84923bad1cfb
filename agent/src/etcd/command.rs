//! etcd's command line (pure): the flags every member starts with, the
//! file names of its TLS material, and its URLs.

use std::path::{Path, PathBuf};

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
}
