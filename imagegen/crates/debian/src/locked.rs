//! One pinned `.deb`: what the lockfile records for each package and what
//! [`crate::fetch`](mod@crate::fetch) downloads and verifies. Its own module so that `fetch`
//! (used by `archive` for the indices) does not import `lockfile`, which
//! imports `archive` to pin a resolution: the three had formed an import
//! cycle.

use serde::{Deserialize, Serialize};

use crate::index::Package;

/// One package pinned by the lockfile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Architecture (`amd64` or `all`).
    pub architecture: String,
    /// Path of the `.deb` below the archive root (`pool/...`).
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

impl From<&Package> for LockedPackage {
    fn from(p: &Package) -> Self {
        LockedPackage {
            name: p.name.clone(),
            version: p.version.to_string(),
            architecture: p.architecture.clone(),
            filename: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
        }
    }
}
