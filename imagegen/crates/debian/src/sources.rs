//! The build host's apt sources, used to pick a default archive URL.
//!
//! Reads `/etc/apt/sources.list` (one-line format), then the files of
//! `/etc/apt/sources.list.d/` in name order: `*.list` (one-line) and
//! `*.sources` (deb822), like apt (see sources.list(5)). Other files (for
//! example `*.list.disabled`) are ignored, as are `deb-src` entries,
//! deb822 entries with `Enabled: no`, and non-HTTP(S) URIs. The first `deb`
//! entry whose suite equals the requested one wins, so `bookworm` never
//! picks a `bookworm-security` or `bookworm-updates` line.

use std::path::{Path, PathBuf};

use crate::control;

/// A problem reading the host's apt sources.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// A sources file could not be read.
    #[error("cannot read apt sources {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sources file is malformed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number).
        message: String,
    },
    /// No entry for the suite.
    #[error("no `deb` entry for suite {suite:?} in the host's apt sources ({}); pass the archive URL with `--archive URL` or set `archive.url` in the profile", looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoArchive {
        /// The suite looked for.
        suite: String,
        /// Files that were read.
        looked_in: Vec<PathBuf>,
    },
}

/// One `deb` or `deb-src` source entry (one URI, one suite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// `deb` or `deb-src`.
    pub kind: String,
    /// Archive root URI.
    pub uri: String,
    /// Suite (distribution), e.g. `bookworm`.
    pub suite: String,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
}

/// Parses the one-line format: `deb [opts] uri suite [component...]`.
/// Line numbers in errors are 1-based.
pub fn parse_one_line(text: &str) -> Result<Vec<SourceEntry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (kind, mut rest) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: expected `deb URI SUITE [COMPONENT...]`", i + 1))?;
        if kind != "deb" && kind != "deb-src" {
            return Err(format!("line {}: unknown entry type {kind:?}", i + 1));
        }
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('[') {
            rest = after
                .split_once(']')
                .ok_or_else(|| format!("line {}: unclosed `[` options", i + 1))?
                .1;
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            return Err(format!(
                "line {}: expected `{kind} URI SUITE [COMPONENT...]`",
                i + 1
            ));
        };
        out.push(SourceEntry {
            kind: kind.into(),
            uri: uri.into(),
            suite: suite.into(),
            components: words.map(str::to_string).collect(),
        });
    }
    Ok(out)
}

/// Parses the deb822 `.sources` format (one entry per URI × suite × type).
pub fn parse_deb822(text: &str) -> Result<Vec<SourceEntry>, String> {
    let paragraphs = control::parse(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for p in paragraphs {
        if p.get("Enabled")
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let words = |f: &str| -> Vec<String> {
            p.get(f)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let (types, uris, suites) = (words("Types"), words("URIs"), words("Suites"));
        if types.is_empty() || uris.is_empty() || suites.is_empty() {
            return Err(format!(
                "line {}: entry needs Types, URIs and Suites",
                p.line
            ));
        }
        for kind in &types {
            for uri in &uris {
                for suite in &suites {
                    out.push(SourceEntry {
                        kind: kind.clone(),
                        uri: uri.clone(),
                        suite: suite.clone(),
                        components: words("Components"),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The first HTTP(S) `deb` entry for `suite` among `entries`, without a
/// trailing slash.
pub fn pick_archive(entries: &[SourceEntry], suite: &str) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.kind == "deb"
                && e.suite.trim_end_matches('/') == suite
                && (e.uri.starts_with("http://") || e.uri.starts_with("https://"))
        })
        .map(|e| e.uri.trim_end_matches('/').to_string())
}

/// All source entries under `root` (normally `/`), in apt's reading order.
/// Returns the entries and the files read.
pub fn read_sources(root: &Path) -> Result<(Vec<SourceEntry>, Vec<PathBuf>), SourcesError> {
    let apt = root.join("etc/apt");
    let mut files = Vec::new();
    let main = apt.join("sources.list");
    if main.is_file() {
        files.push(main);
    }
    let dir = apt.join("sources.list.d");
    if dir.is_dir() {
        let read_dir = std::fs::read_dir(&dir).map_err(|source| SourcesError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<PathBuf> = read_dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("list") | Some("sources")
                    )
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut entries = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| SourcesError::Read {
            path: path.clone(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        entries.extend(parsed.map_err(|message| SourcesError::Parse {
            path: path.clone(),
            message,
        })?);
    }
    Ok((entries, files))
}

/// The archive URL for `suite` from the apt sources under `root`.
pub fn host_archive_url_in(root: &Path, suite: &str) -> Result<String, SourcesError> {
    let (entries, looked_in) = read_sources(root)?;
    pick_archive(&entries, suite).ok_or_else(|| SourcesError::NoArchive {
        suite: suite.into(),
        looked_in,
    })
}

/// The archive URL for `suite` from this host's apt sources.
pub fn host_archive_url(suite: &str) -> Result<String, SourcesError> {
    host_archive_url_in(Path::new("/"), suite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("test_data/sources")
            .join(name)
    }

    #[test]
    fn one_line_format() {
        let e = parse_one_line(
            "# comment\ndeb-src http://src.example/debian bookworm main\n\ndeb [arch=amd64 signed-by=/k.gpg] http://archive.example/debian/ bookworm main contrib # tail\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].uri, "http://archive.example/debian/");
        assert_eq!(e[1].components, ["main", "contrib"]);
        assert_eq!(
            pick_archive(&e, "bookworm").as_deref(),
            Some("http://archive.example/debian")
        );
        assert_eq!(pick_archive(&e, "trixie"), None);
        assert!(parse_one_line("deb http://x\n")
            .unwrap_err()
            .starts_with("line 1:"));
        assert!(parse_one_line("\nrpm http://x y\n")
            .unwrap_err()
            .starts_with("line 2:"));
        assert!(parse_one_line("deb [opts http://x y\n").is_err());
    }

    #[test]
    fn deb822_format() {
        let e = parse_deb822(
            "Types: deb deb-src\nURIs: http://a.example/debian http://b.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n",
        )
        .unwrap();
        assert_eq!(e.len(), 8);
        assert_eq!(
            pick_archive(&e, "bookworm").as_deref(),
            Some("http://a.example/debian")
        );
        assert_eq!(
            pick_archive(&e, "bookworm-updates").as_deref(),
            Some("http://a.example/debian")
        );
        assert!(parse_deb822("Types: deb\nSuites: x\n")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn host_fixture_one_line_list() {
        let root = fixture("onelist");
        assert_eq!(
            host_archive_url_in(&root, "bookworm").unwrap(),
            "http://mirror.example/debian"
        );
        assert_eq!(
            host_archive_url_in(&root, "bookworm-security").unwrap(),
            "http://security.example/debian-security"
        );
    }

    #[test]
    fn host_fixture_deb822_skips_security_and_disabled() {
        let root = fixture("deb822");
        // 10-security.sources sorts first but has only bookworm-security;
        // 00-old.list.disabled and 05-off.sources (Enabled: no) are ignored.
        assert_eq!(
            host_archive_url_in(&root, "bookworm").unwrap(),
            "http://archive.example/debian"
        );
        assert_eq!(
            host_archive_url_in(&root, "bookworm-security").unwrap(),
            "http://archive.example/debian-security"
        );
    }

    #[test]
    fn host_without_sources_asks_for_archive_url() {
        for name in ["none", "disabled"] {
            let err = host_archive_url_in(&fixture(name), "bookworm").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, SourcesError::NoArchive { .. }), "{msg}");
            assert!(
                msg.contains("--archive URL") && msg.contains("archive.url"),
                "{msg}"
            );
        }
    }
}
