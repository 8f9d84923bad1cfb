//! Opening an archive suite: fetch and verify `InRelease`, then fetch (or
//! take from the cache) each component's `Packages` index, checked against
//! the SHA-256 in the signed Release text, and parse it.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::fetch::{self, MissingFile};
use crate::index::PackageIndex;
use crate::release::{Release, ReleaseFile};
use crate::signature::Keyring;
use crate::Error;

/// The Debian archive keyring shipped by the `debian-archive-keyring` package.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Largest `InRelease` accepted (Debian's are ~150 KB).
const MAX_INRELEASE: u64 = 16 * 1024 * 1024;

/// Which archive, suite, components and architecture to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// Archive root URL, e.g. `http://archive.example/debian`.
    pub url: String,
    /// Suite or codename, e.g. `bookworm`.
    pub suite: String,
    /// Components, e.g. `["main"]`.
    pub components: Vec<String>,
    /// Debian architecture, e.g. `amd64`.
    pub architecture: String,
    /// OpenPGP keyring that must have signed `InRelease`.
    pub keyring: PathBuf,
}

impl ArchiveSpec {
    /// `main` on `amd64`, verified with [`DEFAULT_KEYRING`].
    pub fn new(url: &str, suite: &str) -> Self {
        ArchiveSpec {
            url: url.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            components: vec!["main".into()],
            architecture: "amd64".into(),
            keyring: PathBuf::from(DEFAULT_KEYRING),
        }
    }

    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// URL of the suite's `InRelease`.
    pub fn inrelease_url(&self) -> String {
        format!("{}/dists/{}/InRelease", self.base(), self.suite)
    }
}

/// An opened, verified suite with its package index.
#[derive(Debug, Clone)]
pub struct Archive {
    spec: ArchiveSpec,
    release: Release,
    release_sha256: String,
    index: PackageIndex,
}

impl Archive {
    /// Fetches and verifies `InRelease`, then fetches (or reads from the
    /// cache) and parses the `Packages` index of every component. Offline,
    /// only the cache is used.
    pub fn open(spec: &ArchiveSpec, cache: &Cache, offline: bool) -> Result<Self, Error> {
        let keyring = Keyring::read(&spec.keyring)?;
        let inrelease_url = spec.inrelease_url();
        let client = if offline {
            None
        } else {
            Some(fetch::http_client()?)
        };
        let raw = match &client {
            None => cache
                .load_release(spec.base(), &spec.suite)?
                .ok_or_else(|| Error::OfflineNoRelease {
                    url: spec.base().into(),
                    suite: spec.suite.clone(),
                    cache: cache.dir().to_path_buf(),
                })?,
            Some(c) => {
                // `--offline` can only help when the cache holds this
                // archive's InRelease (another archive's downloads do not).
                let hint = if cache.load_release(spec.base(), &spec.suite)?.is_some() {
                    fetch::offline_hint(cache)
                } else {
                    String::new()
                };
                fetch::get_text(c, &inrelease_url, &hint, MAX_INRELEASE)?
            }
        };
        let signed = keyring.verify_clearsigned(&raw, &inrelease_url)?;
        let release = Release::parse(&signed, &inrelease_url)?;
        if !release.matches_suite(&spec.suite) {
            return Err(Error::SuiteMismatch {
                url: inrelease_url,
                expected: spec.suite.clone(),
                suite: release.suite.clone().unwrap_or_default(),
                codename: release.codename.clone().unwrap_or_default(),
            });
        }
        if client.is_some() {
            cache.store_release(spec.base(), &spec.suite, &raw)?;
        }
        let release_sha256 = hex::encode(Sha256::digest(raw.as_bytes()));
        tracing::info!(url = %inrelease_url, date = ?release.date, "verified InRelease");

        let mut index = PackageIndex::new(&spec.architecture);
        let mut missing = Vec::new();
        for component in &spec.components {
            let file = release
                .packages_file(component, &spec.architecture)
                .ok_or_else(|| Error::NoPackagesIndex {
                    release: inrelease_url.clone(),
                    component: component.clone(),
                    architecture: spec.architecture.clone(),
                })?;
            let path = cache.path_for(&file.sha256);
            if !cache.contains(&file.sha256) {
                match &client {
                    None => {
                        missing.push(MissingFile {
                            name: file.path.clone(),
                            version: String::new(),
                            sha256: file.sha256.clone(),
                            filename: format!("dists/{}/{}", spec.suite, file.path),
                        });
                        continue;
                    }
                    Some(c) => download_index(c, spec, &release, file, cache)
                        .map_err(|e| index_error(e, spec, file))?,
                }
            }
            let text = decompress(&path, &file.path)?;
            let source = format!("{}/dists/{}/{}", spec.base(), spec.suite, file.path);
            index.add_text(&text, &source)?;
        }
        if !missing.is_empty() {
            return Err(Error::OfflineMissing {
                cache: cache.dir().to_path_buf(),
                missing,
            });
        }
        tracing::info!(packages = index.len(), "package index loaded");
        Ok(Archive {
            spec: spec.clone(),
            release,
            release_sha256,
            index,
        })
    }

    /// The merged package index of all components.
    pub fn index(&self) -> &PackageIndex {
        &self.index
    }

    /// The verified Release text, parsed.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// SHA-256 of the raw `InRelease` file.
    pub fn release_sha256(&self) -> &str {
        &self.release_sha256
    }

    /// What was opened.
    pub fn spec(&self) -> &ArchiveSpec {
        &self.spec
    }
}

/// Downloads a `Packages` index into the cache, by hash when the archive
/// supports it (immune to mirror updates between InRelease and index).
fn download_index(
    client: &reqwest::blocking::Client,
    spec: &ArchiveSpec,
    release: &Release,
    file: &ReleaseFile,
    cache: &Cache,
) -> Result<(), Error> {
    let dists = format!("{}/dists/{}", spec.base(), spec.suite);
    let plain = format!("{dists}/{}", file.path);
    if release.acquire_by_hash {
        let dir = file.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let by_hash = format!("{dists}/{dir}/by-hash/SHA256/{}", file.sha256);
        match fetch::download(client, &by_hash, &file.sha256, file.size, cache, |_| {}) {
            Ok(_) => return Ok(()),
            Err(Error::HttpStatus { status: 404, .. }) => {
                tracing::debug!(url = %by_hash, "by-hash index missing; trying plain path");
            }
            Err(e) => return Err(e),
        }
    }
    fetch::download(client, &plain, &file.sha256, file.size, cache, |_| {})?;
    Ok(())
}

/// Names the index in a download error: a digest mismatch says that the
/// signed Release and the served file disagree; anything else keeps its
/// own text (with the `--offline` hint when a network error has one).
fn index_error(e: Error, spec: &ArchiveSpec, file: &ReleaseFile) -> Error {
    let index = format!("{}/dists/{}/{}", spec.base(), spec.suite, file.path);
    match e {
        Error::Cache(crate::cache::CacheError::Mismatch {
            origin,
            expected,
            actual,
            expected_size,
            actual_size,
        }) => Error::IndexMismatch(Box::new(crate::IndexMismatch {
            index,
            release: spec.inrelease_url(),
            url: origin,
            expected,
            expected_size,
            actual,
            actual_size,
        })),
        other => Error::IndexDownload {
            index,
            source: Box::new(other),
        },
    }
}

/// Reads a cached index file, decompressing by the extension of `name`.
fn decompress(path: &Path, name: &str) -> Result<String, Error> {
    let err = |source: std::io::Error| Error::Decompress {
        file: name.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(std::io::BufReader::new(file)))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(err)?;
    Ok(text)
}
