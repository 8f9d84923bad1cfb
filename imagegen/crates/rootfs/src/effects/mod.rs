//! Declarative replacements for the maintainer scripts that are not run
//! (Debian Policy §6): each function edits the [`Tree`] the way the script
//! (or `systemctl enable`, `update-alternatives`, ...) would have edited a
//! real root filesystem.
//!
//! Not done, on purpose: `ld.so.cache`. glibc searches its trusted
//! directories (`/lib/x86_64-linux-gnu`, `/usr/lib/x86_64-linux-gnu`, `/lib`,
//! `/usr/lib`) when there is no cache, and the libraries Debian installs
//! elsewhere (e.g. systemd's private `libsystemd-shared`) are found through
//! the binaries' RUNPATH, so a missing cache costs a few `open` calls, not
//! correctness. Running `ldconfig` would need the tree on disk.

pub mod units;
pub mod users;
pub mod usr;

pub use units::{enable_units, Enabled, UnitsError};
pub use users::{users_and_groups, Accounts, SystemUser, UsersError};
pub use usr::merge_usr;

use crate::tree::{normalize, Tree, TreeError};

/// Errors from [`alternatives`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlternativesError {
    /// The alternative's target is not in the tree.
    #[error("alternative {link} -> {target}: {target} does not exist in the tree")]
    MissingTarget {
        /// The link path.
        link: String,
        /// The target path.
        target: String,
    },
    /// Creating the link failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Set up alternatives the way `update-alternatives` would leave them for
/// the chosen target, but without the `/etc/alternatives` indirection: each
/// `(link, target)` pair (absolute paths, e.g. `("/usr/bin/awk",
/// "/usr/bin/mawk")`) becomes the symlink `link -> target`. The target must
/// exist in the tree (symlinks followed); it is an error otherwise, so a
/// profile cannot silently end up without `awk`.
pub fn alternatives(tree: &mut Tree, links: &[(String, String)]) -> Result<(), AlternativesError> {
    for (link, target) in links {
        let target_n = normalize(target)?;
        if tree.resolve(&target_n).is_none() {
            return Err(AlternativesError::MissingTarget {
                link: link.clone(),
                target: target.clone(),
            });
        }
        tree.add_symlink(link, &target_n)?;
    }
    Ok(())
}

/// `/etc/machine-id` as an empty file (mode 0444): systemd then treats the
/// boot as a first boot and sets a machine id up at run time (on a read-only
/// root it mounts a generated one over the file). Every node gets its own id
/// though all run the same image.
pub fn machine_id(tree: &mut Tree) -> Result<(), TreeError> {
    tree.add_file("/etc/machine-id", Vec::new(), 0o444, 0, 0)?;
    Ok(())
}

/// `/dev/console` (char 5:1, 0600 root) and the mount points systemd needs
/// before anything is mounted (`/dev`, `/proc`, `/sys`, `/run`, `/tmp`).
/// An initramfs needs its own `/dev/console`: the kernel opens it for
/// init's stdin/stdout/stderr before running `/init`, and devtmpfs is not
/// mounted yet at that point. Existing directories keep their metadata.
pub fn initramfs_basics(tree: &mut Tree) -> Result<(), TreeError> {
    use crate::tree::{Entry, EntryKind, ExistingDir};
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/run", 0o755),
        ("/tmp", 0o1777),
    ] {
        tree.insert(dir, Entry::dir(mode), ExistingDir::Keep)?;
    }
    tree.insert(
        "/dev/console",
        Entry {
            kind: EntryKind::CharDevice { major: 5, minor: 1 },
            mode: 0o600,
            uid: 0,
            gid: 0,
        },
        ExistingDir::Keep,
    )?;
    Ok(())
}
