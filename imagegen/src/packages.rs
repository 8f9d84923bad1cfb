//! The Debian side of a build: which packages, pinned how, fetched where.
//!
//! A thin adapter over the `debian` crate: opens the signed archive (unless
//! a lockfile pins everything), resolves the profile's request, and makes
//! every pinned `.deb` available in the content-addressed cache.

use std::path::{Path, PathBuf};

use debian::{Archive, ArchiveSpec, Cache, FetchOptions, FetchedDeb, Lockfile, Progress};
use thiserror::Error;

use crate::profile::Profile;

/// Errors of the package stage.
#[derive(Debug, Error)]
pub enum PackagesError {
    /// The archive URL could not be found.
    #[error(
        "no archive URL: the profile sets none, --archive is not given and the host's apt \
         sources have no {suite} entry ({source})"
    )]
    NoArchive {
        /// Suite looked for.
        suite: String,
        /// Why the host lookup failed.
        source: Box<debian::Error>,
    },
    /// The cache directory is unusable.
    #[error("cache {}: {source}", dir.display())]
    Cache {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: Box<debian::CacheError>,
    },
    /// Opening the signed archive failed. A network error carries its own
    /// `--offline` hint when the cache could help; nothing else gets one.
    #[error("opening the archive {url} (suite {suite}): {source}")]
    Archive {
        /// Archive URL.
        url: String,
        /// Suite.
        suite: String,
        /// Why.
        source: Box<debian::Error>,
    },
    /// Resolution failed.
    #[error("resolving the packages of profile {profile}: {source}")]
    Resolve {
        /// Profile name.
        profile: String,
        /// Why.
        source: debian::ResolveError,
    },
    /// Reading or writing a lockfile failed.
    #[error(transparent)]
    Lockfile(Box<debian::Error>),
    /// Fetching `.deb` files failed.
    #[error("fetching packages from {url}: {source}")]
    Fetch {
        /// Archive URL.
        url: String,
        /// Why.
        source: Box<debian::Error>,
    },
}

/// The archive URL to use: `--archive`, else the profile's, else the
/// lockfile's, else the host's apt sources.
pub fn archive_url(
    profile: &Profile,
    cli: Option<&str>,
    lockfile: Option<&Lockfile>,
) -> Result<String, PackagesError> {
    if let Some(url) = cli.or(profile.archive.url.as_deref()) {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    if let Some(lock) = lockfile {
        if !lock.archive().url.is_empty() {
            return Ok(lock.archive().url.clone());
        }
    }
    debian::host_archive_url(&profile.archive.suite).map_err(|source| PackagesError::NoArchive {
        suite: profile.archive.suite.clone(),
        source: Box::new(source),
    })
}

/// Opens the cache directory.
pub fn open_cache(dir: &Path) -> Result<Cache, PackagesError> {
    Cache::new(dir.join("debian")).map_err(|source| PackagesError::Cache {
        dir: dir.to_owned(),
        source: Box::new(source),
    })
}

/// Opens the archive, resolves the profile and returns a new lockfile.
pub fn lock(
    profile: &Profile,
    url: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Lockfile, PackagesError> {
    let spec = ArchiveSpec {
        url: url.to_owned(),
        suite: profile.archive.suite.clone(),
        components: profile.archive.components.clone(),
        architecture: profile.archive.architecture.clone(),
        keyring: profile.archive.keyring.clone(),
    };
    let archive =
        Archive::open(&spec, cache, offline).map_err(|source| PackagesError::Archive {
            url: url.to_owned(),
            suite: spec.suite.clone(),
            source: Box::new(source),
        })?;
    let resolution =
        debian::resolve(archive.index(), &profile.include, &profile.exclude).map_err(|source| {
            PackagesError::Resolve {
                profile: profile.name.clone(),
                source,
            }
        })?;
    for skipped in &resolution.skipped_deps {
        tracing::debug!(
            package = %skipped.package,
            dependency = %skipped.dependency,
            "dependency left out by the profile's exclude list"
        );
    }
    Ok(Lockfile::from_resolution(&archive, &resolution))
}

/// Reads a lockfile.
pub fn read_lockfile(path: &Path) -> Result<Lockfile, PackagesError> {
    Lockfile::read(path).map_err(|e| PackagesError::Lockfile(Box::new(e)))
}

/// Writes a lockfile.
pub fn write_lockfile(lock: &Lockfile, path: &Path) -> Result<(), PackagesError> {
    lock.write(path)
        .map_err(|e| PackagesError::Lockfile(Box::new(e)))
}

/// Makes every pinned `.deb` available in the cache.
pub fn fetch(
    lock: &Lockfile,
    url: &str,
    cache: &Cache,
    offline: bool,
    progress: bool,
) -> Result<Vec<FetchedDeb>, PackagesError> {
    debian::fetch_with(
        lock.packages(),
        url,
        cache,
        &FetchOptions {
            offline,
            progress: if progress {
                Progress::Auto
            } else {
                Progress::Quiet
            },
            ..FetchOptions::default()
        },
    )
    .map_err(|source| PackagesError::Fetch {
        url: url.to_owned(),
        source: Box::new(source),
    })
}
