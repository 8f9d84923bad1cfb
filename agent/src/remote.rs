//! The remote control endpoint: the control socket's requests (`agent
//! recover`, `agent etcd snapshot`) over the network, for nodes nobody can
//! log in to (the images have no login, like Talos' and Bottlerocket's).
//!
//! Every agent listens on its own address, port [`CONTROL_PORT`], with
//! mutual TLS under the cluster's control CA (`pki::ClusterPki::control_ca`,
//! derived from the cluster secret like every CA here): the agent's server
//! certificate names the node and its address; a client must present a
//! certificate of the same CA, which only a holder of the secret can issue
//! (`agent recover --node ADDR --secret-file FILE` issues one in memory for
//! the one request). No node keeps a client certificate on disk.
//!
//! Protocol: the control socket's JSON [`Request`] and [`Response`], one
//! line each (no reliance on TLS half-close). The answer comes when the
//! request is done (a recovery takes seconds).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::control::{self, Framing, RecoverTx, Request, Response, SnapshotSlot};

/// The remote control port (TCP, beside discovery's 7373).
pub const CONTROL_PORT: u16 = 7374;
/// Common name of the certificate `agent ... --node` presents.
pub const CLIENT_CN: &str = "kubeboot-admin";
/// How long a client waits for the connection and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the answer (a recovery stops and restores
/// etcd and waits for it).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// Errors of the remote control endpoint and its client.
#[derive(Debug, Error)]
pub enum RemoteError {
    /// Issuing this side's certificate failed.
    #[error("issuing the control endpoint's certificate: {0}")]
    Pki(#[from] pki::PkiError),
    /// The TLS configuration could not be built.
    #[error("the control endpoint's TLS configuration: {0}")]
    Tls(String),
    /// Binding the listener failed.
    #[error("binding the remote control endpoint {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Reaching the agent failed.
    #[error("reaching the agent's control endpoint {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// What went wrong (refused, timed out, TLS rejected).
        reason: String,
    },
    /// The exchange failed or the answer did not parse.
    #[error("asking the agent at {addr}: {reason}")]
    Exchange {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Tls(e.to_string())
}

fn roots(ca: &pki::Ca) -> Result<rustls::RootCertStore, RemoteError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .map_err(tls_err)?;
    Ok(roots)
}

fn leaf(
    ca: &pki::Ca,
    req: &pki::LeafRequest,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RemoteError> {
    let issued = ca.issue(req)?;
    let certs = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(tls_err)?;
    Ok((certs, key))
}

/// The endpoint's TLS: a server certificate for `node_name` at `ip` from
/// `ca` (issued in memory at each start), clients verified against `ca`.
pub fn server_config(
    ca: &pki::Ca,
    node_name: &str,
    ip: IpAddr,
) -> Result<Arc<rustls::ServerConfig>, RemoteError> {
    let (certs, key) = leaf(
        ca,
        &pki::LeafRequest {
            common_name: node_name.to_owned(),
            dns_names: vec![node_name.to_owned()],
            ips: vec![ip],
            usage: pki::Usage::Server,
            organization: None,
        },
    )?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()
    .map_err(tls_err)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    Ok(Arc::new(config))
}

/// Listens on `addr` and answers each authenticated request like the
/// control socket, until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    slot: SnapshotSlot,
    recover: Option<RecoverTx>,
) -> Result<tokio::task::JoinHandle<()>, RemoteError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RemoteError::Bind { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, slot, recover) = (acceptor.clone(), slot.clone(), recover.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::warn!("remote control: refused {peer}: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("remote control: {peer} did not finish the handshake");
                        return;
                    }
                };
                tracing::info!("remote control: request from {peer}");
                let (read, write) = tokio::io::split(tls);
                control::exchange(read, write, Framing::Line, &slot, recover.as_ref()).await;
            });
        }
    }))
}

/// Sends `request` to the agent at `addr`, authenticated with a client
/// certificate issued from `ca` in memory, and returns its answer. The
/// agent's certificate must come from `ca` and name `addr`'s address.
pub async fn ask(
    addr: SocketAddr,
    ca: &pki::Ca,
    request: &Request,
) -> Result<Response, RemoteError> {
    let (certs, key) = leaf(ca, &pki::LeafRequest::client(CLIENT_CN))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, key)
        .map_err(tls_err)?;
    let connect = |reason: String| RemoteError::Connect { addr, reason };
    let exchange = |reason: String| RemoteError::Exchange { addr, reason };
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| connect(e.to_string()))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| {
                connect(format!(
                    "TLS: {e} (a wrong --secret-file or --cluster-name derives another CA)"
                ))
            })
    })
    .await
    .map_err(|_| connect(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
    let mut body = serde_json::to_vec(request).map_err(|e| exchange(e.to_string()))?;
    body.push(b'\n');
    tls.write_all(&body)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    tls.flush().await.map_err(|e| exchange(e.to_string()))?;
    let mut buf = Vec::new();
    let mut limited = (&mut tls).take(MAX_ANSWER);
    match tokio::time::timeout(ANSWER_TIMEOUT, limited.read_to_end(&mut buf)).await {
        Err(_) => return Err(exchange(format!("no answer within {ANSWER_TIMEOUT:?}"))),
        // A peer that closes without close_notify after a whole answer
        // still gave the answer.
        Ok(Err(e)) if buf.is_empty() => {
            return Err(exchange(format!(
                "the endpoint closed without an answer ({e}); was the client certificate refused?"
            )))
        }
        Ok(_) => {}
    }
    serde_json::from_slice(&buf).map_err(|e| exchange(format!("the answer did not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki_of(secret: &str) -> pki::ClusterPki {
        let secret = cluster_config::ClusterSecret::new(secret).unwrap();
        pki::ClusterPki::derive(&secret, "test").unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_a_holder_of_the_secret_is_answered() {
        let pki = pki_of("the-cluster-secret-0123456789");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let tls = server_config(&pki.control_ca, "node-1", ip).unwrap();
        // Port 0: the test learns the port from a probe bind first.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = serve(addr, tls, SnapshotSlot::default(), None)
            .await
            .unwrap();

        // The right CA: the request is answered (this agent has no
        // snapshotter yet, and says so).
        match ask(addr, &pki.control_ca, &Request::EtcdSnapshot)
            .await
            .unwrap()
        {
            Response::Error { error } => assert!(error.contains("healthy voter"), "{error}"),
            other => panic!("{other:?}"),
        }
        // Another secret's CA: the server is not trusted, and the server
        // would not trust the client either.
        let other = pki_of("another-cluster-secret-987654321");
        let e = ask(addr, &other.control_ca, &Request::EtcdSnapshot)
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        // The etcd CA of the same secret is not the control CA.
        let e = ask(addr, &pki.etcd_ca, &Request::EtcdSnapshot)
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::Connect { .. }), "{e}");
        // Nobody listening: named.
        server.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = ask(addr, &pki.control_ca, &Request::EtcdSnapshot)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("reaching the agent"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_with_a_foreign_certificate_is_refused_by_the_server() {
        // The client trusts the server's CA but presents a certificate of
        // another secret's control CA: the server refuses the handshake.
        let pki = pki_of("the-cluster-secret-0123456789");
        let other = pki_of("another-cluster-secret-987654321");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let tls = server_config(&pki.control_ca, "node-1", ip).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let _server = serve(addr, tls, SnapshotSlot::default(), Some(tx))
            .await
            .unwrap();
        let (certs, key) = leaf(&other.control_ca, &pki::LeafRequest::client(CLIENT_CN)).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&pki.control_ca).unwrap())
            .with_client_auth_cert(certs, key)
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let outcome = async {
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            tls.write_all(
                b"{\"command\":\"recover\",\"confirm_node\":\"node-1\",\"from_snapshot\":null}\n",
            )
            .await?;
            tls.flush().await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        }
        .await;
        match outcome {
            Err(_) => {}
            Ok(buf) => assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf)),
        }
        // And the recovery never reached the loop.
        assert!(rx.try_recv().is_err());
    }
}
