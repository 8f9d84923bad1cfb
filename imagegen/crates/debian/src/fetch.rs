//! HTTP downloads into the [`Cache`]: verified, parallel, with progress.
//!
//! Uses `reqwest`'s blocking client (rustls, no OpenSSL); a few worker
//! threads download at once. On a terminal an `indicatif` bar shows bytes;
//! otherwise one plain line per finished file is written to stderr.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::Cache;
use crate::locked::LockedPackage;
use crate::Error;

/// Parallel downloads by default.
pub const DEFAULT_JOBS: usize = 4;

/// How to show download progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

/// Options for [`fetch_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Only use the cache; fail listing what is missing.
    pub offline: bool,
    /// Concurrent downloads (at least 1).
    pub jobs: usize,
    /// Progress display.
    pub progress: Progress,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            offline: false,
            jobs: DEFAULT_JOBS,
            progress: Progress::Auto,
        }
    }
}

/// A `.deb` present in the cache, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDeb {
    /// The locked package.
    pub package: LockedPackage,
    /// Its file in the cache (`<cache>/sha256/<hex>`).
    pub path: PathBuf,
}

/// A file that `--offline` needed but the cache lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFile {
    /// Package name (or index file path).
    pub name: String,
    /// Package version (empty for index files).
    pub version: String,
    /// Expected SHA-256.
    pub sha256: String,
    /// Archive-relative file name.
    pub filename: String,
}

impl std::fmt::Display for MissingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.version.is_empty() {
            write!(f, "{} (sha256 {})", self.filename, self.sha256)
        } else {
            write!(
                f,
                "{} {} {} (sha256 {})",
                self.name, self.version, self.filename, self.sha256
            )
        }
    }
}

/// A blocking HTTP client with sane timeouts.
pub fn http_client() -> Result<reqwest::blocking::Client, Error> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("kubeboot-imagegen/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(900))
        .build()
        .map_err(|e| Error::Http {
            url: "(any URL)".into(),
            detail: format!("cannot build the HTTP client: {e}"),
            hint: String::new(),
        })
}

/// `--offline` hint when the cache has something (for an archive's
/// `InRelease`, only when the cache holds that archive's: see
/// [`crate::archive`]).
pub(crate) fn offline_hint(cache: &Cache) -> String {
    if cache.has_entries() {
        format!(
            "; the cache {} has downloads: retry with --offline to build from it",
            cache.dir().display()
        )
    } else {
        String::new()
    }
}

/// Attempts per request: one retry after a transient failure.
const ATTEMPTS: u32 = 2;

/// Whether a failure may go away on retry: network errors, 5xx statuses,
/// a connection dropped mid-body. Digest mismatches are never retried.
fn transient(e: &Error) -> bool {
    match e {
        Error::Http { .. } => true,
        Error::HttpStatus { status, .. } => *status >= 500,
        Error::Cache(crate::cache::CacheError::Source { .. }) => true,
        _ => false,
    }
}

/// Runs `op`, retrying once after a transient failure.
fn with_retry<T>(url: &str, mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tracing::warn!(url, error = %e, "transient failure; retrying");
                std::thread::sleep(Duration::from_millis(500));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// GETs `url`, failing on non-success statuses; a network error carries
/// `hint` (the `--offline` hint where it applies, else empty).
fn get(
    client: &reqwest::blocking::Client,
    url: &str,
    hint: &str,
) -> Result<reqwest::blocking::Response, Error> {
    let resp = client.get(url).send().map_err(|e| Error::Http {
        url: url.into(),
        detail: error_chain(&e),
        hint: hint.into(),
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::HttpStatus {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    Ok(resp)
}

/// GETs a small text file (at most `limit` bytes); network errors carry
/// `hint`.
pub(crate) fn get_text(
    client: &reqwest::blocking::Client,
    url: &str,
    hint: &str,
    limit: u64,
) -> Result<String, Error> {
    with_retry(url, || get_text_once(client, url, hint, limit))
}

fn get_text_once(
    client: &reqwest::blocking::Client,
    url: &str,
    hint: &str,
    limit: u64,
) -> Result<String, Error> {
    let resp = get(client, url, hint)?;
    let mut buf = Vec::new();
    resp.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Http {
            url: url.into(),
            detail: e.to_string(),
            hint: hint.into(),
        })?;
    String::from_utf8(buf).map_err(|_| Error::Http {
        url: url.into(),
        detail: "response is not UTF-8 text".into(),
        hint: String::new(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Downloads `url` into the cache, verifying digest and size.
pub(crate) fn download(
    client: &reqwest::blocking::Client,
    url: &str,
    sha256: &str,
    size: u64,
    cache: &Cache,
    mut progress: impl FnMut(u64),
) -> Result<PathBuf, Error> {
    let hint = offline_hint(cache);
    with_retry(url, || {
        let resp = get(client, url, &hint)?;
        Ok(cache.insert_verified(resp, sha256, size, url, &mut progress)?)
    })
}

/// Makes every locked package available in the cache (see [`fetch_with`]).
pub fn fetch(
    locked: &[LockedPackage],
    archive_url: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Vec<FetchedDeb>, Error> {
    fetch_with(
        locked,
        archive_url,
        cache,
        &FetchOptions {
            offline,
            ..FetchOptions::default()
        },
    )
}

/// Makes every locked package available in the cache: cached entries are
/// re-hashed (a corrupt one is dropped and fetched again), the rest are
/// downloaded from `<archive_url>/<filename>`. Offline, a missing file is an
/// error listing every missing package. Results are in input order.
pub fn fetch_with(
    locked: &[LockedPackage],
    archive_url: &str,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<Vec<FetchedDeb>, Error> {
    let base = archive_url.trim_end_matches('/');
    let mut missing = Vec::new();
    for (i, p) in locked.iter().enumerate() {
        if !(cache.contains(&p.sha256) && cache.verify_entry(&p.sha256, p.size)?) {
            missing.push(i);
        }
    }
    if opts.offline && !missing.is_empty() {
        return Err(Error::OfflineMissing {
            cache: cache.dir().to_path_buf(),
            missing: missing
                .iter()
                .map(|&i| MissingFile {
                    name: locked[i].name.clone(),
                    version: locked[i].version.clone(),
                    sha256: locked[i].sha256.clone(),
                    filename: locked[i].filename.clone(),
                })
                .collect(),
        });
    }
    if !missing.is_empty() {
        download_all(locked, &missing, base, cache, opts)?;
    }
    Ok(locked
        .iter()
        .map(|p| FetchedDeb {
            package: p.clone(),
            path: cache.path_for(&p.sha256),
        })
        .collect())
}

fn download_all(
    locked: &[LockedPackage],
    missing: &[usize],
    base: &str,
    cache: &Cache,
    opts: &FetchOptions,
) -> Result<(), Error> {
    let client = http_client()?;
    let total: u64 = missing.iter().map(|&i| locked[i].size).sum();
    let use_bar = opts.progress == Progress::Auto && std::io::stderr().is_terminal();
    let lines = !use_bar && opts.progress != Progress::Quiet;
    let bar = if use_bar {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let queue = Mutex::new(missing.iter().copied());
    let errors = Mutex::new(Vec::new());
    let done = Mutex::new(0usize);
    let jobs = opts.jobs.clamp(1, 16).min(missing.len());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some(i) = next else { break };
                let p = &locked[i];
                let url = format!("{base}/{}", p.filename);
                bar.set_message(p.name.clone());
                match download(&client, &url, &p.sha256, p.size, cache, |n| bar.inc(n)) {
                    Ok(_) => {
                        let n = done.lock().map(|mut d| {
                            *d += 1;
                            *d
                        });
                        if lines {
                            eprintln!(
                                "fetched {} {} ({} bytes) [{}/{}]",
                                p.name,
                                p.version,
                                p.size,
                                n.unwrap_or(0),
                                missing.len()
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(url, error = %e, "download failed");
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut errors = errors.into_inner().unwrap_or_default();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Downloads { errors }),
    }
}
