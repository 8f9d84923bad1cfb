//! The checks on names a profile carries: Debian package names, kernel
//! module and systemd unit names, registry hosts, SHA256 digests, and the
//! simple names of images, users and components. Pure predicates, shared by
//! the per-file checks ([`crate::spec`]) and the merged-profile checks
//! ([`crate::profile`]); and [`ImageRef`], the one checked name that is a
//! type of its own.

use serde::Serialize;

/// A simple name (image, user, component): lowercase letters, digits, `-`
/// and `_`, at most 63 characters.
pub(crate) fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Debian Policy 5.6.1: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with an alphanumeric.
pub(crate) fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A kernel module name: letters, digits, `_` and `-`.
pub(crate) fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A systemd unit name: a stem and one of the unit type suffixes.
pub(crate) fn is_unit_name(s: &str) -> bool {
    let Some((stem, suffix)) = s.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && [
            "service",
            "socket",
            "target",
            "timer",
            "path",
            "mount",
            "automount",
            "swap",
            "slice",
        ]
        .contains(&suffix)
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// A registry host as the first component of an image reference:
/// letters, digits, `.`, `-`, and an optional `:port`.
pub fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

/// 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// A container image reference pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    /// The reference without the digest (`registry.k8s.io/pause:3.9`), as
    /// an OCI archive names it (`org.opencontainers.image.ref.name` /
    /// `io.containerd.image.name`).
    pub name: String,
    /// The manifest (or index) digest, `sha256:<64 hex>`.
    pub digest: String,
}

impl ImageRef {
    /// Parses `name@sha256:<64 lowercase hex>`; `None` if it is not pinned.
    pub fn parse(text: &str) -> Option<ImageRef> {
        let (name, hex) = text.split_once("@sha256:")?;
        if name.is_empty() || name.contains(char::is_whitespace) || !is_sha256(hex) {
            return None;
        }
        Some(ImageRef {
            name: name.to_owned(),
            digest: format!("sha256:{hex}"),
        })
    }
}
