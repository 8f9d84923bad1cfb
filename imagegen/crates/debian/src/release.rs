//! The suite's `Release` text (the signed body of `InRelease`): which index
//! files exist, with their sizes and SHA-256 digests.
//! Format: <https://wiki.debian.org/DebianRepository/Format#A.22Release.22_files>.

use crate::control::{self, ControlError};
use crate::index::is_sha256_hex;

/// A `Release` file that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Deb822 syntax error.
    #[error("{file}: {source}")]
    Syntax {
        /// The file (URL or path).
        file: String,
        /// The syntax error.
        source: ControlError,
    },
    /// No paragraph at all.
    #[error("{file}: empty Release file")]
    Empty {
        /// The file.
        file: String,
    },
    /// A line of the `SHA256` list is malformed.
    #[error("{file}: SHA256 entry {line:?} is not `<sha256> <size> <path>`")]
    BadEntry {
        /// The file.
        file: String,
        /// The offending entry.
        line: String,
    },
    /// The file lists no SHA256 digests (only weak ones, or none).
    #[error("{file}: no SHA256 field; refusing indices without strong digests")]
    NoSha256 {
        /// The file.
        file: String,
    },
}

/// One file listed in the `SHA256` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// Path relative to `dists/<suite>/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// The parsed `Release` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Suite` (e.g. `stable`).
    pub suite: Option<String>,
    /// `Codename` (e.g. `bookworm`).
    pub codename: Option<String>,
    /// `Date`, as written (RFC 2822).
    pub date: Option<String>,
    /// `Valid-Until`, as written, if any.
    pub valid_until: Option<String>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`: indices may be fetched from `by-hash/SHA256/<hex>`.
    pub acquire_by_hash: bool,
    /// The `SHA256` list.
    pub files: Vec<ReleaseFile>,
}

impl Release {
    /// Parses a Release text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ReleaseError> {
        let paragraphs = control::parse(text).map_err(|source| ReleaseError::Syntax {
            file: file.into(),
            source,
        })?;
        let p = paragraphs
            .first()
            .ok_or_else(|| ReleaseError::Empty { file: file.into() })?;
        let words = |f: &str| -> Vec<String> {
            p.get(f)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let sha = p
            .get("SHA256")
            .ok_or_else(|| ReleaseError::NoSha256 { file: file.into() })?;
        let mut files = Vec::new();
        for line in sha.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = || ReleaseError::BadEntry {
                file: file.into(),
                line: line.into(),
            };
            let mut parts = line.split_whitespace();
            let (Some(hash), Some(size), Some(path), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let hash = hash.to_ascii_lowercase();
            if !is_sha256_hex(&hash) {
                return Err(bad());
            }
            files.push(ReleaseFile {
                path: path.to_string(),
                size: size.parse().map_err(|_| bad())?,
                sha256: hash,
            });
        }
        Ok(Release {
            suite: p.get("Suite").map(str::to_string),
            codename: p.get("Codename").map(str::to_string),
            date: p.get("Date").map(str::to_string),
            valid_until: p.get("Valid-Until").map(str::to_string),
            architectures: words("Architectures"),
            components: words("Components"),
            acquire_by_hash: p
                .get("Acquire-By-Hash")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            files,
        })
    }

    /// Whether this Release belongs to `suite` (its `Suite` or `Codename`).
    /// A Release naming neither is accepted. Guards against a mirror serving
    /// another suite's correctly signed Release (apt's "conflicting
    /// distribution" check).
    pub fn matches_suite(&self, suite: &str) -> bool {
        match (&self.suite, &self.codename) {
            (None, None) => true,
            (s, c) => s.as_deref() == Some(suite) || c.as_deref() == Some(suite),
        }
    }

    /// The entry for `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&ReleaseFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The best listed `Packages` index of a component and architecture:
    /// `.xz`, else `.gz`, else uncompressed.
    pub fn packages_file(&self, component: &str, arch: &str) -> Option<&ReleaseFile> {
        ["xz", "gz", ""].iter().find_map(|ext| {
            let base = format!("{component}/binary-{arch}/Packages");
            let path = if ext.is_empty() {
                base
            } else {
                format!("{base}.{ext}")
            };
            self.file(&path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = "Origin: Debian
Label: Debian
Suite: stable
Codename: bookworm
Date: Sat, 10 May 2025 08:39:43 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib
Description: Debian 12.11 Released 17 May 2025
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 3957f28db16e3f28c7b34ae84f1c929c567de6970f3f1b95dac9b498dd80fe63   738242 contrib/Contents-all
 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  9000000 main/binary-amd64/Packages.xz
 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 12000000 main/binary-amd64/Packages.gz
 cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc 45000000 main/binary-amd64/Packages
 dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd   100000 contrib/binary-amd64/Packages.gz
";

    #[test]
    fn parses_sample() {
        let r = Release::parse(SAMPLE, "InRelease").unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert_eq!(r.date.as_deref(), Some("Sat, 10 May 2025 08:39:43 UTC"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.files.len(), 5);
        let p = r.packages_file("main", "amd64").unwrap();
        assert_eq!(p.path, "main/binary-amd64/Packages.xz");
        assert_eq!(p.size, 9_000_000);
        let c = r.packages_file("contrib", "amd64").unwrap();
        assert_eq!(c.path, "contrib/binary-amd64/Packages.gz");
        assert!(r.packages_file("non-free", "amd64").is_none());
        assert!(r.matches_suite("bookworm"));
        assert!(r.matches_suite("stable"));
        assert!(!r.matches_suite("trixie"));
        assert!(!r.matches_suite("bookworm-security"));
    }

    #[test]
    fn rejects_bad_entries() {
        let no_sha = SAMPLE.split("SHA256:").next().unwrap();
        assert!(matches!(
            Release::parse(no_sha, "f"),
            Err(ReleaseError::NoSha256 { .. })
        ));
        let short = SAMPLE.replace("aaaaaaaaaaaaaaaa", "zz");
        assert!(matches!(
            Release::parse(&short, "f"),
            Err(ReleaseError::BadEntry { .. })
        ));
        let no_size = SAMPLE.replace(" 9000000 ", " nine ");
        assert!(matches!(
            Release::parse(&no_size, "f"),
            Err(ReleaseError::BadEntry { .. })
        ));
        assert!(matches!(
            Release::parse("", "f"),
            Err(ReleaseError::Empty { .. })
        ));
        let err = Release::parse("Origin: x\nbroken", "dists/x/InRelease").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dists/x/InRelease: line 2: expected `Field: value`, found \"broken\""
        );
    }
}
