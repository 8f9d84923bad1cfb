//! The health check of one backend: `GET https://<backend>/readyz`,
//! the server's certificate verified against the cluster CA only (no
//! system roots: a backend must prove it is one of ours), a new
//! connection each time (a check proves the listener accepts, not that an
//! old connection lingers). Passing is a 2xx answer whose body contains
//! the expected text (`ok` for the API server), within the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

/// What to check on each backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// PEM bundle of the CA(s) the backends' server certificates must
    /// chain to (the cluster's Kubernetes CA).
    pub ca_pem: Vec<u8>,
    /// The path to GET.
    pub path: String,
    /// Text the answer's body must contain (`None`: any 2xx passes).
    pub expect_body: Option<String>,
}

impl CheckSpec {
    /// The API server's `/readyz`, expecting `ok`, verified against
    /// `ca_pem`.
    pub fn apiserver_readyz(ca_pem: Vec<u8>) -> Self {
        CheckSpec {
            ca_pem,
            path: "/readyz".to_owned(),
            expect_body: Some("ok".to_owned()),
        }
    }

    /// The URL checked on `backend`.
    pub fn url(&self, backend: SocketAddr) -> String {
        format!("https://{backend}{}", self.path)
    }
}

/// Errors setting up the checks.
#[derive(Debug, Error)]
pub enum CheckError {
    /// The CA bundle did not parse.
    #[error("the backends' CA bundle: {source}")]
    Ca {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The CA bundle holds no certificate (nothing could pass).
    #[error("the backends' CA bundle holds no certificate")]
    NoCa,
    /// The HTTPS client could not be built.
    #[error("building the health-check client: {source}")]
    Client {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
}

/// The HTTPS client of the checks: trusts only the CA of `spec`, no proxy
/// from the environment, `timeout` for connecting and for the whole
/// check, no idle connections kept.
pub fn client(spec: &CheckSpec, timeout: Duration) -> Result<reqwest::Client, CheckError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0);
    let certs = reqwest::Certificate::from_pem_bundle(&spec.ca_pem)
        .map_err(|source| CheckError::Ca { source })?;
    if certs.is_empty() {
        return Err(CheckError::NoCa);
    }
    for cert in certs {
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|source| CheckError::Client { source })
}

/// One check of `url` (the one HTTP check, shared with the VIP's
/// tracker).
pub use vrrp::http_check::probe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_bundle_is_an_error_naming_it() {
        let spec = CheckSpec::apiserver_readyz(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
        );
        let err = client(&spec, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("CA bundle"), "{err}");
    }

    #[test]
    fn the_url_is_https_on_the_backend() {
        let spec = CheckSpec::apiserver_readyz(Vec::new());
        let addr = SocketAddr::from(([10, 77, 0, 3], 6443));
        assert_eq!(spec.url(addr), "https://10.77.0.3:6443/readyz");
        let v6 = "[fd00::3]:6443".parse().unwrap();
        assert_eq!(spec.url(v6), "https://[fd00::3]:6443/readyz");
    }

    #[test]
    fn an_empty_ca_bundle_is_refused() {
        let spec = CheckSpec::apiserver_readyz(Vec::new());
        assert!(matches!(
            client(&spec, Duration::from_secs(1)),
            Err(CheckError::NoCa)
        ));
    }

    #[tokio::test]
    async fn refused_fails() {
        let secret = cluster_config::ClusterSecret::new("0123456789abcdef-long-enough").unwrap();
        let pki = pki::ClusterPki::derive(&secret, "test").unwrap();
        let spec = CheckSpec::apiserver_readyz(pki.kubernetes_ca.cert_pem.into_bytes());
        let c = client(&spec, Duration::from_millis(500)).unwrap();
        // Bind and close: nothing listens there now.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (outcome, why) = probe(&c, &spec.url(addr), Some("ok")).await;
        assert_eq!(outcome, vrrp::verdict::Outcome::Fail, "{why:?}");
        assert!(why.is_some());
    }
}
