//! Probes for `agent status`: the local API server's `/readyz` over HTTPS
//! verified against the cluster CA, and the mapping of systemd's
//! `ActiveState` of `kubelet.service` (which the agent reads over D-Bus
//! through the supervisor crate) to [`KubeletState`].

use std::time::Duration;

use crate::kubeapi::ApiClient;
use crate::phase::{ApiHealth, KubeletState};

/// `GET https://127.0.0.1:<port>/readyz`, expecting 200 and `ok` (a
/// [`crate::kubeapi::ApiClient`] without credentials: `/readyz` is open
/// to anonymous requests).
#[derive(Debug, Clone)]
pub struct ReadyzCheck {
    client: ApiClient,
}

impl ReadyzCheck {
    /// A check of the API server at `server` (`https://host:port`)
    /// trusting only the CA in `ca_pem` (the cluster's Kubernetes CA;
    /// kubeboot puts `127.0.0.1` in the API server's SANs).
    pub fn new(server: &str, ca_pem: &[u8], timeout: Duration) -> Result<Self, String> {
        let client = ApiClient::new(server, ca_pem, None, timeout).map_err(|e| e.to_string())?;
        Ok(Self { client })
    }

    /// The local API server on `port`.
    pub fn local(port: u16, ca_pem: &[u8], timeout: Duration) -> Result<Self, String> {
        Self::new(&format!("https://127.0.0.1:{port}"), ca_pem, timeout)
    }

    /// Runs the check once.
    pub async fn check(&self) -> ApiHealth {
        self.client.readyz().await
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
