//! etcd: the command line the agent starts etcd with (pure, [`command`]),
//! the one TLS client (`etcd-client`, gRPC over TLS, never etcdctl:
//! [`client`]) used by the loop, the kube phase and the VIP, and the
//! membership I/O that joins, promotes and watches this node
//! (`membership`), and the snapshots every master keeps of its own
//! member (`snapshot`).
//!
//! etcd always runs with peer and client TLS and client-certificate
//! authentication on both (`--client-cert-auth`, `--peer-client-cert-auth`);
//! the certificates come from the `pki` crate (derived CA, so every master
//! and every joiner can mint what it needs). API notes for etcd 3.4
//! (Debian's `etcd-server`): learners (`MemberAdd` with `isLearner`) and
//! `MemberPromote` exist since 3.4; 3.4 allows a single learner at a time
//! and refuses to promote one that has not caught up with the leader.

pub mod client;
pub mod command;
pub(crate) mod membership;
pub mod snapshot;

pub use client::{
    initial_cluster_of, tls_client, ClientTls, Etcd, EtcdError, MemberStatus, MemberView,
    MEMBERSHIP_LOCK,
};
pub use command::{client_url, peer_url, Launch, TlsFiles, SERVICE_NAME};
