//! Gathers [`NodeFacts`] from the file system (the I/O half of the
//! idempotence decision in [`crate::decide`]).
//!
//! The kubelet's client certificate is found the way the kubelet finds it:
//! `kubelet.conf`'s user has either `client-certificate-data` (base64 PEM,
//! what `kubeadm init` writes first) or `client-certificate` (a file,
//! `/var/lib/kubelet/pki/kubelet-client-current.pem` once the kubelet
//! rotates its certificate).

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::decide::{KubeletCert, NodeFacts};
use crate::paths::{
    Paths, ADMIN_CONF, APISERVER_MANIFEST, BOOTSTRAP_KUBELET_CONF, CA_CRT, KUBELET_CONF,
    KUBELET_CONFIG,
};
use cluster_config::Role;

/// Reads what an earlier kubeadm run left on disk on a node of `role`, and
/// the proof record.
pub fn gather(paths: &Paths, role: Role) -> NodeFacts {
    // On a master the agent places the CA itself before kubeadm runs: only
    // on a worker is it kubeadm's.
    let early: &[&str] = match role {
        Role::Master => &[BOOTSTRAP_KUBELET_CONF],
        Role::Worker => &[BOOTSTRAP_KUBELET_CONF, CA_CRT],
    };
    NodeFacts {
        proof: crate::proof::read(paths),
        kubelet_config: paths.host(KUBELET_CONFIG).is_file(),
        kubelet_cert: kubelet_cert(paths),
        admin_conf: paths.host(ADMIN_CONF).is_file(),
        apiserver_manifest: paths.host(APISERVER_MANIFEST).is_file(),
        early_join_files: early
            .iter()
            .filter(|rel| paths.host(rel).is_file())
            .map(|rel| format!("/{rel}"))
            .collect(),
    }
}

fn kubelet_cert(paths: &Paths) -> KubeletCert {
    let conf = paths.host(KUBELET_CONF);
    let text = match std::fs::read_to_string(&conf) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return KubeletCert::Missing,
        Err(e) => {
            return KubeletCert::Unreadable {
                reason: format!("reading /{KUBELET_CONF}: {e}"),
            }
        }
    };
    match client_cert_pem(&text, paths).and_then(|pem| not_after(&pem)) {
        Ok(end) => KubeletCert::ValidUntil(end),
        Err(reason) => KubeletCert::Unreadable {
            reason: format!("/{KUBELET_CONF}: {reason}"),
        },
    }
}

/// The PEM client certificate a kubeconfig's first user presents.
pub fn client_cert_pem(kubeconfig: &str, paths: &Paths) -> Result<Vec<u8>, String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(kubeconfig).map_err(|e| format!("not YAML: {e}"))?;
    let user = doc
        .get("users")
        .and_then(|u| u.get(0))
        .and_then(|u| u.get("user"))
        .ok_or("no users[0].user")?;
    if let Some(data) = user.get("client-certificate-data").and_then(|d| d.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("client-certificate-data is not base64: {e}"));
    }
    if let Some(file) = user.get("client-certificate").and_then(|d| d.as_str()) {
        return std::fs::read(paths.host(file)).map_err(|e| format!("reading {file}: {e}"));
    }
    Err("users[0].user has neither client-certificate-data nor client-certificate".into())
}

/// The end of validity of the first certificate in `pem`.
pub fn not_after(pem: &[u8]) -> Result<SystemTime, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("no PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("bad certificate: {e}"))?;
    let ts = cert.validity().not_after.timestamp();
    Ok(if ts >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        SystemTime::UNIX_EPOCH
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::KUBELET_CONF;

    #[test]
    fn early_join_files_count_by_role() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        for rel in [CA_CRT, BOOTSTRAP_KUBELET_CONF] {
            let p = paths.host(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        assert_eq!(
            gather(&paths, Role::Worker).early_join_files,
            vec![
                "/etc/kubernetes/bootstrap-kubelet.conf".to_owned(),
                "/etc/kubernetes/pki/ca.crt".to_owned()
            ]
        );
        // The agent places a master's CA itself.
        assert_eq!(
            gather(&paths, Role::Master).early_join_files,
            vec!["/etc/kubernetes/bootstrap-kubelet.conf".to_owned()]
        );
    }

    fn issue(not_after_days: i64) -> String {
        let secret = cluster_config::ClusterSecret::new("facts-test-secret-0123456").unwrap();
        let ca = pki::ClusterPki::derive(&secret, "c").unwrap().kubernetes_ca;
        let req = pki::LeafRequest {
            common_name: "system:node:n1".into(),
            dns_names: vec![],
            ips: vec![],
            usage: pki::Usage::Client,
            organization: Some("system:nodes".into()),
        };
        // Issued so that it ends `not_after_days` from now (LEAF_VALIDITY is 365 days).
        let at = time::OffsetDateTime::now_utc() - time::Duration::days(365 - not_after_days);
        ca.issue_at(&req, at).unwrap().cert_pem
    }

    fn put(root: &std::path::Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_the_certificate_from_data_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert_eq!(gather(&paths, Role::Worker), NodeFacts::fresh());

        let pem = issue(30);
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
        put(
            dir.path(),
            KUBELET_CONF,
            &format!("users:\n- name: a\n  user:\n    client-certificate-data: {b64}\n"),
        );
        let KubeletCert::ValidUntil(end) = gather(&paths, Role::Worker).kubelet_cert else {
            panic!("no certificate read")
        };
        let left = end.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(29 * 86400) && left < Duration::from_secs(31 * 86400),
            "{left:?}"
        );

        // The rotated form: a file path, re-rooted under the test root.
        put(
            dir.path(),
            "var/lib/kubelet/pki/kubelet-client-current.pem",
            &issue(-2),
        );
        put(
            dir.path(),
            KUBELET_CONF,
            "users:\n- name: a\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
        );
        let KubeletCert::ValidUntil(end) = gather(&paths, Role::Worker).kubelet_cert else {
            panic!("no certificate read")
        };
        assert!(
            end < SystemTime::now(),
            "the certificate should have expired"
        );
    }

    #[test]
    fn unreadable_kubeconfigs_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        for (text, want) in [
            ("kind: Config\n", "no users[0].user"),
            ("users:\n- user: {}\n", "neither"),
            (
                "users:\n- user:\n    client-certificate-data: '%%%'\n",
                "not base64",
            ),
            (
                "users:\n- user:\n    client-certificate: /nope.pem\n",
                "/nope.pem",
            ),
            (": : :\n", "not YAML"),
        ] {
            put(dir.path(), KUBELET_CONF, text);
            match gather(&paths, Role::Worker).kubelet_cert {
                KubeletCert::Unreadable { reason } => {
                    assert!(reason.contains(want), "{reason} lacks {want}");
                    assert!(
                        reason.starts_with("/etc/kubernetes/kubelet.conf"),
                        "{reason}"
                    );
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
