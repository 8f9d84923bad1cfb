//! The initramfs writer and reader: cpio `newc` (the format the kernel
//! unpacks, see the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`),
//! zstd-compressed.
//!
//! Output is a pure function of the tree, the epoch and the level:
//! - entries in path order, parents before children, `/` itself omitted
//!   (the kernel's rootfs already exists);
//! - every mtime is the given epoch (`SOURCE_DATE_EPOCH`);
//! - inode numbers are a sequence from 1 in path order; files that share
//!   content storage and metadata (hard links, see [`crate::tree`]) share an
//!   inode, the first name carries the data and later names have size 0
//!   (the kernel links them to the first);
//! - nlink: files, the number of names; directories, 2 + subdirectories;
//! - zstd runs single-threaded at a fixed level, without a checksum.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::tree::{Entry, EntryKind, Tree};

/// The zstd level used unless the caller picks another: a balance between
/// build time and size (kernel decompression speed barely depends on it).
pub const DEFAULT_LEVEL: i32 = 9;

/// Errors from writing or reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Writing to the output failed.
    #[error("writing the initramfs: {0}")]
    Write(#[source] io::Error),
    /// newc stores mtimes, sizes and inode numbers in 32 bits.
    #[error("{what} {value} does not fit the 32-bit cpio newc field{path}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u64,
        /// The path, formatted as " (at /x)", or empty.
        path: String,
    },
    /// Reading the archive failed or it is malformed.
    #[error("reading the initramfs at entry {index}: {source}")]
    Read {
        /// Index of the entry being read.
        index: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// The zstd level is outside what the library supports.
    #[error("zstd level {0} is outside 1..=22")]
    Level(i32),
}

/// Figures about a written initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Number of cpio entries, the trailer excluded.
    pub entries: usize,
    /// Size of the uncompressed cpio archive.
    pub uncompressed_bytes: u64,
    /// Size of the zstd output.
    pub compressed_bytes: u64,
}

/// A writer that counts bytes.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn fit(what: &'static str, value: u64, path: &str) -> Result<u32, CpioError> {
    u32::try_from(value).map_err(|_| CpioError::TooLarge {
        what,
        value,
        path: if path.is_empty() {
            String::new()
        } else {
            format!(" (at {path})")
        },
    })
}

/// Write `tree` as an uncompressed newc archive to `out`. Returns the number
/// of entries written (trailer excluded).
pub fn write_cpio(tree: &Tree, epoch: u64, out: impl Write) -> Result<usize, CpioError> {
    let mtime = fit("mtime (SOURCE_DATE_EPOCH)", epoch, "")?;

    // Subdirectory counts for directory nlink, and hard-link groups: files
    // that share content storage *and* metadata become one inode.
    let mut subdirs: HashMap<&str, u32> = HashMap::new();
    let mut groups: HashMap<(usize, u32, u32, u32), u32> = HashMap::new();
    for (path, entry) in tree.iter() {
        match &entry.kind {
            EntryKind::Dir => {
                if let Some((parent, _)) = crate::tree::split_parent(path) {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
            EntryKind::File(c) if !c.is_empty() => {
                *groups
                    .entry((c.as_ptr() as usize, entry.mode, entry.uid, entry.gid))
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    let mut out = out;
    let mut next_ino: u32 = 1;
    let mut group_ino: HashMap<(usize, u32, u32, u32), u32> = HashMap::new();
    let mut count = 0usize;
    for (path, entry) in tree.iter() {
        if path == "/" {
            continue;
        }
        let name = &path[1..];
        let Entry {
            kind,
            mode,
            uid,
            gid,
        } = entry;
        let mut ino = next_ino;
        let mut nlink = 1;
        let mut data: &[u8] = &[];
        let (mut rmaj, mut rmin) = (0, 0);
        match kind {
            EntryKind::Dir => nlink = 2 + subdirs.get(path).copied().unwrap_or(0),
            EntryKind::File(c) => {
                data = c;
                if !c.is_empty() {
                    let key = (c.as_ptr() as usize, *mode, *uid, *gid);
                    let n = groups.get(&key).copied().unwrap_or(1);
                    if n > 1 {
                        nlink = n;
                        match group_ino.get(&key) {
                            // A later name of the inode: no data, same ino.
                            Some(&first) => {
                                ino = first;
                                data = &[];
                            }
                            None => {
                                group_ino.insert(key, ino);
                            }
                        }
                    }
                }
            }
            EntryKind::Symlink(t) => data = t.as_bytes(),
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                rmaj = *major;
                rmin = *minor;
            }
            EntryKind::Fifo => {}
        }
        if ino == next_ino {
            next_ino = next_ino.checked_add(1).ok_or(CpioError::TooLarge {
                what: "inode count",
                value: u64::from(u32::MAX) + 1,
                path: String::new(),
            })?;
        }
        let size = fit("file size", data.len() as u64, path)?;
        let mut w = ::cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(kind.type_bits() | (mode & 0o7777))
            .uid(*uid)
            .gid(*gid)
            .nlink(nlink)
            .mtime(mtime)
            .rdev_major(rmaj)
            .rdev_minor(rmin)
            .write(&mut out, size);
        w.write_all(data).map_err(CpioError::Write)?;
        w.finish().map_err(CpioError::Write)?;
        count += 1;
    }
    ::cpio::newc::trailer(&mut out).map_err(CpioError::Write)?;
    Ok(count)
}

/// Write `tree` as a zstd-compressed newc initramfs to `out`, deterministic
/// for the same tree, `epoch` and `level` (see the module docs).
pub fn write_initramfs(
    tree: &Tree,
    epoch: u64,
    level: i32,
    out: impl Write,
) -> Result<Stats, CpioError> {
    if !(1..=22).contains(&level) {
        return Err(CpioError::Level(level));
    }
    let compressed = Counting {
        inner: out,
        count: 0,
    };
    let mut encoder =
        zstd::stream::write::Encoder::new(compressed, level).map_err(CpioError::Write)?;
    // Deterministic output: no worker threads, no checksum (the kernel does not need it).
    encoder.include_checksum(false).map_err(CpioError::Write)?;
    let mut uncompressed = Counting {
        inner: encoder,
        count: 0,
    };
    let entries = write_cpio(tree, epoch, &mut uncompressed)?;
    let uncompressed_bytes = uncompressed.count;
    let mut compressed = uncompressed.inner.finish().map_err(CpioError::Write)?;
    compressed.flush().map_err(CpioError::Write)?;
    Ok(Stats {
        entries,
        uncompressed_bytes,
        compressed_bytes: compressed.count,
    })
}

/// One entry of an archive, as listed by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Path inside the archive (no leading `/`).
    pub path: String,
    /// Full mode including the file type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Data size stored in the archive.
    pub size: u32,
    /// Inode number.
    pub ino: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device numbers for device nodes.
    pub rdev: (u32, u32),
    /// Symlink target, for symlinks.
    pub link_target: Option<String>,
}

impl ListedEntry {
    /// A one-line rendering: `drwxr-xr-x 0 0 0 usr/bin` style, used by
    /// `imagegen inspect` and the golden listing tests.
    pub fn line(&self) -> String {
        let t = match self.mode & 0o170000 {
            0o040000 => 'd',
            0o120000 => 'l',
            0o020000 => 'c',
            0o060000 => 'b',
            0o010000 => 'p',
            0o140000 => 's',
            _ => '-',
        };
        let mut perms = String::new();
        for (i, c) in "rwxrwxrwx".chars().enumerate() {
            perms.push(if self.mode & (0o400 >> i) != 0 {
                c
            } else {
                '-'
            });
        }
        let mut s = format!(
            "{t}{perms} {:04o} {:>5} {:>5} {:>9} {}",
            self.mode & 0o7777,
            self.uid,
            self.gid,
            self.size,
            self.path
        );
        if t == 'c' || t == 'b' {
            s.push_str(&format!(" [{},{}]", self.rdev.0, self.rdev.1));
        }
        if let Some(l) = &self.link_target {
            s.push_str(" -> ");
            s.push_str(l);
        }
        if self.nlink > 1 && t == '-' {
            s.push_str(&format!(" (ino {} nlink {})", self.ino, self.nlink));
        }
        s
    }
}

/// The zstd frame magic number.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// List the entries of an initramfs: zstd-compressed or plain newc
/// (detected from the first bytes). Stops at `TRAILER!!!`; a missing
/// trailer is an error (a truncated archive is not silently accepted).
pub fn list(reader: impl Read) -> Result<Vec<ListedEntry>, CpioError> {
    let mut reader = io::BufReader::new(reader);
    let head = {
        use io::BufRead;
        reader
            .fill_buf()
            .map_err(|source| CpioError::Read { index: 0, source })?
            .to_vec()
    };
    if head.starts_with(&ZSTD_MAGIC) {
        let dec = zstd::stream::read::Decoder::with_buffer(reader)
            .map_err(|source| CpioError::Read { index: 0, source })?;
        list_newc(dec)
    } else {
        list_newc(reader)
    }
}

fn list_newc<R: Read>(mut inner: R) -> Result<Vec<ListedEntry>, CpioError> {
    let mut out = Vec::new();
    loop {
        let index = out.len();
        let rerr = |source| CpioError::Read { index, source };
        let mut r = ::cpio::NewcReader::new(inner).map_err(rerr)?;
        let e = r.entry();
        if e.is_trailer() {
            return Ok(out);
        }
        let mut listed = ListedEntry {
            path: e.name().to_string(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            size: e.file_size(),
            ino: e.ino(),
            nlink: e.nlink(),
            mtime: e.mtime(),
            rdev: (e.rdev_major(), e.rdev_minor()),
            link_target: None,
        };
        if listed.mode & 0o170000 == 0o120000 {
            let mut t = Vec::new();
            (&mut r).take(4096).read_to_end(&mut t).map_err(rerr)?;
            listed.link_target = Some(String::from_utf8_lossy(&t).into_owned());
        }
        inner = r.finish().map_err(rerr)?;
        out.push(listed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rejects_bad_level_and_epoch() {
        let t = Tree::new();
        assert!(matches!(
            write_initramfs(&t, 0, 0, Vec::new()),
            Err(CpioError::Level(0))
        ));
        assert!(matches!(
            write_initramfs(&t, 1 << 33, 3, Vec::new()),
            Err(CpioError::TooLarge { .. })
        ));
    }

    #[test]
    fn hard_links_share_inode_and_data_once() {
        let mut t = Tree::new();
        let c: Arc<[u8]> = Arc::from(&b"same"[..]);
        t.insert(
            "/a",
            Entry::file(c.clone(), 0o755),
            crate::tree::ExistingDir::Keep,
        )
        .unwrap();
        t.insert(
            "/b",
            Entry::file(c.clone(), 0o755),
            crate::tree::ExistingDir::Keep,
        )
        .unwrap();
        // same storage but different mode: a separate inode with its own data
        t.insert("/c", Entry::file(c, 0o644), crate::tree::ExistingDir::Keep)
            .unwrap();
        let mut buf = Vec::new();
        write_cpio(&t, 7, &mut buf).unwrap();
        let l = list(&buf[..]).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].ino, l[0].nlink, l[0].size), (1, 2, 4));
        assert_eq!((l[1].ino, l[1].nlink, l[1].size), (1, 2, 0));
        assert_eq!((l[2].ino, l[2].nlink, l[2].size), (2, 1, 4));
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let mut t = Tree::new();
        t.add_file("/x", b"abc".to_vec(), 0o644, 0, 0).unwrap();
        let mut buf = Vec::new();
        write_cpio(&t, 7, &mut buf).unwrap();
        buf.truncate(buf.len() - 20);
        assert!(matches!(
            list(&buf[..]),
            Err(CpioError::Read { index: 1, .. })
        ));
    }
}
