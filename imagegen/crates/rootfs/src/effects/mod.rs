//! Declarative replacements for the maintainer scripts that are not run
//! (Debian Policy §6): each function edits the [`Tree`](crate::Tree) the way
//! the script (or `systemctl enable`, `update-alternatives`, ...) would have
//! edited a real root filesystem.

pub mod usr;

pub use usr::merge_usr;
