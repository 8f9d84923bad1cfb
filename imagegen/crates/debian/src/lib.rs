//! Debian archive client: signed indices, resolver, verified downloads, lockfile (skeleton).
