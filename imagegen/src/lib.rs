//! imagegen: builds immutable, reproducible node OS images from declarative
//! profiles, without root.
//!
//! The pipeline (see `README.md` for the picture):
//!
//! 1. [`profile`] reads a profile and its `extends` chain into a validated
//!    [`profile::Profile`] (pure parsing, errors with file, line and key);
//! 2. the `debian` crate resolves and fetches the packages (signed index,
//!    lockfile, content-addressed cache);
//! 3. the `rootfs` crate unpacks them into an in-memory tree and applies the
//!    maintainer scripts' effects declaratively;
//! 4. the Kubernetes payload comes from the source chosen with
//!    `--kubernetes auto|download|none` or `--components-dir`
//!    ([`build::KubernetesSource`]): the `kubernetes-payload` crate's
//!    `components` (binaries, CNI manifest) and `images` (container images,
//!    pulled by its `registry` client or read from OCI archives, merged into
//!    one archive);
//! 5. [`bake`] generates the files that come from the profile (sysctls,
//!    modules, cluster configuration, Kubernetes record) and [`build`] lays
//!    the overlays, the agent and the components over the tree;
//! 6. the tree is written as a cpio newc + zstd initramfs next to the kernel
//!    and a [`manifest::Manifest`], all under temporary names renamed last.
#![warn(missing_docs)]

pub mod assemble;
pub mod bake;
pub mod build;
pub mod cli;
pub mod manifest;
pub mod output;
pub mod packages;
/// Profiles: parsing, merge and validation (the `profile` crate).
pub use ::profile;
