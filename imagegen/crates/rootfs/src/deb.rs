//! Reading `.deb` files without root: `ar` archive → `control.tar.*` and
//! `data.tar.*` (xz, zstd, gzip or uncompressed), see deb(5).
//!
//! The data archive is unpacked into a [`Tree`]: owner, permission bits,
//! symlinks, hard links and device numbers come from the tar headers, never
//! from the build user, and nothing touches the host filesystem. Maintainer
//! scripts are not run; [`crate::effects`] replaces the ones that matter.
//!
//! Unpacking is all-or-nothing: on error the tree is left as it was.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::effects::usr::insert_merged;
use crate::tree::{normalize, Entry, EntryKind, ExistingDir, Tree, TreeError};

/// Errors from reading a `.deb`.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// The file could not be read from disk.
    #[error("reading {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The outer `ar` archive is malformed.
    #[error("{package}: malformed ar archive: {source}")]
    Ar {
        /// Package name if known, else "<.deb>".
        package: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `debian-binary` is missing or not format 2.x.
    #[error("{package}: unsupported .deb format {found:?} (want debian-binary 2.x)")]
    Format {
        /// Package name if known.
        package: String,
        /// What was found.
        found: String,
    },
    /// A required member (control.tar.*, data.tar.*) is missing.
    #[error("{package}: missing member {member}")]
    MissingMember {
        /// Package name if known.
        package: String,
        /// The member.
        member: &'static str,
    },
    /// A member uses a compression we do not read.
    #[error("{package}: member {member} has an unsupported compression")]
    Compression {
        /// Package name if known.
        package: String,
        /// The member name.
        member: String,
    },
    /// Decompressing or reading a tar member failed.
    #[error("{package}: reading {member}: {source}")]
    Tar {
        /// Package name if known.
        package: String,
        /// The member name.
        member: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The control file is missing or lacks a field.
    #[error("{package}: control file: {reason}")]
    Control {
        /// Package name if known.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// A data.tar entry could not be represented.
    #[error("{package}: entry {path:?}: {reason}")]
    BadEntry {
        /// Package name.
        package: String,
        /// The path in the archive.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The unpacked contents exceed [`UnpackOptions::max_unpacked_bytes`].
    #[error("{package}: unpacked contents exceed the limit of {limit} bytes")]
    TooLarge {
        /// Package name.
        package: String,
        /// The limit.
        limit: u64,
    },
    /// Inserting an entry into the tree failed.
    #[error("{package}: {source}")]
    Tree {
        /// Package name.
        package: String,
        /// The tree error.
        source: TreeError,
    },
}

/// How to unpack a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Map `/bin`, `/sbin`, `/lib`, `/lib64` into `/usr` while unpacking
    /// (see [`crate::effects::usr`]). Call [`crate::effects::merge_usr`]
    /// once as well, to create the top-level symlinks.
    pub merged_usr: bool,
    /// Refuse a package whose files add up to more than this (a guard
    /// against decompression bombs).
    pub max_unpacked_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            merged_usr: true,
            max_unpacked_bytes: 4 << 30,
        }
    }
}

/// What the control file says about an unpacked package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    /// `Package:`.
    pub package: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:`, when present.
    pub architecture: Option<String>,
    /// Entries of data.tar added to the tree (dropped merged-/usr links excluded).
    pub entries: usize,
    /// Bytes of regular file content in data.tar.
    pub content_bytes: u64,
}

/// The fields of a control file (deb-control(5)): `Field: value` lines,
/// continuation lines start with a space or tab.
pub fn parse_control(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if line.trim().is_empty() {
            // Binary packages have one paragraph; stop at its end.
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Members of a .deb that we need, raw (still compressed).
struct Members {
    control: Option<(String, Vec<u8>)>,
    data: Option<(String, Vec<u8>)>,
}

/// One member of an `ar` archive: its name and its bytes.
struct ArMember<'a> {
    name: String,
    data: &'a [u8],
}

/// Walks the members of the `ar` archive a `.deb` is.
///
/// Hand-written rather than the `ar` crate: that crate panics (slice index
/// out of range) on a GNU long-name reference past its name table, which
/// the `deb` fuzz target found; a `.deb` only ever uses short member names
/// (dpkg writes `debian-binary`, `control.tar.*`, `data.tar.*`), and the
/// format is 60-byte headers in front of the data, so every bound is checked
/// here against the input.
fn ar_members(deb: &[u8]) -> Result<Vec<ArMember<'_>>, std::io::Error> {
    use std::io::{Error, ErrorKind};
    const MAGIC: &[u8] = b"!<arch>\n";
    const HEADER: usize = 60;
    let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
    let mut rest = deb
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not an ar archive (no !<arch> magic)".into()))?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        if rest.len() < HEADER {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                format!("member header truncated: {} of {HEADER} bytes", rest.len()),
            ));
        }
        let (header, body) = rest.split_at(HEADER);
        if &header[58..60] != b"`\n" {
            return Err(bad("member header does not end with `\\n".into()));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end_matches(' ')
            .trim_end_matches('/')
            .to_string();
        let size_text = std::str::from_utf8(&header[48..58])
            .map_err(|_| bad(format!("member {name}: size is not ASCII")))?
            .trim_end_matches(' ');
        let size: usize = size_text
            .parse()
            .map_err(|_| bad(format!("member {name}: size {size_text:?} is not a number")))?;
        if body.len() < size {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                format!("member {name} truncated: {} of {size} bytes", body.len()),
            ));
        }
        let (data, after) = body.split_at(size);
        members.push(ArMember { name, data });
        // Members start on even offsets: an odd size is followed by "\n".
        rest = if size % 2 == 1 && !after.is_empty() {
            &after[1..]
        } else {
            after
        };
    }
    Ok(members)
}

fn read_members(deb: &[u8]) -> Result<Members, DebError> {
    let ar_err = |source| DebError::Ar {
        package: "<.deb>".into(),
        source,
    };
    let mut members = Members {
        control: None,
        data: None,
    };
    let mut first = true;
    for ArMember { name, data } in ar_members(deb).map_err(ar_err)? {
        let bytes = data.to_vec();
        if first {
            first = false;
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if name != "debian-binary" || !text.starts_with("2.") {
                return Err(DebError::Format {
                    package: "<.deb>".into(),
                    found: if name == "debian-binary" {
                        text
                    } else {
                        format!("first member {name}")
                    },
                });
            }
            continue;
        }
        if name.starts_with("control.tar") && members.control.is_none() {
            members.control = Some((name, bytes));
        } else if name.starts_with("data.tar") && members.data.is_none() {
            members.data = Some((name, bytes));
        }
    }
    if first {
        return Err(DebError::Format {
            package: "<.deb>".into(),
            found: "empty archive".into(),
        });
    }
    Ok(members)
}

/// A decompressing reader for a member, picked by its name's extension.
fn decompressor<'a>(
    package: &str,
    name: &str,
    bytes: &'a [u8],
) -> Result<Box<dyn Read + 'a>, DebError> {
    let tar_err = |source| DebError::Tar {
        package: package.to_string(),
        member: name.to_string(),
        source,
    };
    Ok(match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("tar") => Box::new(bytes),
        Some("xz") => Box::new(liblzma::read::XzDecoder::new(bytes)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::with_buffer(bytes).map_err(tar_err)?),
        Some("gz") => Box::new(flate2::read::GzDecoder::new(bytes)),
        _ => {
            return Err(DebError::Compression {
                package: package.to_string(),
                member: name.to_string(),
            })
        }
    })
}

/// Read the control file of a `.deb` given as bytes.
pub fn read_control(deb: &[u8]) -> Result<Vec<(String, String)>, DebError> {
    let members = read_members(deb)?;
    control_fields(&members)
}

fn control_fields(members: &Members) -> Result<Vec<(String, String)>, DebError> {
    let (name, bytes) = members.control.as_ref().ok_or(DebError::MissingMember {
        package: "<.deb>".into(),
        member: "control.tar",
    })?;
    let tar_err = |source| DebError::Tar {
        package: "<.deb>".into(),
        member: name.clone(),
        source,
    };
    let mut archive = tar::Archive::new(decompressor("<.deb>", name, bytes)?);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        if normalize(&path).ok().as_deref() == Some("/control") {
            let mut text = String::new();
            // control files are small; bound the read anyway.
            (&mut entry)
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(tar_err)?;
            return Ok(parse_control(&text));
        }
    }
    Err(DebError::Control {
        package: "<.deb>".into(),
        reason: format!("{name} has no ./control"),
    })
}

impl Tree {
    /// Unpack a `.deb` read from disk. See [`Tree::unpack_deb`].
    pub fn unpack_deb_file(
        &mut self,
        path: &Path,
        opts: &UnpackOptions,
    ) -> Result<DebInfo, DebError> {
        let bytes = std::fs::read(path).map_err(|source| DebError::ReadFile {
            path: path.display().to_string(),
            source,
        })?;
        self.unpack_deb(&bytes, opts)
    }

    /// Unpack the data of a `.deb` (given as bytes) into the tree. On error
    /// the tree is unchanged.
    pub fn unpack_deb(&mut self, deb: &[u8], opts: &UnpackOptions) -> Result<DebInfo, DebError> {
        let members = read_members(deb)?;
        let fields = control_fields(&members)?;
        let package = field(&fields, "Package")
            .ok_or_else(|| DebError::Control {
                package: "<.deb>".into(),
                reason: "no Package field".into(),
            })?
            .to_string();
        let version = field(&fields, "Version")
            .ok_or_else(|| DebError::Control {
                package: package.clone(),
                reason: "no Version field".into(),
            })?
            .to_string();
        let architecture = field(&fields, "Architecture").map(str::to_string);
        let (data_name, data) = members
            .data
            .as_ref()
            .ok_or_else(|| DebError::MissingMember {
                package: package.clone(),
                member: "data.tar",
            })?;
        let mut staged = self.clone();
        let (entries, content_bytes) = unpack_data(&mut staged, &package, data_name, data, opts)?;
        *self = staged;
        tracing::debug!(%package, %version, entries, content_bytes, "unpacked");
        Ok(DebInfo {
            package,
            version,
            architecture,
            entries,
            content_bytes,
        })
    }
}

fn unpack_data(
    tree: &mut Tree,
    package: &str,
    member: &str,
    data: &[u8],
    opts: &UnpackOptions,
) -> Result<(usize, u64), DebError> {
    let tar_err = |source| DebError::Tar {
        package: package.to_string(),
        member: member.to_string(),
        source,
    };
    let bad = |path: &str, reason: String| DebError::BadEntry {
        package: package.to_string(),
        path: path.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(decompressor(package, member, data)?);
    let mut count = 0usize;
    let mut total = 0u64;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw_path = entry.path_bytes().into_owned();
        let raw_path = String::from_utf8(raw_path).map_err(|e| {
            bad(
                &String::from_utf8_lossy(e.as_bytes()),
                "path is not UTF-8".into(),
            )
        })?;
        let path = normalize(&raw_path).map_err(|e| bad(&raw_path, e.to_string()))?;
        // Messages name the normalised path ("/usr/bin/x").
        let raw_path = path.clone();
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| bad(&raw_path, format!("mode: {e}")))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| bad(&raw_path, format!("uid: {e}")))?;
        let gid = header
            .gid()
            .map_err(|e| bad(&raw_path, format!("gid: {e}")))?;
        let uid = u32::try_from(uid).map_err(|_| bad(&raw_path, format!("uid {uid} too large")))?;
        let gid = u32::try_from(gid).map_err(|_| bad(&raw_path, format!("gid {gid} too large")))?;
        let etype = header.entry_type();
        let link_name = || -> Result<String, DebError> {
            let l = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&raw_path, "link without a target".into()))?;
            String::from_utf8(l.into_owned())
                .map_err(|_| bad(&raw_path, "link target is not UTF-8".into()))
        };
        let device = |what: &str| -> Result<(u32, u32), DebError> {
            let major = header
                .device_major()
                .map_err(|e| bad(&raw_path, format!("{what} major: {e}")))?
                .unwrap_or(0);
            let minor = header
                .device_minor()
                .map_err(|e| bad(&raw_path, format!("{what} minor: {e}")))?
                .unwrap_or(0);
            Ok((major, minor))
        };
        let mut link_meta = None;
        let kind = match etype {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if total.saturating_add(size) > opts.max_unpacked_bytes {
                    return Err(DebError::TooLarge {
                        package: package.to_string(),
                        limit: opts.max_unpacked_bytes,
                    });
                }
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(tar_err)?;
                total += buf.len() as u64;
                EntryKind::File(Arc::from(buf))
            }
            tar::EntryType::Symlink => EntryKind::Symlink(link_name()?),
            tar::EntryType::Link => {
                let target = normalize(&link_name()?).map_err(|e| bad(&raw_path, e.to_string()))?;
                let target = if opts.merged_usr {
                    crate::effects::usr::merged_path(&target)
                } else {
                    target
                };
                match tree.resolve(&target) {
                    // One inode, two names: the link takes the target's metadata.
                    Some((
                        _,
                        e @ Entry {
                            kind: EntryKind::File(_),
                            ..
                        },
                    )) => {
                        link_meta = Some((e.mode, e.uid, e.gid));
                        e.kind.clone()
                    }
                    _ => {
                        return Err(bad(
                            &raw_path,
                            format!(
                            "hard link to {target}, which is not a regular file unpacked before it"
                        ),
                        ))
                    }
                }
            }
            tar::EntryType::Char => {
                let (major, minor) = device("char device")?;
                EntryKind::CharDevice { major, minor }
            }
            tar::EntryType::Block => {
                let (major, minor) = device("block device")?;
                EntryKind::BlockDevice { major, minor }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            // PAX/GNU extension headers are consumed by the tar crate; any
            // other type is not something dpkg would install either.
            other => {
                return Err(bad(
                    &raw_path,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        };
        let (mode, uid, gid) = link_meta.unwrap_or((mode, uid, gid));
        let entry = Entry {
            kind,
            mode,
            uid,
            gid,
        };
        if path == "/" {
            continue;
        }
        let tree_err = |source| DebError::Tree {
            package: package.to_string(),
            source,
        };
        if opts.merged_usr {
            if insert_merged(tree, &path, entry, ExistingDir::Keep)
                .map_err(tree_err)?
                .is_some()
            {
                count += 1;
            }
        } else {
            tree.insert(&path, entry, ExistingDir::Keep)
                .map_err(tree_err)?;
            count += 1;
        }
    }
    Ok((count, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paragraph_and_continuations() {
        let f = parse_control(
            "Package: etcd-server\nVersion: 3.4.23-4+b6\nDescription: short\n more text\n .\n\nPackage: other\n",
        );
        assert_eq!(field(&f, "package"), Some("etcd-server"));
        assert_eq!(field(&f, "Version"), Some("3.4.23-4+b6"));
        assert_eq!(field(&f, "Description"), Some("short\nmore text\n."));
        assert_eq!(f.len(), 3);
    }

    /// The fuzz target's find: a GNU long-name reference (`/2222…`) with
    /// no name table made the `ar` crate index out of range.
    #[test]
    fn gnu_name_reference_and_bad_headers_are_errors_not_panics() {
        let mut header = b"/22222222222222".to_vec();
        header.resize(48, b'2');
        header.extend_from_slice(b"0         `\n");
        let deb = [b"!<arch>\n".as_slice(), &header].concat();
        assert!(matches!(read_members(&deb), Err(DebError::Format { .. })));
        for bad in [
            b"!<arch>\nshort".to_vec(),
            [b"!<arch>\n".as_slice(), &[b' '; 60]].concat(),
            b"not an ar archive".to_vec(),
        ] {
            assert!(matches!(read_members(&bad), Err(DebError::Ar { .. })));
        }
        // A member that claims more bytes than there are.
        let mut h = format!("{:<16}{:<32}{:<10}`\n", "debian-binary", "", 100).into_bytes();
        h.extend_from_slice(b"2.0\n");
        let deb = [b"!<arch>\n".as_slice(), &h].concat();
        let err = read_members(&deb)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("truncated: 4 of 100"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut t = Tree::new();
        let err = t
            .unpack_deb(b"not an ar archive", &UnpackOptions::default())
            .unwrap_err();
        assert!(matches!(err, DebError::Ar { .. }), "{err}");
        assert!(t.is_empty());
    }
}
