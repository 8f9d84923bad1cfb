//! Atomic file writes for keys and certificates: write a temporary file in
//! the same directory with the final mode from the start, fsync it, rename
//! it over the target, fsync the directory. A crash leaves either the old
//! file or the new one, never a half-written key, and a key is never
//! readable by others, not even for an instant.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes a private key: mode 0600, atomically.
pub fn write_key_file(path: impl AsRef<Path>, pem: &str) -> io::Result<()> {
    write_file_atomic(path.as_ref(), pem.as_bytes(), 0o600)
}

/// Writes a certificate (public): mode 0644, atomically.
pub fn write_cert_file(path: impl AsRef<Path>, pem: &str) -> io::Result<()> {
    write_file_atomic(path.as_ref(), pem.as_bytes(), 0o644)
}

/// Writes `data` to `path` with `mode`: temporary file, fsync, rename,
/// directory fsync. Errors carry the path.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let with_path = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    // Unique per process and call, so concurrent writers never share one.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".tmp{}.{seq}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover from a crashed run with the same pid and sequence: remove
    // it, then create with O_EXCL (which also never follows a symlink).
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path("removing a stale temporary file for", e)),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| with_path("creating a temporary file for", e))?;
        // The umask may have cleared bits of `mode`: set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| with_path("setting the mode of", e))?;
        file.write_all(data).map_err(|e| with_path("writing", e))?;
        file.sync_all().map_err(|e| with_path("syncing", e))?;
        fs::rename(&tmp, path).map_err(|e| with_path("renaming into place", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path("syncing the directory of", e))
    })();
    if result.is_err() {
        // Best effort: do not leave a temporary key file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn concurrent_writers_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let contents: Vec<String> = (0..8).map(|i| format!("{i}").repeat(4096)).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || write_key_file(path, c).unwrap());
            }
        });
        let got = fs::read_to_string(&path).unwrap();
        assert!(contents.contains(&got), "torn write");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary files left behind"
        );
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

    #[test]
    fn missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/ca.key");
        let err = write_key_file(&path, "x").unwrap_err();
        assert!(err.to_string().contains("nope/ca.key"), "{err}");
    }
}
