//! Key and certificate files, written with the one atomic write
//! (`atomic-file`): a temporary file in the same directory with the final
//! mode from the start, fsync, rename over the target, directory fsync. A
//! crash leaves either the old file or the new one, never a half-written
//! key, and a key is never readable by others, not even for an instant.

use std::io;
use std::path::Path;

/// Writes a private key: mode 0600, atomically.
pub fn write_key_file(path: impl AsRef<Path>, pem: &str) -> io::Result<()> {
    atomic_file::write_secret(path.as_ref(), pem.as_bytes())
}

/// Writes a certificate (public): mode 0644, atomically.
pub fn write_cert_file(path: impl AsRef<Path>, pem: &str) -> io::Result<()> {
    atomic_file::write(path.as_ref(), pem.as_bytes(), atomic_file::PUBLIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_0600_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        // An existing world-readable file is replaced, not chmod-ed in place.
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_key_file(&path, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "-----BEGIN PRIVATE KEY-----\n"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn cert_file_is_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        write_cert_file(&path, "cert").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
