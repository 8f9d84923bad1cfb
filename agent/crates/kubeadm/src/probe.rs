//! Probes for `agent status`: the local API server's `/readyz` over HTTPS
//! verified against the cluster CA, and the mapping of systemd's
//! `ActiveState` of `kubelet.service` (which the agent reads over D-Bus
//! through the supervisor crate) to [`KubeletState`].

use std::time::Duration;

use crate::phase::{ApiHealth, KubeletState};

/// `GET https://127.0.0.1:<port>/readyz`, expecting 200 and `ok`.
#[derive(Debug, Clone)]
pub struct ReadyzCheck {
    client: reqwest::Client,
    url: String,
}

impl ReadyzCheck {
    /// A check of `url` trusting only the CA in `ca_pem` (the cluster's
    /// Kubernetes CA; kubeboot puts `127.0.0.1` in the API server's SANs).
    pub fn new(url: &str, ca_pem: &[u8], timeout: Duration) -> Result<Self, String> {
        // reqwest accepts a PEM bundle without any certificate (and then
        // trusts nothing); insist on one.
        let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem)
            .map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
        block
            .parse_x509()
            .map_err(|e| format!("the CA certificate does not parse: {e}"))?;
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| format!("the CA certificate: {e}"))?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("building the HTTPS client: {e}"))?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    /// The local API server on `port`.
    pub fn local(port: u16, ca_pem: &[u8], timeout: Duration) -> Result<Self, String> {
        Self::new(&format!("https://127.0.0.1:{port}/readyz"), ca_pem, timeout)
    }

    /// Runs the check once.
    pub async fn check(&self) -> ApiHealth {
        let resp = match self.client.get(&self.url).send().await {
            Ok(r) => r,
            Err(e) => {
                return ApiHealth::NotReady {
                    reason: format!("GET {}: {e}", self.url),
                }
            }
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() && body.trim() == "ok" {
            ApiHealth::Ready
        } else {
            let first = body.lines().next().unwrap_or_default();
            ApiHealth::NotReady {
                reason: format!("GET {}: {status} {first}", self.url),
            }
        }
    }
}

impl KubeletState {
    /// From systemd's `ActiveState` of the kubelet unit.
    pub fn from_active_state(state: &str) -> Self {
        match state {
            "active" | "reloading" | "activating" => KubeletState::Active,
            "inactive" | "deactivating" => KubeletState::Inactive,
            "failed" => KubeletState::Failed,
            _ => KubeletState::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_state_mapping() {
        assert_eq!(
            KubeletState::from_active_state("active"),
            KubeletState::Active
        );
        assert_eq!(
            KubeletState::from_active_state("activating"),
            KubeletState::Active
        );
        assert_eq!(
            KubeletState::from_active_state("inactive"),
            KubeletState::Inactive
        );
        assert_eq!(
            KubeletState::from_active_state("failed"),
            KubeletState::Failed
        );
        assert_eq!(
            KubeletState::from_active_state("maintenance"),
            KubeletState::Unknown
        );
    }

    #[test]
    fn refuses_a_non_pem_ca() {
        assert!(ReadyzCheck::local(6443, b"not a certificate", Duration::from_secs(1)).is_err());
    }
}
