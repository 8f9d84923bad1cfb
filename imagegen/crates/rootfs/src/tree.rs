//! In-memory root filesystem: a sorted map from absolute path to [`Entry`].
//!
//! Ownership, permission bits and device numbers live here as plain data, so
//! building a root filesystem never calls `chown` or `mknod` and needs no root.
//! Modification times are not stored: the writers clamp every entry to one
//! timestamp (`SOURCE_DATE_EPOCH`), which is what makes builds reproducible.
//!
//! Invariants kept by every mutating method:
//! - keys are normalised absolute paths (`/`, `/usr`, `/usr/bin/env`; no
//!   trailing slash, no `.` or `..` components);
//! - `/` always exists and is a directory;
//! - the parent of every entry exists and is a directory (never a symlink), so
//!   iterating in key order yields parents before children.
//!
//! Path arguments are resolved like a real filesystem rooted at `/` would do
//! it: symlinks in *parent* components are followed inside the tree (so adding
//! `/bin/sh` when `/bin -> usr/bin` lands on `/usr/bin/sh`); the last component
//! is never followed.
//!
//! Hard links: a tree has no inode numbers. A hard link is a second path whose
//! [`EntryKind::File`] shares the same `Arc` content as the first; the cpio
//! writer turns files that share content *storage* (and metadata) back into one
//! inode with several names. Replacing one of the paths later gives it its own
//! content, like breaking the link.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Errors from tree operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// The path has a `..` component, is empty, or contains a NUL byte.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A parent component exists but is neither a directory nor a symlink to one.
    #[error("cannot create {path}: parent {parent} is not a directory")]
    NotADirectory {
        /// The path being created.
        path: String,
        /// The offending parent component.
        parent: String,
    },
    /// A parent component does not exist and parents were not to be created.
    #[error("cannot create {path}: parent {parent} does not exist")]
    MissingParent {
        /// The path being created.
        path: String,
        /// The missing parent.
        parent: String,
    },
    /// Following symlinks looped or went too deep.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// Replacing a non-empty directory with something that is not a directory.
    #[error("cannot replace non-empty directory {path} with a {new_kind}")]
    DirectoryNotEmpty {
        /// The directory.
        path: String,
        /// The kind of the entry that was to replace it.
        new_kind: &'static str,
    },
    /// The root directory cannot be removed or replaced.
    #[error("the root directory cannot be removed or replaced")]
    Root,
}

/// What an entry is, with its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; the content is shared (cheap clones, hard links).
    File(Arc<[u8]>),
    /// A symbolic link with its target, verbatim.
    Symlink(String),
    /// A character device node.
    CharDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    /// A short name for messages and listings: `dir`, `file`, `symlink`, ...
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File(_) => "file",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::CharDevice { .. } => "char device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "fifo",
        }
    }

    /// The `S_IFMT` file type bits for this kind.
    pub fn type_bits(&self) -> u32 {
        match self {
            EntryKind::Dir => 0o040000,
            EntryKind::File(_) => 0o100000,
            EntryKind::Symlink(_) => 0o120000,
            EntryKind::CharDevice { .. } => 0o020000,
            EntryKind::BlockDevice { .. } => 0o060000,
            EntryKind::Fifo => 0o010000,
        }
    }
}

/// One filesystem object: kind plus ownership and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl Entry {
    /// A root-owned directory with the given permission bits.
    pub fn dir(mode: u32) -> Self {
        Entry {
            kind: EntryKind::Dir,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned regular file.
    pub fn file(content: impl Into<Arc<[u8]>>, mode: u32) -> Self {
        Entry {
            kind: EntryKind::File(content.into()),
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned symlink (mode 0777, as Linux reports them).
    pub fn symlink(target: impl Into<String>) -> Self {
        Entry {
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }

    /// The same entry with another owner.
    pub fn owned(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Size in bytes as an archive would store it: file length, symlink target length, else 0.
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File(c) => c.len() as u64,
            EntryKind::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }
}

/// What to do when the path to add already exists as a directory and the new entry is one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingDir {
    /// Keep the existing directory's mode and owner (what dpkg does).
    Keep,
    /// Take the new entry's mode and owner.
    Update,
}

/// Symlink hops allowed while resolving one path (Linux allows 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Normalise a path to the tree's key form: absolute, no `.`/empty components,
/// no trailing slash. Relative paths (`usr/bin`, `./usr/bin`) are taken from `/`.
pub fn normalize(path: &str) -> Result<String, TreeError> {
    if path.contains('\0') {
        return Err(TreeError::InvalidPath {
            path: path.to_string(),
            reason: "contains a NUL byte",
        });
    }
    let mut out = String::with_capacity(path.len() + 1);
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(TreeError::InvalidPath {
                    path: path.to_string(),
                    reason: "has a '..' component",
                })
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Split a normalised path into (parent, name). `/` has no parent.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let idx = path.rfind('/')?;
    let parent = if idx == 0 { "/" } else { &path[..idx] };
    Some((parent, &path[idx + 1..]))
}

/// Join a normalised directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolve a symlink `target` found at `link_path` to a normalised absolute
/// path, lexically (`..` above `/` stays at `/`). Used for in-tree resolution.
pub fn resolve_target(link_path: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        if let Some((parent, _)) = split_parent(link_path) {
            parts.extend(parent.split('/').filter(|c| !c.is_empty()));
        }
    }
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }
}

/// The relative path from directory `from_dir` to `to` (both normalised absolute).
pub fn relative_path(from_dir: &str, to: &str) -> String {
    let from: Vec<&str> = from_dir.split('/').filter(|c| !c.is_empty()).collect();
    let to_parts: Vec<&str> = to.split('/').filter(|c| !c.is_empty()).collect();
    let common = from
        .iter()
        .zip(to_parts.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = std::iter::repeat_n("..", from.len() - common).collect();
    parts.extend(&to_parts[common..]);
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// An in-memory root filesystem. See the module docs for its invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// An empty tree: only `/`, mode 0755, owned by root.
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert("/".to_string(), Entry::dir(0o755));
        Tree { entries }
    }

    /// Number of entries, `/` included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when only `/` exists.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 1
    }

    /// The entry stored at exactly this path (no symlink is followed).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let key = normalize(path).ok()?;
        self.entries.get(&key)
    }

    /// Mutable access to the entry at exactly this path, to change mode or owner.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        let key = normalize(path).ok()?;
        self.entries.get_mut(&key)
    }

    /// True when an entry exists at exactly this path.
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Follow symlinks in every component, including the last, inside the tree.
    /// Returns the final path and its entry, or `None` when it does not exist
    /// (or loops).
    pub fn resolve(&self, path: &str) -> Option<(String, &Entry)> {
        let key = normalize(path).ok()?;
        let mut hops = 0;
        let resolved = self.resolve_inner(&key, true, &mut hops).ok()??;
        let entry = self.entries.get(&resolved)?;
        Some((resolved, entry))
    }

    /// Resolve `path`: follow symlinks in parents (and in the last component
    /// when `follow_last`). Ok(None) when a component is missing.
    fn resolve_inner(
        &self,
        path: &str,
        follow_last: bool,
        hops: &mut usize,
    ) -> Result<Option<String>, TreeError> {
        let mut cur = "/".to_string();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let cand = join(&cur, comp);
            match self.entries.get(&cand) {
                None => {
                    if last {
                        return Ok(Some(cand));
                    }
                    return Ok(None);
                }
                Some(Entry {
                    kind: EntryKind::Symlink(target),
                    ..
                }) if !last || follow_last => {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err(TreeError::SymlinkLoop {
                            path: path.to_string(),
                        });
                    }
                    let abs = resolve_target(&cand, target);
                    match self.resolve_inner(&abs, true, hops)? {
                        Some(p) => cur = p,
                        None => return Ok(None),
                    }
                }
                Some(_) => cur = cand,
            }
        }
        Ok(Some(cur))
    }

    /// Resolve the parent directory of `key` (normalised), following symlinks,
    /// creating missing directories (0755 root) when `create` is set.
    /// Returns the real path at which `key` should live.
    fn place(&mut self, key: &str, create: bool) -> Result<String, TreeError> {
        let (parent, name) = split_parent(key).ok_or(TreeError::Root)?;
        let mut cur = "/".to_string();
        let mut hops = 0;
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            let cand = join(&cur, comp);
            match self.entries.get(&cand) {
                None => {
                    if !create {
                        return Err(TreeError::MissingParent {
                            path: key.to_string(),
                            parent: cand,
                        });
                    }
                    self.entries.insert(cand.clone(), Entry::dir(0o755));
                    cur = cand;
                }
                Some(e) => match &e.kind {
                    EntryKind::Dir => cur = cand,
                    EntryKind::Symlink(target) => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(TreeError::SymlinkLoop {
                                path: key.to_string(),
                            });
                        }
                        let abs = resolve_target(&cand, target);
                        let mut h = hops;
                        let resolved = self.resolve_inner(&abs, true, &mut h)?;
                        hops = h;
                        match resolved {
                            Some(p) if self.entries.get(&p).is_some_and(Entry::is_dir) => cur = p,
                            Some(p) if !self.entries.contains_key(&p) && create => {
                                // Dangling symlink to a directory-to-be: create it.
                                let real = self.place(&p, true)?;
                                self.entries.insert(real.clone(), Entry::dir(0o755));
                                cur = real;
                            }
                            _ => {
                                return Err(TreeError::NotADirectory {
                                    path: key.to_string(),
                                    parent: cand,
                                })
                            }
                        }
                    }
                    _ => {
                        return Err(TreeError::NotADirectory {
                            path: key.to_string(),
                            parent: cand,
                        })
                    }
                },
            }
        }
        Ok(join(&cur, name))
    }

    /// Add (or replace) an entry at `path`, creating missing parent
    /// directories (0755, root). Returns the real path it was stored at
    /// (differs from `path` when a parent is a symlink).
    ///
    /// Rules when something already exists there:
    /// - dir over dir: children stay; metadata per `existing_dir`;
    /// - dir over a symlink that resolves to a directory: the symlink stays
    ///   (like dpkg on a merged-/usr system);
    /// - anything over an empty directory or a non-directory: replaced;
    /// - a non-directory over a non-empty directory: [`TreeError::DirectoryNotEmpty`].
    pub fn insert(
        &mut self,
        path: &str,
        entry: Entry,
        existing_dir: ExistingDir,
    ) -> Result<String, TreeError> {
        let key = normalize(path)?;
        if key == "/" {
            if entry.is_dir() {
                if existing_dir == ExistingDir::Update {
                    self.entries.insert(key.clone(), entry);
                }
                return Ok(key);
            }
            return Err(TreeError::Root);
        }
        let real = self.place(&key, true)?;
        let mut entry = entry;
        entry.mode &= 0o7777;
        match self.entries.get(&real) {
            Some(existing) if existing.is_dir() => {
                if entry.is_dir() {
                    if existing_dir == ExistingDir::Update {
                        self.entries.insert(real.clone(), entry);
                    }
                    return Ok(real);
                }
                if self.has_children(&real) {
                    return Err(TreeError::DirectoryNotEmpty {
                        path: real,
                        new_kind: entry.kind.name(),
                    });
                }
            }
            Some(Entry {
                kind: EntryKind::Symlink(_),
                ..
            }) if entry.is_dir() => {
                if let Some((p, e)) = self.resolve(&real) {
                    if e.is_dir() {
                        return Ok(p);
                    }
                }
            }
            _ => {}
        }
        self.entries.insert(real.clone(), entry);
        Ok(real)
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        // Every descendant starts with "dir/", and the first key >= "dir/" is
        // a descendant if there is any.
        self.entries
            .range::<str, _>((
                std::ops::Bound::Excluded(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Add or update a directory (mode and owner are set even if it exists).
    pub fn add_dir(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, TreeError> {
        self.insert(path, Entry::dir(mode).owned(uid, gid), ExistingDir::Update)
    }

    /// Add or replace a regular file.
    pub fn add_file(
        &mut self,
        path: &str,
        content: impl Into<Arc<[u8]>>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, TreeError> {
        self.insert(
            path,
            Entry::file(content, mode).owned(uid, gid),
            ExistingDir::Keep,
        )
    }

    /// Add or replace a symlink owned by root.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<String, TreeError> {
        self.insert(path, Entry::symlink(target), ExistingDir::Keep)
    }

    /// Remove the entry at exactly `path` (the last component is not
    /// followed) and, for a directory, everything below it. Returns the
    /// removed entry itself.
    pub fn remove(&mut self, path: &str) -> Result<Option<Entry>, TreeError> {
        let key = normalize(path)?;
        if key == "/" {
            return Err(TreeError::Root);
        }
        let removed = self.entries.remove(&key);
        if matches!(removed, Some(ref e) if e.is_dir()) {
            let prefix = format!("{key}/");
            let children: Vec<String> = self
                .entries
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for c in children {
                self.entries.remove(&c);
            }
        }
        Ok(removed)
    }

    /// Every entry in path order (parents before children), `/` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Entries strictly below directory `dir` (any depth), in path order.
    pub fn iter_under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        let prefix = match normalize(dir) {
            Ok(d) if d == "/" => "/".to_string(),
            Ok(d) => format!("{d}/"),
            Err(_) => "\0".to_string(),
        };
        let start = prefix.clone();
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.as_str() != "/")
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Bytes of file contents and symlink targets; content shared by hard
    /// links is counted once. The uncompressed payload of the image.
    pub fn total_size(&self) -> u64 {
        let mut seen: HashSet<*const u8> = HashSet::new();
        let mut total = 0u64;
        for e in self.entries.values() {
            match &e.kind {
                EntryKind::File(c) if seen.insert(c.as_ptr()) => total += c.len() as u64,
                EntryKind::Symlink(t) => total += t.len() as u64,
                _ => {}
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        for (input, want) in [
            ("/", "/"),
            ("", "/"),
            (".", "/"),
            ("./usr/bin/", "/usr/bin"),
            ("usr//lib", "/usr/lib"),
            ("/etc/./passwd", "/etc/passwd"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "input {input:?}");
        }
        assert!(matches!(
            normalize("/usr/../etc"),
            Err(TreeError::InvalidPath { .. })
        ));
        assert!(matches!(
            normalize("/a\0b"),
            Err(TreeError::InvalidPath { .. })
        ));
    }

    #[test]
    fn relative_and_resolve() {
        assert_eq!(
            resolve_target("/lib64/ld.so", "../lib/x/ld.so"),
            "/lib/x/ld.so"
        );
        assert_eq!(resolve_target("/usr/bin/sh", "dash"), "/usr/bin/dash");
        assert_eq!(resolve_target("/a", "../../../x"), "/x");
        assert_eq!(resolve_target("/a/b", "/abs/t"), "/abs/t");
        assert_eq!(
            relative_path("/usr/lib64", "/usr/lib/x/ld.so"),
            "../lib/x/ld.so"
        );
        assert_eq!(relative_path("/usr/bin", "/usr/bin/dash"), "dash");
        assert_eq!(relative_path("/", "/usr/bin"), "usr/bin");
        assert_eq!(relative_path("/usr/bin", "/usr/bin"), ".");
    }

    #[test]
    fn add_creates_parents_in_order() {
        let mut t = Tree::new();
        t.add_file("/usr/share/doc/x", b"hi".to_vec(), 0o644, 0, 0)
            .unwrap();
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/usr",
                "/usr/share",
                "/usr/share/doc",
                "/usr/share/doc/x"
            ]
        );
        assert_eq!(t.get("/usr/share").unwrap().mode, 0o755);
        assert_eq!(t.total_size(), 2);
    }

    #[test]
    fn parents_follow_symlinks_last_component_does_not() {
        let mut t = Tree::new();
        t.add_dir("/usr/bin", 0o755, 0, 0).unwrap();
        t.add_symlink("/bin", "usr/bin").unwrap();
        let real = t.add_file("/bin/sh", b"#!".to_vec(), 0o755, 0, 0).unwrap();
        assert_eq!(real, "/usr/bin/sh");
        assert!(t.get("/bin/sh").is_none());
        assert!(t.get("/usr/bin/sh").is_some());
        // dir over a symlink to a dir keeps the symlink
        t.add_dir("/bin", 0o700, 0, 0).unwrap();
        assert!(matches!(t.get("/bin").unwrap().kind, EntryKind::Symlink(_)));
        let (p, _) = t.resolve("/bin/sh").unwrap();
        assert_eq!(p, "/usr/bin/sh");
    }

    #[test]
    fn parent_that_is_a_file_is_an_error() {
        let mut t = Tree::new();
        t.add_file("/etc", b"x".to_vec(), 0o644, 0, 0).unwrap();
        let err = t
            .add_file("/etc/passwd", b"".to_vec(), 0o644, 0, 0)
            .unwrap_err();
        assert_eq!(
            err,
            TreeError::NotADirectory {
                path: "/etc/passwd".into(),
                parent: "/etc".into()
            }
        );
    }

    #[test]
    fn symlink_loop_is_reported() {
        let mut t = Tree::new();
        t.add_symlink("/a", "b").unwrap();
        t.add_symlink("/b", "a").unwrap();
        assert!(matches!(
            t.add_file("/a/x", b"".to_vec(), 0o644, 0, 0),
            Err(TreeError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn replace_rules() {
        let mut t = Tree::new();
        t.add_file("/d/f", b"1".to_vec(), 0o644, 0, 0).unwrap();
        assert!(matches!(
            t.add_symlink("/d", "x"),
            Err(TreeError::DirectoryNotEmpty { .. })
        ));
        t.add_dir("/e", 0o755, 0, 0).unwrap();
        t.add_symlink("/e", "d").unwrap();
        assert_eq!(t.get("/e").unwrap().kind, EntryKind::Symlink("d".into()));
        // dir over dir: Keep keeps metadata, Update changes it
        t.insert("/d", Entry::dir(0o700), ExistingDir::Keep)
            .unwrap();
        assert_eq!(t.get("/d").unwrap().mode, 0o755);
        t.add_dir("/d", 0o700, 5, 6).unwrap();
        assert_eq!(t.get("/d").unwrap().mode, 0o700);
        assert_eq!(t.get("/d").unwrap().uid, 5);
        assert!(t.get("/d/f").is_some());
    }

    #[test]
    fn remove_takes_descendants_only() {
        let mut t = Tree::new();
        t.add_file("/a/b/c", b"1".to_vec(), 0o644, 0, 0).unwrap();
        t.add_file("/a-b", b"1".to_vec(), 0o644, 0, 0).unwrap();
        t.add_file("/ab", b"1".to_vec(), 0o644, 0, 0).unwrap();
        let removed = t.remove("/a").unwrap().unwrap();
        assert!(removed.is_dir());
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/", "/a-b", "/ab"]);
        assert_eq!(t.remove("/"), Err(TreeError::Root));
    }

    #[test]
    fn has_children_ignores_siblings_with_common_prefix() {
        let mut t = Tree::new();
        t.add_dir("/a", 0o755, 0, 0).unwrap();
        t.add_file("/a-b/x", b"1".to_vec(), 0o644, 0, 0).unwrap();
        // /a is empty even though /a-b/x sorts between "/a" and "/a/"
        t.add_symlink("/a", "a-b").unwrap();
        assert!(matches!(t.get("/a").unwrap().kind, EntryKind::Symlink(_)));
    }

    #[test]
    fn shared_content_counted_once() {
        let mut t = Tree::new();
        let c: Arc<[u8]> = Arc::from(&b"12345"[..]);
        t.insert("/x", Entry::file(c.clone(), 0o644), ExistingDir::Keep)
            .unwrap();
        t.insert("/y", Entry::file(c, 0o644), ExistingDir::Keep)
            .unwrap();
        t.add_symlink("/z", "x").unwrap();
        assert_eq!(t.total_size(), 6);
    }

    #[test]
    fn iter_under_lists_descendants() {
        let mut t = Tree::new();
        t.add_file("/etc/a/b", b"".to_vec(), 0o644, 0, 0).unwrap();
        t.add_file("/etc-x", b"".to_vec(), 0o644, 0, 0).unwrap();
        let got: Vec<&str> = t.iter_under("/etc").map(|(p, _)| p).collect();
        assert_eq!(got, ["/etc/a", "/etc/a/b"]);
    }
}
