//! Configuration layering: which source wins, and the EC2 user-data client.
//!
//! The node's [`ClusterConfig`] is assembled from up to four layers, lowest
//! precedence first (each later layer overrides the fields it sets, through
//! [`ClusterSpec::merge`]):
//!
//! 1. the image: [`cluster_config::IMAGE_CONFIG_PATH`] (baked by imagegen);
//! 2. EC2 instance user data (IMDSv2), fetched only when DMI says the machine
//!    is an EC2 instance ([`is_ec2`]); a TOML `ClusterSpec` fragment (a user
//!    data document starting with `#!` or `#cloud-config` belongs to other
//!    tools and is ignored);
//! 3. systemd credentials in `$CREDENTIALS_DIRECTORY` (else the system
//!    credentials, [`SYSTEM_CREDENTIALS_DIR`]): `kubeboot.config` (a TOML
//!    fragment) and `kubeboot.secret` (the secret);
//! 4. command-line flags: `--config FILE` and `--secret-file FILE`.
//!
//! Within one layer a dedicated secret source (`kubeboot.secret`,
//! `--secret-file`) overrides a `secret` key in that layer's TOML.
//!
//! [`layer`] is pure (texts in, validated config or error out); [`gather`]
//! reads the files and [`fetch_user_data`] talks to the metadata service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_config::{
    ClusterConfig, ClusterSecret, ClusterSpec, ConfigError, CONFIG_CREDENTIAL, SECRET_CREDENTIAL,
};
use thiserror::Error;

/// The EC2 instance metadata service (link-local, only contacted on EC2).
pub const IMDS_BASE_URL: &str = "http://169.254.169.254";
/// The DMI vendor string of EC2 instances.
pub const EC2_DMI_VENDOR: &str = "Amazon EC2";

/// Why the configuration could not be loaded. Each variant names the source.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A configuration file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer did not parse, or the merged result is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// No layer provided the cluster secret.
    #[error(
        "no cluster secret: pass the `{SECRET_CREDENTIAL}` credential, set `secret` in the \
         configuration, or use --secret-file (sources read: {sources})"
    )]
    MissingSecret {
        /// The sources that were read, for the message.
        sources: String,
    },
}

/// One layer's text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// A path or credential name, used in error messages.
    pub source: String,
    /// The TOML text.
    pub text: String,
}

/// Everything read from the outside, before layering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The image's configuration file.
    pub image: Option<Layer>,
    /// EC2 user data.
    pub user_data: Option<Layer>,
    /// The `kubeboot.config` credential.
    pub credential_config: Option<Layer>,
    /// The `kubeboot.secret` credential.
    pub credential_secret: Option<Layer>,
    /// `--config FILE`.
    pub cli_config: Option<Layer>,
    /// `--secret-file FILE`.
    pub cli_secret: Option<Layer>,
}

/// A validated configuration with its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated configuration (its `secret` is set).
    pub config: ClusterConfig,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// The sources that contributed, lowest precedence first.
    pub sources: Vec<String>,
}

/// Where systemd puts the credentials the hypervisor (SMBIOS type 11) or the
/// kernel command line (`systemd.set_credential=`) passed to the system.
pub const SYSTEM_CREDENTIALS_DIR: &str = "/run/credentials/@system";

/// The credentials directory: the service's own `$CREDENTIALS_DIRECTORY`
/// (`env`) when systemd set one, else the system credentials directory when
/// it exists. The fallback is why agent.service needs no `LoadCredential=`:
/// systemd 252 (Debian 12) refuses to start a unit whose `LoadCredential=`
/// names a credential nobody passed, and a node without its secret must
/// still run and say so in `agent status`.
pub fn credentials_dir(env: Option<std::ffi::OsString>, system: &Path) -> Option<PathBuf> {
    env.map(PathBuf::from)
        .or_else(|| system.is_dir().then(|| system.to_owned()))
}

/// Where [`gather`] looks. Paths are parameters so tests use temporary dirs.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The image configuration (normally [`cluster_config::IMAGE_CONFIG_PATH`]).
    pub image_path: PathBuf,
    /// The credentials directory ([`credentials_dir`]), if any.
    pub credentials_dir: Option<PathBuf>,
    /// `--config FILE`.
    pub cli_config: Option<PathBuf>,
    /// `--secret-file FILE`.
    pub cli_secret: Option<PathBuf>,
}

/// True when user data looks like it is meant for another tool (a script or
/// cloud-init document) rather than a kubeboot TOML fragment.
pub fn is_foreign_user_data(text: &str) -> bool {
    let head = text.trim_start();
    head.starts_with("#!") || head.starts_with("#cloud-config") || head.starts_with("Content-Type:")
}

/// The decision to contact the metadata service: only when DMI names EC2
/// as the system or board vendor (Nitro instances set `board_vendor`, Xen
/// ones `sys_vendor`).
pub fn is_ec2(sys_vendor: Option<&str>, board_vendor: Option<&str>) -> bool {
    [sys_vendor, board_vendor]
        .into_iter()
        .flatten()
        .any(|v| v.trim() == EC2_DMI_VENDOR)
}

/// Merges the layers (lowest first), applies the secret sources and
/// validates. Pure.
pub fn layer(sources: &Sources) -> Result<Loaded, LoadError> {
    let mut spec = ClusterSpec::default();
    let mut used = Vec::new();
    let pairs = [
        (&sources.image, None),
        (&sources.user_data, None),
        (&sources.credential_config, Some(&sources.credential_secret)),
        (&sources.cli_config, Some(&sources.cli_secret)),
    ];
    for (config, secret) in pairs {
        if let Some(l) = config {
            let fragment = ClusterSpec::from_toml(&l.source, &l.text)?;
            spec = spec.merge(&fragment);
            used.push(l.source.clone());
        }
        if let Some(Some(s)) = secret {
            let secret = ClusterSecret::new(s.text.clone()).map_err(|e| match e {
                ConfigError::Invalid { reason, .. } => ConfigError::Parse {
                    source_name: s.source.clone(),
                    message: reason,
                },
                other => other,
            })?;
            spec.secret = Some(secret);
            used.push(s.source.clone());
        }
    }
    let config = spec.validate()?;
    let secret = config
        .secret
        .clone()
        .ok_or_else(|| LoadError::MissingSecret {
            sources: if used.is_empty() {
                "none".to_owned()
            } else {
                used.join(", ")
            },
        })?;
    Ok(Loaded {
        config,
        secret,
        sources: used,
    })
}

/// Reads a file if it exists; a missing file is `None`, other errors fail.
fn read_optional(path: &Path, source: String) -> Result<Option<Layer>, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Layer { source, text })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError::Read {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Reads a file that was named explicitly: missing is an error.
fn read_required(path: &Path) -> Result<Layer, LoadError> {
    std::fs::read_to_string(path)
        .map(|text| Layer {
            source: path.display().to_string(),
            text,
        })
        .map_err(|e| LoadError::Read {
            path: path.to_owned(),
            source: e,
        })
}

/// Reads the file-based layers (image, credentials, CLI files). The
/// user-data layer is filled separately by the caller (see [`fetch_user_data`]).
pub fn gather(opts: &LoadOptions) -> Result<Sources, LoadError> {
    let mut sources = Sources {
        image: read_optional(&opts.image_path, opts.image_path.display().to_string())?,
        ..Default::default()
    };
    if let Some(dir) = &opts.credentials_dir {
        sources.credential_config = read_optional(
            &dir.join(CONFIG_CREDENTIAL),
            format!("credential {CONFIG_CREDENTIAL}"),
        )?;
        sources.credential_secret = read_optional(
            &dir.join(SECRET_CREDENTIAL),
            format!("credential {SECRET_CREDENTIAL}"),
        )?;
    }
    if let Some(p) = &opts.cli_config {
        sources.cli_config = Some(read_required(p)?);
    }
    if let Some(p) = &opts.cli_secret {
        sources.cli_secret = Some(read_required(p)?);
    }
    Ok(sources)
}

/// Reads the DMI vendor strings from sysfs (missing files are `None`).
pub fn read_dmi_vendors(sysfs_dmi: &Path) -> (Option<String>, Option<String>) {
    let read = |name: &str| std::fs::read_to_string(sysfs_dmi.join(name)).ok();
    (read("sys_vendor"), read("board_vendor"))
}

/// Errors talking to the instance metadata service.
#[derive(Debug, Error)]
pub enum ImdsError {
    /// Building the HTTP client failed.
    #[error("building the metadata HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The token request (IMDSv2 `PUT /latest/api/token`) failed.
    #[error("requesting an IMDSv2 token from {url}: {reason}")]
    Token {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The user-data request failed.
    #[error("reading user data from {url}: {reason}")]
    UserData {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Fetches the instance user data with IMDSv2 (token PUT, then GET).
/// `Ok(None)` when the instance has no user data (404). Short timeouts: the
/// service answers in milliseconds when it exists.
pub async fn fetch_user_data(
    base_url: &str,
    timeout: Duration,
) -> Result<Option<String>, ImdsError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(ImdsError::Client)?;
    let token_url = format!("{base_url}/latest/api/token");
    let token = client
        .put(&token_url)
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ImdsError::Token {
            url: token_url.clone(),
            reason: e.to_string(),
        })?
        .text()
        .await
        .map_err(|e| ImdsError::Token {
            url: token_url.clone(),
            reason: e.to_string(),
        })?;
    let data_url = format!("{base_url}/latest/user-data");
    let response = client
        .get(&data_url)
        .header("X-aws-ec2-metadata-token", token.trim())
        .send()
        .await
        .map_err(|e| ImdsError::UserData {
            url: data_url.clone(),
            reason: e.to_string(),
        })?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = response
        .error_for_status()
        .map_err(|e| ImdsError::UserData {
            url: data_url.clone(),
            reason: e.to_string(),
        })?;
    let text = response.text().await.map_err(|e| ImdsError::UserData {
        url: data_url.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(text))
}

/// Turns fetched user data into a layer, dropping documents for other tools.
pub fn user_data_layer(text: Option<String>) -> Option<Layer> {
    let text = text?;
    if text.trim().is_empty() || is_foreign_user_data(&text) {
        return None;
    }
    Some(Layer {
        source: "EC2 user data".to_owned(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SECRET: &str = "0123456789abcdef0123";

    fn l(source: &str, text: &str) -> Option<Layer> {
        Some(Layer {
            source: source.to_owned(),
            text: text.to_owned(),
        })
    }

    #[test]
    fn later_layers_win_field_by_field() {
        let s = Sources {
            image: l(
                "image",
                "name = \"img\"\nrole = \"master\"\nmasters = 5\n[discovery]\ninterval_ms = 900\n",
            ),
            user_data: l("ud", "name = \"ud\"\n[discovery]\ninterval_ms = 800\n"),
            credential_config: l("cred", "[discovery]\ninterval_ms = 700\n"),
            credential_secret: l("credsecret", SECRET),
            cli_config: l("cli", "masters = 1\n"),
            cli_secret: None,
        };
        let loaded = layer(&s).unwrap();
        assert_eq!(loaded.config.name, "ud");
        assert_eq!(loaded.config.masters, 1);
        assert_eq!(loaded.config.discovery.interval_ms, 700);
        assert_eq!(loaded.secret.expose(), SECRET.as_bytes());
        assert_eq!(loaded.sources, ["image", "ud", "cred", "credsecret", "cli"]);
    }

    #[test]
    fn secret_precedence() {
        let other = "ffffffffffffffffffffff";
        // The image's secret is overridden by the credential...
        let mut s = Sources {
            image: l(
                "image",
                &format!("role = \"master\"\nsecret = \"{other}\"\n"),
            ),
            credential_secret: l("cred", &format!("{SECRET}\n")),
            ..Default::default()
        };
        assert_eq!(layer(&s).unwrap().secret.expose(), SECRET.as_bytes());
        // ...which is overridden by the CLI config's secret key...
        s.cli_config = l("cli", &format!("secret = \"{other}\"\n"));
        assert_eq!(layer(&s).unwrap().secret.expose(), other.as_bytes());
        // ...which is overridden by --secret-file.
        s.cli_secret = l("file", SECRET);
        assert_eq!(layer(&s).unwrap().secret.expose(), SECRET.as_bytes());
    }

    #[test]
    fn missing_secret_names_sources() {
        let s = Sources {
            image: l("/usr/lib/kubeboot/cluster.toml", "role = \"master\"\n"),
            ..Default::default()
        };
        let err = layer(&s).unwrap_err();
        assert!(matches!(err, LoadError::MissingSecret { .. }));
        assert!(
            err.to_string().contains("/usr/lib/kubeboot/cluster.toml"),
            "{err}"
        );
    }

    #[test]
    fn short_secret_names_its_source() {
        let s = Sources {
            image: l("image", "role = \"master\"\n"),
            credential_secret: l("credential kubeboot.secret", "short"),
            ..Default::default()
        };
        let err = layer(&s).unwrap_err().to_string();
        assert!(err.starts_with("credential kubeboot.secret:"), "{err}");
    }

    #[test]
    fn parse_error_names_layer_and_invalid_value_names_key() {
        let s = Sources {
            image: l("image", "role = \"master\"\n"),
            credential_config: l("credential kubeboot.config", "mastrs = 3\n"),
            credential_secret: l("s", SECRET),
            ..Default::default()
        };
        let err = layer(&s).unwrap_err().to_string();
        assert!(err.starts_with("credential kubeboot.config:"), "{err}");
        let s = Sources {
            image: l("image", "role = \"master\"\nmasters = 2\n"),
            credential_secret: l("s", SECRET),
            ..Default::default()
        };
        assert!(matches!(
            layer(&s).unwrap_err(),
            LoadError::Config(ConfigError::Invalid {
                key: "cluster.masters",
                ..
            })
        ));
    }

    #[test]
    fn ec2_decision() {
        assert!(is_ec2(Some("Amazon EC2\n"), None));
        assert!(is_ec2(None, Some("Amazon EC2")));
        assert!(!is_ec2(Some("QEMU"), Some("")));
        assert!(!is_ec2(None, None));
        assert!(!is_ec2(Some("innotek GmbH"), Some("Oracle Corporation")));
    }

    #[test]
    fn foreign_user_data_ignored() {
        assert_eq!(user_data_layer(Some("#!/bin/sh\necho hi\n".into())), None);
        assert_eq!(
            user_data_layer(Some("#cloud-config\nusers: []\n".into())),
            None
        );
        assert_eq!(user_data_layer(Some("  \n".into())), None);
        assert_eq!(user_data_layer(None), None);
        assert!(user_data_layer(Some("masters = 3\n".into())).is_some());
    }

    #[test]
    fn gather_reads_files_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("cluster.toml");
        std::fs::write(&image, "role = \"master\"\n").unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join(SECRET_CREDENTIAL), SECRET).unwrap();
        let opts = LoadOptions {
            image_path: image,
            credentials_dir: Some(creds),
            cli_config: None,
            cli_secret: None,
        };
        let loaded = layer(&gather(&opts).unwrap()).unwrap();
        assert_eq!(loaded.secret.expose(), SECRET.as_bytes());
        // An explicitly named file that is missing is an error naming it.
        let opts = LoadOptions {
            cli_config: Some(dir.path().join("nope.toml")),
            ..opts
        };
        let err = gather(&opts).unwrap_err().to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }

    /// A one-connection-per-request fake metadata service on loopback.
    async fn fake_imds(
        user_data: Option<&'static str>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let (status, body) = if req.starts_with("PUT /latest/api/token") {
                    assert!(req
                        .to_ascii_lowercase()
                        .contains("x-aws-ec2-metadata-token-ttl-seconds: 60"));
                    ("200 OK", "tok123")
                } else if req.starts_with("GET /latest/user-data") {
                    assert!(
                        req.to_ascii_lowercase()
                            .contains("x-aws-ec2-metadata-token: tok123"),
                        "{req}"
                    );
                    match user_data {
                        Some(d) => ("200 OK", d),
                        None => ("404 Not Found", ""),
                    }
                } else {
                    ("400 Bad Request", "")
                };
                seen.push(req.lines().next().unwrap_or_default().to_owned());
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await.unwrap();
            }
            seen
        });
        (base, handle)
    }

    #[tokio::test]
    async fn imds_v2_token_then_user_data() {
        let (base, server) = fake_imds(Some("masters = 5\n")).await;
        let data = fetch_user_data(&base, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(data.as_deref(), Some("masters = 5\n"));
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("PUT /latest/api/token"), "{seen:?}");
        assert!(seen[1].starts_with("GET /latest/user-data"), "{seen:?}");
    }

    #[tokio::test]
    async fn imds_no_user_data_is_none_and_unreachable_is_error() {
        let (base, server) = fake_imds(None).await;
        assert_eq!(
            fetch_user_data(&base, Duration::from_secs(2))
                .await
                .unwrap(),
            None
        );
        server.await.unwrap();
        // A closed loopback port: the token request fails and says so.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err = fetch_user_data(&base, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, ImdsError::Token { .. }), "{err}");
    }

    #[test]
    fn credentials_dir_prefers_the_service_then_the_system() {
        let tmp = tempfile::tempdir().unwrap();
        let own = std::ffi::OsString::from("/run/credentials/agent.service");
        assert_eq!(
            credentials_dir(Some(own), tmp.path()),
            Some(PathBuf::from("/run/credentials/agent.service"))
        );
        assert_eq!(
            credentials_dir(None, tmp.path()),
            Some(tmp.path().to_owned())
        );
        assert_eq!(credentials_dir(None, &tmp.path().join("absent")), None);
    }
}
