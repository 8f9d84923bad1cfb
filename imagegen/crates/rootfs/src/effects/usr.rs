//! Merged `/usr`: `/bin`, `/sbin`, `/lib` and `/lib64` are symlinks into
//! `/usr`, as Debian's `usrmerge` package arranges (and as Debian requires
//! from trixie on). Bookworm packages still ship files under `/bin` etc., so
//! their paths are mapped into `/usr/...` while unpacking (or afterwards with
//! [`merge_usr`]).
//!
//! Symlinks need care when moved: a relative target that climbs out of the
//! old directory is rewritten so it still reaches the same (mapped) place,
//! and a compatibility symlink that would now point at itself (`/sbin/x ->
//! /usr/sbin/x`) is dropped instead of clobbering the real file.

use tracing::{debug, warn};

use crate::tree::{
    relative_path, resolve_target, split_parent, Entry, EntryKind, ExistingDir, Tree, TreeError,
};

/// The top-level directories that merged /usr turns into symlinks, with their targets.
pub const MERGED_DIRS: [(&str, &str); 4] = [
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "usr/lib64"),
];

/// Where `path` (normalised) lives on a merged-/usr system: `/bin/ls` →
/// `/usr/bin/ls`; other paths are returned unchanged.
pub fn merged_path(path: &str) -> String {
    for (dir, _) in MERGED_DIRS {
        if path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')) {
            return format!("/usr{path}");
        }
    }
    path.to_string()
}

/// Insert `entry` from package path `path` (normalised) into a merged-/usr
/// tree: maps the path, fixes relative symlink targets, drops symlinks that
/// would point at themselves. A file that replaces a different existing
/// non-directory (the package shipped both `/bin/x` and `/usr/bin/x`) wins,
/// with a warning. Returns the path stored, or `None` when dropped.
pub(crate) fn insert_merged(
    tree: &mut Tree,
    path: &str,
    entry: Entry,
    existing_dir: ExistingDir,
) -> Result<Option<String>, TreeError> {
    let new_path = merged_path(path);
    let mut entry = entry;
    if let EntryKind::Symlink(target) = &entry.kind {
        let old_abs = resolve_target(path, target);
        let want_abs = merged_path(&old_abs);
        if want_abs == new_path {
            debug!(path, target = %target, "dropping symlink that merged /usr makes self-referential");
            return Ok(None);
        }
        if !target.starts_with('/') && new_path != path {
            // Relative target: keep it if it still lands on the mapped place.
            if resolve_target(&new_path, target) != want_abs {
                let dir = split_parent(&new_path).map(|(p, _)| p).unwrap_or("/");
                let rewritten = relative_path(dir, &want_abs);
                debug!(path, from = %target, to = %rewritten, "rewriting symlink for merged /usr");
                entry.kind = EntryKind::Symlink(rewritten);
            }
        }
    }
    if new_path != path {
        if let Some(existing) = tree.get(&new_path) {
            match (&existing.kind, &entry.kind) {
                (EntryKind::Dir, EntryKind::Dir) => {}
                (EntryKind::Symlink(t), _) if resolve_target(&new_path, t) == merged_path(path) => {
                }
                (e, n) if e != n => {
                    warn!(path, merged = %new_path, "package path collides with an existing /usr entry; the later one wins");
                }
                _ => {}
            }
        }
    }
    tree.insert(&new_path, entry, existing_dir).map(Some)
}

/// Make `tree` a merged-/usr tree: move everything below `/bin`, `/sbin`,
/// `/lib` and `/lib64` into `/usr` (see [`insert_merged`] for the rules) and
/// create the four top-level symlinks (`bin -> usr/bin`, ...). The `/usr/...`
/// targets are created as directories. Idempotent.
pub fn merge_usr(tree: &mut Tree) -> Result<(), TreeError> {
    for (dir, target) in MERGED_DIRS {
        match tree.get(dir).map(|e| e.kind.clone()) {
            Some(EntryKind::Symlink(t)) if t == target || t == format!("/{target}") => {}
            Some(EntryKind::Dir) => {
                let moved: Vec<(String, Entry)> = tree
                    .iter_under(dir)
                    .map(|(p, e)| (p.to_string(), e.clone()))
                    .collect();
                let own = tree.remove(dir)?;
                let usr_dir = format!("/usr{dir}");
                if let Some(own) = own {
                    tree.insert(&usr_dir, own, ExistingDir::Keep)?;
                }
                for (p, e) in moved {
                    insert_merged(tree, &p, e, ExistingDir::Keep)?;
                }
                tree.add_symlink(dir, target)?;
            }
            Some(_) => {
                // A stray file or foreign symlink where the directory link belongs.
                warn!(
                    path = dir,
                    "replacing non-directory with the merged /usr symlink"
                );
                tree.remove(dir)?;
                tree.add_symlink(dir, target)?;
            }
            None => {
                tree.add_symlink(dir, target)?;
            }
        }
        let usr_dir = format!("/usr{dir}");
        if tree.get(&usr_dir).is_none() {
            tree.add_dir(&usr_dir, 0o755, 0, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_path_table() {
        for (i, want) in [
            ("/bin", "/usr/bin"),
            ("/bin/ls", "/usr/bin/ls"),
            ("/lib64/ld.so", "/usr/lib64/ld.so"),
            ("/sbin/init", "/usr/sbin/init"),
            ("/binary", "/binary"),
            ("/library/x", "/library/x"),
            ("/usr/bin/ls", "/usr/bin/ls"),
            ("/etc/lib", "/etc/lib"),
        ] {
            assert_eq!(merged_path(i), want, "{i}");
        }
    }

    #[test]
    fn symlinks_are_fixed_or_dropped() {
        let mut t = Tree::new();
        merge_usr(&mut t).unwrap();
        // same-directory relative link: unchanged
        let p =
            insert_merged(&mut t, "/bin/sh", Entry::symlink("dash"), ExistingDir::Keep).unwrap();
        assert_eq!(p.as_deref(), Some("/usr/bin/sh"));
        assert_eq!(
            t.get("/usr/bin/sh").unwrap().kind,
            EntryKind::Symlink("dash".into())
        );
        // climbing link still lands right after the move: unchanged
        insert_merged(
            &mut t,
            "/lib64/ld-linux-x86-64.so.2",
            Entry::symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            ExistingDir::Keep,
        )
        .unwrap();
        assert_eq!(
            t.get("/usr/lib64/ld-linux-x86-64.so.2").unwrap().kind,
            EntryKind::Symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into())
        );
        // link into /usr from /lib: rewritten
        insert_merged(
            &mut t,
            "/lib/foo.so",
            Entry::symlink("../usr/lib/real/foo.so"),
            ExistingDir::Keep,
        )
        .unwrap();
        assert_eq!(
            t.get("/usr/lib/foo.so").unwrap().kind,
            EntryKind::Symlink("real/foo.so".into())
        );
        // compat link pointing at its own merged location: dropped, file kept
        t.add_file("/usr/sbin/x", b"ELF".to_vec(), 0o755, 0, 0)
            .unwrap();
        let dropped = insert_merged(
            &mut t,
            "/sbin/x",
            Entry::symlink("/usr/sbin/x"),
            ExistingDir::Keep,
        )
        .unwrap();
        assert_eq!(dropped, None);
        assert!(matches!(
            t.get("/usr/sbin/x").unwrap().kind,
            EntryKind::File(_)
        ));
    }

    #[test]
    fn merge_usr_moves_existing_tree() {
        let mut t = Tree::new();
        t.add_file("/bin/ls", b"ls".to_vec(), 0o755, 0, 0).unwrap();
        t.add_dir("/lib/x86_64-linux-gnu", 0o755, 0, 0).unwrap();
        t.add_file(
            "/lib/x86_64-linux-gnu/libc.so.6",
            b"c".to_vec(),
            0o644,
            0,
            0,
        )
        .unwrap();
        t.add_symlink("/lib64/ld.so", "../lib/x86_64-linux-gnu/libc.so.6")
            .unwrap();
        merge_usr(&mut t).unwrap();
        merge_usr(&mut t).unwrap(); // idempotent
        let got: Vec<String> = t
            .iter()
            .map(|(p, e)| match &e.kind {
                EntryKind::Symlink(s) => format!("{p} -> {s}"),
                k => format!("{p} {}", k.name()),
            })
            .collect();
        assert_eq!(
            got,
            [
                "/ dir",
                "/bin -> usr/bin",
                "/lib -> usr/lib",
                "/lib64 -> usr/lib64",
                "/sbin -> usr/sbin",
                "/usr dir",
                "/usr/bin dir",
                "/usr/bin/ls file",
                "/usr/lib dir",
                "/usr/lib/x86_64-linux-gnu dir",
                "/usr/lib/x86_64-linux-gnu/libc.so.6 file",
                "/usr/lib64 dir",
                "/usr/lib64/ld.so -> ../lib/x86_64-linux-gnu/libc.so.6",
                "/usr/sbin dir",
            ]
        );
        assert!(t.resolve("/lib64/ld.so").is_some());
    }
}
