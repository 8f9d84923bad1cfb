//! Laying a host directory (`overlays/<role>/`) over the tree.
//!
//! The host's owners and exact modes are build-machine accidents, so they
//! are not copied. The rule:
//! - everything is owned by root (uid 0, gid 0);
//! - directories are 0755; a directory that already exists in the tree keeps
//!   its mode and owner;
//! - regular files are 0755 when the host file has any execute bit, else 0644;
//! - symlinks are copied with their target verbatim;
//! - other file types (sockets, fifos, devices) are an error.
//!
//! Exceptions are written in a sidecar file `.rootfs-attrs` at the top of the
//! overlay directory (it is not copied). Each line is
//! `PATH MODE UID GID` (mode in octal, ids as numbers), `#` starts a comment:
//!
//! ```text
//! # the agent's secrets directory
//! /etc/kubeboot        0700 0 0
//! /etc/kubeboot/token  0600 0 0
//! ```
//!
//! A sidecar line may also name an entry that came from a package; it is an
//! error when the path does not exist after the overlay is applied.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::tree::{Entry, ExistingDir, Tree, TreeError};

/// The sidecar file name, at the top of an overlay directory.
pub const ATTRS_FILE: &str = ".rootfs-attrs";

/// Errors from applying an overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Reading the host directory failed.
    #[error("overlay {path}: {source}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A host file name is not UTF-8.
    #[error("overlay {path}: file name is not UTF-8")]
    NotUtf8 {
        /// The host path.
        path: PathBuf,
    },
    /// A host file is not a regular file, directory or symlink.
    #[error("overlay {path}: unsupported file type (only files, directories and symlinks)")]
    FileType {
        /// The host path.
        path: PathBuf,
    },
    /// A sidecar line is malformed or names a missing path.
    #[error("{file}:{line}: {reason}")]
    Attrs {
        /// The sidecar file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The tree refused an entry.
    #[error("overlay {path}: {source}")]
    Tree {
        /// The host path.
        path: PathBuf,
        /// The tree error.
        source: TreeError,
    },
}

/// What an overlay changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayReport {
    /// Tree paths written, in order.
    pub paths: Vec<String>,
    /// Sidecar lines applied.
    pub attrs_applied: usize,
}

/// One parsed sidecar line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrLine {
    /// Tree path.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Parse a sidecar's text; errors carry the 1-based line number.
pub fn parse_attrs(text: &str) -> Result<Vec<AttrLine>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [path, mode, uid, gid] = f[..] else {
            return Err((i + 1, format!("want `PATH MODE UID GID`, got {line:?}")));
        };
        let mode = u32::from_str_radix(mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| (i + 1, format!("mode {mode:?} is not octal 0..7777")))?;
        let uid = uid
            .parse()
            .map_err(|_| (i + 1, format!("uid {uid:?} is not a number")))?;
        let gid = gid
            .parse()
            .map_err(|_| (i + 1, format!("gid {gid:?} is not a number")))?;
        let path = crate::tree::normalize(path).map_err(|e| (i + 1, e.to_string()))?;
        out.push(AttrLine {
            path,
            mode,
            uid,
            gid,
        });
    }
    Ok(out)
}

impl Tree {
    /// Lay the host directory `dir` over the tree (rules in the module docs).
    /// On error the tree is unchanged.
    pub fn overlay_dir(&mut self, dir: &Path) -> Result<OverlayReport, OverlayError> {
        let mut staged = self.clone();
        let mut report = OverlayReport::default();
        walk(&mut staged, dir, "/", &mut report)?;
        let attrs_path = dir.join(ATTRS_FILE);
        match std::fs::read_to_string(&attrs_path) {
            Ok(text) => {
                let lines = parse_attrs(&text).map_err(|(line, reason)| OverlayError::Attrs {
                    file: attrs_path.clone(),
                    line,
                    reason,
                })?;
                for (i, a) in lines.iter().enumerate() {
                    let e = staged.get_mut(&a.path).ok_or_else(|| OverlayError::Attrs {
                        file: attrs_path.clone(),
                        line: i + 1,
                        reason: format!("{} does not exist in the tree", a.path),
                    })?;
                    e.mode = a.mode;
                    e.uid = a.uid;
                    e.gid = a.gid;
                    report.attrs_applied += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OverlayError::Io {
                    path: attrs_path,
                    source,
                })
            }
        }
        *self = staged;
        Ok(report)
    }
}

fn walk(
    tree: &mut Tree,
    host: &Path,
    at: &str,
    report: &mut OverlayReport,
) -> Result<(), OverlayError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OverlayError::Io { path, source }
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(host)
        .map_err(io(host))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(host))?;
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| OverlayError::NotUtf8 { path: path.clone() })?
            .to_string();
        if at == "/" && name == ATTRS_FILE {
            continue;
        }
        let target = crate::tree::join(at, &name);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let ft = meta.file_type();
        let tree_err = |source| OverlayError::Tree {
            path: path.clone(),
            source,
        };
        let stored = if ft.is_dir() {
            let real = tree
                .insert(&target, Entry::dir(0o755), ExistingDir::Keep)
                .map_err(tree_err)?;
            report.paths.push(real.clone());
            walk(tree, &path, &real, report)?;
            continue;
        } else if ft.is_file() {
            let content = std::fs::read(&path).map_err(io(&path))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            tree.insert(&target, Entry::file(content, mode), ExistingDir::Keep)
        } else if ft.is_symlink() {
            let link = std::fs::read_link(&path).map_err(io(&path))?;
            let link = link
                .to_str()
                .ok_or_else(|| OverlayError::NotUtf8 { path: path.clone() })?
                .to_string();
            tree.insert(&target, Entry::symlink(link), ExistingDir::Keep)
        } else {
            return Err(OverlayError::FileType { path });
        };
        report.paths.push(stored.map_err(tree_err)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::EntryKind;

    #[test]
    fn attrs_parse_table() {
        let ok = parse_attrs("# c\n/etc/x 0600 0 42 # tail\n\n etc/y 4755 1 2\n").unwrap();
        assert_eq!(
            ok,
            [
                AttrLine {
                    path: "/etc/x".into(),
                    mode: 0o600,
                    uid: 0,
                    gid: 42
                },
                AttrLine {
                    path: "/etc/y".into(),
                    mode: 0o4755,
                    uid: 1,
                    gid: 2
                },
            ]
        );
        for (bad, line) in [
            ("/x 0600 0", 1),
            ("\n/x 0800 0 0", 2),
            ("/x 0600 root 0", 1),
            ("/x 10000 0 0", 1),
        ] {
            assert_eq!(parse_attrs(bad).unwrap_err().0, line, "{bad:?}");
        }
    }

    #[test]
    fn overlay_normalises_modes_and_applies_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/kubeboot")).unwrap();
        std::fs::create_dir_all(d.join("usr/local/bin")).unwrap();
        std::fs::write(d.join("etc/kubeboot/token"), b"s3cret").unwrap();
        std::fs::set_permissions(
            d.join("etc/kubeboot/token"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        std::fs::write(d.join("usr/local/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            d.join("usr/local/bin/tool"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("tool", d.join("usr/local/bin/t")).unwrap();
        std::fs::write(
            d.join(ATTRS_FILE),
            "/etc/kubeboot 0700 0 0\n/etc/kubeboot/token 0600 0 0\n",
        )
        .unwrap();

        let mut t = Tree::new();
        t.add_dir("/etc", 0o755, 0, 0).unwrap();
        t.add_dir("/usr/local", 0o2775, 0, 50).unwrap();
        let report = t.overlay_dir(d).unwrap();
        assert_eq!(report.attrs_applied, 2);
        assert!(t.get("/.rootfs-attrs").is_none());
        let e = t.get("/etc/kubeboot/token").unwrap();
        assert_eq!((e.mode, e.uid, e.gid), (0o600, 0, 0));
        assert_eq!(t.get("/etc/kubeboot").unwrap().mode, 0o700);
        assert_eq!(t.get("/usr/local/bin/tool").unwrap().mode, 0o755);
        assert_eq!(
            t.get("/usr/local/bin/t").unwrap().kind,
            EntryKind::Symlink("tool".into())
        );
        // an existing directory keeps its mode and owner
        let ul = t.get("/usr/local").unwrap();
        assert_eq!((ul.mode, ul.gid), (0o2775, 50));
    }

    #[test]
    fn sidecar_naming_missing_path_fails_and_leaves_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::fs::write(dir.path().join(ATTRS_FILE), "/nope 0600 0 0\n").unwrap();
        let mut t = Tree::new();
        let err = t.overlay_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("/nope does not exist"), "{err}");
        assert!(t.is_empty());
    }
}
