//! The agent's one Kubernetes API client: HTTPS with rustls, trusting only
//! the cluster's Kubernetes CA (derived from the secret, never the
//! system's roots), optionally presenting a client certificate taken from
//! a kubeconfig (`kubelet.conf` on workers, `admin.conf` on masters).
//!
//! It reads what the kube phase needs and nothing else: `/readyz` (the
//! VIP's weight, the status, a master's proof), one Node (a worker's
//! proof), and the Node list (the host-gw pod network). The JSON is parsed
//! by the pure functions [`parse_node`] and [`parse_node_list`].

use std::net::Ipv4Addr;
use std::time::Duration;

use thiserror::Error;

use crate::paths::Paths;
use crate::phase::ApiHealth;

/// Errors of the API client; every message names the URL or the file.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The client could not be built (CA, credentials, kubeconfig).
    #[error("Kubernetes API client: {0}")]
    Config(String),
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// reqwest's message (with its causes).
        reason: String,
    },
    /// The server answered with an unexpected status.
    #[error("GET {url}: {status} {body}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The first line of the body.
        body: String,
    },
    /// The body is not what the API returns.
    #[error("GET {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// A client certificate and its key (PEM). `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The certificate (chain), PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM (PKCS#1, SEC1 or PKCS#8). Secret.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<certificate and redacted key>)")
    }
}

/// The API server and the credentials a kubeconfig names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigAccess {
    /// `clusters[0].cluster.server`.
    pub server: String,
    /// `users[0].user`'s client certificate and key.
    pub credentials: Credentials,
}

/// Reads the server and the first user's client certificate and key from
/// a kubeconfig's text; `client-certificate`/`client-key` files are read
/// under `paths` (the kubelet's rotated `kubelet-client-current.pem` holds
/// both). The kubeconfig's own CA is ignored: the caller trusts the
/// derived one.
pub fn kubeconfig_access(text: &str, paths: &Paths) -> Result<KubeconfigAccess, String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let server = doc
        .get("clusters")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("cluster"))
        .and_then(|c| c.get("server"))
        .and_then(|s| s.as_str())
        .ok_or("no clusters[0].cluster.server")?
        .to_owned();
    let cert_pem = crate::facts::client_cert_pem(text, paths)?;
    let key_pem = client_key_pem(&doc, paths)?;
    Ok(KubeconfigAccess {
        server,
        credentials: Credentials { cert_pem, key_pem },
    })
}

fn client_key_pem(doc: &serde_yaml_ng::Value, paths: &Paths) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let user = doc
        .get("users")
        .and_then(|u| u.get(0))
        .and_then(|u| u.get("user"))
        .ok_or("no users[0].user")?;
    if let Some(data) = user.get("client-key-data").and_then(|d| d.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("client-key-data is not base64: {e}"));
    }
    if let Some(file) = user.get("client-key").and_then(|d| d.as_str()) {
        return std::fs::read(paths.host(file)).map_err(|e| format!("reading {file}: {e}"));
    }
    Err("users[0].user has neither client-key-data nor client-key".into())
}

/// What the kube phase reads of a Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.podCIDR` (set by the controller manager's node IPAM once the
    /// node registered; `None` before).
    pub pod_cidr: Option<String>,
    /// The first IPv4 `InternalIP` of `status.addresses`.
    pub internal_ip: Option<Ipv4Addr>,
    /// The `Ready` condition (`None`: not reported yet).
    pub ready: Option<bool>,
}

/// Reads a Node object (`v1.Node` JSON). Pure.
pub fn parse_node(v: &serde_json::Value) -> Result<NodeInfo, String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or("a Node without metadata.name")?
        .to_owned();
    let pod_cidr = v
        .pointer("/spec/podCIDR")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let internal_ip = v
        .pointer("/status/addresses")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(|t| t.as_str()) == Some("InternalIP"))
        .filter_map(|a| a.get("address").and_then(|x| x.as_str()))
        .find_map(|a| a.parse::<Ipv4Addr>().ok());
    let ready = v
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(|s| s.as_str()))
        .map(|s| s == "True");
    Ok(NodeInfo {
        name,
        pod_cidr,
        internal_ip,
        ready,
    })
}

/// Reads a `NodeList`. Pure.
pub fn parse_node_list(v: &serde_json::Value) -> Result<Vec<NodeInfo>, String> {
    if v.get("kind").and_then(|k| k.as_str()) != Some("NodeList") {
        return Err("not a NodeList".into());
    }
    v.get("items")
        .and_then(|i| i.as_array())
        .ok_or("a NodeList without items")?
        .iter()
        .map(parse_node)
        .collect()
}

/// An HTTPS client of one API server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
}

impl ApiClient {
    /// A client of `server` (`https://host:port`) trusting only the CA in
    /// `ca_pem` and presenting `credentials` when given.
    pub fn new(
        server: &str,
        ca_pem: &[u8],
        credentials: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        // reqwest accepts a PEM bundle without any certificate (and then
        // trusts nothing); insist on one.
        let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem)
            .map_err(|e| ApiError::Config(format!("the CA certificate is not PEM: {e}")))?;
        block
            .parse_x509()
            .map_err(|e| ApiError::Config(format!("the CA certificate does not parse: {e}")))?;
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| ApiError::Config(format!("the CA certificate: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(c) = credentials {
            let mut pem = c.cert_pem.clone();
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(&c.key_pem);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| ApiError::Config(format!("the client certificate or key: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ApiError::Config(format!("building the HTTPS client: {e}")))?;
        Ok(Self {
            http,
            server: server.trim_end_matches('/').to_owned(),
        })
    }

    /// A client with a kubeconfig's credentials (see [`kubeconfig_access`]),
    /// talking to `server` when given, else to the kubeconfig's server.
    pub fn from_kubeconfig(
        kubeconfig: &std::path::Path,
        paths: &Paths,
        ca_pem: &[u8],
        server: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let shown = kubeconfig.display();
        let text = std::fs::read_to_string(kubeconfig)
            .map_err(|e| ApiError::Config(format!("reading {shown}: {e}")))?;
        let access = kubeconfig_access(&text, paths)
            .map_err(|e| ApiError::Config(format!("{shown}: {e}")))?;
        Self::new(
            server.unwrap_or(&access.server),
            ca_pem,
            Some(&access.credentials),
            timeout,
        )
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    async fn get(&self, path: &str) -> Result<(u16, String, String), ApiError> {
        let url = format!("{}{path}", self.server);
        let resp = self
            .http
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| ApiError::Request {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| ApiError::Request {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        Ok((status, url, body))
    }

    /// `GET /readyz`: ready only on 200 with the body `ok`.
    pub async fn readyz(&self) -> ApiHealth {
        match self.get("/readyz").await {
            Err(e) => ApiHealth::NotReady {
                reason: e.to_string(),
            },
            Ok((status, _, body)) if (200..300).contains(&status) && body.trim() == "ok" => {
                ApiHealth::Ready
            }
            Ok((status, url, body)) => ApiHealth::NotReady {
                reason: format!("GET {url}: {status} {}", failed_checks(&body)),
            },
        }
    }

    async fn get_json(&self, path: &str) -> Result<Option<serde_json::Value>, ApiError> {
        let (status, url, body) = self.get(path).await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                url,
                status,
                body: body.lines().next().unwrap_or_default().to_owned(),
            });
        }
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| ApiError::Decode {
                url,
                reason: format!("not JSON: {e}"),
            })
    }

    /// `GET /api/v1/nodes/<name>`: `None` when there is no such Node.
    pub async fn node(&self, name: &str) -> Result<Option<NodeInfo>, ApiError> {
        let path = format!("/api/v1/nodes/{name}");
        match self.get_json(&path).await? {
            None => Ok(None),
            Some(v) => parse_node(&v).map(Some).map_err(|reason| ApiError::Decode {
                url: format!("{}{path}", self.server),
                reason,
            }),
        }
    }

    /// `GET /api/v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        let path = "/api/v1/nodes";
        let url = format!("{}{path}", self.server);
        match self.get_json(path).await? {
            None => Err(ApiError::Status {
                url,
                status: 404,
                body: String::new(),
            }),
            Some(v) => parse_node_list(&v).map_err(|reason| ApiError::Decode { url, reason }),
        }
    }
}

/// An error with its causes (reqwest's own message hides the TLS reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What a failing `/readyz` says, on one line: its failed checks
/// (`[-]name failed: ...`) when it lists them, else its first line. Pure.
pub fn failed_checks(body: &str) -> String {
    let failed: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[-]"))
        .collect();
    if failed.is_empty() {
        body.lines().next().unwrap_or_default().to_owned()
    } else {
        failed.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(
        name: &str,
        cidr: Option<&str>,
        ips: &[(&str, &str)],
        ready: Option<&str>,
    ) -> serde_json::Value {
        let mut v = json!({
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {},
            "status": {
                "addresses": ips.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>(),
                "conditions": [{"type": "MemoryPressure", "status": "False"}]
            }
        });
        if let Some(c) = cidr {
            v["spec"]["podCIDR"] = json!(c);
        }
        if let Some(r) = ready {
            v["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "Ready", "status": r}));
        }
        v
    }

    #[test]
    fn reads_nodes_as_the_api_returns_them() {
        let n = parse_node(&node(
            "worker-1",
            Some("10.244.3.0/24"),
            &[
                ("Hostname", "worker-1"),
                ("InternalIP", "fd00::5"),
                ("InternalIP", "10.77.0.21"),
            ],
            Some("True"),
        ))
        .unwrap();
        assert_eq!(
            n,
            NodeInfo {
                name: "worker-1".into(),
                pod_cidr: Some("10.244.3.0/24".into()),
                internal_ip: Some(Ipv4Addr::new(10, 77, 0, 21)),
                ready: Some(true),
            }
        );
        // Just registered: no CIDR, no address, no Ready condition yet.
        let n = parse_node(&node("m1", None, &[], None)).unwrap();
        assert_eq!((n.pod_cidr, n.internal_ip, n.ready), (None, None, None));
        let n = parse_node(&node(
            "m1",
            Some(""),
            &[("ExternalIP", "10.0.0.1")],
            Some("False"),
        ))
        .unwrap();
        assert_eq!(
            (n.pod_cidr, n.internal_ip, n.ready),
            (None, None, Some(false))
        );
        assert!(parse_node(&json!({"metadata": {}})).is_err());
        let list = json!({"kind": "NodeList", "items": [node("a", None, &[], None), node("b", None, &[], None)]});
        let names: Vec<String> = parse_node_list(&list)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(parse_node_list(&json!({"kind": "Status", "items": []})).is_err());
        assert!(parse_node_list(&json!({"kind": "NodeList"})).is_err());
    }

    #[test]
    fn kubeconfigs_give_server_and_credentials() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // admin.conf: embedded data.
        let text = format!(
            "clusters:\n- cluster:\n    server: https://10.77.0.10:6443\n  name: k\n\
             users:\n- name: a\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("CERT"),
            b64("KEY")
        );
        let a = kubeconfig_access(&text, &paths).unwrap();
        assert_eq!(a.server, "https://10.77.0.10:6443");
        assert_eq!(a.credentials.cert_pem, b"CERT");
        assert_eq!(a.credentials.key_pem, b"KEY");
        assert!(!format!("{a:?}").contains("KEY"));
        // kubelet.conf after rotation: one file with both, re-rooted.
        let pem = dir
            .path()
            .join("var/lib/kubelet/pki/kubelet-client-current.pem");
        std::fs::create_dir_all(pem.parent().unwrap()).unwrap();
        std::fs::write(&pem, "BOTH").unwrap();
        let text = "clusters:\n- cluster:\n    server: https://10.77.0.10:6443\n\
             users:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n";
        let a = kubeconfig_access(text, &paths).unwrap();
        assert_eq!(a.credentials.cert_pem, b"BOTH");
        assert_eq!(a.credentials.key_pem, b"BOTH");
        for (bad, want) in [
            ("users: []\n", "clusters"),
            (
                "clusters:\n- cluster:\n    server: https://x\nusers:\n- user:\n    client-certificate-data: Q0VSVA==\n",
                "client-key",
            ),
        ] {
            let e = kubeconfig_access(bad, &paths).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn refuses_a_non_pem_ca() {
        assert!(matches!(
            ApiClient::new(
                "https://127.0.0.1:6443",
                b"not a certificate",
                None,
                Duration::from_secs(1)
            ),
            Err(ApiError::Config(_))
        ));
    }
    #[test]
    fn a_failing_readyz_is_told_by_its_failed_checks() {
        let body = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
                    [+]poststarthook/start-kube-aggregator-informers ok\n\
                    [-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n\
                    readyz check failed\n";
        assert_eq!(
            failed_checks(body),
            "[-]etcd failed: reason withheld; [-]poststarthook/rbac/bootstrap-roles failed: \
             reason withheld"
        );
        assert_eq!(failed_checks("Unauthorized\nmore"), "Unauthorized");
        assert_eq!(failed_checks(""), "");
    }
}
