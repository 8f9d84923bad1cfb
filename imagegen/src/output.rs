//! The output directory, written so that an interrupted build never leaves
//! output that looks complete.
//!
//! Every file is written into a hidden staging directory next to the final
//! one (`.<name>.partial-XXXX`, removed on drop); [`Staging::commit`] moves
//! the previous output aside, renames the staging directory into place and
//! removes the old one. `manifest.json` is written last, so a directory
//! without it is never a finished image.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

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
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OutputError + 'a {
    move |source| OutputError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A staging directory for one build's outputs.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    target: PathBuf,
}

impl Staging {
    /// Creates the staging directory beside `target` (created if needed).
    pub fn new(target: &Path) -> Result<Staging, OutputError> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(parent)
            .map_err(io("creating a staging directory in", parent))?;
        Ok(Staging {
            dir,
            target: target.to_owned(),
        })
    }

    /// Path of `name` inside the staging directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates `name` for writing (buffered).
    pub fn create(&self, name: &str) -> Result<BufWriter<File>, OutputError> {
        let p = self.path(name);
        File::create(&p)
            .map(BufWriter::new)
            .map_err(io("creating", &p))
    }

    /// Writes `name` in one go.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), OutputError> {
        let p = self.path(name);
        let mut f = File::create(&p).map_err(io("creating", &p))?;
        f.write_all(data).map_err(io("writing", &p))?;
        f.sync_all().map_err(io("syncing", &p))
    }

    /// Moves the staged directory to its final place, replacing any
    /// previous output. Returns the final directory.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        let staged = self.dir.keep();
        for entry in std::fs::read_dir(&staged).map_err(io("listing", &staged))? {
            let p = entry.map_err(io("listing", &staged))?.path();
            if let Ok(f) = File::open(&p) {
                let _ = f.sync_all();
            }
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
            let _ = std::fs::remove_dir_all(&staged);
            return Err(OutputError::Io {
                what: "renaming the staging directory to",
                path: self.target.clone(),
                source,
            });
        }
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(self.target)
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
