//! A minimal OCI distribution (registry HTTP API v2) pull client: the
//! "upstream download" source of the profile's digest-pinned container
//! images.
//!
//! What it does, and nothing more: `GET /v2/<repo>/manifests/<digest>` with
//! the Accept headers of the four manifest kinds (OCI index, Docker manifest
//! list, OCI and Docker image manifests), `GET /v2/<repo>/blobs/<digest>`
//! (redirects followed, as registries hand blobs to a CDN), anonymous
//! Bearer token auth (`401` + `WWW-Authenticate: Bearer realm=...,
//! service=..., scope=...` → `GET realm?service=..&scope=..` → retry with
//! the token), and a content-addressed cache `<cache>/blobs/sha256/<hex>`
//! so a second build is offline. Every manifest and blob is checked against
//! the digest that names it before it is cached or used; which blobs an
//! image needs (the linux/amd64 pick in an index) is decided by
//! [`crate::images`], shared with the components-directory source.
//!
//! Why by hand and not the `oci-client` crate: that crate is async (tokio),
//! and its current releases pull a second reqwest (0.13) and sha2 (0.11)
//! plus `oci-spec` (derive_builder, getset, strum), jsonwebtoken, chrono
//! and regex into a build that CI compiles on 2 cores; we need a few GETs,
//! which the blocking reqwest 0.12 + rustls already compiled for the
//! `debian` crate and `components.rs` covers in a few hundred lines.
//!
//! Names: `docker.io/x` (or a bare `x`) means the API host
//! `registry-1.docker.io` and the repository `library/x`; a first path
//! component with a `.` or `:` (or `localhost`) is a registry host. A
//! mirror (`[kubernetes] registry_mirrors`, `--registry-mirror`) replaces
//! the endpoint of a registry host; the repository path stays the same.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use thiserror::Error;

use crate::http::{error_chain, is_unreachable};
use crate::sha256_hex;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Where Docker Hub's API lives (`docker.io` is only its name).
pub const DOCKER_HUB_ENDPOINT: &str = "https://registry-1.docker.io";

/// Errors talking to a registry or reading the blob cache.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The image name is not a registry reference.
    #[error("{name:?} is not an image reference: {message}")]
    Reference {
        /// The name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The registry could not be reached (DNS, connect, timeout): the one
    /// error `--kubernetes auto` builds without Kubernetes on.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The registry answered with an error status (404 included).
    #[error("{url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body (registries explain errors there).
        body: String,
    },
    /// The transfer failed after the connection was made.
    #[error("fetching {url}: {reason}")]
    Transfer {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The anonymous token could not be obtained, or the registry wants
    /// credentials.
    #[error("authenticating to {url}: {message}")]
    Auth {
        /// URL that asked for authentication.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The content does not hash to the digest that names it.
    #[error("{url} has digest sha256:{actual}, expected {expected}; refusing it")]
    Digest {
        /// Where it came from.
        url: String,
        /// Expected digest (`sha256:<hex>`).
        expected: String,
        /// Hex SHA256 of what arrived.
        actual: String,
    },
    /// A cached file does not hash to its name.
    #[error(
        "cache file {} has SHA256 {actual}, not the digest it is named by; the cache is \
         corrupt or was altered: delete the file to fetch it again", path.display()
    )]
    CorruptCache {
        /// The cache file.
        path: PathBuf,
        /// Its content's hash.
        actual: String,
    },
    /// `--offline` and the blob is not cached.
    #[error("{digest} is not in the cache ({}) and --offline forbids fetching {url}", path.display())]
    NotCached {
        /// The digest.
        digest: String,
        /// The URL it would come from.
        url: String,
        /// The cache path looked at.
        path: PathBuf,
    },
    /// A file operation on the cache failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RegistryError {
    /// The URL when the error is "unreachable" (DNS, connect, timeout):
    /// never for a digest mismatch, an HTTP status (404) or a bad cache.
    pub fn unreachable(&self) -> Option<&str> {
        match self {
            RegistryError::Unreachable { url, .. } => Some(url),
            _ => None,
        }
    }
}

/// A repository in a registry, parsed from an image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host as written (`registry.k8s.io`), `docker.io` for
    /// Docker Hub names: the key of a mirror.
    pub registry: String,
    /// The repository (`pause`, `coredns/coredns`, `library/busybox`).
    pub repository: String,
}

impl Reference {
    /// Parses `[host[:port]/]path[:tag]` (a digest suffix is ignored).
    pub fn parse(name: &str) -> Result<Reference, RegistryError> {
        let bad = |message: &str| RegistryError::Reference {
            name: name.to_owned(),
            message: message.to_owned(),
        };
        let without_digest = name.split_once('@').map_or(name, |(n, _)| n);
        let (registry, rest) = match without_digest.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest)
            }
            _ => ("docker.io".to_owned(), without_digest),
        };
        let registry = if registry == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            registry
        };
        // A tag is a ':' in the last path component.
        let repository = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => rest,
        };
        if repository.is_empty()
            || repository.starts_with('/')
            || repository.ends_with('/')
            || repository.contains("//")
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        {
            return Err(bad(
                "the repository must be lowercase letters, digits and . _ - / separators",
            ));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        Ok(Reference {
            registry,
            repository,
        })
    }

    /// The API base URL without a mirror: `https://<host>`, Docker Hub's
    /// API host for `docker.io`.
    pub fn default_endpoint(&self) -> String {
        if self.registry == "docker.io" {
            DOCKER_HUB_ENDPOINT.to_owned()
        } else {
            format!("https://{}", self.registry)
        }
    }
}

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A manifest or index (`/manifests/<digest>`, with Accept headers).
    Manifest,
    /// A config or layer blob (`/blobs/<digest>`).
    Blob,
}

/// The registry client: endpoints (mirrors), the blob cache, tokens.
#[derive(Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    mirrors: BTreeMap<String, String>,
    blobs: PathBuf,
    offline: bool,
    /// Bearer tokens by endpoint and repository.
    tokens: RefCell<BTreeMap<String, String>>,
}

impl Client {
    /// A client caching in `<cache>/blobs/sha256/`, with `mirrors`
    /// (registry host → base URL), fetching nothing when `offline`.
    pub fn new(
        cache: &Path,
        mirrors: BTreeMap<String, String>,
        offline: bool,
    ) -> Result<Client, RegistryError> {
        // reqwest follows up to 10 redirects and drops the Authorization
        // header when one leaves the host (blob storage URLs are signed).
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| RegistryError::Transfer {
                url: String::new(),
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            mirrors,
            blobs: cache.join("blobs").join("sha256"),
            offline,
            tokens: RefCell::new(BTreeMap::new()),
        })
    }

    /// The base URL used for a registry: its mirror, else its own.
    pub fn endpoint(&self, r: &Reference) -> String {
        match self.mirrors.get(&r.registry) {
            Some(m) => m.trim_end_matches('/').to_owned(),
            None => r.default_endpoint(),
        }
    }

    /// The URL of a manifest or blob.
    pub fn url(&self, r: &Reference, kind: Kind, digest: &str) -> String {
        let what = match kind {
            Kind::Manifest => "manifests",
            Kind::Blob => "blobs",
        };
        format!("{}/v2/{}/{what}/{digest}", self.endpoint(r), r.repository)
    }

    /// The cache file of a digest.
    pub fn cache_path(&self, digest: &str) -> Result<PathBuf, RegistryError> {
        Ok(self.blobs.join(sha256_of(digest)?))
    }

    /// A manifest or blob by digest: from the cache (checked), else fetched
    /// (unless offline), checked against the digest, and cached.
    pub fn get(&self, r: &Reference, kind: Kind, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let hex = sha256_of(digest)?;
        let path = self.blobs.join(hex);
        match std::fs::read(&path) {
            Ok(data) => {
                let actual = sha256_hex(&data);
                if actual != hex {
                    return Err(RegistryError::CorruptCache { path, actual });
                }
                tracing::debug!(%digest, "from the cache");
                return Ok(data);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RegistryError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        }
        let url = self.url(r, kind, digest);
        if self.offline {
            return Err(RegistryError::NotCached {
                digest: digest.to_owned(),
                url,
                path,
            });
        }
        let accept = match kind {
            Kind::Manifest => Some(manifest_accept()),
            Kind::Blob => None,
        };
        tracing::info!(%url, "fetching");
        let data = self.fetch(r, &url, accept.as_deref())?;
        let actual = sha256_hex(&data);
        if actual != hex {
            return Err(RegistryError::Digest {
                url,
                expected: digest.to_owned(),
                actual,
            });
        }
        self.store(&path, &data)?;
        Ok(data)
    }

    /// The digest that `tag` names in the registry now (`imagegen pins
    /// --version`): the manifest or index fetched by tag, hashed as served
    /// (its content digest) and cached under that digest, so a build from
    /// the printed pin needs no second request for it. Never offline.
    pub fn resolve_tag(&self, r: &Reference, tag: &str) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{tag}", self.endpoint(r), r.repository);
        let accept = manifest_accept();
        tracing::info!(%url, "resolving the tag");
        let data = self.fetch(r, &url, Some(&accept))?;
        let hex = sha256_hex(&data);
        self.store(&self.blobs.join(&hex), &data)?;
        Ok(format!("sha256:{hex}"))
    }

    fn store(&self, path: &Path, data: &[u8]) -> Result<(), RegistryError> {
        let io = |what, source| RegistryError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.blobs).map_err(|e| io("creating the directory of", e))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.blobs).map_err(|e| io("creating", e))?;
        tmp.write_all(data).map_err(|e| io("writing", e))?;
        tmp.persist(path).map_err(|e| io("storing", e.error))?;
        Ok(())
    }

    /// GET with the token known for the URL's origin and the repository;
    /// on a Bearer challenge, obtain a token and retry once.
    ///
    /// A registry may redirect to another host that does the challenging
    /// (registry.k8s.io hands requests to its regional backends), and HTTP
    /// clients drop `Authorization` on a redirect to another host: so the
    /// retry goes straight to the URL that challenged, and tokens are kept
    /// per origin, which later requests reuse the same way.
    fn fetch(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, RegistryError> {
        let key =
            |u: &reqwest::Url| format!("{} {}", u.origin().ascii_serialization(), r.repository);
        let mut target = reqwest::Url::parse(url).map_err(|e| RegistryError::Reference {
            name: url.to_owned(),
            message: format!("not a URL: {e}"),
        })?;
        let mut fresh_token = false;
        loop {
            let mut req = self.http.get(target.clone());
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let sent = self.tokens.borrow().get(&key(&target)).cloned();
            if let Some(t) = &sent {
                req = req.bearer_auth(t);
            }
            let resp = req.send().map_err(|e| transport(url, &e))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !fresh_token {
                let challenger = resp.url().clone();
                let known = self.tokens.borrow().get(&key(&challenger)).cloned();
                if known.is_some() && (challenger != target || known != sent) {
                    // A token for the host we were redirected to: use it there.
                    target = challenger;
                    continue;
                }
                let header = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let token = self.token(challenger.as_str(), &header, r)?;
                self.tokens.borrow_mut().insert(key(&challenger), token);
                target = challenger;
                fresh_token = true;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(url, resp));
            }
            return read_body(url, resp);
        }
    }

    /// Obtains an anonymous token for a `WWW-Authenticate` challenge.
    fn token(&self, url: &str, header: &str, r: &Reference) -> Result<String, RegistryError> {
        let auth = |message: String| RegistryError::Auth {
            url: url.to_owned(),
            message,
        };
        let Some(params) = parse_bearer_challenge(header) else {
            return Err(auth(format!(
                "the registry wants credentials ({}); imagegen pulls anonymously: use a \
                 mirror that serves the images without credentials (--registry-mirror \
                 HOST=URL) or --components-dir DIR",
                if header.is_empty() {
                    "401 without a challenge"
                } else {
                    header
                }
            )));
        };
        let Some(realm) = params.get("realm") else {
            return Err(auth(format!("the challenge {header:?} names no realm")));
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = params.get("service") {
            query.push(("service", s.clone()));
        }
        query.push((
            "scope",
            params
                .get("scope")
                .cloned()
                .unwrap_or_else(|| format!("repository:{}:pull", r.repository)),
        ));
        tracing::debug!(%realm, "requesting an anonymous token");
        let resp = self
            .http
            .get(realm)
            .query(&query)
            .send()
            .map_err(|e| transport(realm, &e))?;
        if !resp.status().is_success() {
            return Err(auth(status_error(realm, resp).to_string()));
        }
        let body = read_body(realm, resp)?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| auth(format!("the token answer of {realm} is not JSON: {e}")))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| v.get(k).and_then(serde_json::Value::as_str))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| auth(format!("the answer of {realm} carries no token")))
    }
}

/// The `Accept` header of a manifest request: indices first.
fn manifest_accept() -> String {
    [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ")
}

/// The hex of a `sha256:<64 hex>` digest.
pub fn sha256_of(digest: &str) -> Result<&str, RegistryError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if profile::is_sha256(hex) => Ok(hex),
        _ => Err(RegistryError::Reference {
            name: digest.to_owned(),
            message: "only sha256:<64 lowercase hex> digests are supported".into(),
        }),
    }
}

fn transport(url: &str, e: &reqwest::Error) -> RegistryError {
    failure(url, error_chain(e), is_unreachable(e))
}

/// `Unreachable` when the server could not be reached or did not answer in
/// time (what `--kubernetes auto` skips), `Transfer` for any other failure.
fn failure(url: &str, reason: String, unreachable: bool) -> RegistryError {
    let url = url.to_owned();
    if unreachable {
        RegistryError::Unreachable { url, reason }
    } else {
        RegistryError::Transfer { url, reason }
    }
}

fn status_error(url: &str, resp: reqwest::blocking::Response) -> RegistryError {
    let status = resp.status().as_u16();
    let text = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json") || t.starts_with("text/"));
    let mut body = String::new();
    if text {
        let _ = resp.take(512).read_to_string(&mut body);
    }
    RegistryError::Status {
        url: url.to_owned(),
        status,
        body: body.trim().chars().take(300).collect(),
    }
}

fn read_body(url: &str, mut resp: reqwest::blocking::Response) -> Result<Vec<u8>, RegistryError> {
    let mut data = Vec::new();
    resp.read_to_end(&mut data)
        .map_err(|e| failure(url, e.to_string(), e.kind() == std::io::ErrorKind::TimedOut))?;
    Ok(data)
}

/// Parses `Bearer k="v",k2=v2` into its parameters (lowercase keys);
/// `None` when the scheme is not Bearer.
pub fn parse_bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    #[test]
    fn names_map_to_registry_and_repository() {
        let r = |n: &str| Reference::parse(n).unwrap();
        assert_eq!(
            r("registry.k8s.io/pause:3.9"),
            Reference {
                registry: "registry.k8s.io".into(),
                repository: "pause".into()
            }
        );
        assert_eq!(
            r("registry.k8s.io/coredns/coredns:v1.11.1").repository,
            "coredns/coredns"
        );
        let hub = r("busybox:1.36");
        assert_eq!(
            (hub.registry.as_str(), hub.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(hub.default_endpoint(), DOCKER_HUB_ENDPOINT);
        assert_eq!(r("docker.io/busybox").repository, "library/busybox");
        assert_eq!(r("index.docker.io/x/y:1").repository, "x/y");
        assert_eq!(
            r("docker.io/flannel/flannel:v0.25").repository,
            "flannel/flannel"
        );
        let local = r("127.0.0.1:5000/a/b:c");
        assert_eq!(local.registry, "127.0.0.1:5000");
        assert_eq!(local.repository, "a/b");
        assert_eq!(r("localhost/x").registry, "localhost");
        assert!(Reference::parse("r.example/Upper:1").is_err());
        assert!(Reference::parse("r.example/").is_err());
    }

    /// An online client caching in `cache` that sends `reg.test` to `base`.
    fn reg_test_client(cache: &Path, base: String) -> Client {
        Client::new(
            cache,
            BTreeMap::from([("reg.test".to_owned(), base)]),
            false,
        )
        .unwrap()
    }

    #[test]
    fn mirror_replaces_the_endpoint_only() {
        let cache = tempfile::tempdir().unwrap();
        let mirrors = BTreeMap::from([(
            "registry.k8s.io".to_owned(),
            "http://127.0.0.1:5000/".to_owned(),
        )]);
        let c = Client::new(cache.path(), mirrors, true).unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse("registry.k8s.io/coredns/coredns:v1").unwrap();
        assert_eq!(
            c.url(&r, Kind::Manifest, &d),
            format!("http://127.0.0.1:5000/v2/coredns/coredns/manifests/{d}")
        );
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(
            c.url(&hub, Kind::Blob, &d),
            format!("{DOCKER_HUB_ENDPOINT}/v2/library/busybox/blobs/{d}")
        );
    }

    #[test]
    fn bearer_challenge_is_parsed() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let p = parse_bearer_challenge("bearer realm=http://h/t , Service=\"s\\\"x\"").unwrap();
        assert_eq!(p["realm"], "http://h/t");
        assert_eq!(p["service"], "s\"x");
        assert!(parse_bearer_challenge("Basic realm=\"x\"").is_none());
    }

    use crate::testserver::serve;

    /// A registry that challenges requests without `Authorization: Bearer
    /// good-token`, hands that token out at `/token` when asked for the
    /// right service and scope, and serves `content(path)` to the token.
    fn token_server(
        n: usize,
        content: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        serve(n, move |base, path, auth| {
            if path.starts_with("/token?") {
                if path.contains("service=reg.test")
                    && path.contains("scope=repository%3Aa%2Fb%3Apull")
                {
                    (
                        "200 OK",
                        String::new(),
                        br#"{"token":"good-token"}"#.to_vec(),
                    )
                } else {
                    ("400 Bad Request", String::new(), Vec::new())
                }
            } else if auth == Some("Bearer good-token") {
                ("200 OK", String::new(), content(path))
            } else {
                (
                    "401 Unauthorized",
                    format!(
                        "WWW-Authenticate: Bearer realm=\"{base}/token\",service=\"reg.test\",\
                         scope=\"repository:a/b:pull\"\r\n"
                    ),
                    Vec::new(),
                )
            }
        })
    }

    fn blob_content(_: &str) -> Vec<u8> {
        b"blob-content".to_vec()
    }

    #[test]
    fn redirect_to_a_challenging_host_is_followed_and_its_token_reused() {
        let one = b"one".to_vec();
        let two = b"two".to_vec();
        let digests = [
            format!("sha256:{}", sha256_hex(&one)),
            format!("sha256:{}", sha256_hex(&two)),
        ];
        let d0 = digests[0].clone();
        let (backend, backend_seen) = token_server(5, move |path| {
            if path.ends_with(&d0) {
                b"one".to_vec()
            } else {
                b"two".to_vec()
            }
        });
        let (front, front_seen) = serve(2, move |_, path, _| {
            (
                "307 Temporary Redirect",
                format!("Location: {backend}{path}\r\n"),
                Vec::new(),
            )
        });
        let cache = tempfile::tempdir().unwrap();
        let c = reg_test_client(cache.path(), front);
        let r = Reference::parse("reg.test/a/b:1").unwrap();
        assert_eq!(c.get(&r, Kind::Blob, &digests[0]).unwrap(), one);
        assert_eq!(c.get(&r, Kind::Blob, &digests[1]).unwrap(), two);
        assert_eq!(front_seen.join().unwrap().len(), 2);
        let seen = backend_seen.join().unwrap();
        assert_eq!(
            seen.iter().filter(|s| s.starts_with("/token?")).count(),
            1,
            "{seen:?}"
        );
        assert!(seen[4].ends_with("Bearer good-token"), "{seen:?}");
    }

    #[test]
    fn bearer_challenge_gets_a_token_and_retries() {
        let (base, server) = token_server(3, blob_content);
        let cache = tempfile::tempdir().unwrap();
        let c = reg_test_client(cache.path(), base);
        let r = Reference::parse("reg.test/a/b:1").unwrap();
        let digest = format!("sha256:{}", sha256_hex(b"blob-content"));
        assert_eq!(c.get(&r, Kind::Blob, &digest).unwrap(), b"blob-content");
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].ends_with(" -"), "{seen:?}");
        assert!(seen[1].starts_with("/token?"), "{seen:?}");
        assert!(seen[2].ends_with("Bearer good-token"), "{seen:?}");
        // Cached: the same blob is now served offline.
        let offline = Client::new(cache.path(), BTreeMap::new(), true).unwrap();
        assert_eq!(
            offline.get(&r, Kind::Blob, &digest).unwrap(),
            b"blob-content"
        );
    }

    #[test]
    fn wrong_content_is_refused_and_not_cached() {
        let (base, server) = token_server(3, blob_content);
        let cache = tempfile::tempdir().unwrap();
        let c = reg_test_client(cache.path(), base);
        let r = Reference::parse("reg.test/a/b:1").unwrap();
        let digest = format!("sha256:{}", "0".repeat(64));
        let err = c.get(&r, Kind::Blob, &digest).unwrap_err();
        assert!(matches!(err, RegistryError::Digest { .. }), "{err}");
        assert!(
            err.to_string().contains(&sha256_hex(b"blob-content")),
            "{err}"
        );
        assert!(!c.cache_path(&digest).unwrap().exists());
        server.join().unwrap();
    }

    #[test]
    fn closed_port_is_unreachable_and_404_is_not() {
        let cache = tempfile::tempdir().unwrap();
        // Bind then drop: nothing listens there any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = reg_test_client(cache.path(), format!("http://127.0.0.1:{port}"));
        let r = Reference::parse("reg.test/a/b:1").unwrap();
        let digest = format!("sha256:{}", "0".repeat(64));
        let err = c.get(&r, Kind::Manifest, &digest).unwrap_err();
        assert!(err.unreachable().is_some(), "{err}");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#;
            write!(
                s,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        let c = reg_test_client(cache.path(), base);
        let err = c.get(&r, Kind::Manifest, &digest).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, RegistryError::Status { status: 404, .. }),
            "{err}"
        );
        assert!(err.unreachable().is_none());
        assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    }
}
