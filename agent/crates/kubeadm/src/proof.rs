//! The persisted fact that this node's kubeadm step worked: `kubeadm init`
//! or `join` exited 0 *and* the result was checked (masters: the node's
//! own API server answered `/readyz`, TLS verified against the derived
//! CA; workers: the API shows this node's Node object, read with the
//! kubelet's own credentials). Written to the data disk
//! (`/var/lib/kubeboot/kubeadm/proven.json`) only after both; removed
//! before every new attempt and every reset.
//!
//! kubeadm's own files are no proof: `kubeadm init` writes the kubeconfig
//! files, the manifests and the kubelet configuration *before* it waits
//! for the control plane, so a failed init leaves a node that looks set
//! up. [`crate::decide::judge_setup`] calls a node complete only with this
//! record, for this node, this cluster (the CA pin) and a step of its role.

use std::time::{Duration, SystemTime};

use cluster_config::Role;
use serde::{Deserialize, Serialize};

use crate::paths::Paths;

/// The record's file name (under `/var/lib/kubeboot/kubeadm`).
pub const PROOF_FILE: &str = "proven.json";

/// Which kubeadm step was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvenStep {
    /// `kubeadm init` (the init node).
    Init,
    /// `kubeadm join` with `controlPlane`.
    JoinControlPlane,
    /// `kubeadm join` of a worker.
    JoinWorker,
}

impl ProvenStep {
    /// Whether a node of `role` can have been set up by this step.
    pub fn fits(self, role: Role) -> bool {
        match role {
            Role::Master => matches!(self, ProvenStep::Init | ProvenStep::JoinControlPlane),
            Role::Worker => self == ProvenStep::JoinWorker,
        }
    }
}

/// The persisted proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofRecord {
    /// The step that ran.
    pub step: ProvenStep,
    /// Its command line (secrets redacted).
    pub command: String,
    /// The node name kubeadm registered.
    pub node_name: String,
    /// The cluster's CA pin at the time (another cluster's record is a
    /// leftover).
    pub ca_pin: String,
    /// The Kubernetes version of the image's kubeadm.
    pub kubernetes_version: String,
    /// What was checked, in words (for the status).
    pub proof: String,
    /// When (seconds since the Unix epoch).
    pub proven_at_unix_s: u64,
    /// kubeadm's warnings of that run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ProofRecord {
    /// When it was proven.
    pub fn proven_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.proven_at_unix_s)
    }
}

/// What the disk says about the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofFact {
    /// No record.
    Missing,
    /// A record that cannot be read (a leftover like any other).
    Unreadable {
        /// Why.
        reason: String,
    },
    /// A record.
    Recorded(ProofRecord),
}

/// This node as the current configuration sees it, to match a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node name.
    pub node_name: String,
    /// The cluster's CA pin.
    pub ca_pin: String,
}

/// Why a record does not prove this node's setup, if it does not. Pure.
pub fn mismatch(record: &ProofRecord, role: Role, me: &NodeIdentity) -> Option<String> {
    if !record.step.fits(role) {
        return Some(format!(
            "the proof record is of a {:?} step, not of a {role}",
            record.step
        ));
    }
    if record.node_name != me.node_name {
        return Some(format!(
            "the proof record is of node {:?}, this node is {:?}",
            record.node_name, me.node_name
        ));
    }
    if record.ca_pin != me.ca_pin {
        return Some(format!(
            "the proof record is of another cluster (CA {}, this cluster's is {})",
            record.ca_pin, me.ca_pin
        ));
    }
    None
}

/// Reads the record.
pub fn read(paths: &Paths) -> ProofFact {
    let path = paths.config_file(PROOF_FILE);
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ProofFact::Missing,
        Err(e) => ProofFact::Unreadable {
            reason: format!("reading {}: {e}", path.display()),
        },
        Ok(text) => match serde_json::from_str(&text) {
            Ok(r) => ProofFact::Recorded(r),
            Err(e) => ProofFact::Unreadable {
                reason: format!("{}: {e}", path.display()),
            },
        },
    }
}

/// Writes the record atomically (mode 0644: nothing secret in it).
pub fn write(paths: &Paths, record: &ProofRecord) -> std::io::Result<()> {
    let path = paths.config_file(PROOF_FILE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    atomic_file::write(&path, format!("{text}\n").as_bytes(), atomic_file::PUBLIC)
}

/// Removes the record (absent is fine).
pub fn remove(paths: &Paths) -> std::io::Result<()> {
    match std::fs::remove_file(paths.config_file(PROOF_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ProofRecord {
        ProofRecord {
            step: ProvenStep::JoinControlPlane,
            command: "kubeadm join --config /var/lib/kubeboot/kubeadm/join.yaml".into(),
            node_name: "master-2".into(),
            ca_pin: "sha256:aa".into(),
            kubernetes_version: "v1.24.0-alpha.1".into(),
            proof: "GET https://127.0.0.1:6443/readyz: ok".into(),
            proven_at_unix_s: 1_700_000_000,
            warnings: vec!["[WARNING Hostname]: x".into()],
        }
    }

    #[test]
    fn round_trips_and_unreadable_is_not_a_proof() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert_eq!(read(&paths), ProofFact::Missing);
        remove(&paths).unwrap();
        write(&paths, &record()).unwrap();
        assert_eq!(read(&paths), ProofFact::Recorded(record()));
        let text = std::fs::read_to_string(paths.config_file(PROOF_FILE)).unwrap();
        assert!(text.contains("\"step\": \"join-control-plane\""), "{text}");
        std::fs::write(paths.config_file(PROOF_FILE), "{\"step\": \"init\"").unwrap();
        assert!(matches!(read(&paths), ProofFact::Unreadable { .. }));
        std::fs::write(
            paths.config_file(PROOF_FILE),
            text.replace("\"proof\"", "\"proof_typo\""),
        )
        .unwrap();
        assert!(matches!(read(&paths), ProofFact::Unreadable { .. }));
        remove(&paths).unwrap();
        assert_eq!(read(&paths), ProofFact::Missing);
    }

    #[test]
    fn a_record_proves_only_this_node_of_this_cluster_in_its_role() {
        let me = NodeIdentity {
            node_name: "master-2".into(),
            ca_pin: "sha256:aa".into(),
        };
        assert_eq!(mismatch(&record(), Role::Master, &me), None);
        assert_eq!(
            mismatch(
                &ProofRecord {
                    step: ProvenStep::Init,
                    ..record()
                },
                Role::Master,
                &me
            ),
            None
        );
        let cases = [
            (record(), Role::Worker, "not of a worker"),
            (
                ProofRecord {
                    step: ProvenStep::JoinWorker,
                    ..record()
                },
                Role::Master,
                "not of a master",
            ),
            (
                ProofRecord {
                    node_name: "master-3".into(),
                    ..record()
                },
                Role::Master,
                "master-3",
            ),
            (
                ProofRecord {
                    ca_pin: "sha256:bb".into(),
                    ..record()
                },
                Role::Master,
                "another cluster",
            ),
        ];
        for (r, role, want) in cases {
            let why = mismatch(&r, role, &me).expect("a mismatch");
            assert!(why.contains(want), "{why}");
        }
        assert!(ProvenStep::JoinWorker.fits(Role::Worker));
        assert!(!ProvenStep::Init.fits(Role::Worker));
    }
}
