//! Content-addressed download cache: `<dir>/sha256/<hex>`.
//!
//! Entries are only ever created by [`Cache::insert_verified`]: data goes to a
//! temporary file in the same directory, its SHA-256 and size are checked,
//! and only then is it renamed into place. A failed or interrupted download
//! leaves no entry behind (the temporary file is deleted on drop). The last
//! `InRelease` seen per archive and suite is kept under `<dir>/release/` so
//! that `--offline` can resolve without network.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::index::is_sha256_hex;

/// A failed cache operation.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// File-system error.
    #[error("cache {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Data did not match the expected digest or size; nothing was stored.
    #[error("{origin}: expected sha256 {expected} ({expected_size} bytes), got sha256 {actual} ({actual_size} bytes); not cached")]
    Mismatch {
        /// Where the data came from (URL or path).
        origin: String,
        /// Expected SHA-256.
        expected: String,
        /// Actual SHA-256.
        actual: String,
        /// Expected size.
        expected_size: u64,
        /// Actual size.
        actual_size: u64,
    },
    /// A digest is not 64 lowercase hex digits.
    #[error("invalid sha256 {0:?}")]
    BadDigest(String),
    /// Reading the data source failed (network or file).
    #[error("{origin}: read failed: {source}")]
    Source {
        /// Where the data came from.
        origin: String,
        /// The error.
        source: io::Error,
    },
}

/// A content-addressed cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Cache {
    /// Opens (creating if needed) a cache rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let dir = dir.into();
        for sub in ["sha256", "release"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Cache { dir })
    }

    /// The cache root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry with this digest lives (whether or not it exists).
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256.to_ascii_lowercase())
    }

    /// Whether an entry with this digest exists.
    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256_hex(&sha256.to_ascii_lowercase()) && self.path_for(sha256).is_file()
    }

    /// Whether the cache holds anything at all (used to suggest `--offline`).
    pub fn has_entries(&self) -> bool {
        fs::read_dir(self.dir.join("sha256"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// Re-hashes an existing entry; a corrupt entry is deleted and `false`
    /// returned.
    pub fn verify_entry(&self, sha256: &str, size: u64) -> Result<bool, CacheError> {
        let path = self.path_for(sha256);
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let (actual, actual_size) = hash_reader(file).map_err(io_err(&path))?;
        if actual == sha256 && actual_size == size {
            return Ok(true);
        }
        tracing::warn!(path = %path.display(), "corrupt cache entry removed");
        fs::remove_file(&path).map_err(io_err(&path))?;
        Ok(false)
    }

    /// Streams `reader` into the cache, verifying `sha256` and `size`;
    /// `origin` names the source in errors. Reads at most `size + 1` bytes.
    /// `progress` is called with each chunk's length.
    pub fn insert_verified(
        &self,
        reader: impl Read,
        sha256: &str,
        size: u64,
        origin: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<PathBuf, CacheError> {
        let sha256 = sha256.to_ascii_lowercase();
        if !is_sha256_hex(&sha256) {
            return Err(CacheError::BadDigest(sha256));
        }
        let dest = self.path_for(&sha256);
        let mut tmp =
            atomic_file::AtomicFile::create(&dest, atomic_file::PUBLIC).map_err(io_err(&dest))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut limited = reader.take(size.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CacheError::Source {
                        origin: origin.into(),
                        source,
                    })
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_err(&dest))?;
            total += n as u64;
            progress(n as u64);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 || total != size {
            // `tmp` is deleted when dropped: the cache stays clean.
            return Err(CacheError::Mismatch {
                origin: origin.into(),
                expected: sha256,
                actual,
                expected_size: size,
                actual_size: total,
            });
        }
        tmp.commit().map_err(io_err(&dest))?;
        Ok(dest)
    }

    /// Reads a cached entry fully.
    pub fn read(&self, sha256: &str) -> Result<Vec<u8>, CacheError> {
        let path = self.path_for(sha256);
        fs::read(&path).map_err(io_err(&path))
    }

    fn release_path(&self, url: &str, suite: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(format!("{url}\n{suite}").as_bytes()));
        self.dir.join("release").join(key)
    }

    /// Stores the raw `InRelease` of an archive and suite (atomically).
    pub fn store_release(&self, url: &str, suite: &str, text: &str) -> Result<(), CacheError> {
        let dest = self.release_path(url, suite);
        write_atomic(&dest, text.as_bytes()).map_err(io_err(&dest))
    }

    /// The last stored `InRelease` of an archive and suite, if any.
    pub fn load_release(&self, url: &str, suite: &str) -> Result<Option<String>, CacheError> {
        let path = self.release_path(url, suite);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }
}

/// SHA-256 (hex) and length of everything `reader` yields.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let n = io::copy(&mut reader, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), n))
}

/// Writes `bytes` to `dest` with the one atomic write (`atomic-file`), so
/// readers never see a partial file.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_file::write(dest, bytes, atomic_file::PUBLIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn insert_verified_stores_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path()).unwrap();
        let data = b"hello deb";
        let digest = sha(data);
        assert!(!cache.contains(&digest));
        assert!(!cache.has_entries());
        let mut seen = 0;
        let path = cache
            .insert_verified(&data[..], &digest, data.len() as u64, "test", |n| seen += n)
            .unwrap();
        assert_eq!(path, cache.path_for(&digest));
        assert_eq!(seen, data.len() as u64);
        assert!(cache.contains(&digest));
        assert!(cache.has_entries());
        assert_eq!(cache.read(&digest).unwrap(), data);
        assert!(cache.verify_entry(&digest, data.len() as u64).unwrap());
    }

    #[test]
    fn mismatch_leaves_cache_clean_and_names_everything() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path()).unwrap();
        let wrong = sha(b"other");
        let err = cache
            .insert_verified(
                &b"data"[..],
                &wrong,
                4,
                "http://archive.example/debian/pool/x.deb",
                |_| {},
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("http://archive.example/debian/pool/x.deb"),
            "{msg}"
        );
        assert!(msg.contains(&wrong) && msg.contains(&sha(b"data")), "{msg}");
        // Too long input: also a mismatch (size), and reading is bounded.
        let digest = sha(b"da");
        assert!(matches!(
            cache.insert_verified(&b"data"[..], &digest, 2, "x", |_| {}),
            Err(CacheError::Mismatch { actual_size: 3, .. })
        ));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sha256")).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(matches!(
            cache.insert_verified(&b""[..], "xyz", 0, "x", |_| {}),
            Err(CacheError::BadDigest(_))
        ));
    }

    #[test]
    fn corrupt_entry_is_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path()).unwrap();
        let digest = sha(b"good");
        cache
            .insert_verified(&b"good"[..], &digest, 4, "t", |_| {})
            .unwrap();
        fs::write(cache.path_for(&digest), b"evil").unwrap();
        assert!(!cache.verify_entry(&digest, 4).unwrap());
        assert!(!cache.contains(&digest));
    }

    #[test]
    fn releases_are_stored_per_archive_and_suite() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path()).unwrap();
        assert_eq!(cache.load_release("http://a.example", "s").unwrap(), None);
        cache
            .store_release("http://a.example", "s", "text")
            .unwrap();
        assert_eq!(
            cache
                .load_release("http://a.example", "s")
                .unwrap()
                .as_deref(),
            Some("text")
        );
        assert_eq!(cache.load_release("http://a.example", "t").unwrap(), None);
    }
}
