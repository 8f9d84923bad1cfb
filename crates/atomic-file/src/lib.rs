#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of a file anyone may read (certificates, unit files, markers).
pub const PUBLIC: u32 = 0o644;
/// The mode of a secret file (private keys, kubeconfigs, persisted state).
pub const SECRET: u32 = 0o600;

/// Writes `data` to `path` with file mode `mode`, atomically: temporary
/// file, fsync, rename, directory fsync. Errors name the path.
pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_all(data)
        .map_err(|e| with_path("writing", path, e))?;
    file.commit()
}

/// Writes a secret file: [`write`] with mode [`SECRET`] (0600).
pub fn write_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    write(path, data, SECRET)
}

/// A file being written under a temporary name beside its target; it
/// replaces the target only on [`AtomicFile::commit`]. Dropped without a
/// commit, the temporary file is removed and the target is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    /// The open temporary file (`None` once committed).
    file: Option<File>,
    /// The temporary file's path.
    tmp: PathBuf,
    /// The file this one replaces on commit.
    target: PathBuf,
}

impl AtomicFile {
    /// Creates a unique temporary file in `path`'s directory with `mode`
    /// (set explicitly, so the umask cannot clear bits of it).
    pub fn create(path: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent(path);
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(file_name);
        // Unique per process and call, so concurrent writers never share one.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
        tmp_name.push(format!(".tmp{}.{seq}", std::process::id()));
        let tmp = dir.join(tmp_name);
        // A leftover from a crashed run with the same pid and sequence:
        // remove it, then create with O_EXCL (which also never follows a
        // symlink).
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path("removing a stale temporary file for", path, e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| with_path("creating a temporary file for", path, e))?;
        let this = AtomicFile {
            file: Some(file),
            tmp,
            target: path.to_owned(),
        };
        this.handle()?
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| with_path("setting the mode of", path, e))?;
        Ok(this)
    }

    /// Fsyncs the contents, renames them over the target and fsyncs the
    /// directory, so the new file survives a crash once this returns.
    pub fn commit(mut self) -> io::Result<()> {
        let target = self.target.clone();
        let file = self.handle()?;
        file.sync_all()
            .map_err(|e| with_path("syncing", &target, e))?;
        fs::rename(&self.tmp, &target).map_err(|e| with_path("renaming into place", &target, e))?;
        // Renamed: nothing left for `drop` to remove.
        self.file = None;
        File::open(parent(&target))
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path("syncing the directory of", &target, e))
    }

    fn handle(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("atomic file already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("atomic file already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Best effort: never leave a temporary (possibly secret) file.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The directory `path` lives in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn with_path(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    // Moved from agent/src/state.rs (called `write_atomic` there).
    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, b"first version, long", 0o600).unwrap();
        write(&p, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["f"]);
    }

    #[test]
    fn mode_is_applied_whatever_the_old_file_had() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [("secret", SECRET), ("public", PUBLIC), ("exec", 0o755)] {
            let path = dir.path().join(name);
            // An existing file with other bits is replaced, not chmod-ed.
            fs::write(&path, "old").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
            write(&path, b"new", mode).unwrap();
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
            assert_eq!(fs::read(&path).unwrap(), b"new");
        }
        write_secret(&dir.path().join("key"), b"k").unwrap();
        let meta = fs::metadata(dir.path().join("key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["exec", "key", "public", "secret"]);
    }

    // Moved from agent/crates/pki/src/files.rs (through `write_key_file`,
    // which is `write_secret`).
    #[test]
    fn concurrent_writers_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let contents: Vec<String> = (0..8).map(|i| format!("{i}").repeat(4096)).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || write_secret(path, c.as_bytes()).unwrap());
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

    // Moved from agent/crates/pki/src/files.rs.
    #[test]
    fn missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/ca.key");
        let err = write_secret(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("nope/ca.key"), "{err}");
    }

    #[test]
    fn uncommitted_stream_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        fs::write(&path, "old").unwrap();
        {
            let mut f = AtomicFile::create(&path, PUBLIC).unwrap();
            f.write_all(b"half a download").unwrap();
            // Dropped: as a download that failed its checksum is.
        }
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["entry"]);
        let mut f = AtomicFile::create(&path, PUBLIC).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert_eq!(names(dir.path()), ["entry"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write(Path::new("/"), b"x", PUBLIC).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
