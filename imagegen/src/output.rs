//! The output directory, written so that an interrupted or failed build
//! never leaves output that looks complete, anywhere.
//!
//! Every file is written into a hidden staging directory on the output's
//! own filesystem, so that the final step is a rename:
//!
//! * normally beside the final directory (`.<name>.partial-XXXX`):
//!   [`Staging::commit`] moves the previous output aside, renames the
//!   staging directory into place and removes the old one;
//! * when the output directory is a mount point (`--out` at a mounted
//!   disk: it cannot be renamed, and its parent is another filesystem),
//!   inside it (`<out>/.partial-XXXX`): commit removes the previous image's
//!   `manifest.json` first, then its other entries (a `lost+found` is
//!   kept), moves the staged files in, `manifest.json` last, and removes the
//!   staging directory.
//!
//! Until the final rename the staging directory is removed on every failure
//! path (and on drop). `manifest.json` is written last, so a directory
//! without it is never a finished image.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::manifest::MANIFEST_FILE;

/// Output errors.
#[derive(Debug, Error)]
pub enum OutputError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing an output file failed (for example: the disk is full).
    #[error("writing {} (staged as {}): {source}", path.display(), staged.display())]
    Write {
        /// The file's final path.
        path: PathBuf,
        /// Where it was being written.
        staged: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OutputError + 'a {
    move |source| OutputError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Undoes the octal escapes of `/proc/self/mountinfo` paths (`\040` for a
/// space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `dir` is a mount point: another device than its parent, or (a
/// bind mount of the same filesystem) listed in the kernel's mount table.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Some(parent) = dir.parent() else {
        return true;
    };
    if let (Ok(a), Ok(b)) = (std::fs::metadata(&dir), std::fs::metadata(parent)) {
        if a.dev() != b.dev() {
            return true;
        }
    }
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|table| {
        table.lines().any(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(&unescape_mountinfo(m)) == dir)
        })
    })
}

/// A staging directory for one build's outputs.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    target: PathBuf,
    /// Staged inside `target` (a mount point) instead of beside it.
    inside: bool,
}

impl Staging {
    /// Creates the staging directory on the filesystem of `target`: beside
    /// it (its parent is created if needed), or inside it when `target` is
    /// a mount point.
    pub fn new(target: &Path) -> Result<Staging, OutputError> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let inside = target.is_dir() && is_mount_point(target);
        let (place, prefix) = if inside {
            (target, ".partial-".to_owned())
        } else {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            (parent, format!(".{name}.partial-"))
        };
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(place)
            .map_err(io("creating a staging directory in", place))?;
        Ok(Staging {
            dir,
            target: target.to_owned(),
            inside,
        })
    }

    /// Path of `name` inside the staging directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates `name` and lets `write` fill it through a buffer, then
    /// flushes and syncs it. Every failure (a full disk included) names the
    /// file's final path and where it was staged.
    pub fn write_with<T>(
        &self,
        name: &str,
        write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
    ) -> Result<T, OutputError> {
        let staged = self.path(name);
        let failed = |source| OutputError::Write {
            path: self.target.join(name),
            staged: staged.clone(),
            source,
        };
        let mut w = BufWriter::new(File::create(&staged).map_err(failed)?);
        let value = write(&mut w).map_err(failed)?;
        let file = w.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)?;
        Ok(value)
    }

    /// Writes `name` in one go.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), OutputError> {
        self.write_with(name, |w| w.write_all(data))
    }

    /// Moves the staged files to their final place, replacing any previous
    /// output whole. Returns the final directory. On failure nothing staged
    /// is left behind.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        let staged = self.dir.path().to_owned();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&staged).map_err(io("listing", &staged))? {
            let entry = entry.map_err(io("listing", &staged))?;
            if let Ok(f) = File::open(entry.path()) {
                let _ = f.sync_all();
            }
            names.push(entry.file_name());
        }
        if self.inside {
            // `self.dir` is dropped (removed) on return, also on failure.
            self.commit_inside(&names)?;
            return Ok(self.target);
        }
        let old = self.target.with_file_name(format!(
            ".{}.old-{}",
            self.target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old).map_err(io("moving aside", &self.target))?;
        }
        if let Err(source) = std::fs::rename(&staged, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(OutputError::Io {
                what: "renaming the staging directory to",
                path: self.target.clone(),
                source,
            });
        }
        // The staging directory is the output now: nothing left to remove.
        let _ = self.dir.keep();
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(self.target)
    }

    /// [`Staging::commit`] for a staging directory inside the target.
    fn commit_inside(&self, names: &[std::ffi::OsString]) -> Result<(), OutputError> {
        let target = &self.target;
        // The previous image stops looking complete before anything changes.
        let manifest = target.join(MANIFEST_FILE);
        if manifest.exists() {
            std::fs::remove_file(&manifest).map_err(io("removing", &manifest))?;
        }
        for entry in std::fs::read_dir(target).map_err(io("listing", target))? {
            let p = entry.map_err(io("listing", target))?.path();
            if p == self.dir.path() || p.file_name().is_some_and(|n| n == "lost+found") {
                continue;
            }
            let removed = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(io("removing the previous output", &p))?;
        }
        let (last, first): (Vec<_>, Vec<_>) = names.iter().partition(|n| *n == MANIFEST_FILE);
        for name in first.into_iter().chain(last) {
            let from = self.dir.path().join(name);
            let to = target.join(name);
            std::fs::rename(&from, &to).map_err(io("moving into place", &to))?;
        }
        Ok(())
    }
}

/// SHA256 (hex) and size of a file.
pub fn file_sha256(path: &Path) -> Result<(String, u64), OutputError> {
    let mut f = File::open(path).map_err(io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_staging_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("master");
        {
            let s = Staging::new(&target).unwrap();
            s.write("vmlinuz", b"k").unwrap();
            // Interrupted: dropped without commit.
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_previous_output_whole() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("master");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("stale"), b"old").unwrap();
        let s = Staging::new(&target).unwrap();
        s.write("manifest.json", b"{}").unwrap();
        let out = s.commit().unwrap();
        assert_eq!(out, target);
        assert!(!target.join("stale").exists());
        assert_eq!(std::fs::read(target.join("manifest.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/x\\134y\\011"), "/x\\y\t");
        assert_eq!(unescape_mountinfo("/plain\\9"), "/plain\\9");
    }

    #[test]
    fn mount_points_are_recognised() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
        assert!(!is_mount_point(&dir.path().join("missing")));
    }

    #[test]
    fn staging_beside_the_target_when_it_is_no_mount_point() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("master");
        std::fs::create_dir(&target).unwrap();
        let s = Staging::new(&target).unwrap();
        assert_eq!(s.path("x").parent().unwrap().parent(), Some(root.path()));
    }

    #[test]
    fn sha256_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (sha, size) = file_sha256(&p).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
    }
}
