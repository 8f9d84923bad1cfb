#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::path::PathBuf;

#[cfg(feature = "network")]
pub mod archive;
pub mod cache;
pub mod control;
#[cfg(feature = "network")]
pub mod fetch;
pub mod index;
pub mod locked;
pub mod lockfile;
pub mod relation;
pub mod release;
pub mod resolve;
#[cfg(feature = "network")]
pub mod signature;
pub mod sources;
pub mod version;

#[cfg(feature = "network")]
pub use archive::{Archive, ArchiveSpec, DEFAULT_KEYRING};
pub use cache::{Cache, CacheError};
#[cfg(feature = "network")]
pub use fetch::{fetch, fetch_with, FetchOptions, FetchedDeb, MissingFile, Progress};
pub use index::{Package, PackageIndex};
pub use locked::LockedPackage;
pub use lockfile::{LockedArchive, Lockfile};
pub use resolve::{resolve, Problem, Resolution, ResolveError, SkippedDep};
#[cfg(feature = "network")]
pub use signature::{Keyring, SignatureError};
pub use sources::SourcesError;
pub use version::Version;

/// The archive URL for `suite` from this host's apt sources
/// (`/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.{list,sources}`).
/// A host without a matching entry gets an error asking for `--archive URL`.
pub fn host_archive_url(suite: &str) -> Result<String, Error> {
    Ok(sources::host_archive_url(suite)?)
}

/// A `Packages` index whose download does not match the signed Release
/// (see [`Error::IndexMismatch`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "Packages index {index} does not match the signed {release}: expected sha256 {expected} \
     ({expected_size} bytes), got sha256 {actual} ({actual_size} bytes) from {url}; the \
     mirror served other data than the archive signed (corrupt or tampered with), nothing \
     was cached"
)]
pub struct IndexMismatch {
    /// The index as the Release file names it, under its suite URL
    /// (`<archive>/dists/<suite>/main/binary-amd64/Packages.xz`).
    pub index: String,
    /// The InRelease URL.
    pub release: String,
    /// The URL the index was downloaded from (by-hash or plain).
    pub url: String,
    /// SHA-256 from the signed Release.
    pub expected: String,
    /// Size from the signed Release.
    pub expected_size: u64,
    /// SHA-256 of what was served.
    pub actual: String,
    /// Size of what was served.
    pub actual_size: u64,
}

/// An archive, cache, download or lockfile operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network request failed (unreachable host, TLS, timeout...).
    #[error("cannot fetch {url}: {detail}{hint}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
        /// A suggestion (e.g. use `--offline`), or empty.
        hint: String,
    },
    /// The server answered with a non-success status.
    #[error("{url}: HTTP status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// Cache error, including digest mismatches.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// `InRelease` signature verification failed.
    #[cfg(feature = "network")]
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The Release text is malformed.
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    /// A `Packages` index is malformed.
    #[error(transparent)]
    Index(#[from] index::IndexError),
    /// Reading the host's apt sources failed.
    #[error(transparent)]
    Sources(#[from] SourcesError),
    /// The signed Release is for another suite than the one requested.
    #[error("{url} is signed for suite {suite:?} / codename {codename:?}, not {expected:?}")]
    SuiteMismatch {
        /// The InRelease URL.
        url: String,
        /// The requested suite.
        expected: String,
        /// The Release's `Suite`.
        suite: String,
        /// The Release's `Codename`.
        codename: String,
    },
    /// The Release file lists no `Packages` index for a component.
    #[error("{release} lists no Packages index for component {component:?}, architecture {architecture:?}")]
    NoPackagesIndex {
        /// The InRelease URL.
        release: String,
        /// The component.
        component: String,
        /// The architecture.
        architecture: String,
    },
    /// A downloaded `Packages` index does not match the SHA-256 and size
    /// the signed `InRelease` gives for it; nothing was cached.
    #[error("{0}")]
    IndexMismatch(Box<IndexMismatch>),
    /// Downloading a `Packages` index failed (network, HTTP status).
    #[error("Packages index {index}: {source}")]
    IndexDownload {
        /// The index as the Release file names it, under its suite URL.
        index: String,
        /// The download error (names the URL tried).
        source: Box<Error>,
    },
    /// A cached index could not be decompressed.
    #[error("cannot decompress {file}: {source}")]
    Decompress {
        /// The index path.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// Offline, and no `InRelease` of this archive and suite is cached.
    #[error("offline: no cached InRelease for {url} suite {suite} in {}; run once without --offline", cache.display())]
    OfflineNoRelease {
        /// The archive URL.
        url: String,
        /// The suite.
        suite: String,
        /// The cache directory.
        cache: PathBuf,
    },
    /// Offline, and files are missing from the cache.
    #[cfg(feature = "network")]
    #[error("offline: {} file(s) missing from cache {}:\n{}", missing.len(), cache.display(), missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    OfflineMissing {
        /// The cache directory.
        cache: PathBuf,
        /// Every missing file.
        missing: Vec<MissingFile>,
    },
    /// A lockfile is malformed.
    #[error("lockfile {path}: {message}")]
    Lockfile {
        /// The lockfile.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A lockfile could not be read or written.
    #[error("lockfile {}: {source}", path.display())]
    LockfileIo {
        /// The lockfile.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Several downloads failed.
    #[error("{} downloads failed:\n{}", errors.len(), errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Downloads {
        /// Each failure.
        errors: Vec<Error>,
    },
}
