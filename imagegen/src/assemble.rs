//! Root filesystem assembly: packages, declarative maintainer-script
//! effects, kernel, overlays, generated files, agent and components, all in
//! the `rootfs` crate's in-memory [`Tree`] (no root, no mounts).

use std::path::PathBuf;

use rootfs::{Tree, UnpackOptions};
use thiserror::Error;

use crate::bake::Entry;
use crate::profile::Profile;

/// An executable to add: path in the image and contents.
pub type Executable = (String, Vec<u8>);

/// Where the agent binary goes in the image.
pub const AGENT_PATH: &str = "/usr/bin/agent";

/// Errors of the assembly stage.
#[derive(Debug, Error)]
pub enum AssembleError {
    /// A package did not unpack.
    #[error("unpacking {package} ({}): {source}", path.display())]
    Unpack {
        /// Package name.
        package: String,
        /// The `.deb` in the cache.
        path: PathBuf,
        /// Why.
        source: Box<rootfs::DebError>,
    },
    /// A tree edit failed.
    #[error("{what}: {source}")]
    Tree {
        /// What was being done.
        what: String,
        /// Why.
        source: Box<rootfs::TreeError>,
    },
    /// A maintainer-script effect failed.
    #[error("{what}: {message}")]
    Effect {
        /// Which effect.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An overlay could not be applied.
    #[error("overlay {}: {source}", dir.display())]
    Overlay {
        /// The overlay directory.
        dir: PathBuf,
        /// Why.
        source: Box<rootfs::overlay::OverlayError>,
    },
}

/// One `.deb` to unpack.
#[derive(Debug, Clone)]
pub struct Deb {
    /// Package name.
    pub name: String,
    /// Path of the verified `.deb`.
    pub path: PathBuf,
}

/// What the assembly produced besides the tree.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The root filesystem.
    pub tree: Tree,
    /// The kernel image bytes (`vmlinuz`).
    pub vmlinuz: Vec<u8>,
    /// Kernel release.
    pub kernel_release: String,
    /// Modules kept.
    pub modules_kept: Vec<String>,
}

fn tree_err(what: impl Into<String>) -> impl FnOnce(rootfs::TreeError) -> AssembleError {
    let what = what.into();
    move |source| AssembleError::Tree {
        what,
        source: Box::new(source),
    }
}

/// Adds a generated entry (root:root).
pub fn add_entry(tree: &mut Tree, entry: &Entry) -> Result<(), AssembleError> {
    match entry {
        Entry::File { path, mode, data } => {
            if tree.contains(path) {
                tree.remove(path)
                    .map_err(tree_err(format!("replacing {path}")))?;
            }
            tree.add_file(path, data.clone(), *mode, 0, 0)
                .map_err(tree_err(format!("adding {path}")))?;
        }
        Entry::Dir { path, mode } => {
            tree.add_dir(path, *mode, 0, 0)
                .map_err(tree_err(format!("adding {path}")))?;
        }
        Entry::Symlink { path, target } => {
            if tree.contains(path) {
                tree.remove(path)
                    .map_err(tree_err(format!("replacing {path}")))?;
            }
            tree.add_symlink(path, target)
                .map_err(tree_err(format!("adding {path}")))?;
        }
    }
    Ok(())
}

/// Assembles the root filesystem. `debs` must be in a deterministic order
/// (the lockfile's, sorted by name); `executables` (path, bytes) are added
/// mode 0755 (the agent, Kubernetes components); `on_package` is called
/// after each package.
pub fn assemble(
    profile: &Profile,
    debs: &[Deb],
    generated: &[Entry],
    executables: &[Executable],
    mut on_package: impl FnMut(&str),
) -> Result<Assembled, AssembleError> {
    let mut tree = Tree::new();
    // Top-level merged-/usr symlinks first; unpacking maps /bin etc. into /usr.
    rootfs::effects::merge_usr(&mut tree).map_err(tree_err("merging /usr"))?;
    let opts = UnpackOptions::default();
    for deb in debs {
        tree.unpack_deb_file(&deb.path, &opts)
            .map_err(|source| AssembleError::Unpack {
                package: deb.name.clone(),
                path: deb.path.clone(),
                source: Box::new(source),
            })?;
        on_package(&deb.name);
    }
    for path in &profile.drop_paths {
        tree.remove(path)
            .map_err(tree_err(format!("dropping {path}")))?;
    }
    apply_effects(&mut tree, profile)?;
    let kernel = take_kernel(&mut tree, &profile.modules)?;
    for dir in &profile.overlays {
        tree.overlay_dir(dir)
            .map_err(|source| AssembleError::Overlay {
                dir: dir.clone(),
                source: Box::new(source),
            })?;
    }
    for entry in generated {
        add_entry(&mut tree, entry)?;
    }
    for (path, data) in executables {
        add_executable(&mut tree, path, data.clone())?;
    }
    // After the overlays: they carry some of the units.
    enable_units(&mut tree, profile)?;
    Ok(Assembled {
        tree,
        vmlinuz: kernel.vmlinuz,
        kernel_release: kernel.version,
        modules_kept: kernel.kept_modules,
    })
}

fn take_kernel(
    tree: &mut Tree,
    modules: &[String],
) -> Result<rootfs::kernel::Kernel, AssembleError> {
    rootfs::kernel::take_kernel(tree, modules).map_err(|e| AssembleError::Effect {
        what: "taking the kernel and selecting modules",
        message: e.to_string(),
    })
}

/// Users, groups and alternatives, as the maintainer scripts would have set
/// them.
fn apply_effects(tree: &mut Tree, profile: &Profile) -> Result<(), AssembleError> {
    let users: Vec<rootfs::effects::SystemUser> = profile
        .system
        .users
        .iter()
        .map(|u| {
            let mut s = rootfs::effects::SystemUser::new(&u.name);
            s.uid = u.uid;
            if let Some(home) = &u.home {
                s.home = home.clone();
            }
            if let Some(shell) = &u.shell {
                s.shell = shell.clone();
            }
            s.groups = u.groups.clone();
            s
        })
        .collect();
    rootfs::effects::users_and_groups(tree, &users).map_err(|e| AssembleError::Effect {
        what: "creating users and groups",
        message: e.to_string(),
    })?;
    let links: Vec<(String, String)> = profile
        .system
        .alternatives
        .iter()
        .map(|(l, t)| (l.clone(), t.clone()))
        .collect();
    rootfs::effects::alternatives(tree, &links).map_err(|e| AssembleError::Effect {
        what: "setting alternatives",
        message: e.to_string(),
    })?;
    Ok(())
}

/// Enables the profile's units; called after the overlays, which add some
/// of them.
pub fn enable_units(tree: &mut Tree, profile: &Profile) -> Result<(), AssembleError> {
    rootfs::effects::enable_units(tree, &profile.system.enable_units, &profile.default_target)
        .map_err(|e| AssembleError::Effect {
            what: "enabling units",
            message: e.to_string(),
        })?;
    Ok(())
}

/// Adds an executable (agent, components) at `path`, mode 0755, root:root.
pub fn add_executable(tree: &mut Tree, path: &str, data: Vec<u8>) -> Result<(), AssembleError> {
    add_entry(
        tree,
        &Entry::File {
            path: path.to_owned(),
            mode: 0o755,
            data,
        },
    )
}
