//! Rootless root filesystem assembly from `.deb` files, and the cpio
//! initramfs writer.
//!
//! The node image is a kernel plus one zstd-compressed cpio `newc`
//! initramfs that *is* the root filesystem: the kernel unpacks it into tmpfs
//! and runs `/init` (a symlink to systemd). This crate builds that root
//! filesystem in memory and writes it, without root and reproducibly:
//!
//! - [`tree`]: the in-memory [`Tree`] (path → entry with kind, mode, owner;
//!   no mtimes);
//! - [`deb`]: `.deb` reading ([`Tree::unpack_deb`]);
//! - [`overlay`]: laying a host directory over the tree ([`Tree::overlay_dir`]);
//! - [`effects`]: what maintainer scripts would have done (merged /usr,
//!   users and groups, enabled units, alternatives, machine-id);
//! - [`kernel`]: taking the kernel image out and keeping only the needed modules;
//! - [`cpio`]: writing the initramfs ([`cpio::write_initramfs`]) and listing one.
//!
//! See README.md for the rules each piece follows.
#![warn(missing_docs)]

pub mod cpio;
pub mod deb;
pub mod effects;
pub mod kernel;
pub mod overlay;
pub mod tree;

pub use deb::{DebError, DebInfo, UnpackOptions};
pub use tree::{Entry, EntryKind, ExistingDir, Tree, TreeError};
