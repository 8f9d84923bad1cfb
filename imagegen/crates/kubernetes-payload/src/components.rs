//! Upstream components (kubelet, kubeadm, kubectl, crictl, the CNI
//! manifest): downloaded from upstream (the default source, cached), or
//! read from a `--components-dir`, and always verified against the SHA256
//! the profile pins.
//!
//! Only a transport failure (DNS, connect, timeout) is "unreachable"
//! ([`ComponentError::unreachable`]), the one error `--kubernetes auto`
//! builds without Kubernetes on; an HTTP error status (404) or a checksum
//! mismatch always fails the build.
//!
//! The cache is content-addressed (`<cache>/components/<sha256>`); a file
//! whose hash does not match is never stored, and a directory file whose
//! hash does not match is refused with both hashes in the message.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use profile::Component;

use crate::http::{error_chain, is_unreachable};
use crate::sha256_hex;

/// The Kubernetes sources, said by every "cannot get the components" error.
pub const SOURCE_CHOICES: &str = "Kubernetes components come from upstream by default \
    (--kubernetes download); other choices: --components-dir DIR with them pre-downloaded \
    (imagegen/README.md), --kubernetes auto to build without them (recorded in the image) when \
    upstream is unreachable, or --kubernetes none (--without-kubernetes)";

/// Errors obtaining a component.
#[derive(Debug, Error)]
pub enum ComponentError {
    /// The artifact's hash is not the pinned one.
    #[error("{name}: {} has SHA256 {actual}, the profile pins {expected}; refusing it", source_path.display())]
    Checksum {
        /// Component.
        name: String,
        /// Where it came from (file or URL).
        source_path: PathBuf,
        /// Pinned hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
    /// The source is unreachable (DNS, connect, timeout).
    #[error("{name}: cannot reach {url}: {reason}. {SOURCE_CHOICES}")]
    Unreachable {
        /// Component.
        name: String,
        /// URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The source answered with an error status, or the transfer broke.
    #[error("{name}: downloading {url} failed: {reason}. {SOURCE_CHOICES}")]
    Download {
        /// Component.
        name: String,
        /// URL tried.
        url: String,
        /// Why (the HTTP status).
        reason: String,
    },
    /// `--offline` and the component is not cached.
    #[error(
        "{name}: not in the cache ({}) and --offline forbids downloading {url}; build once \
         without --offline, or pass --components-dir DIR or --kubernetes none \
         (--without-kubernetes)", cached.display()
    )]
    NotCached {
        /// Component.
        name: String,
        /// URL that would be fetched.
        url: String,
        /// Cache path looked at.
        cached: PathBuf,
    },
    /// `--components-dir` lacks the file.
    #[error("{name}: --components-dir {} has neither {name} nor {file_name}", dir.display())]
    NotInDir {
        /// Component.
        name: String,
        /// The directory.
        dir: PathBuf,
        /// The URL's file name.
        file_name: String,
    },
    /// A file operation failed.
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

impl ComponentError {
    /// The URL when the error is "upstream unreachable" (DNS, connect,
    /// timeout); `None` for every other error.
    pub fn unreachable(&self) -> Option<&str> {
        match self {
            ComponentError::Unreachable { url, .. } => Some(url),
            _ => None,
        }
    }
}

fn verify(c: &Component, data: &[u8], from: &Path) -> Result<(), ComponentError> {
    let actual = sha256_hex(data);
    if actual != c.sha256 {
        return Err(ComponentError::Checksum {
            name: c.name.clone(),
            source_path: from.to_owned(),
            expected: c.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ComponentError + 'a {
    move |source| ComponentError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Where to look for components.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// `--components-dir`.
    pub dir: Option<&'a Path>,
    /// The cache root (`<cache>/components/` is used).
    pub cache: &'a Path,
    /// Forbid downloads.
    pub offline: bool,
}

/// Obtains and verifies one component's bytes.
pub fn obtain(c: &Component, sources: &Sources<'_>) -> Result<Vec<u8>, ComponentError> {
    let file_name = c.url.rsplit('/').next().unwrap_or(&c.name).to_owned();
    if let Some(dir) = sources.dir {
        let candidates = [dir.join(&c.name), dir.join(&file_name)];
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(ComponentError::NotInDir {
                name: c.name.clone(),
                dir: dir.to_owned(),
                file_name,
            });
        };
        let data = std::fs::read(path).map_err(io("reading", path))?;
        verify(c, &data, path)?;
        return Ok(data);
    }
    let cache_dir = sources.cache.join("components");
    let cached = cache_dir.join(&c.sha256);
    if cached.is_file() {
        let data = std::fs::read(&cached).map_err(io("reading", &cached))?;
        if verify(c, &data, &cached).is_ok() {
            return Ok(data);
        }
        // A corrupt cache entry is dropped and fetched again.
        let _ = std::fs::remove_file(&cached);
    }
    if sources.offline {
        return Err(ComponentError::NotCached {
            name: c.name.clone(),
            url: c.url.clone(),
            cached,
        });
    }
    let data = download(c)?;
    verify(c, &data, Path::new(&c.url))?;
    std::fs::create_dir_all(&cache_dir).map_err(io("creating", &cache_dir))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(&cache_dir).map_err(io("creating", &cache_dir))?;
    std::io::Write::write_all(&mut tmp, &data).map_err(io("writing", &cached))?;
    tmp.persist(&cached).map_err(|e| ComponentError::Io {
        what: "storing",
        path: cached.clone(),
        source: e.error,
    })?;
    Ok(data)
}

/// The files a verified component installs: the artifact itself at its
/// path, or, for a `unpack_to` tarball (`.tar.gz`), each regular file by
/// its file name in that directory (sorted).
pub fn install_files(c: &Component, data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ComponentError> {
    let Some(dir) = &c.unpack_to else {
        return Ok(vec![(c.path.clone(), data.to_vec())]);
    };
    let bad = |source: std::io::Error| ComponentError::Io {
        what: "unpacking",
        path: PathBuf::from(&c.url),
        source,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut out = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?;
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        out.push((format!("{}/{name}", dir.trim_end_matches('/')), bytes));
    }
    if out.is_empty() {
        return Err(bad(std::io::Error::other("the tarball holds no file")));
    }
    out.sort();
    Ok(out)
}

fn download(c: &Component) -> Result<Vec<u8>, ComponentError> {
    fetch_url(&c.name, &c.url)
}

/// GETs `url` (what `name` needs), telling an unreachable host
/// ([`ComponentError::Unreachable`]) from any other failure.
pub fn fetch_url(name: &str, url: &str) -> Result<Vec<u8>, ComponentError> {
    let unreachable = |reason: String| ComponentError::Unreachable {
        name: name.to_owned(),
        url: url.to_owned(),
        reason,
    };
    let failed = |reason: String| ComponentError::Download {
        name: name.to_owned(),
        url: url.to_owned(),
        reason,
    };
    let classify = |e: reqwest::Error| {
        let reason = error_chain(&e);
        if is_unreachable(&e) {
            unreachable(reason)
        } else {
            failed(reason)
        }
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(classify)?;
    let mut data = Vec::new();
    resp.read_to_end(&mut data).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            unreachable(e.to_string())
        } else {
            failed(e.to_string())
        }
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(data: &[u8]) -> Component {
        Component {
            name: "kubelet".into(),
            url: "http://127.0.0.1:9/v1/kubelet".into(),
            sha256: sha256_hex(data),
            path: "/usr/bin/kubelet".into(),
            unpack_to: None,
        }
    }

    #[test]
    fn components_dir_file_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubelet"), b"good").unwrap();
        let s = Sources {
            dir: Some(dir.path()),
            cache: cache.path(),
            offline: true,
        };
        assert_eq!(obtain(&component(b"good"), &s).unwrap(), b"good");
        let err = obtain(&component(b"other"), &s).unwrap_err();
        assert!(matches!(err, ComponentError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(&sha256_hex(b"good")), "{err}");
    }

    #[test]
    fn missing_in_dir_names_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let s = Sources {
            dir: Some(dir.path()),
            cache: cache.path(),
            offline: false,
        };
        let err = obtain(&component(b"x"), &s).unwrap_err().to_string();
        assert!(err.contains("kubelet"), "{err}");
    }

    #[test]
    fn offline_without_cache_says_what_is_missing() {
        let cache = tempfile::tempdir().unwrap();
        let s = Sources {
            dir: None,
            cache: cache.path(),
            offline: true,
        };
        let err = obtain(&component(b"x"), &s).unwrap_err().to_string();
        assert!(err.contains("--offline"), "{err}");
        assert!(err.contains("--without-kubernetes"), "{err}");
    }

    #[test]
    fn unreachable_source_suggests_the_flags() {
        let cache = tempfile::tempdir().unwrap();
        let s = Sources {
            dir: None,
            cache: cache.path(),
            offline: false,
        };
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let err = obtain(&component(b"x"), &s).unwrap_err();
        assert!(matches!(err, ComponentError::Unreachable { .. }), "{err}");
        assert_eq!(err.unreachable(), Some("http://127.0.0.1:9/v1/kubelet"));
        let text = err.to_string();
        assert!(text.contains("http://127.0.0.1:9/v1/kubelet"), "{text}");
        assert!(text.contains("--without-kubernetes"), "{text}");
        assert!(text.contains("--kubernetes auto"), "{text}");
        assert!(!cache
            .path()
            .join("components")
            .join(sha256_hex(b"x"))
            .exists());
    }

    #[test]
    fn http_404_is_a_download_failure_not_unreachable() {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/kubelet", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        });
        let cache = tempfile::tempdir().unwrap();
        let mut c = component(b"x");
        c.url = url;
        let s = Sources {
            dir: None,
            cache: cache.path(),
            offline: false,
        };
        let err = obtain(&c, &s).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, ComponentError::Download { .. }), "{err}");
        assert!(err.unreachable().is_none());
        assert!(err.to_string().contains("404"), "{err}");
    }

    #[test]
    fn tarball_component_unpacks_into_its_directory() {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o755);
        b.append_data(&mut h, "./bridge", &b"elf"[..]).unwrap();
        let tgz = b.into_inner().unwrap().finish().unwrap();
        let mut c = component(&tgz);
        c.unpack_to = Some("/opt/cni/bin".into());
        let files = install_files(&c, &tgz).unwrap();
        assert_eq!(files, [("/opt/cni/bin/bridge".to_owned(), b"elf".to_vec())]);
        assert!(install_files(&c, b"not gzip").is_err());
    }

    #[test]
    fn cached_component_is_used_offline() {
        let cache = tempfile::tempdir().unwrap();
        let c = component(b"cached");
        std::fs::create_dir_all(cache.path().join("components")).unwrap();
        std::fs::write(cache.path().join("components").join(&c.sha256), b"cached").unwrap();
        let s = Sources {
            dir: None,
            cache: cache.path(),
            offline: true,
        };
        assert_eq!(obtain(&c, &s).unwrap(), b"cached");
    }
}
